"""Tests of the concept explorer's data: quantisation, the written page, its size."""

import base64
import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from convis_jax.errors import ConceptError, InputError
from convis_jax.pictures.explorer import (
    DATA_FOLDER,
    ExplorerImage,
    ExplorerVocabulary,
    quantise_cells,
    write_explorer,
)

# physical_objects (docs/method.md, section 1): 7,080 synsets and 7,314 edges.
PHYSICAL_OBJECTS_CONCEPTS = 7080
PHYSICAL_OBJECTS_EDGES = 7314
PAGE_BUDGET_BYTES = 10 * 1024 * 1024


def _tiny_vocabulary():
    """Five synsets; `dog` has two parents, so the hierarchy is a DAG, not a tree."""
    return ExplorerVocabulary(
        names=("entity.n.01", "animal.n.01", "pet.n.01", "dog.n.01", "cat.n.01"),
        definitions=(
            "that which is perceived to have its own distinct existence",
            "a living organism characterized by voluntary movement",
            "a domesticated animal kept for companionship or amusement",
            "a member of the genus Canis",
            "feline mammal usually having thick soft fur",
        ),
        lemmas=(("entity",), ("animal", "animate_being"), ("pet",), ("dog", "domestic_dog"), ("cat", "true_cat")),
        edges=(
            ("entity.n.01", "animal.n.01"),
            ("entity.n.01", "pet.n.01"),
            ("animal.n.01", "dog.n.01"),
            ("pet.n.01", "dog.n.01"),
            ("animal.n.01", "cat.n.01"),
        ),
    )


def _image(name, concepts, seed, size=32, cells=4):
    rng = np.random.default_rng(seed)
    flat = rng.uniform(-0.1, 0.4, concepts).astype(np.float32)
    return ExplorerImage(
        name=name,
        image=rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        cells=rng.uniform(0.0, 1.0, (concepts, cells, cells)).astype(np.float32),
        flat=flat,
        hierarchical=flat + np.float32(0.05),
    )


def _script_json(page, element_id):
    match = re.search(rf'<script type="application/json" id="{element_id}">(.*?)</script>', page, re.S)
    assert match, f"no <script id={element_id}> in the page"
    return json.loads(match.group(1))


def _decode_payload(payload, concepts):
    cells = np.frombuffer(base64.b64decode(payload["cells"]), dtype=np.uint8)
    header, png = payload["image"].split(",", 1)
    assert header == "data:image/png;base64"
    return {
        "cells": cells.reshape(concepts, payload["cy"], payload["cx"]),
        "flat": np.frombuffer(base64.b64decode(payload["flat"]), dtype="<f4"),
        "hierarchical": np.frombuffer(base64.b64decode(payload["hierarchical"]), dtype="<f4"),
        "image": np.asarray(Image.open(io.BytesIO(base64.b64decode(png))).convert("RGB")),
    }


def dequantise_cells(quantised):
    """How the page reads the levels back (explorer.js): level k is k / 255."""
    return (np.asarray(quantised).astype(np.float64) / 255.0).astype(np.float32)


def test_quantise_round_trip_is_the_nearest_level_within_half_a_step():
    rng = np.random.default_rng(0)
    levels = np.arange(256) / 255.0
    # Random values, the levels themselves and the midpoints between them.
    values = np.concatenate([rng.uniform(0, 1, 20000), levels, (levels[:-1] + levels[1:]) / 2]).astype(np.float32)
    quantised = quantise_cells(values)
    restored = dequantise_cells(quantised)
    assert quantised.dtype == np.uint8 and restored.dtype == np.float32
    error = np.abs(restored.astype(np.float64) - values.astype(np.float64))
    # 1/510 is half a step; 1e-7 covers float32 storage of the two values.
    assert error.max() <= 1 / 510 + 1e-7
    assert error.max() > 1 / 510 - 1e-4  # the midpoints reach the bound
    # Independent reference: the closest of the 256 levels, by brute force.
    nearest = np.abs(values.astype(np.float64)[:, None] - levels[None, :]).min(axis=1)
    assert np.all(error <= nearest + 1e-7)
    np.testing.assert_array_equal(quantise_cells(np.array([0.0, 1.0])), [0, 255])


@pytest.mark.parametrize("bad", [np.nan, -0.01, 1.01, np.inf])
def test_quantise_rejects_values_outside_the_unit_interval(bad):
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        quantise_cells(np.array([[0.5, bad]]))


