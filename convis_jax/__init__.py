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
    from convis_jax.errors import CacheError
    from convis_jax.errors import ConceptError
    from convis_jax.errors import ConvisError
    from convis_jax.errors import InputError
    from convis_jax.errors import ModelLoadError
    from convis_jax.jax_backend.loading import load_clip
