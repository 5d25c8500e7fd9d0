"""A corpus of bad inputs and faults: each ends in a documented one-line error or a right result.

Model folders (absurd configs, a missing or unfitting tokenizer), vocabulary files
of the wrong structure, images and arrays, concept names used as file names,
poisoned and malformed caches, full disks (a write raising ENOSPC), API options
that would only fail after tracing, long image lists, and Ctrl-C at several
moments of a real run. Never a traceback, a hang, NaN output, a half-written
file, or a cache that breaks a later run. Everything shares the session's tiny
checkpoint and the bundled model's small folder, so the file runs in seconds.
"""

from __future__ import annotations

import dataclasses
import errno
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import convis_jax
from convis_jax.errors import ConceptError, InputError, ModelLoadError

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "convis_jax" / "data" / "default_model"


def one_line(err: BaseException) -> str:
    text = str(err)
    assert text and "\n" not in text and "Traceback" not in text, text
    return text


# ------------------------------------------------------------------ model folders


def folder_with(tmp_path: Path, source: Path, edit=None, drop=()) -> Path:
    """A copy of a model folder (weights linked) with config.json edited and files dropped."""
    folder = tmp_path / "model"
    folder.mkdir()
    for file in source.iterdir():
        if file.name in drop:
            continue
        if file.name == "config.json":
            config = json.loads(file.read_text())
            if edit is not None:
                config = edit(config)
            (folder / file.name).write_text(json.dumps(config))
        else:
            (folder / file.name).symlink_to(file)
    return folder


def set_field(section: str | None, key: str, value):
    def edit(config):
        (config if section is None else config[section])[key] = value
        return config
    return edit


# (name, edit of the tiny checkpoint's config, words the one-line message must hold)
CONFIGS = [
    ("hidden size 0", set_field("vision_config", "hidden_size", 0), ["hidden_size", "0"]),
    ("heads 0", set_field("text_config", "num_attention_heads", 0), ["num_attention_heads"]),
    ("heads do not divide", set_field("vision_config", "num_attention_heads", 5),
     ["hidden_size", "divisible", "5"]),
    ("patch size 0", set_field("vision_config", "patch_size", 0), ["patch_size"]),
    ("patch size negative", set_field("vision_config", "patch_size", -8), ["patch_size", "-8"]),
    ("patch larger than image", set_field("vision_config", "patch_size", 64), ["patch_size"]),
    ("text vocab 0", set_field("text_config", "vocab_size", 0), ["vocab_size"]),
    ("string for a number", set_field("vision_config", "hidden_size", "32"),
     ["hidden_size", "integer", "str"]),
    ("float for an integer", set_field("text_config", "num_hidden_layers", 2.5),
     ["num_hidden_layers", "integer"]),
    ("list for a section", set_field(None, "vision_config", [1, 2]),
     ["vision_config", "object", "list"]),
    ("a billion layers", set_field("text_config", "num_hidden_layers", 10**9),
     ["num_hidden_layers", "1000000000"]),
    ("1e9 layers as a float", set_field("vision_config", "num_hidden_layers", 1e9),
     ["num_hidden_layers"]),
    ("negative layer-norm eps", set_field("vision_config", "layer_norm_eps", -1),
     ["layer_norm_eps"]),
    ("unknown activation", set_field("text_config", "hidden_act", "swish"), ["hidden_act"]),
    ("eos outside the vocabulary", set_field("text_config", "eos_token_id", 10**6),
     ["eos_token_id"]),
    ("projection 0", set_field(None, "projection_dim", 0), ["projection_dim"]),
    ("config is a list", lambda config: [config], ["JSON object", "list"]),
]


