"""Every user-facing failure is a typed `ConvisError` with one line saying what was expected
and what was found; damaged concept-bank caches are rebuilt with a warning.

The image-file corpus lives in tests/core/test_images_bad_inputs.py, damaged checkpoints in
tests/models/test_loading.py, the command line's mistakes in tests/test_cli.py and
two processes racing for one bank in tests/test_determinism.py; here the same kinds of
input go through `ConVis`, `load_clip` and the vocabulary loaders.
"""

from __future__ import annotations

import dataclasses
import io
import warnings
from collections.abc import Callable

import numpy as np
import pytest

import convis_jax
from convis_jax.errors import (
    CacheError,
    ConceptError,
    ConvisError,
    InputError,
    ModelLoadError,
)
from convis_jax.testing import write_words_file

CONCEPTS = ["dog.n.01", "cat.n.01"]


def test_one_base_error_and_four_kinds():
    for kind in (InputError, ModelLoadError, ConceptError, CacheError):
        assert issubclass(kind, ConvisError) and getattr(convis_jax, kind.__name__) is kind
    assert convis_jax.ConvisError is ConvisError
    # Callers that catch the built-in kinds keep working.
    assert issubclass(InputError, ValueError) and issubclass(ConceptError, KeyError)
    assert str(ConceptError("'x' is unknown")) == "'x' is unknown"  # not KeyError's quoted repr


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("robustness")
    write_words_file(root)
    (root / "unknown-words.txt").write_text("qqqzzz\nxxyyzz\n")
    (root / "comments-only.txt").write_text("# nothing here\n\n")
    (root / "binary.txt").write_bytes(b"\x89\xff\x00\xfe")
    (root / "broken.json").write_text("{names: [")
    return root


@pytest.fixture(scope="module")
def convis(tiny_checkpoint, folder):
    from convis_jax.api import ConVis

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONVIS_JAX_CACHE", str(folder / "cache"))
        yield ConVis(str(tiny_checkpoint[0]), folder / "words.txt", progress=False)


@dataclasses.dataclass(frozen=True)
class Failure:
    """One user mistake: `call(convis, folder)` must raise `error` with a message matching `says`."""

    name: str
    call: Callable
    error: type
    says: str


OK = np.zeros((32, 32, 3), np.uint8)

