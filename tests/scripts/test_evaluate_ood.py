"""scripts/evaluate_ood.py end to end on a tiny random CLIP.

Random weights make the numbers meaningless, so the test checks structure,
ranges and internal consistency: OOD scores equal cosines computed directly
with the model, AUROC a pairwise count, and a rerun does no work.
"""

import json

import numpy as np
import pytest

from convis_jax.core.vocabulary import ConceptVocabulary
from convis_jax.testing import write_cub_folder, write_imagenet_folder
from tests.scripts.helpers import load_script, read_log

OOD = load_script("evaluate_ood")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """An ImageNet-style folder, a CUB folder (not one) and a cache folder shared by the module."""
    root = tmp_path_factory.mktemp("eval_data")
    write_cub_folder(root / "cub")
    write_imagenet_folder(root / "inet")
    return root


@pytest.fixture(autouse=True)
def cache(data, monkeypatch):
    monkeypatch.setenv("CONVIS_JAX_CACHE", str(data / "cache"))


def test_ood_end_to_end(data, tiny_checkpoint, tmp_path, capsys):
    from convis_jax.models.loading import load_clip

    out = tmp_path / "ood.json"
    args = [str(data / "inet"), "--out", str(out), "--model", str(tiny_checkpoint[0]),
            "--vocabulary", "classes", "--batch-size", "3", "--quiet"]
    assert OOD.main(args) == 0
    assert "hunting_dog.n.01" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["vocabulary"]["source"] == "classes"
    (pair,) = doc["pairs"]  # of the paper's six, only bird / hunting dog has images
    assert (pair["id_synset"], pair["ood_synset"]) == ("bird.n.01", "hunting_dog.n.01")
    assert (pair["n_id"], pair["n_ood"]) == (5, 4)
    assert sorted(pair["leaves"]) == ["brambling.n.01", "goldfinch.n.02"]
    assert len(doc["skipped_pairs"]) == 5
    assert all(0.0 <= pair["auroc"][k] <= 1.0 for k in ("naive", "hierarchy"))

    # Per-image scores: cosines with the model's own embeddings; AUROC by counting pairs.
    records = read_log(out.with_name("ood.images.jsonl"))
    assert len(records) == 9 and not any(r["image"].startswith("n03001627") for r in records)
    model = load_clip(tiny_checkpoint[0])
    vocab = ConceptVocabulary.from_synsets(["bird.n.01", *pair["leaves"]])
    texts = model.embed_texts([vocab.definition(n) for n in ("bird.n.01", *pair["leaves"])])
    images = model.embed_images([data / "inet" / r["image"] for r in records])
    scores = {"id": [], "ood": []}
    for record, v in zip(records, images):
        entry = record["scores"]["bird.n.01/hunting_dog.n.01"]
        assert entry["naive"] == pytest.approx(float(v @ texts[0]), abs=1e-5)
        assert entry["hierarchy"] == pytest.approx(float((texts[1:] @ v).max()), abs=1e-5)
        scores[entry["side"]].append((entry["naive"], entry["hierarchy"]))
    for k, name in enumerate(("naive", "hierarchy")):
        pos = [s[k] for s in scores["id"]]
        neg = [s[k] for s in scores["ood"]]
        count = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
        assert pair["auroc"][name] == pytest.approx(count)

    # Rerun: nothing left to embed, same report.
    assert OOD.main(args) == 0
    assert json.loads(out.read_text())["pairs"] == doc["pairs"]


def test_user_mistakes_end_with_one_line(data, tiny_checkpoint, tmp_path, capsys):
    cases = [
        (OOD, [str(data / "inet"), "--out", str(tmp_path / "e.json"), "--pairs", "bird.n.01"],
         "--pairs"),
        (OOD, [str(data / "cub"), "--out", str(tmp_path / "f.json")], "WordNet id"),
        (OOD, [str(data / "inet"), "--out", str(tmp_path / "g.json"), "--model",
               str(tiny_checkpoint[0]), "--vocabulary", "classes", "--pairs",
               "spider.n.01/butterfly.n.01"], "both sides"),
    ]
    for script, args, message in cases:
        assert script.main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err, err
