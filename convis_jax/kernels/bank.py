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
from convis_jax.errors import InputError, ModelLoadError, warn

# Bumped whenever the way a bank is computed changes (tokenisation, truncation, pooling),
# so that banks written by older code are never read back.
BANK_FORMAT = 2


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


def bank_cache_path(model, vocabulary, text: str, texts: list[str] | None = None) -> Path:
    """The cache file of a bank, named by everything that changes its content.

    The key covers the weights' hash, the tokenizer files' hash, the dtype, the whole
    architecture config (end-of-text id, activations, context length, ...), the
    vocabulary (names and edges), the exact texts encoded (so the text mode and the
    definitions), and `BANK_FORMAT` (the code's version).

    Args:
        model: a loaded model (`ClipModel`, `SiglipModel`) or an `Encoder` with a fingerprint.
        vocabulary: a `ConceptVocabulary`.
        text: the text mode.
        texts: `vocabulary.texts(text)`, when already computed.
    """
    texts = vocabulary.texts(text) if texts is None else texts
    content = hashlib.sha256()
    # A bare Encoder has no config or dtype of ours: its fingerprint stands for them.
    for part in (f"format {BANK_FORMAT}", str(getattr(model, "tokenizer_fingerprint", "")),
                 _dtype_name(getattr(model, "dtype", "encoder")),
                 repr(getattr(model, "config", type(model).__name__)), text, *texts):
        content.update(part.encode("utf-8", "surrogatepass") + b"\0")
    name = f"{model.fingerprint}-{vocabulary.fingerprint()[:16]}-{content.hexdigest()[:16]}.npz"
    return cache_root() / "banks" / name


def _dtype_name(dtype) -> str:
    """"float32" or "bfloat16" from a NumPy/JAX dtype or its name."""
    return dtype if isinstance(dtype, str) else np.dtype(dtype).name


def cached_bank(model, vocabulary, text: str) -> np.ndarray | None:
    """The cached embeddings of (model, vocabulary, text) when a usable entry exists, else None.

    `model` needs only what `bank_cache_path` reads (fingerprint, tokenizer_fingerprint,
    dtype, config), so a caller can look a bank up without loading the weights. Nothing
    is warned about or rebuilt here; `build_bank` does that.
    """
    texts = vocabulary.texts(text)
    path = bank_cache_path(model, vocabulary, text, texts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arrays = load_arrays(path)
        usable = _usable(arrays, path, (len(texts), model.config.projection_dim))
    return arrays["embeddings"] if usable else None


def _usable(arrays: dict | None, path: Path, shape: tuple[int, int]) -> bool:
    """Whether a cache entry holds a finite float32 `embeddings` array of `shape`."""
    if arrays is None:
        return False
    embeddings = arrays.get("embeddings")
    if (isinstance(embeddings, np.ndarray) and embeddings.shape == shape
            and embeddings.dtype == np.float32 and np.isfinite(embeddings).all()):
        return True
    found = ("no 'embeddings' array" if embeddings is None else
             f"embeddings {embeddings.dtype}{list(embeddings.shape)}"
             + ("" if embeddings.dtype.kind != "f" or np.isfinite(embeddings).all()
                else " with non-finite values"))
    warn(f"concept-bank cache {path} holds {found}, expected finite float32"
         f"{list(shape)}; rebuilding it")
    return False


def build_bank(model, vocabulary, *, text: str = "definition", cache: bool = True,
               batch_size: int = 64, progress: bool = True) -> ConceptBank:
    """Embeds every concept's text with the model's text tower, reusing the disk cache.

    Texts are sorted by token length and encoded in fixed-size batches padded
    to a few bucket lengths, so the jitted text tower compiles once per
    bucket and short glosses do not pay for 77 tokens.

    Args:
        model: a loaded model (`ClipModel`, `SiglipModel`), or an `Encoder`, whose
            `embed_texts` embeds the texts (in batches of `batch_size`; cached only when
            it has a fingerprint).
        vocabulary: a `ConceptVocabulary`.
        text: "definition" (the WordNet gloss, the paper's choice), "lemmas", or a
            template such as "a photo of a {}".
        cache: read and write the cache under `cache_root()/banks`.
        batch_size: texts per compiled batch.
        progress: show a progress bar.

    Returns:
        The bank; a damaged or unexpected cache file is rebuilt with a warning.

    Raises:
        ModelLoadError: the text tower gives non-finite embeddings (weights holding NaN
            or inf, or overflow); nothing is cached then.
        InputError: an Encoder's embed_texts gave no finite [T, d] array.
    """
    from convis_jax.models.encoder import Encoder

    texts = vocabulary.texts(text)
    cache = cache and getattr(model, "fingerprint", None) is not None
    path = bank_cache_path(model, vocabulary, text, texts) if cache else None
    if path is not None:
        arrays = load_arrays(path)
        if _usable(arrays, path, (len(texts), model.embedding_dim)):
            return ConceptBank(arrays["embeddings"], vocabulary, text, path)
    if isinstance(model, Encoder):
        embeddings = embed_texts_in_batches(model, texts, batch_size=batch_size,
                                            progress=progress)
    else:
        embeddings = encode_texts_bucketed(model, texts, batch_size=batch_size,
                                           progress=progress)
    bad = np.flatnonzero(~np.isfinite(embeddings).all(axis=1))
    if len(bad):
        raise ModelLoadError(
            f"{model.name}: the text tower gives non-finite embeddings for {len(bad)} of "
            f"{len(texts)} concept texts (first: {vocabulary.names[bad[0]]}); its weights hold "
            f"NaN or inf, or {np.dtype(getattr(model, 'dtype', np.float32)).name} overflows")
    if path is not None:
        try:
            save_arrays(path, {"embeddings": embeddings})
        except OSError as err:  # a read-only or misplaced cache must not stop the work
            warn(f"cannot write the concept-bank cache {path} ({err}); continuing "
                 f"without it")
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


def embed_texts_in_batches(encoder, texts: list[str], *, batch_size: int = 64,
                           progress: bool = True) -> np.ndarray:
    """An `Encoder`'s `embed_texts` over `texts` in batches: float32 [len(texts), d].

    Raises:
        InputError: a batch that is not a finite [batch, d] array (d = encoder.embedding_dim).
    """
    d = encoder.embedding_dim
    out = np.empty((len(texts), d), np.float32)
    for start in tqdm(range(0, len(texts), batch_size), desc="concept bank", unit="batch",
                      disable=not progress):
        part = texts[start:start + batch_size]
        rows = np.asarray(encoder.embed_texts(part), np.float32)
        if rows.shape != (len(part), d) or not np.isfinite(rows).all():
            raise InputError(f"{encoder.name}: embed_texts must give finite unit embeddings "
                             f"[{len(part)}, {d}] for {len(part)} texts, found shape "
                             f"{list(rows.shape)}")
        out[start:start + len(part)] = rows
    return out
