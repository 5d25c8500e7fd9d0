"""The concept atlas of an image collection: every window encoded once, any concept asked later.

`build_atlas` stores the unit embedding of every occlusion window of every
image (`store` holds the layout); `Atlas.open` answers maps, cells, top
images and concept scores for any vocabulary from them (`query`).
"""

from convis_jax.atlas.build import build_atlas, init_processes
from convis_jax.atlas.query import Atlas, ImageConceptScores, TopImages
from convis_jax.core.images import list_images

__all__ = ["Atlas", "ImageConceptScores", "TopImages", "build_atlas", "init_processes",
           "list_images"]
