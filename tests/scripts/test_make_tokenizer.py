"""Tests of scripts/make_tokenizer.py against transformers' CLIPTokenizer.

The tokenizer is trained on a small slice of WordNet so the tests stay fast;
the encoding is checked on held-out glosses the training never saw.
"""

import importlib.util
import itertools
import json
import shutil
import sys
from pathlib import Path

import pytest

from convis_jax.core.wordnet import load_wordnet
from convis_jax.errors import InputError
from convis_jax.scenes import CONCEPT_TEXTS

_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_tokenizer.py"
_VOCAB_SIZE = 1200


@pytest.fixture(scope="module")
def make_tokenizer():
    spec = importlib.util.spec_from_file_location("make_tokenizer", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


@pytest.fixture(scope="module")
def synsets():
    # Every 8th of the first 8,000 noun synsets: 1,000 of them, spread over
    # WordNet's file order. The first 500 train, the rest are held out.
    sample = list(itertools.islice(load_wordnet().all_synsets("n"), 0, 8000, 8))
    return sample[:500], sample[500:]


@pytest.fixture(scope="module")
def trained(make_tokenizer, synsets):
    return make_tokenizer.train_tokenizer(make_tokenizer.noun_texts(synsets[0]), _VOCAB_SIZE)


@pytest.fixture(scope="module")
def folder(make_tokenizer, trained, tmp_path_factory):
    return make_tokenizer.save_tokenizer(trained, tmp_path_factory.mktemp("tokenizer"), 64)


def _held_out_texts(synsets):
    held_out = [synset.definition() for synset in synsets[1]]
    held_out += [text.definition for text in CONCEPT_TEXTS.values()]
    # Text no WordNet gloss has: accents, CJK, emoji, controls, runs of space.
    held_out += ["Ünïcödé 日本語 😀 tab\tnew\nline   end", "\x00\x07\x7f ~`|{}", "isn't 42 C++"]
    return held_out


def test_noun_texts_are_glosses_then_lemma_names(make_tokenizer):
    synset = load_wordnet().synset("greek_cross.n.01")
    assert make_tokenizer.noun_texts([synset, synset]) == [
        "a cross with each of the four arms the same length",
        "Greek cross",
    ] * 2


def test_vocabulary_has_every_byte_and_the_special_tokens_last(trained):
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    alphabet = list(bytes_to_unicode().values())
    base = alphabet + [character + "</w>" for character in alphabet]
    vocab = trained.vocab
    # OpenAI's layout: the 512 byte-level tokens first, in their order.
    assert [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])][:512] == base
    assert sorted(vocab.values()) == list(range(len(vocab)))
    assert len(vocab) == _VOCAB_SIZE  # 500 glosses support more merges than asked for
    assert trained.bos_token_id == vocab["<|startoftext|>"] == len(vocab) - 2
    assert trained.eos_token_id == vocab["<|endoftext|>"] == len(vocab) - 1
    assert trained.eos_token_id != 2  # transformers' legacy argmax rule
    # Every merge result is a token, and merges only join tokens.
    for left, right in trained.merges:
        assert left in vocab and right in vocab and left + right in vocab


def test_clip_tokenizer_from_pretrained_encodes_like_the_trained_tokenizer(trained, folder, synsets):
    from transformers import CLIPTokenizer

    loaded = CLIPTokenizer.from_pretrained(folder)
    assert (loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id) == (
        trained.bos_token_id,
        trained.eos_token_id,
        trained.eos_token_id,
    )
    assert loaded.model_max_length == 64
    texts = _held_out_texts(synsets)
    assert len(texts) > 500
    expected = [encoding.ids for encoding in trained.tokenizer.encode_batch(texts)]
    assert loaded(texts)["input_ids"] == expected
    # A held-out gloss splits into several known tokens, not bytes only.
    assert len(expected[0]) < len(texts[0]) // 2


def test_vocab_and_merges_files_alone_give_the_same_encoding(trained, folder, synsets, tmp_path):
    from transformers import CLIPTokenizer

    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(folder / name, tmp_path / name)
    loaded = CLIPTokenizer.from_pretrained(tmp_path)
    texts = _held_out_texts(synsets)[:200]
    assert loaded(texts)["input_ids"] == [e.ids for e in trained.tokenizer.encode_batch(texts)]
    merges = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0].startswith("#version") and len(merges) - 1 == len(trained.merges)
    assert json.loads((folder / "vocab.json").read_text(encoding="utf-8")) == trained.vocab


def test_any_text_encodes_without_unknown_tokens_and_decodes_back(trained, folder, synsets):
    from transformers import CLIPTokenizer

    loaded = CLIPTokenizer.from_pretrained(folder)
    # Every character from U+0001 to U+2FFF once, plus the held-out texts.
    everything = "".join(chr(code) for code in range(1, 0x3000))
    for text in [everything, *_held_out_texts(synsets)]:
        ids = loaded(text)["input_ids"]
        # The unknown token is <|endoftext|>: it may only close the sequence.
        assert ids[0] == trained.bos_token_id and ids[-1] == trained.eos_token_id
        assert trained.eos_token_id not in ids[1:-1]
        assert trained.bos_token_id not in ids[1:]
        # Decoding puts a space at every word end, so compare without spaces;
        # the pipeline lower-cases and composes (NFC) the text first.
        normalised = trained.tokenizer.normalizer.normalize_str(text)
        decoded = loaded.decode(ids, skip_special_tokens=True)
        assert "".join(decoded.split()) == "".join(normalised.split())


def test_training_is_deterministic(make_tokenizer, trained, synsets):
    again = make_tokenizer.train_tokenizer(make_tokenizer.noun_texts(synsets[0]), _VOCAB_SIZE)
    assert again.merges == trained.merges and again.vocab == trained.vocab


def test_a_vocabulary_smaller_than_the_byte_alphabet_is_refused(make_tokenizer):
    with pytest.raises(InputError, match="514"):
        make_tokenizer.train_tokenizer(["a b c"], 513)
