"""convis_jax: ConVis concept saliency maps for CLIP, over WordNet, in JAX.

The public names below are imported lazily, so that `import convis_jax.core`
stays free of jax and flax.
"""

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Public name -> module that defines it.
_EXPORTS = {
    "ConvisError": "convis_jax.errors",
    "InputError": "convis_jax.errors",
    "ModelLoadError": "convis_jax.errors",
    "ConceptError": "convis_jax.errors",
    "CacheError": "convis_jax.errors",
    "load_clip": "convis_jax.models.loading",
    "load_model": "convis_jax.models.loading",
    "ClipModel": "convis_jax.models.model",
    "SiglipModel": "convis_jax.models.model",
    "Encoder": "convis_jax.models.encoder",
    "ConceptVocabulary": "convis_jax.core.vocabulary",
    "load_wordnet": "convis_jax.core.wordnet",
    "ConceptBank": "convis_jax.kernels.bank",
    "build_bank": "convis_jax.kernels.bank",
    "ConVis": "convis_jax.api",
    "TopConcepts": "convis_jax.api",
    "Atlas": "convis_jax.atlas",
    "build_atlas": "convis_jax.atlas",
    "load_image": "convis_jax.core.images",
    "load_images": "convis_jax.core.images",
    "preprocess": "convis_jax.models.preprocessing",
    "PreprocessConfig": "convis_jax.models.preprocessing",
    "prepare_image": "convis_jax.core.windows",
    "map_to_image": "convis_jax.core.windows",
    "window_grid": "convis_jax.core.windows",
    "write_explorer": "convis_jax.pictures.explorer",
    "save_png": "convis_jax.pictures.overlays",
    "concept_grid": "convis_jax.pictures.overlays",
    "save_heatmap": "convis_jax.pictures.overlays",
    "heatmap_overlay": "convis_jax.pictures.overlays",
    "white_overlay": "convis_jax.pictures.overlays",
    "export_wsolevaluation": "convis_jax.evaluation.export",
    "boxes_to_square": "convis_jax.evaluation.boxes",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'convis_jax' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)


if TYPE_CHECKING:  # let type checkers and IDEs see the lazy names
    from convis_jax.api import ConVis, TopConcepts
    from convis_jax.atlas import Atlas, build_atlas
    from convis_jax.core.images import load_image, load_images
    from convis_jax.core.vocabulary import ConceptVocabulary
    from convis_jax.core.windows import map_to_image, prepare_image, window_grid
    from convis_jax.core.wordnet import load_wordnet
    from convis_jax.errors import (
        CacheError,
        ConceptError,
        ConvisError,
        InputError,
        ModelLoadError,
    )
    from convis_jax.evaluation.boxes import boxes_to_square
    from convis_jax.evaluation.export import export_wsolevaluation
    from convis_jax.kernels.bank import ConceptBank, build_bank
    from convis_jax.models.encoder import Encoder
    from convis_jax.models.loading import load_clip, load_model
    from convis_jax.models.model import ClipModel, SiglipModel
    from convis_jax.models.preprocessing import PreprocessConfig, preprocess
    from convis_jax.pictures.explorer import write_explorer
    from convis_jax.pictures.overlays import (
        concept_grid,
        heatmap_overlay,
        save_heatmap,
        save_png,
        white_overlay,
    )
