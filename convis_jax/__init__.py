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
    "load_clip": "convis_jax.jax_backend.loading",
    "ClipModel": "convis_jax.jax_backend.model",
    "ConceptVocabulary": "convis_jax.core.vocabulary",
    "load_wordnet": "convis_jax.core.wordnet",
    "ConceptBank": "convis_jax.jax_backend.bank",
    "build_bank": "convis_jax.jax_backend.bank",
    "ConVis": "convis_jax.api",
    "TopConcepts": "convis_jax.api",
    "load_image": "convis_jax.core.images",
    "load_images": "convis_jax.core.images",
    "preprocess": "convis_jax.core.images",
    "PreprocessConfig": "convis_jax.core.images",
    "prepare_image": "convis_jax.core.windows",
    "map_to_image": "convis_jax.core.windows",
    "window_grid": "convis_jax.core.windows",
    "write_explorer": "convis_jax.core.explorer",
    "save_png": "convis_jax.core.pictures",
    "concept_grid": "convis_jax.core.pictures",
    "save_heatmap": "convis_jax.core.pictures",
    "heatmap_overlay": "convis_jax.core.pictures",
    "white_overlay": "convis_jax.core.pictures",
    "export_wsolevaluation": "convis_jax.evaluation",
    "boxes_to_square": "convis_jax.core.boxes",
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
    from convis_jax.api import ConVis
    from convis_jax.api import TopConcepts
    from convis_jax.core.boxes import boxes_to_square
    from convis_jax.core.explorer import write_explorer
    from convis_jax.core.images import PreprocessConfig
    from convis_jax.core.images import load_image
    from convis_jax.core.images import load_images
    from convis_jax.core.images import preprocess
    from convis_jax.core.pictures import concept_grid
    from convis_jax.core.pictures import heatmap_overlay
    from convis_jax.core.pictures import save_heatmap
    from convis_jax.core.pictures import save_png
    from convis_jax.core.pictures import white_overlay
    from convis_jax.core.vocabulary import ConceptVocabulary
    from convis_jax.core.windows import map_to_image
    from convis_jax.core.windows import prepare_image
    from convis_jax.core.windows import window_grid
    from convis_jax.core.wordnet import load_wordnet
    from convis_jax.errors import CacheError
    from convis_jax.errors import ConceptError
    from convis_jax.errors import ConvisError
    from convis_jax.errors import InputError
    from convis_jax.errors import ModelLoadError
    from convis_jax.evaluation import export_wsolevaluation
    from convis_jax.jax_backend.bank import ConceptBank
    from convis_jax.jax_backend.bank import build_bank
    from convis_jax.jax_backend.loading import load_clip
    from convis_jax.jax_backend.model import ClipModel
