"""Concept banks against transformers' PyTorch text tower, and their cache."""

import numpy as np
import pytest
import torch

from convis_jax.core.vocabulary import ConceptVocabulary
from convis_jax.kernels import bank as bank_module
from convis_jax.kernels.bank import build_bank, encode_texts_bucketed
from convis_jax.models.loading import load_clip


@pytest.fixture(scope="module")
def vocabulary():
    return ConceptVocabulary.from_words(["dog", "hot dog", "bird", "creme brulee", "abacus"])


@pytest.fixture()
def model(tiny_checkpoint, monkeypatch, tmp_path):
    monkeypatch.setenv("CONVIS_JAX_CACHE", str(tmp_path / "cache"))
    return load_clip(tiny_checkpoint[0])


def test_bank_equals_pytorch_text_features(model, vocabulary, tiny_checkpoint):
    torch_model = tiny_checkpoint[1]
    for mode in ("definition", "lemmas", "a photo of a {}"):
        bank = build_bank(model, vocabulary, text=mode, progress=False)
        texts = vocabulary.texts(mode)
        ids = model.tokenize(texts).input_ids
        with torch.no_grad():
            out = torch_model.get_text_features(input_ids=torch.from_numpy(ids.astype(np.int64)))
        want = getattr(out, "pooler_output", out)
        want = (want / want.norm(dim=-1, keepdim=True)).numpy()
        assert bank.embeddings.shape == (len(vocabulary), model.embedding_dim)
        assert np.abs(bank.embeddings - want).max() < 1e-5


def test_bucketed_equals_unbucketed(model, vocabulary):
    texts = vocabulary.texts("definition")
    bucketed = encode_texts_bucketed(model, texts, batch_size=4, progress=False)
    ids = model.tokenize(texts).input_ids
    full = np.full((len(texts), 77), model.tokenizer.pad_token_id, np.int32)
    full[:, : ids.shape[1]] = ids  # every text padded to the whole context
    unbucketed = model.encode_token_ids(full)
    assert np.abs(bucketed - unbucketed).max() < 1e-6


def test_second_build_reads_the_cache(model, vocabulary, monkeypatch):
    first = build_bank(model, vocabulary, progress=False)
    assert first.path is not None and first.path.is_file()

    def fail(*args, **kwargs):
        raise AssertionError("the cached bank should have been read")

    with monkeypatch.context() as patch:
        patch.setattr(bank_module, "encode_texts_bucketed", fail)
        second = build_bank(model, vocabulary, progress=False)
    np.testing.assert_array_equal(first.embeddings, second.embeddings)
    # Another text mode is another cache entry.
    other = build_bank(model, vocabulary, text="lemmas", progress=False)
    assert other.path != first.path


def test_unwritable_cache_warns_and_still_builds(tiny_checkpoint, vocabulary, monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CONVIS_JAX_CACHE", str(blocker / "cache"))
    model = load_clip(tiny_checkpoint[0])
    with pytest.warns(UserWarning, match="cannot write the concept-bank cache"):
        bank = build_bank(model, vocabulary, progress=False)
    assert bank.path is None and bank.embeddings.shape == (len(vocabulary), model.embedding_dim)
