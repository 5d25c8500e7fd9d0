"""The scene generator (`convis_jax.scenes.render`) against its own ground truth and WordNet."""

import numpy as np
import pytest

from convis_jax import scenes
from convis_jax.core.wordnet import load_wordnet
from convis_jax.errors import ConceptError, InputError


def _assert_same_scene(a, b):
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert a.concepts == b.concepts
    assert a.captions == b.captions


def _tight_box(mask):
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])


@pytest.fixture(scope="module")
def dataset():
    return scenes.make_dataset(7, 40, size=80)


def test_same_seed_gives_identical_scenes_whatever_the_global_rng():
    np.random.seed(1)
    first = scenes.make_dataset(3, 6)
    np.random.seed(2)
    second = scenes.make_dataset(3, 6)
    for a, b in zip(first, second, strict=True):
        _assert_same_scene(a, b)
    _assert_same_scene(scenes.render_scene(11), scenes.render_scene(np.random.default_rng(11)))


def test_another_seed_gives_other_scenes():
    first = scenes.make_dataset(3, 6)
    other = scenes.make_dataset(4, 6)
    for a, b in zip(first, other, strict=True):
        assert not np.array_equal(a.image, b.image)
    # Scenes within one dataset differ from each other too.
    assert len({scene.image.tobytes() for scene in first}) == len(first)


def test_a_longer_dataset_extends_a_shorter_one():
    short, long = scenes.make_dataset(5, 3), scenes.make_dataset(5, 7)
    for a, b in zip(short, long[:3], strict=True):
        _assert_same_scene(a, b)


def test_arrays_have_the_documented_shapes_and_types(dataset):
    for scene in dataset:
        n = len(scene.concepts)
        assert scene.image.shape == (80, 80, 3) and scene.image.dtype == np.uint8
        assert scene.boxes.shape == (n, 4)
        assert scene.masks.shape == (n, 80, 80) and scene.masks.dtype == bool


def test_masks_are_non_empty_disjoint_and_inside_their_boxes(dataset):
    for scene in dataset:
        assert scene.masks.sum(axis=(1, 2)).min() > 0
        # Visible pixels belong to one object at most.
        assert scene.masks.sum(axis=0).max() <= 1
        for mask, box in zip(scene.masks, scene.boxes, strict=True):
            x0, y0, x1, y1 = box
            assert 0 <= x0 < x1 <= 80 and 0 <= y0 < y1 <= 80
            inside = np.zeros_like(mask)
            inside[y0:y1, x0:x1] = True
            assert not np.any(mask & ~inside)
        # Nothing is drawn over the last object, so its box is tight.
        np.testing.assert_array_equal(scene.boxes[-1], _tight_box(scene.masks[-1]))


def test_mask_interiors_are_one_flat_colour(dataset):
    # Pixels whose whole 3 x 3 neighbourhood is visible are covered fully, so
    # they show the object's colour exactly, whatever the background.
    for scene in dataset:
        for mask in scene.masks:
            padded = np.pad(mask, 1)
            interior = np.ones_like(mask)
            for dy in range(3):
                for dx in range(3):
                    interior &= padded[dy : dy + 80, dx : dx + 80]
            colours, counts = np.unique(scene.image[interior], axis=0, return_counts=True)
            if counts.size:
                assert counts.max() >= 0.97 * counts.sum(), colours[:5]


def test_object_counts_cover_the_range_and_concepts_are_distinct(dataset):
    counts = [len(scene.concepts) for scene in dataset]
    assert set(counts) == {1, 2, 3}
    for scene in dataset:
        assert len(set(scene.concepts)) == len(scene.concepts)
        assert set(scene.concepts) <= set(scenes.DRAWN_CONCEPTS)
    drawn = {name for scene in dataset for name in scene.concepts}
    assert drawn == set(scenes.DRAWN_CONCEPTS)


@pytest.mark.parametrize("concept", scenes.DRAWN_CONCEPTS)
def test_every_concept_is_drawn_within_its_size(concept):
    for seed, fraction in [(0, 0.25), (1, 0.55), (2, 0.9)]:
        scene = scenes.render_scene(
            seed, size=64, n_objects=1, concepts=(concept,), size_range=(fraction, fraction)
        )
        assert scene.concepts == (concept,)
        x0, y0, x1, y1 = scene.boxes[0]
        longest = max(x1 - x0, y1 - y0)
        # The shape fits in a circle of the drawn diameter (+1 pixel of
        # centre jitter) and fills a good part of it.
        assert 0.45 * fraction * 64 <= longest <= fraction * 64 + 2


def test_captions_are_the_definitions_and_lemmas(dataset):
    wordnet = load_wordnet()
    for scene in dataset:
        synsets = [wordnet.synset(name) for name in scene.concepts]
        if len(synsets) == 1:
            assert scene.captions[0] == synsets[0].definition()
            lemmas = [lemma.replace("_", " ") for lemma in synsets[0].lemma_names()]
            assert [caption.split(" ", 1)[1] for caption in scene.captions[1:]] == lemmas
            assert all(c.split(" ", 1)[0] in ("a", "an") for c in scene.captions[1:])
        else:
            assert scene.captions[0] == ". ".join(s.definition() for s in synsets)
            for synset in synsets:
                assert synset.lemma_names()[0].replace("_", " ") in scene.captions[1]


def test_bad_arguments_raise_the_packages_errors():
    with pytest.raises(ConceptError, match="dog.n.01"):
        scenes.render_scene(0, concepts=("dog.n.01",))
    with pytest.raises(InputError, match="objects"):
        scenes.render_scene(0, n_objects=(2, 1))
    with pytest.raises(InputError, match="objects"):
        scenes.render_scene(0, n_objects=3, concepts=("circle.n.01", "ring.n.02"))
    with pytest.raises(InputError, match="seed"):
        scenes.render_scene("0")
    with pytest.raises(InputError, match="size"):
        scenes.render_scene(0, size=8)
    with pytest.raises(InputError, match="n"):
        scenes.make_dataset(0, -1)