def test_page_holds_every_image_and_the_vocabulary_exactly(tmp_path):
    vocabulary = _tiny_vocabulary()
    images = [_image("first.jpg", 5, seed=1), _image("second.jpg", 5, seed=2)]
    path = write_explorer(tmp_path / "out", images, vocabulary, note="tiny test")

    assert path == tmp_path / "out" / "index.html"
    page = path.read_text(encoding="utf-8")
    meta = _script_json(page, "convis-meta")
    assert meta["names"] == list(vocabulary.names)
    assert meta["definitions"] == list(vocabulary.definitions)
    assert meta["lemmas"] == [list(lemmas) for lemmas in vocabulary.lemmas]
    edges = np.array(meta["edges"]).reshape(-1, 2)
    assert [(meta["names"][p], meta["names"][c]) for p, c in edges] == list(vocabulary.edges)
    assert [entry["name"] for entry in meta["images"]] == ["first.jpg", "second.jpg"]
    assert meta["note"] == "tiny test"
    for index, image in enumerate(images):
        decoded = _decode_payload(_script_json(page, f"convis-image-{index}"), 5)
        np.testing.assert_array_equal(decoded["cells"], np.rint(image.cells.astype(np.float64) * 255))
        np.testing.assert_array_equal(decoded["flat"], image.flat)
        np.testing.assert_array_equal(decoded["hierarchical"], image.hierarchical)
        np.testing.assert_array_equal(decoded["image"], image.image)
    # Self-contained: the script and style are inlined, nothing is fetched.
    assert "{{" not in page
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"(?!data:)", page)
    assert "convisExplorerReceive" in page and ".ranking-list" in page


def test_data_files_are_scripts_beside_the_page(tmp_path):
    images = [_image("a", 5, seed=3), _image("b", 5, seed=4)]
    path = write_explorer(tmp_path, images, _tiny_vocabulary(), single_file=False)

    page = path.read_text(encoding="utf-8")
    assert 'id="convis-image-' not in page
    meta = _script_json(page, "convis-meta")
    for index, (entry, image) in enumerate(zip(meta["images"], images)):
        assert entry["script"] == f"{DATA_FOLDER}/image-{index:04d}.js"
        script = (tmp_path / entry["script"]).read_text(encoding="utf-8")
        prefix = f"window.convisExplorerReceive({index}, "
        assert script.startswith(prefix) and script.endswith(");\n")
        decoded = _decode_payload(json.loads(script[len(prefix) : -3]), 5)
        np.testing.assert_array_equal(decoded["flat"], image.flat)


def test_text_from_the_vocabulary_cannot_close_the_script_element(tmp_path):
    vocabulary = _tiny_vocabulary()
    hostile = "</script><script>alert(1)</script> {{JS}} & <b>"
    vocabulary = ExplorerVocabulary(
        vocabulary.names, (hostile,) + vocabulary.definitions[1:], vocabulary.lemmas, vocabulary.edges
    )
    page = write_explorer(tmp_path, [_image("x", 5, seed=5)], vocabulary, title="A <title> & more").read_text()

    assert "alert(1)" in page  # present, but only as JSON escapes
    assert "<script>alert" not in page
    assert _script_json(page, "convis-meta")["definitions"][0] == hostile
    assert "<title>A &lt;title&gt; &amp; more</title>" in page


def test_vocabulary_from_a_mapping_accepts_positions_and_joined_lemmas():
    vocabulary = ExplorerVocabulary.from_mapping(
        {
            "names": ["entity.n.01", "dog.n.01"],
            "definitions": ["everything", "a dog"],
            "lemmas": ["entity", ["dog", "domestic_dog"]],
            "edges": [(0, 1)],
        }
    )
    assert vocabulary.lemmas == (("entity",), ("dog", "domestic_dog"))
    assert vocabulary.edges == (("entity.n.01", "dog.n.01"),)
    with pytest.raises(InputError, match=r"edge position must lie in \[0, 2\); found 2"):
        ExplorerVocabulary.from_mapping({"names": ["a.n.01", "b.n.01"], "definitions": ["", ""],
                                         "lemmas": ["a", "b"], "edges": [(0, 2)]})
    with pytest.raises(InputError, match="missing \\['edges'\\]"):
        ExplorerVocabulary.from_mapping({"names": [], "definitions": [], "lemmas": []})


