"""Text tokenizers: CLIP's (transformers' `CLIPTokenizer`, token ids padded into length
buckets) and SigLIP's (the folder's own tokenizer, padded to the maximum length)."""

from __future__ import annotations

import gzip
import hashlib
import html
import os
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from convis_jax.errors import InputError, ModelLoadError, warn

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json")
# Every file that can change how a text is tokenised (hashed into concept-bank cache keys).
_TOKENIZER_STATE = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json",
                    "special_tokens_map.json", "added_tokens.json")
# CLIP's own BPE vocabulary: its size and special tokens, the only text towers it fits.
CLIP_VOCAB_SIZE = 49408
CLIP_BOS_ID, CLIP_EOS_ID = 49406, 49407
_ADVICE = "TRANSFORMERS_NO_ADVISORY_WARNINGS"


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


def has_tokenizer(folder: Path | None) -> bool:
    """Whether `folder` holds tokenizer files (tokenizer.json or vocab.json)."""
    return folder is not None and any((Path(folder) / f).is_file() for f in _TOKENIZER_FILES)


def tokenizer_fingerprint(folder: Path | None) -> str:
    """A hash of the tokenizer files in `folder` ("clip-bpe" for CLIP's bundled vocabulary).

    Returns:
        16 hex digits, or "clip-bpe" when the folder holds no tokenizer files.
    """
    if not has_tokenizer(folder):
        return "clip-bpe"
    digest = hashlib.sha256()
    for name in _TOKENIZER_STATE:
        path = Path(folder) / name
        if path.is_file():
            digest.update(f"{name}:{path.stat().st_size}:".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _clip_tokenizer_class():
    """transformers' CLIPTokenizer, imported without its "PyTorch was not found" advice.

    convis_jax needs only the tokenizer, never transformers' PyTorch models, so the
    advice transformers prints at import when torch is missing says nothing useful.
    """
    if "transformers" not in sys.modules:
        previous = os.environ.get(_ADVICE)
        os.environ[_ADVICE] = "1"
        try:
            import transformers  # noqa: F401
        finally:
            if previous is None:
                os.environ.pop(_ADVICE, None)
            else:
                os.environ[_ADVICE] = previous
    from transformers import CLIPTokenizer

    return CLIPTokenizer


def load_tokenizer(folder: Path | None):
    """transformers' CLIPTokenizer from `folder`, or CLIP's own vocabulary when it has none.

    Whether the tokenizer fits the model is `check_tokenizer`'s job.
    """
    CLIPTokenizer = _clip_tokenizer_class()
    if has_tokenizer(folder):
        try:
            return CLIPTokenizer.from_pretrained(str(folder))
        except Exception as err:
            raise ModelLoadError(f"cannot load the tokenizer in {folder}: "
                                 f"{type(err).__name__}: {str(err)[:200]}") from None
    # transformers 5: CLIPTokenizer(vocab_file=..., merges_file=...) silently builds a
    # broken tokenizer; the in-memory vocab and merges are the reliable route.
    vocab, merges = bundled_vocabulary()
    return CLIPTokenizer(vocab=vocab, merges=merges)


def check_tokenizer(tokenizer, text_config, folder) -> None:
    """Refuses a tokenizer that does not fit the text tower it feeds.

    A token id at or beyond the embedding table's rows reads nothing (XLA clamps
    or fills NaN), so a mismatch would give silently wrong scores.

    Args:
        tokenizer: the loaded tokenizer (`load_tokenizer`).
        text_config: the model's `TextConfig` (vocab_size, eos_token_id).
        folder: the model folder, for messages.

    Raises:
        ModelLoadError: no tokenizer files where CLIP's vocabulary cannot stand in, more
            tokens than the embedding table has rows, or special tokens outside it or
            disagreeing with the config's end-of-text id.
    """
    rows = text_config.vocab_size
    # Without tokenizer files CLIP's own vocabulary is used: only where every one of its
    # ids has an embedding row and the model ends texts with its EOS (2: legacy configs,
    # pooled at the largest id, which is CLIP's EOS then).
    if not has_tokenizer(folder) and (rows < CLIP_VOCAB_SIZE
                                      or text_config.eos_token_id not in (CLIP_EOS_ID, 2)):
        raise ModelLoadError(
            f"no tokenizer in {folder} (tokenizer.json, or vocab.json with merges.txt); its "
            f"text tower has {rows} token embeddings and end-of-text id "
            f"{text_config.eos_token_id}, so CLIP's {CLIP_VOCAB_SIZE}-token vocabulary cannot "
            f"stand in: copy the model's tokenizer files into the folder")
    size = len(tokenizer)
    if size > rows:
        raise ModelLoadError(f"the tokenizer in {folder} has {size} tokens but the model's text "
                             f"embedding table (text_config.vocab_size) has {rows} rows")
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(tokenizer, name, None)
        if value is None or not 0 <= value < rows:
            raise ModelLoadError(f"the tokenizer in {folder} has {name} {value}, outside the "
                                 f"model's {rows} token embeddings")
    eos = text_config.eos_token_id
    if eos != 2 and eos != tokenizer.eos_token_id:  # 2: legacy configs, pooled by argmax
        raise ModelLoadError(f"the tokenizer in {folder} ends texts with token "
                             f"{tokenizer.eos_token_id} but config.json's "
                             f"text_config.eos_token_id is {eos}")


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
    # verbose=False: transformers would warn that long texts "will result in indexing
    # errors"; they are cut to the context length below, with our own warning.
    encoded = tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]
    truncated = 0
    rows = []
    for ids in encoded:
        if len(ids) > context_length:
            ids = list(ids[: context_length - 1]) + [eos_token_id]
            truncated += 1
        rows.append(ids)
    if truncated:
        warn(f"{truncated} of {len(texts)} text(s) were longer than the context length "
             f"of {context_length} tokens and were truncated")
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
        warn(f"{truncated} of {len(texts)} text(s) were longer than the context length "
             f"of {length} tokens and were truncated")
    ids = tokenizer(texts, padding="max_length", max_length=length, truncation=True)["input_ids"]
    input_ids = np.asarray(ids, np.int32)
    if input_ids.shape != (len(texts), length):
        raise ModelLoadError(f"the tokenizer returned ids of shape {list(input_ids.shape)}, "
                             f"expected [{len(texts)}, {length}]")
    return TokenBatch(input_ids, np.full(len(texts), length, np.int32), truncated)
