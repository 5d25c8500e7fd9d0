"""The concept atlas of an image collection: every window encoded once, any concept asked later.

`build_atlas` stores the unit embedding of every occlusion window of every
image (`store` holds the layout, `storage` the place: a folder, S3 or GCS);
`Atlas.open` answers maps, cells, top images and concept scores for any
vocabulary from them (`query`); `build_index` stores every concept's
ranking values for every image, so that rankings are reads (`index`).
"""

from convis_jax.atlas.build import build_atlas, init_processes
from convis_jax.atlas.index import IndexSummary, build_index
from convis_jax.atlas.query import Atlas, ImageConceptPeaks, ImageConceptScores, TopImages
from convis_jax.core.images import list_images

__all__ = ["Atlas", "ImageConceptPeaks", "ImageConceptScores", "IndexSummary", "TopImages",
           "build_atlas", "build_index", "init_processes", "list_images"]