def _with(vocabulary, **changes):
    fields = {name: getattr(vocabulary, name) for name in ("names", "definitions", "lemmas", "edges")}
    return ExplorerVocabulary(**(fields | changes))


@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(edges=(("entity.n.01", "bird.n.01"),)), ConceptError, "bird.n.01"),
        (dict(edges=(("dog.n.01", "animal.n.01"), ("animal.n.01", "dog.n.01"))), InputError, "cycle"),
        (dict(edges=(("dog.n.01", "dog.n.01"),)), InputError, "its own parent"),
        (dict(names=("entity.n.01",) * 5), InputError, "unique"),
        (dict(definitions=("one",)), InputError, "5 names but 1 definitions"),
    ],
)
def test_malformed_vocabularies_are_refused(tmp_path, change, error, message):
    with pytest.raises(error, match=message):
        write_explorer(tmp_path, [_image("x", 5, seed=6)], _with(_tiny_vocabulary(), **change))


def test_malformed_images_are_refused(tmp_path):
    vocabulary = _tiny_vocabulary()
    good = _image("x", 5, seed=7)

    def replaced(**changes):
        fields = {name: getattr(good, name) for name in ("name", "image", "cells", "flat", "hierarchical")}
        return ExplorerImage(**(fields | changes))

    cases = [
        ([replaced(cells=good.cells[:4])], r"\[K=5, cy, cx\]"),
        ([replaced(image=good.image[:, :20])], r"uint8 \[S, S, 3\]"),
        ([replaced(image=good.image.astype(np.float32))], r"uint8 \[S, S, 3\]"),
        ([replaced(flat=good.flat[:3])], r"flat must be \[K=5\]"),
        ([replaced(hierarchical=np.full(5, np.nan, np.float32))], "finite"),
        ([replaced(cells=good.cells * 2)], r"image 'x': cells must be finite values in \[0, 1\]"),
        ([replaced(cells=np.full((5, 4, 4), np.nan, np.float32))], "finite values"),
        ([good, good], "unique"),
        ([], "at least one image"),
    ]
    for images, message in cases:
        with pytest.raises(InputError, match=message):
            write_explorer(tmp_path, images, vocabulary)


def _physical_objects_sized_vocabulary(seed):
    """A random DAG with physical_objects' 7,080 concepts and 7,314 edges.

    Text lengths are above WordNet's noun averages (glosses 69 characters,
    synset names 15, joined lemmas 21), so the page is not smaller than the
    real one.
    """
    rng = np.random.default_rng(seed)
    count = PHYSICAL_OBJECTS_CONCEPTS
    names = ["entity.n.01"] + [f"synthetic_concept_{k}.n.01" for k in range(1, count)]
    # A random tree (every node below one earlier node), then extra edges
    # from earlier to later nodes: still acyclic, some nodes get two parents.
    edges = {(int(rng.integers(0, k)), k) for k in range(1, count)}
    while len(edges) < PHYSICAL_OBJECTS_EDGES:
        child = int(rng.integers(2, count))
        edges.add((int(rng.integers(0, child)), child))
    return ExplorerVocabulary(
        names=tuple(names),
        definitions=tuple(f"definition {k}: " + "x" * 105 for k in range(count)),
        lemmas=tuple((f"lemma_{k}", f"other_lemma_{k}", f"third_{k}") for k in range(count)),
        edges=tuple((names[p], names[c]) for p, c in sorted(edges)),
    )


def test_a_physical_objects_page_of_one_image_is_under_ten_megabytes(tmp_path):
    vocabulary = _physical_objects_sized_vocabulary(seed=8)
    # Noise is the worst case for the PNG; the cells are stored uncompressed.
    image = _image("photo.jpg", PHYSICAL_OBJECTS_CONCEPTS, seed=9, size=224, cells=14)
    path = write_explorer(tmp_path, [image], vocabulary)

    size = path.stat().st_size
    cells_base64 = 4 * -(-PHYSICAL_OBJECTS_CONCEPTS * 14 * 14 // 3)
    assert cells_base64 < size < PAGE_BUDGET_BYTES, f"page is {size / 2**20:.2f} MiB"
    meta = _script_json(path.read_text(encoding="utf-8"), "convis-meta")
    assert len(meta["names"]) == PHYSICAL_OBJECTS_CONCEPTS
    assert len(meta["edges"]) == 2 * PHYSICAL_OBJECTS_EDGES
