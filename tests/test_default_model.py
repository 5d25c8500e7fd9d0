"""The bundled default model on a small held-out subset: PyTorch parity and issue 7's thresholds.

The figures come from `benchmarks/bench_default_model.py` (the benchmark
measures them on hundreds of scenes); here 30 single-object scenes check
zero-shot classification and 12 scenes (8 with one object, 4 with two or
three) the occlusion maps, which cost 730 window encodings each. The scenes
come from seeds the training never drew from. PyTorch's `CLIPModel`,
`CLIPTokenizer` and `CLIPImageProcessor`, loading the same folder, are the
independent reference for the shipped weights, tokenizer and preprocessing.
"""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from convis_jax.core.vocabulary import ConceptVocabulary
from convis_jax.scenes import DRAWN_CONCEPTS

_BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_default_model.py"
_FOLDER = Path(__file__).resolve().parents[1] / "convis_jax" / "data" / "default_model"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_default_model", _BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model():
    from convis_jax.models.loading import load_clip

    return load_clip(None)


@pytest.fixture(scope="module")
def convis(model):
    from convis_jax.api import ConVis

    return ConVis(model, progress=False)


@pytest.fixture(scope="module")
def scenes(bench):
    return bench.single_object_scenes(8), bench.multi_object_scenes(4)


@pytest.fixture(scope="module")
def maps(bench, convis, scenes):
    """Maps of the drawn synsets and the judged parents, for the 8 + 4 scenes."""
    concepts = list(DRAWN_CONCEPTS) + bench.parent_concepts(convis.vocabulary)
    single, multi = scenes
    return bench.scene_maps(convis, single, concepts), bench.scene_maps(convis, multi, concepts)


def test_folder_is_a_small_complete_clip_checkpoint():
    from transformers import CLIPTokenizer

    names = {"config.json", "model.safetensors", "preprocessor_config.json", "vocab.json",
             "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
             "convis_vocabulary.json", "README.md"}
    assert names <= {p.name for p in _FOLDER.iterdir()}
    assert sum(p.stat().st_size for p in _FOLDER.iterdir()) <= 15 * 2**20
    text = json.loads((_FOLDER / "config.json").read_text())["text_config"]
    tokenizer = CLIPTokenizer.from_pretrained(str(_FOLDER))
    assert text["eos_token_id"] == tokenizer.eos_token_id == 2999
    assert text["bos_token_id"] == tokenizer.bos_token_id == 2998
    assert text["pad_token_id"] == tokenizer.pad_token_id == 2999
    assert text["vocab_size"] == len(tokenizer) == 3000


def test_shipped_vocabulary_is_the_drawn_synsets_closed_upwards(model):
    shipped = json.loads(model.vocabulary_path.read_text())
    assert shipped == json.loads(json.dumps(ConceptVocabulary.from_synsets(DRAWN_CONCEPTS).to_dict()))
    vocabulary = ConceptVocabulary.from_dict(shipped)
    assert set(vocabulary.subtree("polygon.n.01")) >= {"triangle.n.01", "square.n.01", "hexagon.n.01"}


def test_load_clip_matches_pytorch(bench, model, scenes):
    vocabulary = ConceptVocabulary.from_synsets(DRAWN_CONCEPTS)
    texts = ["a circle", "A Greek cross!"] + [vocabulary.definition(n) for n in vocabulary.names]
    parity = bench.pytorch_parity(_FOLDER, model, scenes[0][:4] + scenes[1][:2], texts)
    assert parity["token_ids_equal"]
    assert parity["pixel_values"] < 1e-5
    assert parity["image_embeddings"] < 1e-5
    assert parity["text_embeddings"] < 1e-5


# The shipped model meets issue 7's thresholds on the benchmark's hundreds
# of scenes (benchmarks/results/default_model.json, README.md of the
# model). On these few scenes it reaches top-1 0.90, MaxBoxAcc 1.0,
# pointing 1.0, own-object peaks 0.82 and parent peaks 0.89: the first four
# are checked at the thresholds, parent peaks against a floor of
# 0.8, far above chance (random weights: top-1 1/12, peaks on the object
# about as often as it covers the image). A few scenes catch a model that
# has not learnt, not a small regression: the benchmark measures the figures.
TOP1, MAX_BOX_ACC, POINTING, OWN_OBJECT = 0.9, 0.8, 0.9, 0.8  # issue 7


@pytest.fixture(scope="module")
def figures(bench, model, convis, scenes, maps):
    parents = bench.parent_concepts(convis.vocabulary)
    hits = [bench.parent_peaks(m, s, convis.vocabulary, parents) for m, s in zip(maps, scenes)]
    return {
        "top1": bench.zero_shot_top1(model, bench.single_object_scenes(30)),
        "single": bench.single_object_localisation(maps[0], scenes[0]),
        "multi": bench.own_object_peaks(maps[1], scenes[1]),
        "parents": sum(h["rate"] * h["n"] for h in hits) / sum(h["n"] for h in hits),
        "parent_pairs": sum(h["n"] for h in hits),
    }


def test_zero_shot_classification_beats_chance(figures):
    assert figures["top1"]["top1"] >= TOP1, figures["top1"]["errors"]


def test_single_object_maps_find_the_object(figures):
    assert figures["single"]["max_box_acc"] >= MAX_BOX_ACC, figures["single"]
    assert figures["single"]["pointing_game"] >= POINTING, figures["single"]


def test_multi_object_maps_peak_on_their_own_object(figures):
    assert figures["multi"]["n"] >= 8
    assert figures["multi"]["own_object"] >= OWN_OBJECT, figures["multi"]


def test_parent_maps_peak_on_a_present_descendant(bench, convis, figures):
    assert {"polygon.n.01", "plane_figure.n.01"} <= set(bench.parent_concepts(convis.vocabulary))
    assert figures["parent_pairs"] >= 8
    assert figures["parents"] >= 0.8, figures["parents"]


def test_maps_tell_objects_apart(scenes, maps):
    """A concept absent from a single-object scene does not peak on the object as often.

    Guards against maps that only find "something" (a model blind to what
    the object is would pass the pointing game for every concept).
    """
    single, cell_maps = scenes[0], maps[0]
    own, other = [], []
    for n, scene in enumerate(single):
        mask = scene.masks[0]
        for k, name in enumerate(cell_maps.concepts[: len(DRAWN_CONCEPTS)]):
            peak = cell_maps.maps[n, k] == cell_maps.maps[n, k].max()
            (own if name == scene.concepts[0] else other).append((peak & mask).sum() / peak.sum())
    assert np.mean(own) > np.mean(other) + 0.2, (np.mean(own), np.mean(other))