@pytest.mark.parametrize("name, edit, words", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_absurd_configs_are_one_line_errors_before_any_weight(name, edit, words, tiny_checkpoint,
                                                             tmp_path):
    from convis_jax.models.loading import load_clip

    folder = folder_with(tmp_path, tiny_checkpoint[0], edit)
    start = time.perf_counter()
    with pytest.raises(ModelLoadError) as caught:
        load_clip(folder, cache=False)
    message = one_line(caught.value)
    assert all(word in message for word in words), message
    assert time.perf_counter() - start < 5  # refused before building a huge parameter tree


def bundled_edit(section, key, value):
    return set_field(section, key, value)


TOKENIZERS = [
    # The bundled model has a 3,000-token vocabulary: CLIP's 49,408 must not stand in.
    ("bundled model without its tokenizer", None,
     ("tokenizer.json", "vocab.json", "merges.txt"), ["no tokenizer", "3000"]),
    ("tokenizer larger than the embedding table",
     lambda config: bundled_edit("text_config", "vocab_size", 2999)(
         bundled_edit("text_config", "pad_token_id", 0)(
             bundled_edit("text_config", "eos_token_id", 2)(config))),
     (), ["3000 tokens", "2999 rows"]),
    ("config's end-of-text id disagrees", bundled_edit("text_config", "eos_token_id", 2998), (),
     ["eos_token_id", "2998", "2999"]),
]


@pytest.mark.parametrize("name, edit, drop, words", TOKENIZERS, ids=[t[0] for t in TOKENIZERS])
def test_a_tokenizer_must_fit_the_text_tower(name, edit, drop, words, tmp_path):
    from convis_jax.models.loading import load_clip

    folder = folder_with(tmp_path, BUNDLED, edit, drop)
    with pytest.raises(ModelLoadError) as caught:
        load_clip(folder, cache=False)
    message = one_line(caught.value)
    assert all(word in message for word in words), message


def test_a_copy_without_tokenizer_exits_2_and_leaves_no_nan_bank(tmp_path, capsys, monkeypatch):
    """The issue's poisoning run: once NaN scores, exit 0, and a NaN bank for the intact model."""
    from convis_jax.cli import main

    monkeypatch.setenv("CONVIS_JAX_CACHE", str(tmp_path / "cache"))
    folder = folder_with(tmp_path, BUNDLED, drop=("tokenizer.json", "vocab.json", "merges.txt"))
    image = tmp_path / "shape.png"
    Image.fromarray(np.full((48, 48, 3), 200, np.uint8)).save(image)
    assert main(["top", str(image), "--model", str(folder), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no tokenizer") and "\n" not in err
    assert not (tmp_path / "cache" / "banks").exists()
    assert main(["top", str(image), "--json", "--quiet"]) == 0  # the intact bundled model
    scores = json.loads(capsys.readouterr().out)[0]["flat"].values()
    assert all(np.isfinite(list(scores)))


def test_nan_weights_give_a_one_line_error_and_no_cache(tiny_checkpoint, tmp_path, monkeypatch):
    from safetensors.numpy import load_file, save_file

    from convis_jax.api import ConVis
    from convis_jax.models.loading import load_clip

    monkeypatch.setenv("CONVIS_JAX_CACHE", str(tmp_path / "cache"))
    folder = folder_with(tmp_path, tiny_checkpoint[0], drop=("model.safetensors",))
    tensors = load_file(tiny_checkpoint[0] / "model.safetensors")
    tensors["text_projection.weight"][0, 0] = np.nan
    save_file(tensors, folder / "model.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the loader's own warning about NaN tensors
        model = load_clip(folder)
    with pytest.raises(ModelLoadError, match="non-finite embeddings"):
        ConVis(model, WORDS_VOCABULARY(), progress=False)
    assert not list((tmp_path / "cache").glob("banks/*.npz"))


def WORDS_VOCABULARY():
    """A small hand-made hierarchy (no WordNet to open: the corpus stays fast)."""
    from convis_jax.core.vocabulary import ConceptVocabulary

    names = ["entity.n.01", "animal.n.01", "dog.n.01", "cat.n.01", "vehicle.n.01", "car.n.01"]
    edges = [("entity.n.01", "animal.n.01"), ("animal.n.01", "dog.n.01"),
             ("animal.n.01", "cat.n.01"), ("entity.n.01", "vehicle.n.01"),
             ("vehicle.n.01", "car.n.01")]
    definitions = ["that which exists", "a living organism that moves", "a domestic canine",
                   "a small feline", "a conveyance that transports people", "a motor vehicle"]
    return ConceptVocabulary(names, edges, definitions, [[n.split(".")[0]] for n in names])


def words_file(folder: Path) -> Path:
    """WORDS_VOCABULARY as a --vocabulary JSON file."""
    path = folder / "vocabulary.json"
    path.write_text(json.dumps(WORDS_VOCABULARY().to_dict()))
    return path


# ------------------------------------------------------------------ vocabulary files

VOCABULARY_FILES = [
    ("a number", 5, "top level is an object"),
    ("a string", "dog", "top level is an object"),
    ("names not a list", {"names": {"a": 1}, "edges": [], "definitions": [], "lemmas": []},
     '"names" is a list'),
    ("edge with one element", {"names": ["a.n.01"], "edges": [["a.n.01"]],
                               "definitions": ["x"], "lemmas": [["a"]]}, "[parent, child]"),
    ("integer lemmas", {"names": ["a.n.01"], "edges": [], "definitions": ["x"], "lemmas": [[1]]},
     '"lemmas" entries holds only strings'),
    ("senses as a list", {"names": ["a.n.01"], "edges": [], "definitions": ["x"],
                          "lemmas": [["a"]], "senses": ["a"]}, '"senses" is an object'),
    ("null definition", {"names": ["a.n.01"], "edges": [], "definitions": [None],
                         "lemmas": [["a"]]}, '"definitions" holds only strings'),
    ("edge to an unknown synset", {"names": ["a.n.01"], "edges": [["a.n.01", "b.n.01"]],
                                   "definitions": ["x"], "lemmas": [["a"]]}, "unknown"),
]


@pytest.mark.parametrize("name, data, words", VOCABULARY_FILES,
                         ids=[v[0] for v in VOCABULARY_FILES])
def test_vocabulary_json_follows_one_schema(name, data, words, tmp_path):
    from convis_jax.api import resolve_vocabulary

    path = tmp_path / "vocabulary.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError) as caught:
        resolve_vocabulary(str(path))
    assert words in one_line(caught.value)


# ------------------------------------------------------------------ images and concepts

IMAGES = [
    ("NaN pixels", lambda tmp: np.full((8, 8, 3), np.nan, np.float32), "finite"),
    ("five channels", lambda tmp: np.zeros((8, 8, 5), np.uint8), "channels"),
    ("no pixels", lambda tmp: np.zeros((0, 8, 3), np.uint8), "no pixels"),
    ("empty file", lambda tmp: _file(tmp, "empty.png", b""), "empty"),
    ("text named .png", lambda tmp: _file(tmp, "text.png", b"hello"), "image"),
    ("missing file", lambda tmp: str(tmp / "missing.png"), "does not exist"),
]


def _file(folder: Path, name: str, data: bytes) -> str:
    (folder / name).write_bytes(data)
    return str(folder / name)


@pytest.mark.parametrize("name, make, words", IMAGES, ids=[i[0] for i in IMAGES])
def test_bad_images_are_one_line_input_errors(name, make, words, tmp_path):
    from convis_jax.core.images import load_images

    with pytest.raises(InputError) as caught:
        load_images([make(tmp_path)])
    assert words in one_line(caught.value)


@pytest.mark.parametrize("concepts", [[], ["qqqzzz"], ["dog\x00.n.01"], ["dog.v.01"]],
                         ids=["empty", "unknown word", "NUL", "verb"])
def test_bad_concepts_are_one_line_concept_errors(concepts):
    with pytest.raises(ConceptError) as caught:
        WORDS_VOCABULARY().resolve(concepts)
    one_line(caught.value)


def stand_in(vocabulary, maps):
    """Only what `write_explanations` reads from a ConVis."""
    return types.SimpleNamespace(
        vocabulary=vocabulary, model=types.SimpleNamespace(name="stand-in"),
        bank=types.SimpleNamespace(text="definition"),
        occlusion_maps=lambda photos, concepts, **options: maps)


def test_concept_names_become_safe_unique_file_names(tmp_path):
    """".", "..", NUL, slashes and names equal but for case each get their own, readable PNG."""
    from convis_jax.pictures.explanations import write_explanations
    from convis_jax.core.vocabulary import ConceptVocabulary

    names = [".", "..", "a\x00b", "x/../../escape", "Dog", "dog", "grid", "%2E"]
    vocabulary = ConceptVocabulary(names, [], ["d"] * len(names), [["w"]] * len(names))
    maps = np.random.default_rng(0).random((1, len(names), 224, 224), np.float32)
    out = tmp_path / "out"
    summary = write_explanations(stand_in(vocabulary, maps), [np.zeros((20, 30, 3), np.uint8)],
                                 ["photo"], names, out)
    files = summary["images"][0]["overlays"]
    assert sorted(files) == sorted(names) and len({f.lower() for f in files.values()}) == len(names)
    written = sorted(p.name for p in (out / "photo").iterdir())
    assert written == sorted([*files.values(), "grid.png"])
    for name in written:
        assert not name.startswith(".") and "/" not in name and "\x00" not in name
        Image.open(out / "photo" / name).verify()
    # Nothing escaped the output folder.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# ------------------------------------------------------------------ caches


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint, tmp_path_factory):
    """(model, vocabulary, the bank built fresh without any cache)."""
    from convis_jax.kernels.bank import build_bank
    from convis_jax.models.loading import load_clip

    model = load_clip(tiny_checkpoint[0], cache=False)
    vocabulary = WORDS_VOCABULARY()
    return model, vocabulary, build_bank(model, vocabulary, cache=False, progress=False).embeddings


def poison(path: Path, arrays: dict) -> None:
    from convis_jax.core.cache import save_arrays

    save_arrays(path, arrays)  # a valid checksum: only the content is wrong


BANK_POISONS = [
    ("NaN embeddings", lambda e: {"embeddings": np.full_like(e, np.nan)}),
    ("inf embeddings", lambda e: {"embeddings": np.where(e > 0, np.inf, e)}),
    ("no embeddings array", lambda e: {"other": e}),
    ("wrong shape", lambda e: {"embeddings": e[:, :3]}),
    ("wrong dtype", lambda e: {"embeddings": e.astype(np.float64)}),
    ("garbage bytes", None),
]


@pytest.mark.parametrize("name, make", BANK_POISONS, ids=[p[0] for p in BANK_POISONS])
def test_a_poisoned_bank_entry_is_rebuilt(name, make, tiny, tmp_path, monkeypatch):
    from convis_jax.core.cache import load_arrays
    from convis_jax.kernels.bank import bank_cache_path, build_bank

    model, vocabulary, fresh = tiny
    monkeypatch.setenv("CONVIS_JAX_CACHE", str(tmp_path))
    path = bank_cache_path(model, vocabulary, "definition")
    path.parent.mkdir(parents=True)
    if make is None:
        path.write_bytes(b"PK\x03\x04 not a zip")
    else:
        poison(path, make(fresh))
    with pytest.warns(UserWarning, match="rebuilding"):
        bank = build_bank(model, vocabulary, progress=False)
    assert np.array_equal(bank.embeddings, fresh)
    assert np.array_equal(load_arrays(path)["embeddings"], fresh)  # the entry is repaired
    again = build_bank(model, vocabulary, progress=False)  # and a later run reads it quietly
    assert np.array_equal(again.embeddings, fresh)


def test_the_bank_key_covers_everything_that_changes_the_bank(tiny):
    from convis_jax.core.vocabulary import ConceptVocabulary
    from convis_jax.kernels.bank import bank_cache_path

    model, vocabulary, _ = tiny
    base = bank_cache_path(model, vocabulary, "definition")
    data = vocabulary.to_dict()
    data["definitions"] = ["something else"] + data["definitions"][1:]
    reworded = ConceptVocabulary.from_dict(data)  # same names and edges, other texts
    bfloat = dataclasses.replace(model, params={"logit_scale": np.zeros((), "bfloat16")})
    keys = [base, bank_cache_path(model, vocabulary, "lemmas"),
            bank_cache_path(model, reworded, "definition"),
            bank_cache_path(dataclasses.replace(model, tokenizer_fingerprint="other"),
                            vocabulary, "definition"),
            bank_cache_path(bfloat, vocabulary, "definition"),
            bank_cache_path(dataclasses.replace(model, fingerprint="0" * 32), vocabulary,
                            "definition"),
            bank_cache_path(dataclasses.replace(model, config=dataclasses.replace(
                model.config, text=dataclasses.replace(model.config.text, layer_norm_eps=1e-6))),
                vocabulary, "definition")]
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize("memo", ['{"/x": 5}', '{"/x": {"stamp": 1, "sha256": 2}}', "[1, 2]",
                                  '"text"', "{broken"],
                         ids=["entry a number", "entry of wrong types", "a list", "a string",
                              "broken JSON"])
def test_a_malformed_hash_memo_is_rebuilt(memo, tiny_checkpoint, tmp_path):
    from convis_jax.models import checkpoints
    from convis_jax.models.loading import fingerprint_files

    files = checkpoints.weight_files(tiny_checkpoint[0])
    expected = fingerprint_files(files)
    (tmp_path / "file_hashes.json").write_text(memo)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # broken JSON warns; the rest are silently dropped
        assert fingerprint_files(files, memo_dir=tmp_path) == expected


def test_a_damaged_vocabulary_cache_is_rebuilt(tmp_path, monkeypatch):
    from convis_jax.core.vocabulary import ConceptVocabulary
    from convis_jax.core.vocabulary_building import preset_cache_path

    monkeypatch.setenv("CONVIS_JAX_CACHE", str(tmp_path))
    small = WORDS_VOCABULARY()
    monkeypatch.setattr(ConceptVocabulary, "physical_objects", classmethod(lambda cls: small))
    built = ConceptVocabulary.preset("physical_objects")
    path = preset_cache_path("physical_objects")
    read = ConceptVocabulary.preset("physical_objects")  # from the cache
    assert read.to_dict() == small.to_dict() and read.fingerprint() == small.fingerprint()
    assert np.array_equal(read.subtree_members, small.subtree_members)
    assert read.resolve(["dog"]) == small.resolve(["dog"]) and built is small
    arrays = small._to_arrays()
    arrays["subtree_members"] = arrays["subtree_members"] + 1000  # consistent checksum, bad content
    poison(path, arrays)
    with pytest.warns(UserWarning, match="inconsistent"):
        assert ConceptVocabulary.preset("physical_objects").to_dict() == small.to_dict()
    assert ConceptVocabulary.preset("physical_objects").to_dict() == small.to_dict()


# ------------------------------------------------------------------ full disks


class FullDisk:
    """Stands in for the `os` module of `convis_jax.core.cache`: fsync fails with ENOSPC."""

    def __getattr__(self, name):
        return getattr(os, name)

    @staticmethod
    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_cache_disk_warns_once_and_the_bank_is_right(tiny, tmp_path, monkeypatch):
    from convis_jax.core import cache
    from convis_jax.kernels.bank import build_bank

    model, vocabulary, fresh = tiny
    monkeypatch.setenv("CONVIS_JAX_CACHE", str(tmp_path))
    monkeypatch.setattr(cache, "os", FullDisk())
    with pytest.warns(UserWarning, match="No space left") as caught:
        bank = build_bank(model, vocabulary, progress=False)
    assert len(caught) == 1 and bank.path is None and np.array_equal(bank.embeddings, fresh)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no temporary file left


def test_a_full_disk_for_converted_weights_is_one_warning(tiny_checkpoint, tmp_path,
                                                          monkeypatch):
    """pytorch_model.bin goes through the orbax cache; no room -> one line, weights still right."""
    import torch

    from convis_jax.models import loading

    folder = tmp_path / "bin"
    folder.mkdir()
    shutil.copyfile(tiny_checkpoint[0] / "config.json", folder / "config.json")
    torch.save(tiny_checkpoint[1].state_dict(), folder / "pytorch_model.bin")
    monkeypatch.setenv("CONVIS_JAX_CACHE", str(tmp_path / "cache"))
    full = types.SimpleNamespace(free=10, total=10, used=0)
    monkeypatch.setattr(loading.shutil, "disk_usage", lambda path: full)
    with pytest.warns(UserWarning) as caught:
        model = loading.load_clip(folder)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "No space left" in messages[0] and "\n" not in messages[0]
    reference = loading.load_clip(tiny_checkpoint[0], cache=False)
    for a, b in zip(*map(lambda m: __import__("jax").tree_util.tree_leaves(m.params),
                         (model, reference))):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_a_full_output_disk_is_exit_2_with_no_partial_file(tmp_path, capsys, monkeypatch):
    from convis_jax import programs
    from convis_jax.core import cache
    from convis_jax.pictures.explanations import write_explanations

    maps = np.random.default_rng(1).random((1, 2, 224, 224), np.float32)
    convis = stand_in(WORDS_VOCABULARY(), maps)
    monkeypatch.setattr(cache, "os", FullDisk())
    out = tmp_path / "out"
    code = programs.run_command(lambda: write_explanations(
        convis, [np.zeros((20, 30, 3), np.uint8)], ["photo"], ["dog.n.01", "cat.n.01"], out))
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: No space left on device") and "\n" not in err
    assert not [p for p in out.rglob("*") if p.is_file()]


# ------------------------------------------------------------------ API options


@pytest.fixture(scope="module")
def convis(tiny_checkpoint, tmp_path_factory):
    from convis_jax.api import ConVis

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONVIS_JAX_CACHE", str(tmp_path_factory.mktemp("fault-cache")))
        yield ConVis(str(tiny_checkpoint[0]), WORDS_VOCABULARY(), progress=False)


OPTIONS = [
    ("sigma nan", "gradient_maps", dict(kind="smoothgrad", smoothgrad_sigma=float("nan")),
     "finite sigma >= 0, found 16 and nan"),
    ("sigma inf", "gradient_maps", dict(kind="smoothgrad", smoothgrad_sigma=float("inf")),
     "finite sigma >= 0, found 16 and inf"),
    ("sigma negative", "gradient_maps", dict(kind="smoothgrad", smoothgrad_sigma=-1.0),
     "found 16 and -1.0"),
    ("no smoothgrad samples", "gradient_maps", dict(kind="smoothgrad", smoothgrad_samples=0),
     "samples >= 1"),
    ("seed 2**63 (gradient)", "gradient_maps", dict(seed=2**63), "seed"),
    ("negative seed (gradient)", "gradient_maps", dict(seed=-1), "seed"),
    ("absurd concept chunk", "gradient_maps", dict(chunk=10**12), "GiB"),
    ("absurd window chunk", "occlusion_maps", dict(chunk=10**9), "GiB"),
    ("zero window chunk", "occlusion_maps", dict(chunk=0), "positive"),
    ("window larger than the image", "occlusion_maps", dict(window_sizes=(1000,)),
     "window size 1000 is larger than the 224 x 224 image"),
    ("window larger than the image (cells)", "occlusion_cells", dict(window_sizes=(225, 64)),
     "window size 225 is larger than"),
]


@pytest.mark.parametrize("name, method, options, words", OPTIONS, ids=[o[0] for o in OPTIONS])
def test_options_are_checked_before_tracing(name, method, options, words, convis):
    image = np.zeros((32, 32, 3), np.uint8)
    start = time.perf_counter()
    with pytest.raises(InputError) as caught:
        getattr(convis, method)(image, ["dog.n.01"], **options)
    assert words in one_line(caught.value)
    assert time.perf_counter() - start < 2  # nothing was compiled


def test_top_streams_long_image_lists(convis, tiny_checkpoint, tmp_path, capsys, monkeypatch):
    """`top` decodes a few images at a time, and prints what the whole batch would."""
    from convis_jax import cli
    from convis_jax.core import images

    rng = np.random.default_rng(2)
    paths = []
    for i in range(7):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(paths[-1])
    words = words_file(tmp_path)
    decoded = []
    real = images.load_images
    monkeypatch.setattr(images, "load_images", lambda s: decoded.append(len(s)) or real(s))
    monkeypatch.setattr(cli, "TOP_BATCH", 3)
    monkeypatch.setenv("CONVIS_JAX_CACHE", str(tmp_path / "cache"))
    assert cli.main(["top", *paths, "--json", "--k", "3", "--model", str(tiny_checkpoint[0]),
                     "--vocabulary", str(words), "--quiet"]) == 0
    assert max(decoded) <= 3
    printed = json.loads(capsys.readouterr().out)
    expected = convis.top_concepts(paths, k=3)
    assert [p["image"] for p in printed] == paths
    for item, top in zip(printed, expected):
        assert list(item["flat"]) == list(top.flat.names)
        assert np.allclose(list(item["flat"].values()), top.flat.scores, atol=1e-6)


# ------------------------------------------------------------------ Ctrl-C


def test_ctrl_c_inside_a_gc_callback_still_stops_the_run():
    """Python drops exceptions raised in GC callbacks; the CLI's handler defers, then raises."""
    from convis_jax.programs import interrupt_at_safe_points

    fired = []

    def callback(phase, info):
        if phase == "start" and not fired:
            fired.append(True)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)  # the handler runs here, inside the callback

    with pytest.raises(KeyboardInterrupt), interrupt_at_safe_points():
        gc.callbacks.append(callback)
        try:
            gc.collect()
        finally:
            gc.callbacks.remove(callback)
        assert fired
        time.sleep(2)  # the deferred interrupt arrives well before this ends
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def assert_no_partial_files(out: Path) -> None:
    for path in out.rglob("*"):
        hidden = [part for part in path.relative_to(out).parts if part.startswith(".")]
        assert not hidden, f"temporary file or folder left: {path}"
        if not path.is_file():
            continue
        if path.suffix == ".png":
            Image.open(path).verify()
        elif path.suffix == ".npz":
            with np.load(path) as npz:
                assert np.isfinite(npz["maps"]).all()
        elif path.suffix == ".json":
            json.loads(path.read_text())


LATE_CTRL_C = """
import atexit, os, signal, sys, time
from convis_jax import cli

atexit.register(lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(0.2), print("after")))
sys.argv = ["convis-jax", "--version"]
sys.exit(cli.main())
"""


def test_ctrl_c_after_the_run_has_ended_changes_nothing():
    """A SIGINT during the interpreter's shutdown (here: from an atexit callback) is
    ignored by the program: exit code 0, no traceback, the shutdown goes on."""
    process = subprocess.run([sys.executable, "-c", LATE_CTRL_C], cwd=ROOT, capture_output=True,
                             text=True, timeout=120)
    assert process.returncode == 0, (process.returncode, process.stderr)
    assert process.stdout.split() == ["convis-jax", convis_jax.__version__, "after"], process.stdout
    assert "Traceback" not in process.stderr and "KeyboardInterrupt" not in process.stderr


def entry_point_program() -> str:
    """The program pip writes for the `convis-jax` entry point of pyproject.toml."""
    import re

    module, function = re.search(r'^convis-jax = "([\w.]+):(\w+)"', (ROOT / "pyproject.toml")
                                 .read_text(), flags=re.M).groups()
    return (f"import re, sys\nfrom {module} import {function}\nif __name__ == '__main__':\n"
            f"    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
            f"    sys.exit({function}())\n")


def interrupts_held(pid: int) -> bool:
    """Whether the process blocks or ignores SIGINT (Linux's /proc/PID/status)."""
    bit = 1 << (signal.SIGINT - 1)
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                      .splitlines() if ":" in line)
    except OSError:
        return False
    return bool((int(fields["SigBlk"], 16) | int(fields["SigIgn"], 16)) & bit)


# SIGINT offsets after the program's first line: 20, spread over its first two seconds
# (the native imports, the model, the bank, the sweep's compilation and the sweep).
CTRL_C_OFFSETS = tuple(2.0 * i / 19 for i in range(20))


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads /proc (Linux)")
def test_ctrl_c_from_the_first_line_always_exits_130_with_no_partial_files(tmp_path):
    """`convis-jax explain` as pip installs it, interrupted at 20 moments of its first two
    seconds, counted from its first line (the moment it holds SIGINT, seen in /proc;
    before it, Python itself is starting and a signal is CPython's to handle): every run
    exits 130 with "interrupted", no traceback and no partial file. Many land inside
    `import jax` and XLA's start-up, where a delivered signal has crashed the process."""
    from concurrent.futures import ThreadPoolExecutor

    images = []
    for i in range(2):
        images.append(tmp_path / f"photo-{i}.png")
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (120, 90, 3), np.uint8)).save(
            images[-1])
    program = entry_point_program()

    def interrupted_run(number: int, offset: float):
        out = tmp_path / f"out-{number}"
        env = dict(os.environ, CONVIS_JAX_CACHE=str(tmp_path / f"cache-{number}"),
                   HF_HUB_OFFLINE="1",
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        process = subprocess.Popen(
            [sys.executable, "-c", program, "explain", *map(str, images), "--concepts", "heart",
             "--out", str(out)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while not interrupts_held(process.pid) and process.poll() is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.002)
        held = interrupts_held(process.pid)
        time.sleep(offset)
        process.send_signal(signal.SIGINT)
        try:
            _, stderr = process.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            return offset, held, None, "no exit within 240 s of Ctrl-C", out
        return offset, held, process.returncode, stderr.decode(errors="replace"), out

    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(interrupted_run, range(len(CTRL_C_OFFSETS)), CTRL_C_OFFSETS))
    for offset, held, code, stderr, out in runs:
        assert held, f"the program never held SIGINT (offset {offset:.2f} s): {stderr[-2000:]}"
        assert code == 130, (f"Ctrl-C {offset:.2f} s after the first line: exit {code} "
                             f"(0: the run ended first; make it longer){stderr[-3000:]}")
        for marker in ("Traceback", "Exception ignored", "Fatal Python error"):
            assert marker not in stderr, (offset, stderr[-3000:])
        # A progress bar's last redraw may land after the message on a loaded machine.
        assert "interrupted" in stderr.replace("\r", "\n").splitlines(), (offset, stderr)
        if out.exists():
            assert_no_partial_files(out)


def test_a_held_ctrl_c_is_acted_on_once_released():
    """A SIGINT that lands while a program holds interrupts waits, and stops the run (130)
    the moment `release_interrupts` lets it through; the handler is then restored."""
    from convis_jax import programs

    steps = []

    def action():
        # To this thread: the test process has other threads, which do not hold SIGINT (a
        # program holds it before it starts any, and its threads inherit the hold).
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # held: waits
        time.sleep(0.05)
        steps.append("held")
        programs.release_interrupts()
        steps.append("after the release")

    before = signal.getsignal(signal.SIGINT)
    programs.hold_interrupts()
    try:
        assert programs.run_command(action) == programs.EXIT_INTERRUPTED
    finally:
        programs.release_interrupts()
    assert steps == ["held"] and signal.getsignal(signal.SIGINT) is before


def test_ctrl_c_inside_an_import_waits_until_the_import_is_done(tmp_path, monkeypatch):
    """Raised inside an import, KeyboardInterrupt can break a native library's start-up
    (or surface as ImportError); the handler lets the import finish, then raises."""
    from convis_jax.programs import interrupt_at_safe_points

    (tmp_path / "convis_test_slow_import.py").write_text(
        "import os, signal, time\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "for _ in range(30):\n    time.sleep(0.01)\n"
        "DONE = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(KeyboardInterrupt), interrupt_at_safe_points():
            import convis_test_slow_import  # noqa: F401
            for _ in range(200):  # the interrupt, re-delivered, lands here
                time.sleep(0.01)
        assert sys.modules["convis_test_slow_import"].DONE
    finally:
        sys.modules.pop("convis_test_slow_import", None)


CLI_MISTAKES = [
    ("seed 2**63", ["--seed", str(2**63)], "below 2**63"),
    ("gamma inf", ["--gamma", "inf"], "--gamma: expected a positive number"),
    ("gamma nan", ["--gamma", "nan"], "--gamma: expected a positive number"),
    ("vocabulary JSON a number", ["--vocabulary", "NUMBER_JSON"], "top level is an object"),
]


@pytest.mark.parametrize("name, options, words", CLI_MISTAKES, ids=[m[0] for m in CLI_MISTAKES])
def test_cli_mistakes_exit_2_with_one_line(name, options, words, tiny_checkpoint, tmp_path, capsys,
                                           monkeypatch):
    from convis_jax.cli import main

    monkeypatch.setenv("CONVIS_JAX_CACHE", str(tmp_path / "cache"))
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(image)
    (tmp_path / "number.json").write_text("5")
    options = [str(tmp_path / "number.json") if o == "NUMBER_JSON" else o for o in options]
    code = main(["explain", str(image), "--concepts", "dog", "--out", str(tmp_path / "out"),
                 "--model", str(tiny_checkpoint[0]), "--quiet", *options])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2 and words in err and "\n" not in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_bank_run_twice_reads_the_cache_without_loading_the_model(tiny_checkpoint, tmp_path,
                                                                   capsys, monkeypatch):
    """The second `bank` finds the entry the first wrote (same key); a poisoned one is rebuilt."""
    from convis_jax import cli
    from convis_jax.core.cache import load_arrays

    monkeypatch.setenv("CONVIS_JAX_CACHE", str(tmp_path / "cache"))
    argv = ["bank", "--model", str(tiny_checkpoint[0]), "--vocabulary",
            str(words_file(tmp_path)), "--quiet"]
    assert cli.main(argv) == 0
    first = capsys.readouterr().out
    path = Path(first.rsplit("cached at ", 1)[1].strip())
    built = load_arrays(path)["embeddings"]
    real = cli._convis
    monkeypatch.setattr(cli, "_convis", lambda *a, **k: pytest.fail("the model was loaded"))
    assert cli.main(argv) == 0 and capsys.readouterr().out == first
    poison(path, {"embeddings": np.full_like(built, np.nan)})
    monkeypatch.setattr(cli, "_convis", real)
    with pytest.warns(UserWarning, match="non-finite values.*rebuilding"):
        assert cli.main(argv) == 0 and capsys.readouterr().out == first
    assert np.array_equal(load_arrays(path)["embeddings"], built)
