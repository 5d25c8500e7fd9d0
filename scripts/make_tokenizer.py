"""Train a small CLIP-style BPE tokenizer on WordNet's noun texts and save it.

The bundled default model reads only WordNet texts (glosses and lemma names),
so a vocabulary of a few thousand tokens learned from exactly those texts
keeps its text tower small. The tokenizer is built in the pipeline of
transformers' `CLIPTokenizer` (transformers 5,
`models/clip/tokenization_clip.py`): NFC, whitespace collapsed, lower case;
CLIP's split regex then byte-level pre-tokenisation; BPE whose word-final
symbols carry the suffix "</w>". The vocabulary is laid out like OpenAI's:
the 256 byte-level characters, the same with "</w>", one token per merge,
then `<|startoftext|>` and `<|endoftext|>` last. Every byte and its word-final
form is in it, so any text encodes without unknown tokens.

The folder it writes (`vocab.json`, `merges.txt`, `tokenizer.json`,
`tokenizer_config.json`, `special_tokens_map.json`) loads with
`transformers.CLIPTokenizer.from_pretrained`.

Usage:
    python -m scripts.make_tokenizer OUTPUT_FOLDER [--vocab-size 3000]

(from the repository root, so that `convis_jax` imports without being
installed).

It prints the vocabulary size and the ids of the special tokens: a model
config must set `bos_token_id` and `eos_token_id` to them (transformers
reads `eos_token_id == 2` as the legacy rule "the end token is the largest
id", which would be wrong here).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import (
    Regex,
    Tokenizer,
    decoders,
    normalizers,
    pre_tokenizers,
    processors,
)
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer

from convis_jax.core.wordnet import load_wordnet
from convis_jax.errors import InputError

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
END_OF_WORD = "</w>"

# transformers' CLIPTokenizer splits text with this regex before the
# byte-level step (the special tokens first, so they survive as one piece).
_CLIP_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


@dataclasses.dataclass(frozen=True)
class TrainedTokenizer:
    """A trained tokenizer and the ids a model config needs.

    Attributes:
        tokenizer: The `tokenizers.Tokenizer`, with CLIP's pipeline and a
            post-processor that wraps each text as `<|startoftext|> ... <|endoftext|>`.
        vocab: Token -> id, ids 0 .. vocab_size - 1.
        merges: The BPE merges in priority order, as (left, right) pairs.
        bos_token_id: Id of `<|startoftext|>` (vocab_size - 2).
        eos_token_id: Id of `<|endoftext|>` (vocab_size - 1), also the padding
            and unknown token.
    """

    tokenizer: Tokenizer
    vocab: dict[str, int]
    merges: tuple[tuple[str, str], ...]
    bos_token_id: int
    eos_token_id: int

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)


def noun_texts(synsets: Iterable) -> list[str]:
    """The gloss and lemma names of each synset, in the order given.

    Args:
        synsets: nltk `Synset`s, e.g. `wordnet.all_synsets("n")` of a reader
            from `convis_jax.core.wordnet.load_wordnet()`.

    Returns:
        For each synset its definition followed by its lemma names
        (underscores turned into spaces).
    """
    texts = []
    for synset in synsets:
        texts.append(synset.definition())
        texts.extend(lemma.replace("_", " ") for lemma in synset.lemma_names())
    return texts


def _byte_level_alphabet() -> list[str]:
    """The 256 characters byte-level BPE stands bytes for, in OpenAI's vocabulary order.

    Printable bytes stand for themselves and come first, in byte order; the
    others (controls, space, ...) follow, in byte order, as the unused code
    points from 256 on, as in GPT-2 and CLIP.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    others = [byte for byte in range(256) if byte not in set(printable)]
    return [chr(byte) for byte in printable] + [chr(256 + k) for k in range(len(others))]


