"""The public surface as a user's type checker sees it (checked by mypy, never run).

`python -m mypy` (configured in pyproject.toml) checks this file against the
package's annotations: every public name is used the way the docs use it, and
`assert_type` pins what each call returns. A public function that loses its
return annotation (so returns Any) or changes what it returns fails the type
check. pytest does not collect this file (no `test_` prefix): the functions
below are never called.
"""

from pathlib import Path

import numpy as np
from typing_extensions import assert_type

import convis_jax as cj
from convis_jax.api import ConceptScores
from convis_jax.atlas.build import BuildSummary
from convis_jax.atlas.query import ImageConceptScores, TopImages
from convis_jax.core.windows import WindowGrid


def maps_of_an_image(photo: np.ndarray) -> None:
    model = cj.load_clip()
    assert_type(model, cj.ClipModel)
    assert_type(cj.load_model("openai/clip-vit-base-patch32"), cj.ClipModel | cj.SiglipModel)
    assert_type(model.encoder, cj.Encoder)
    convis = cj.ConVis(model, progress=False)
    assert_type(convis.occlusion_maps(photo, ["circle.n.01"]), np.ndarray)
    assert_type(convis.occlusion_cells(photo), np.ndarray)
    assert_type(convis.gradient_maps(photo, ["circle"], score="probability"), np.ndarray)
    assert_type(convis.similarity(photo), np.ndarray)
    top = convis.top_concepts(photo, k=3)
    assert_type(top, list[cj.TopConcepts])
    assert_type(top[0].hierarchical, ConceptScores)
    assert_type(top[0].flat.names, tuple[str, ...])
    assert_type(convis.explore([photo], "explorer/"), Path)


def pictures(photo: np.ndarray, saliency: np.ndarray) -> None:
    assert_type(cj.load_image("photo.jpg"), np.ndarray)
    assert_type(cj.load_images(["a.jpg", photo]), list[np.ndarray])
    assert_type(cj.prepare_image(photo), np.ndarray)
    assert_type(cj.map_to_image(saliency, (480, 640)), np.ndarray)
    assert_type(cj.window_grid((224, 224)), WindowGrid)
    assert_type(cj.white_overlay(photo, saliency, gamma=2.0), np.ndarray)
    assert_type(cj.heatmap_overlay(photo, saliency), np.ndarray)
    assert_type(cj.save_png(photo, "a.png"), Path)
    assert_type(cj.save_heatmap(photo, saliency, "b.png"), Path)
    assert_type(cj.concept_grid(photo, saliency[None], ["circle.n.01"], "grid.png"), Path)
    assert_type(cj.preprocess(photo, cj.PreprocessConfig.clip_defaults()), np.ndarray)


def concepts() -> None:
    vocabulary = cj.ConceptVocabulary.physical_objects()
    assert_type(vocabulary, cj.ConceptVocabulary)
    assert_type(cj.ConceptVocabulary.from_words(["dog"]), cj.ConceptVocabulary)
    assert_type(vocabulary.resolve(["dog", "animal.n.01"]), list[str])
    assert_type(vocabulary.subtree("animal.n.01"), list[str])
    assert_type(vocabulary.definition("dog.n.01"), str)
    assert_type(cj.build_bank(cj.load_clip(), vocabulary), cj.ConceptBank)
    assert_type(cj.build_bank(cj.load_clip(), vocabulary).embeddings, np.ndarray)


def collections(photos: Path) -> None:
    assert_type(cj.build_atlas(photos, "atlas/", progress=False), BuildSummary)
    atlas = cj.Atlas.open("atlas/")
    assert_type(atlas, cj.Atlas)
    assert_type(atlas.maps(atlas.image_ids[:2], ["dog.n.01"]), np.ndarray)
    assert_type(atlas.cells(), np.ndarray)
    assert_type(atlas.top_images("dog.n.01", 5, by="map_peak"), TopImages)
    assert_type(atlas.concept_scores(), ImageConceptScores)
    assert_type(atlas.explore("page/"), Path)


def evaluation(boxes: np.ndarray, maps: list[np.ndarray]) -> None:
    assert_type(cj.boxes_to_square(boxes, (480, 640)), np.ndarray)
    assert_type(cj.export_wsolevaluation("wsol/", ["a.jpg"], maps), list[Path])


def errors() -> None:
    try:
        cj.ConceptVocabulary.physical_objects().resolve(["circel"])
    except cj.ConceptError as err:
        assert_type(err, cj.ConceptError)
    assert issubclass(cj.InputError, ValueError) and issubclass(cj.ConceptError, KeyError)
    for error in (cj.InputError, cj.ModelLoadError, cj.ConceptError, cj.CacheError):
        assert issubclass(error, cj.ConvisError)
