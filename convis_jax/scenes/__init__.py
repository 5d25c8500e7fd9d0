"""Procedural scenes of drawn WordNet concepts, with ground-truth boxes and masks.

The bundled default model is trained and evaluated on these scenes: one to
three flat-coloured shapes (each the drawing of one WordNet noun synset) on a
flat, gradient or noise background. Because the generator knows where it drew
every object, localisation metrics get exact answers.

Everything is a pure function of a seed (or a `numpy.random.Generator`): the
same seed gives bit-identical images on every machine, since drawing uses only
NumPy's PCG64 stream and Pillow's integer rasteriser.

Captions are WordNet 3.0 texts of the objects present (see `render_scene`).
The texts of the drawn synsets are stored in `CONCEPT_TEXTS` so that
generating scenes needs no WordNet files; a test checks them against WordNet.

The package, in the order a scene is made: `concepts.py` (the drawn synsets and
their WordNet texts), `shapes.py` (one drawer per synset), `backgrounds.py`
(backgrounds and contrasting colours), `render.py` (placing the shapes, the
ground truth, `render_scene` and `make_dataset`).
"""

from convis_jax.scenes.concepts import CONCEPT_TEXTS, DRAWN_CONCEPTS, ConceptText
from convis_jax.scenes.render import OBJECT_SIZES, Scene, make_dataset, render_scene

__all__ = [
    "CONCEPT_TEXTS",
    "DRAWN_CONCEPTS",
    "OBJECT_SIZES",
    "ConceptText",
    "Scene",
    "make_dataset",
    "render_scene",
]