FAILURES = [
    # ---- arrays into every method
    Failure("NaN image into similarity", lambda c, d: c.similarity(np.full((8, 8, 3), np.nan)),
            InputError, "expected finite values, found 192 NaN and 0 inf"),
    Failure("inf image into occlusion maps", lambda c, d: c.occlusion_maps(np.full((8, 8), np.inf), CONCEPTS),
            InputError, "expected finite values, found 0 NaN and 64 inf"),
    Failure("NaN in the second image of a batch into gradient maps",
            lambda c, d: c.gradient_maps([OK, np.full((8, 8, 3), np.nan)], CONCEPTS),
            InputError, r"^images\[1\] .*expected finite values"),
    Failure("NaN image into top concepts", lambda c, d: c.top_concepts(np.full((4, 4), np.nan)),
            InputError, "expected finite values, found 16 NaN"),
    Failure("complex array", lambda c, d: c.similarity(np.zeros((8, 8, 3), np.complex64)),
            InputError, "expected an integer array in .* found dtype complex64"),
    Failure("bool array", lambda c, d: c.occlusion_maps(np.ones((8, 8), bool), CONCEPTS),
            InputError, "found dtype bool"),
    Failure("float image in [0, 255]", lambda c, d: c.similarity(np.full((8, 8, 3), 200.0)),
            InputError, r"expected values in \[0, 1.0\], found values in \[200.0, 200.0\]"),
    Failure("channels first", lambda c, d: c.gradient_maps(np.zeros((3, 32, 32), np.uint8), CONCEPTS),
            InputError, "expected 1, 3 or 4 channels on the last axis, found 32"),
    Failure("1-D array", lambda c, d: c.similarity(np.zeros(12, np.uint8)),
            InputError, "expected shape .* found 1 dimensions"),
    Failure("5-D array", lambda c, d: c.similarity(np.zeros((1, 2, 8, 8, 3), np.uint8)),
            InputError, "found 5 dimensions"),
    Failure("empty list", lambda c, d: c.similarity([]), InputError, "expected at least one image, found an empty batch"),
    Failure("empty NHWC batch into occlusion maps",
            lambda c, d: c.occlusion_maps(np.zeros((0, 8, 8, 3), np.uint8), CONCEPTS),
            InputError, "found an empty batch"),
    Failure("empty batch into gradient maps", lambda c, d: c.gradient_maps([], CONCEPTS), InputError, "empty batch"),
    Failure("None as an image", lambda c, d: c.similarity(None), InputError,
            "expected a path, a PIL image or an array.*found NoneType"),
    Failure("missing image file", lambda c, d: c.top_concepts(str(d / "nope.png")), InputError,
            r"nope\.png' does not exist"),
    Failure("pixel values of the wrong size", lambda c, d: c.model.embed_pixel_values(np.zeros((1, 3, 8, 8))),
            InputError, r"expected pixel_values of shape \[N, 3, 32, 32\] with N >= 1, found \[1, 3, 8, 8\]"),
    Failure("no pixel values", lambda c, d: c.model.embed_pixel_values(np.zeros((0, 3, 32, 32))),
            InputError, r"with N >= 1, found \[0, 3, 32, 32\]"),
    # ---- concepts
    Failure("empty concept list", lambda c, d: c.occlusion_maps(OK, []), ConceptError,
            "expected at least one concept, found an empty list"),
    Failure("duplicated synset", lambda c, d: c.similarity(OK, ["cat.n.01", "cat.n.01"]), ConceptError,
            r"cat\.n\.01 is requested 2 times"),
    Failure("a word and one of its synsets", lambda c, d: c.gradient_maps(OK, ["dog", "dog.n.01"]), ConceptError,
            r"dog\.n\.01 is requested 2 times \(by 'dog', 'dog\.n\.01'\)"),
    Failure("verb synset", lambda c, d: c.similarity(OK, ["run.v.01"]), ConceptError,
            r"'run\.v\.01' is a verb synset, expected a noun synset"),
    Failure("adjective synset", lambda c, d: c.similarity(OK, ["red.a.01"]), ConceptError,
            r"'red\.a\.01' is an adjective synset, expected a noun synset"),
    Failure("unknown synset", lambda c, d: c.similarity(OK, ["zzzq.n.01"]), ConceptError,
            r"'zzzq\.n\.01' is not a WordNet noun synset"),
    Failure("unknown word", lambda c, d: c.occlusion_maps(OK, ["qqqzzz"]), ConceptError,
            r"'qqqzzz' is neither a synset name nor a word of this vocabulary of \d+ synsets"),
    Failure("misspelt word", lambda c, d: c.similarity(OK, ["flwoer"]), ConceptError, r"did you mean flower, "),
    Failure("misspelt synset", lambda c, d: c.similarity(OK, ["dgo.n.01"]), ConceptError,
            r"'dgo\.n\.01' is not a WordNet noun synset; did you mean dog\.n\.01"),
    Failure("synset outside the vocabulary", lambda c, d: c.similarity(OK, ["cathedral.n.01"]), ConceptError,
            r"'cathedral\.n\.01' is a WordNet noun synset outside this vocabulary of \d+ synsets"),
    Failure("a number as a concept", lambda c, d: c.similarity(OK, [3]), ConceptError,
            "expected a synset name or a word, found int 3"),
    # ---- vocabularies and text modes
    Failure("missing vocabulary file", lambda c, d: _convis(c, d / "nope.txt"), InputError,
            r"vocabulary must be 'physical_objects', 'all_nouns' or a file, found '.*nope\.txt' \(no such file\)"),
    Failure("binary vocabulary file", lambda c, d: _convis(c, d / "binary.txt"), InputError,
            r"expected a readable UTF-8 text file at '.*binary\.txt'"),
    Failure("vocabulary of unknown words", lambda c, d: _convis(c, d / "unknown-words.txt"), InputError,
            "expected words or synsets with a noun synset under entity.n.01, found none"),
    Failure("vocabulary file of comments", lambda c, d: _convis(c, d / "comments-only.txt"), InputError,
            "found none"),
    Failure("malformed vocabulary JSON", lambda c, d: _convis(c, d / "broken.json"), InputError,
            r"expected a vocabulary JSON file .* at '.*broken\.json', found unreadable JSON"),
    Failure("unknown text mode", lambda c, d: _convis(c, d / "words.txt", text="gloss"), InputError,
            r"expected a text mode in .* or a template containing '\{\}', found 'gloss'"),
    # ---- models
    Failure("missing model folder", lambda c, d: convis_jax.load_clip(d / "no-model"), ModelLoadError,
            r"no checkpoint folder at '.*no-model' \(expected a folder with config\.json and weights"),
    Failure("folder without a checkpoint", lambda c, d: convis_jax.load_clip(d), ModelLoadError,
            r"no config\.json at"),
    Failure("unknown dtype", lambda c, d: convis_jax.load_clip(d, dtype="float16"), InputError,
            r"dtype must be one of \['bfloat16', 'float32'\], found 'float16'"),
]


