"""Text tokenizers: CLIP's (transformers' `CLIPTokenizer`, token ids padded into length
buckets) and SigLIP's (the folder's own tokenizer, padded to the maximum length)."""

from __future__ import annotations

import gzip
import html
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from convis_jax.errors import InputError, ModelLoadError

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json")


def _bytes_to_unicode() -> dict[int, str]:
    """OpenAI CLIP's reversible map from bytes to printable unicode characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def bundled_vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's BPE vocabulary and merges, rebuilt from the packaged `bpe_simple_vocab_16e6.txt.gz`.

    The construction is OpenAI CLIP's `SimpleTokenizer`: 256 byte characters,
    the same with the end-of-word mark, one token per merge, then the two
    special tokens: 49,408 tokens.
    """
    data = resources.files("convis_jax") / "data" / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.decompress(data.read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]
    base = list(_bytes_to_unicode().values())
    tokens = base + [b + "</w>" for b in base] + ["".join(m) for m in merges] + [BOS, EOS]
    return {token: i for i, token in enumerate(tokens)}, merges


def load_tokenizer(folder: Path | None):
    """transformers' CLIPTokenizer from `folder`, or CLIP's own vocabulary when it has none."""
    from transformers import CLIPTokenizer

    if folder is not None and any((Path(folder) / f).is_file() for f in _TOKENIZER_FILES):
        try:
            return CLIPTokenizer.from_pretrained(str(folder))
        except Exception as err:
            raise ModelLoadError(f"cannot load the tokenizer in {folder}: {err}") from None
    # transformers 5: CLIPTokenizer(vocab_file=..., merges_file=...) silently builds a
    # broken tokenizer; the in-memory vocab and merges are the reliable route.
    vocab, merges = bundled_vocabulary()
    return CLIPTokenizer(vocab=vocab, merges=merges)


@dataclass(frozen=True)
class TokenBatch:
    """Token ids of a batch of texts, padded to a common bucket length.

    Attributes:
        input_ids: int32 [N, L], each row BOS ... EOS then padding.
        lengths: int32 [N], tokens before padding.
        truncated: how many texts were cut to the context length.
    """

    input_ids: np.ndarray
    lengths: np.ndarray
    truncated: int


def open_clip_clean(text: str) -> str:
    """OpenCLIP's (and OpenAI CLIP's) `basic_clean` beyond what CLIPTokenizer does: HTML
    entities unescaped twice, then stripped ("&amp;amp;" -> "&")."""
    return html.unescape(html.unescape(text)).strip()


def tokenize(tokenizer, texts: list[str], context_length: int, eos_token_id: int,
             pad_token_id: int, buckets: tuple[int, ...] = (16, 32, 48, 64),
             clean=None) -> TokenBatch:
    """Tokenises `texts`, truncating to `context_length` (the last token stays EOS).

    `clean` (str -> str, e.g. `open_clip_clean`) is applied to every text first.

    The padded length is the smallest bucket (or the context length) that
    fits the longest text, so that batches share a few static shapes. Since
    the text tower is causal and pools at the first EOS, padding after it
    does not change the embedding.

    Raises:
        InputError: `texts` is empty or holds something other than strings.
    """
    texts = _check_texts(texts)
    if clean is not None:
        texts = [clean(t) for t in texts]
    encoded = tokenizer(texts, add_special_tokens=True)["input_ids"]
    truncated = 0
    rows = []
    for ids in encoded:
        if len(ids) > context_length:
            ids = list(ids[: context_length - 1]) + [eos_token_id]
            truncated += 1
        rows.append(ids)
    if truncated:
        warnings.warn(f"{truncated} of {len(texts)} text(s) were longer than the context length "
                      f"of {context_length} tokens and were truncated", stacklevel=3)
    longest = max(len(r) for r in rows)
    length = next((b for b in buckets if longest <= b <= context_length), context_length)
    input_ids = np.full((len(rows), length), pad_token_id, np.int32)
    for i, ids in enumerate(rows):
        input_ids[i, : len(ids)] = ids
    return TokenBatch(input_ids, np.array([len(r) for r in rows], np.int32), truncated)


def _check_texts(texts) -> list[str]:
    """`texts` as a non-empty list of str (one str becomes a list of one)."""
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise InputError("expected at least one text, found an empty list")
    bad = [t for t in texts if not isinstance(t, str)]
    if bad:
        raise InputError(f"expected texts as str, found {type(bad[0]).__name__}: {bad[0]!r}")
    return texts


def load_folder_tokenizer(folder: Path):
    """The tokenizer a checkpoint folder ships (transformers' AutoTokenizer), e.g. SigLIP's.

    Raises:
        ModelLoadError: the folder has no tokenizer files, or transformers cannot load
            them (SigLIP's `spiece.model` needs the sentencepiece package).
    """
    from transformers import AutoTokenizer

    folder = Path(folder)
    names = ("tokenizer.json", "tokenizer_config.json", "spiece.model")
    if not any((folder / name).is_file() for name in names):
        raise ModelLoadError(f"no tokenizer in {folder}: expected one of {', '.join(names)}")
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except Exception as err:  # ImportError (sentencepiece), ValueError, OSError ...
        hint = " (SigLIP's tokenizer needs `pip install sentencepiece`)" \
            if "sentencepiece" in str(err).lower() or (folder / "spiece.model").is_file() else ""
        raise ModelLoadError(f"cannot load the tokenizer in {folder}{hint}: "
                             f"{type(err).__name__}: {str(err)[:300]}") from None


def tokenize_max_length(tokenizer, texts: list[str], length: int) -> TokenBatch:
    """Token ids of `texts` padded to exactly `length`, as SigLIP was trained.

    SigLIP's text tower has no attention mask and pools the LAST position, so the
    padding is part of the input: every row is padded (with the tokenizer's pad
    token) or truncated (by the tokenizer's own rule) to `length`, and `lengths`
    is `length` for every row.

    Args:
        tokenizer: a transformers tokenizer (`load_folder_tokenizer`).
        texts: the texts.
        length: the text tower's context length (`max_position_embeddings`).

    Returns:
        The batch; `truncated` counts texts longer than `length` tokens (warned about).

    Raises:
        InputError: `texts` is empty or holds something other than strings.
    """
    texts = _check_texts(texts)
    if tokenizer.pad_token_id is None:
        raise ModelLoadError("the tokenizer has no pad token; SigLIP pads every text to its "
                             "maximum length with it")
    natural = tokenizer(texts)["input_ids"]
    truncated = sum(len(ids) > length for ids in natural)
    if truncated:
        warnings.warn(f"{truncated} of {len(texts)} text(s) were longer than the context length "
                      f"of {length} tokens and were truncated", stacklevel=3)
    ids = tokenizer(texts, padding="max_length", max_length=length, truncation=True)["input_ids"]
    input_ids = np.asarray(ids, np.int32)
    if input_ids.shape != (len(texts), length):
        raise ModelLoadError(f"the tokenizer returned ids of shape {list(input_ids.shape)}, "
                             f"expected [{len(texts)}, {length}]")
    return TokenBatch(input_ids, np.full(len(texts), length, np.int32), truncated)