def _clip_tokenizer(vocab: dict[str, int], merges: Sequence[tuple[str, str]]) -> Tokenizer:
    """A `tokenizers.Tokenizer` in the pipeline of transformers' `CLIPTokenizer`."""
    tokenizer = Tokenizer(
        BPE(
            vocab=vocab,
            merges=list(merges),
            continuing_subword_prefix="",
            end_of_word_suffix=END_OF_WORD,
            fuse_unk=False,
            unk_token=EOS,
        )
    )
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_CLIP_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def train_tokenizer(texts: Iterable[str], vocab_size: int = 3000) -> TrainedTokenizer:
    """Learns BPE merges from texts and lays the vocabulary out like CLIP's.

    Args:
        texts: Training texts.
        vocab_size: Largest vocabulary size, special tokens included; at
            least 514 (the 512 byte-level tokens and the two special ones).
            The result is smaller when the texts support fewer merges.

    Returns:
        The tokenizer, vocabulary, merges and special token ids.

    Raises:
        InputError: `vocab_size` is below 514.
    """
    alphabet = _byte_level_alphabet()
    base = alphabet + [character + END_OF_WORD for character in alphabet]
    if vocab_size < len(base) + 2:
        raise InputError(f"expected vocab_size >= {len(base) + 2}, found {vocab_size}")

    # The trainer breaks ties between equally frequent pairs by symbol id.
    # It numbers the word-final symbols ("s</w>") in the order it meets them
    # in a hash map, which changes from run to run, unless they are already
    # known: handing them over as "special tokens" numbers them first, in
    # OpenAI's order, and makes training deterministic. Its vocabulary
    # counts them, so it is asked for more than needed; its merges, taken in
    # order, are then laid over the complete byte-level base.
    learner = _clip_tokenizer({}, [])
    trainer = BpeTrainer(
        vocab_size=vocab_size + len(base),
        min_frequency=2,
        show_progress=False,
        special_tokens=base[len(alphabet) :],
        initial_alphabet=alphabet,
        end_of_word_suffix=END_OF_WORD,
    )
    learner.train_from_iterator(texts, trainer=trainer)
    learned = json.loads(learner.to_str())["model"]["merges"]

    vocab = {token: index for index, token in enumerate(base)}
    merges = []
    for left, right in learned:
        if len(vocab) == vocab_size - 2:
            break
        merges.append((left, right))
        vocab.setdefault(left + right, len(vocab))
    bos_token_id, eos_token_id = len(vocab), len(vocab) + 1
    vocab[BOS], vocab[EOS] = bos_token_id, eos_token_id

    tokenizer = _clip_tokenizer(vocab, merges)
    tokenizer.add_special_tokens([BOS, EOS])
    # transformers' CLIPTokenizer installs the same processor: BOS text EOS.
    tokenizer.post_processor = processors.RobertaProcessing(
        (EOS, eos_token_id), (BOS, bos_token_id), trim_offsets=False, add_prefix_space=False
    )
    return TrainedTokenizer(tokenizer, vocab, tuple(merges), bos_token_id, eos_token_id)


def save_tokenizer(trained: TrainedTokenizer, folder: str | Path, model_max_length: int = 77) -> Path:
    """Writes the tokenizer files `transformers.CLIPTokenizer.from_pretrained` reads.

    Args:
        trained: The result of `train_tokenizer`.
        folder: Output folder, created if missing; existing files are replaced.
        model_max_length: Longest token sequence the text model accepts
            (its `max_position_embeddings`).

    Returns:
        The folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "vocab.json", "w", encoding="utf-8") as file:
        json.dump(trained.vocab, file, ensure_ascii=False)
    with open(folder / "merges.txt", "w", encoding="utf-8") as file:
        # Readers of OpenAI's format skip the first line as a header.
        file.write("#version: 0.2\n")
        file.writelines(f"{left} {right}\n" for left, right in trained.merges)
    trained.tokenizer.save(str(folder / "tokenizer.json"))
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS}
    config = {
        "tokenizer_class": "CLIPTokenizer",
        **special,
        "model_max_length": model_max_length,
        "add_prefix_space": False,
        "errors": "replace",
    }
    for name, content in (("tokenizer_config.json", config), ("special_tokens_map.json", special)):
        with open(folder / name, "w", encoding="utf-8") as file:
            json.dump(content, file, indent=2, ensure_ascii=False)
            file.write("\n")
    return folder


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="folder to write the tokenizer files into")
    parser.add_argument("--vocab-size", type=int, default=3000, help="largest vocabulary size")
    parser.add_argument("--model-max-length", type=int, default=77, help="longest token sequence")
    parser.add_argument(
        "--nltk-data", default=None, help="another NLTK data folder or wordnet.zip (default: bundled)"
    )
    args = parser.parse_args(argv)

    texts = noun_texts(load_wordnet(args.nltk_data).all_synsets("n"))
    trained = train_tokenizer(texts, args.vocab_size)
    save_tokenizer(trained, args.output, args.model_max_length)
    print(f"trained on {len(texts)} WordNet noun texts; wrote {args.output}")
    print(f"vocab_size={trained.vocab_size}")
    print(f"bos_token_id={trained.bos_token_id}")
    print(f"eos_token_id={trained.eos_token_id}")
    print(f"pad_token_id={trained.eos_token_id}")


if __name__ == "__main__":
    main()