def _convis(convis, vocabulary, **kwargs):
    from convis_jax.api import ConVis

    return ConVis(convis.model, vocabulary, progress=False, **kwargs)


@pytest.mark.parametrize("failure", FAILURES, ids=[f.name for f in FAILURES])
def test_user_mistakes_raise_a_typed_one_line_error(failure, convis, folder):
    with pytest.raises(failure.error, match=failure.says) as caught:
        failure.call(convis, folder)
    assert isinstance(caught.value, ConvisError)
    message = str(caught.value)
    assert "\n" not in message and message.strip() == message
    assert type(caught.value).__name__ == failure.error.__name__  # the most specific kind


def test_several_concept_problems_are_reported_at_once(convis):
    with pytest.raises(ConceptError) as caught:
        convis.similarity(OK, ["dgo", "run.v.01", "cat.n.01", "cat.n.01"])
    message = str(caught.value)
    assert message.startswith("3 problems in the requested concepts:")
    assert "'dgo'" in message and "'run.v.01'" in message and "cat.n.01 is requested 2 times" in message


# ------------------------------------------------------------------ concept-bank cache


@pytest.fixture(scope="module")
def built(convis):
    """The module's bank file and its embeddings, as first written."""
    return convis.bank.path, convis.bank.embeddings.copy(), convis.bank.path.read_bytes()


def _garbled(data: bytes) -> bytes:
    flipped = bytearray(data)
    for i in range(len(data) // 2, len(data) // 2 + 8):
        flipped[i] ^= 0xFF
    return bytes(flipped)


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _forged(data: bytes) -> bytes:
    """A well-formed npz whose checksum no longer matches its embeddings."""
    with np.load(io.BytesIO(data)) as npz:
        return _npz(__checksum__=npz["__checksum__"], embeddings=npz["embeddings"] * 2)


DAMAGE = {
    "cut in half": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
    "garbled in the middle": _garbled,
    "text": lambda data: b"this is not a cache file\n",
    "checksum does not match": _forged,
    "no checksum": lambda data: _npz(embeddings=np.zeros((3, 16), np.float32)),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_bank_file_warns_and_is_rebuilt(damage, convis, built, monkeypatch):
    from convis_jax.core.cache import load_arrays
    from convis_jax.kernels.bank import build_bank

    monkeypatch.setenv("CONVIS_JAX_CACHE", str(built[0].parents[1]))
    path, embeddings, good = built
    path.write_bytes(DAMAGE[damage](good))
    with pytest.warns(UserWarning, match=r"cache file .* is damaged .*; rebuilding it"):
        bank = build_bank(convis.model, convis.vocabulary, progress=False)
    assert bank.path == path
    assert bank.embeddings.tobytes() == embeddings.tobytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_arrays(path)["embeddings"].tobytes() == embeddings.tobytes()  # repaired on disk


def test_a_bank_file_of_another_shape_is_rebuilt(convis, built, monkeypatch):
    from convis_jax.core.cache import save_arrays
    from convis_jax.kernels.bank import build_bank

    monkeypatch.setenv("CONVIS_JAX_CACHE", str(built[0].parents[1]))
    path, embeddings, _ = built
    save_arrays(path, {"embeddings": np.zeros((3, 16), np.float32)})  # valid, but not this vocabulary
    bank = build_bank(convis.model, convis.vocabulary, progress=False)
    assert bank.embeddings.tobytes() == embeddings.tobytes()


def test_atomic_writes_leave_no_temporary_files(tmp_path):
    from convis_jax.core.cache import load_arrays, save_arrays

    path = tmp_path / "deep" / "bank.npz"
    arrays = {"embeddings": np.arange(12, dtype=np.float32).reshape(3, 4)}
    save_arrays(path, arrays)
    save_arrays(path, arrays)  # over an existing file
    assert [p.name for p in path.parent.iterdir()] == ["bank.npz"]
    np.testing.assert_array_equal(load_arrays(path)["embeddings"], arrays["embeddings"])
    assert load_arrays(tmp_path / "missing.npz") is None  # missing is not damaged: no warning


def test_a_missing_cache_folder_is_created(convis, tmp_path, monkeypatch):
    from convis_jax.kernels.bank import build_bank

    monkeypatch.setenv("CONVIS_JAX_CACHE", str(tmp_path / "new" / "cache"))
    bank = build_bank(convis.model, convis.vocabulary, progress=False)
    assert bank.path.is_file() and bank.path.is_relative_to(tmp_path / "new" / "cache")
    np.testing.assert_array_equal(bank.embeddings, convis.bank.embeddings)

