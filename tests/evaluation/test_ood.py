"""convis_jax.evaluation.ood without a model: models are fakes. OOD scores are checked
against a plain loop and AUROC against a pairwise count."""

import zlib
from pathlib import Path

import numpy as np
import pytest

from convis_jax import evaluation
from convis_jax.core.vocabulary import ConceptVocabulary
from convis_jax.errors import ConceptError, InputError
from convis_jax.evaluation import datasets
from convis_jax.evaluation.datasets import OodPair
from convis_jax.evaluation.ood import auroc
from convis_jax.testing import write_imagenet_folder


def unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


class FakeModel:
    """Embeds texts and images as fixed random unit vectors; records what it embedded."""

    dim = 8

    def __init__(self):
        self.images, self.texts = [], []

    @staticmethod
    def vector(name: str) -> np.ndarray:
        return unit(np.random.default_rng(zlib.crc32(name.encode())).normal(size=FakeModel.dim))

    def embed_texts(self, texts):
        self.texts += texts
        return np.stack([self.vector("text:" + t) for t in texts]).astype(np.float32)

    def embed_images(self, paths, *, batch_size=32):
        assert len(paths) <= batch_size
        self.images += [Path(p).name for p in paths]
        return np.stack([self.vector("image:" + Path(p).name) for p in paths]).astype(np.float32)


@pytest.fixture(scope="module")
def wordnet():
    from convis_jax.core.wordnet import load_wordnet

    return load_wordnet()


def pairwise_auroc(pos, neg):
    total = 0.0
    for p in pos:
        for q in neg:
            total += 1.0 if p > q else 0.5 if p == q else 0.0
    return total / (len(pos) * len(neg))


def test_ood_concepts_and_scores_against_a_plain_loop(wordnet):
    vocab = ConceptVocabulary.from_synsets(
        ["brambling.n.01", "goldfinch.n.02", "beagle.n.01", "bird.n.01"], wordnet=wordnet)
    model = FakeModel()
    concepts = evaluation.ood_concepts(model, vocab, "bird.n.01")
    assert set(concepts.leaves) == {"brambling.n.01", "goldfinch.n.02"}
    # Only the ID synset and its leaves are embedded, with their definitions.
    assert model.texts == [vocab.definition(n) for n in ("bird.n.01", *concepts.leaves)]
    images = unit(np.random.default_rng(0).normal(size=(5, FakeModel.dim)))
    scores = evaluation.ood_scores(images, concepts)
    for n, v in enumerate(images):
        naive = sum(a * b for a, b in zip(v, concepts.id_embedding))
        assert scores.naive[n] == pytest.approx(naive)
        leaf_scores = [float(np.dot(v, t)) for t in concepts.leaf_embeddings]
        assert scores.hierarchy[n] == pytest.approx(max(leaf_scores))
    templated = FakeModel()
    lemma = evaluation.ood_concepts(templated, vocab, "beagle.n.01", text="a photo of a {}")
    assert lemma.leaves == ("beagle.n.01",)  # a leaf is its own single leaf
    assert templated.texts == ["a photo of a beagle", "a photo of a beagle"]
    with pytest.raises(ConceptError, match="chair.n.01"):
        evaluation.ood_concepts(model, vocab, "chair.n.01")
    with pytest.raises(InputError, match=r"\[N, 8\]"):
        evaluation.ood_scores(images[:, :4], concepts)


def test_run_ood_against_a_pairwise_count_and_resume(tmp_path, wordnet):
    records = datasets.read_imagenet_folders(write_imagenet_folder(tmp_path / "inet"), wordnet)
    pairs = (OodPair("bird.n.01", "hunting_dog.n.01"), OodPair("bird.n.01", "dog.n.01"),
             OodPair("spider.n.01", "butterfly.n.01"))
    vocab = ConceptVocabulary.from_synsets(
        sorted({r.synset for r in records} | {"bird.n.01", "hunting_dog.n.01"}), wordnet=wordnet)
    model = FakeModel()
    log_path = tmp_path / "ood.jsonl"
    run = evaluation.run_ood(model, vocab, records, pairs, evaluation.ResultLog(log_path, {"t": 1}),
                             batch_size=2, progress=False, wordnet=wordnet)
    # Each image of a pair embedded exactly once (dogs serve two pairs); chairs never.
    assert sorted(model.images) == sorted(
        r.path.name for r in records if r.wnid != "n03001627")
    assert [(p.id_synset, reason) for p, reason in run.skipped] == [("spider.n.01", "no ID images")]
    assert len(run.results) == 2

    concepts = evaluation.ood_concepts(FakeModel(), vocab, "bird.n.01")
    for result in run.results:
        assert len(result.id_images) == 5 and len(result.ood_images) == 4
        assert set(result.leaves) == {"brambling.n.01", "goldfinch.n.02"}
        # Scores of every image by hand, then AUROC by counting pairs.
        for side, keys, naive, hier in (("id", result.id_images, result.naive_id,
                                         result.hierarchy_id),
                                        ("ood", result.ood_images, result.naive_ood,
                                         result.hierarchy_ood)):
            for key, n_score, h_score in zip(keys, naive, hier):
                v = FakeModel.vector("image:" + key.split("/")[1])
                assert n_score == pytest.approx(float(v @ concepts.id_embedding), abs=1e-6)
                best_leaf = max(float(t @ v) for t in concepts.leaf_embeddings)
                assert h_score == pytest.approx(best_leaf, abs=1e-6)
        assert result.auroc_naive == pytest.approx(
            pairwise_auroc(result.naive_id, result.naive_ood))
        assert result.auroc_hierarchy == pytest.approx(
            pairwise_auroc(result.hierarchy_id, result.hierarchy_ood))
    report = evaluation.ood_report(run)
    assert [p["n_id"] for p in report["pairs"]] == [5, 5]
    assert report["skipped_pairs"][0]["reason"] == "no ID images"
    assert "skipped" in evaluation.format_ood_table(run)

    # A rerun embeds nothing and reports the same numbers.
    again_model = FakeModel()
    again = evaluation.run_ood(again_model, vocab, records, pairs,
                               evaluation.ResultLog(log_path, {"t": 1}), progress=False,
                               wordnet=wordnet)
    assert again_model.images == []
    assert [r.auroc_hierarchy for r in again.results] == [r.auroc_hierarchy for r in run.results]

    with pytest.raises(InputError, match="both sides"):
        evaluation.run_ood(model, vocab, records, pairs[2:],
                           evaluation.ResultLog(tmp_path / "none.jsonl", {}), progress=False,
                           wordnet=wordnet)


# ---------------------------------------------------------------------------
# AUROC


def test_auroc_equals_pairwise_count_with_ties():
    rng = np.random.default_rng(10)
    for n_pos, n_neg, levels in ((1, 1, 2), (5, 9, 3), (40, 23, 6), (100, 80, 1000)):
        pos = rng.integers(0, levels, n_pos) + 0.3 * rng.integers(0, 2)
        neg = rng.integers(0, levels, n_neg)
        assert auroc(pos, neg) == pytest.approx(pairwise_auroc(pos, neg), abs=1e-12)


def test_auroc_extremes():
    assert auroc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert auroc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert auroc([1.0, 1.0], [1.0]) == 0.5
    with pytest.raises(InputError, match="scores_ood"):
        auroc([1.0], [])
    with pytest.raises(InputError, match="finite"):
        auroc([np.nan], [1.0])

