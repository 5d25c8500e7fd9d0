"""Concept banks: the unit text embeddings of every concept of a vocabulary, cached on disk."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from convis_jax.core.batches import pad_to_multiple
from convis_jax.core.cache import cache_root, load_arrays, save_arrays


@dataclass(frozen=True)
class ConceptBank:
    """Unit CLIP text embeddings of a vocabulary's concepts.

    Attributes:
        embeddings: float32 [T, d], row i embeds `vocabulary.names[i]`.
        vocabulary: the `ConceptVocabulary` it embeds.
        text: the text mode ("definition", "lemmas" or a template with "{}").
        path: the cache file it was read from or written to (None when not cached).
    """

    embeddings: np.ndarray = field(repr=False)
    vocabulary: object = field(repr=False)
    text: str
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.embeddings)


def bank_cache_path(model, vocabulary, text: str) -> Path:
    """The cache file of (model weights, vocabulary, text mode)."""
    text_key = hashlib.sha256(text.encode()).hexdigest()[:12]
    name = f"{model.fingerprint}-{vocabulary.fingerprint()[:16]}-{text_key}.npz"
    return cache_root() / "banks" / name


def build_bank(model, vocabulary, *, text: str = "definition", cache: bool = True,
               batch_size: int = 64, progress: bool = True) -> ConceptBank:
    """Embeds every concept's text with the model's text tower, reusing the disk cache.

    Texts are sorted by token length and encoded in fixed-size batches padded
    to a few bucket lengths, so the jitted text tower compiles once per
    bucket and short glosses do not pay for 77 tokens.

    Args:
        model: a `ClipModel`.
        vocabulary: a `ConceptVocabulary`.
        text: "definition" (the WordNet gloss, the paper's choice), "lemmas", or a
            template such as "a photo of a {}".
        cache: read and write the cache under `cache_root()/banks`.
        batch_size: texts per compiled batch.
        progress: show a progress bar.

    Returns:
        The bank; a damaged cache file is rebuilt with a warning.
    """
    texts = vocabulary.texts(text)
    path = bank_cache_path(model, vocabulary, text) if cache else None
    if path is not None:
        arrays = load_arrays(path)
        if arrays is not None and arrays["embeddings"].shape == (len(texts), model.embedding_dim):
            return ConceptBank(arrays["embeddings"], vocabulary, text, path)
    embeddings = encode_texts_bucketed(model, texts, batch_size=batch_size, progress=progress)
    if path is not None:
        try:
            save_arrays(path, {"embeddings": embeddings})
        except OSError as err:  # a read-only or misplaced cache must not stop the work
            warnings.warn(f"cannot write the concept-bank cache {path} ({err}); continuing "
                          f"without it", stacklevel=2)
            path = None
    return ConceptBank(embeddings, vocabulary, text, path)


def encode_texts_bucketed(model, texts: list[str], *, batch_size: int = 64,
                          progress: bool = True) -> np.ndarray:
    """Unit embeddings [len(texts), d] of `texts`, encoded in length-sorted batches."""
    batch = model.tokenize(texts)
    order = np.argsort(batch.lengths, kind="stable")
    out = np.empty((len(texts), model.embedding_dim), np.float32)
    bar = tqdm(total=len(texts), desc="concept bank", unit="text", disable=not progress)
    for start in range(0, len(texts), batch_size):
        rows = order[start:start + batch_size]
        longest = int(batch.lengths[rows].max())
        ids = batch.input_ids[rows]
        # Cut the padding to the batch's own bucket; positions after EOS never matter.
        length = next((b for b in (16, 32, 48, 64) if longest <= b), ids.shape[1])
        ids = ids[:, :length]
        ids, _ = pad_to_multiple(ids, batch_size)
        out[rows] = model.encode_token_ids(ids)[: len(rows)]
        bar.update(len(rows))
    bar.close()
    return out
