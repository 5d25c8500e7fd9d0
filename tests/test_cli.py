"""`convis-jax` end to end on a tiny random CLIP: every output reads back; mistakes give one line.

Most runs call `main(argv)` in-process (the jitted sweeps compile once);
a few run `python -m convis_jax.cli` as a real process, with a timeout so
that a hang fails instead of blocking CI.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convis_jax.cli import main
from convis_jax.errors import one_line
from convis_jax.testing import WORDS, write_words_file

ROOT = Path(__file__).resolve().parents[1]
CONCEPTS = ["dog.n.01", "cat.n.01"]
SUBPROCESS_TIMEOUT = 300


@dataclasses.dataclass(frozen=True)
class Setup:
    root: Path
    cache: Path
    model: str
    words: str
    images: tuple[str, ...]  # a PNG 60 x 40 and a JPEG 30 x 50 (width x height)

    def options(self, *, vocabulary: bool = True) -> list[str]:
        return ["--model", self.model, "--quiet"] + (["--vocabulary", self.words] if vocabulary else [])


@pytest.fixture(scope="module")
def setup(tiny_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    write_words_file(root)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(root / "a.png")
    Image.fromarray(rng.integers(0, 256, (50, 30, 3), dtype=np.uint8)).save(root / "b.jpg")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONVIS_JAX_CACHE", str(root / "cache"))
        yield Setup(root, root / "cache", str(tiny_checkpoint[0]), str(root / "words.txt"),
                    (str(root / "a.png"), str(root / "b.jpg")))


@pytest.fixture(scope="module")
def real_top(setup):
    """`convis-jax top --json` as a real process, started early so that its start-up overlaps
    the in-process tests (it builds the bank alongside them: one more race for the cache)."""
    process = cli_process("top", *setup.images, "--k", 5, "--json", *setup.options(),
                          env=process_env(setup))
    yield process
    if process.poll() is None:
        process.kill()
        process.communicate()


@pytest.fixture(scope="module")
def convis(setup):
    """The API on the same model and vocabulary, the reference for what the CLI writes."""
    from convis_jax.api import ConVis

    return ConVis(setup.model, setup.words, progress=False)


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def photo(path: str) -> np.ndarray:
    from convis_jax.core.images import load_image

    return load_image(path)


def check_outputs(out: Path, setup: Setup, concepts: list[str], side: int, method: str) -> np.ndarray:
    """Every file `explain` writes exists and reads back; returns maps.npz's maps."""
    from convis_jax.core.windows import map_to_image
    from convis_jax.pictures.overlays import white_overlay

    with np.load(out / "maps.npz") as npz:
        assert sorted(npz.files) == ["concepts", "maps"]
        maps, names = npz["maps"], list(npz["concepts"])
    assert names == concepts
    assert maps.dtype == np.float32 and maps.shape == (len(setup.images), len(concepts), side, side)
    assert maps.min() >= 0 and maps.max() <= 1 and np.isfinite(maps).all()
    summary = json.loads((out / "summary.json").read_text())
    assert {"model", "method", "concepts", "vocabulary_size", "text", "maps", "images"} <= set(summary)
    assert summary["method"] == method and summary["concepts"] == concepts
    assert summary["vocabulary_size"] > len(WORDS) and summary["text"] == "definition"
    assert [entry["image"] for entry in summary["images"]] == list(setup.images)
    for n, (source, entry) in enumerate(zip(setup.images, summary["images"])):
        rgb = photo(source)
        height, width = rgb.shape[:2]
        assert entry["size"] == [width, height]
        folder = out / entry["folder"]
        with Image.open(folder / entry["grid"]) as grid:
            assert grid.format == "PNG" and min(grid.size) > 100
        on_photo = map_to_image(maps[n], (height, width))
        for k, concept in enumerate(concepts):
            with Image.open(folder / entry["overlays"][concept]) as image:
                assert image.size == (width, height)  # the input image's size
                # The PNG is the white blend of the map in maps.npz, put back on the photo.
                np.testing.assert_array_equal(np.asarray(image), white_overlay(rgb, on_photo[k]))
            x, y = entry["peak_xy"][concept]
            assert on_photo[k][y, x] == on_photo[k].max()
    return maps


def test_explain_occlusion_writes_every_file(setup, real_top, convis, capsys, tmp_path):
    out = tmp_path / "occlusion"
    code, stdout, err = run(capsys, "explain", *setup.images, "--concepts", *CONCEPTS, "--seed", 3,
                            "--out", out, *setup.options())
    assert (code, err) == (0, "")
    assert f"2 concept(s) for 2 image(s) to {out}" in stdout
    maps = check_outputs(out, setup, CONCEPTS, 224, "occlusion")
    expected = convis.occlusion_maps(list(setup.images), CONCEPTS, seed=3)
    np.testing.assert_array_equal(maps, expected)


def test_explain_gradient_writes_min_max_normalised_maps(setup, convis, capsys, tmp_path):
    from convis_jax.core.windows import map_to_image
    from convis_jax.evaluation import wsolevaluation_map

    out = tmp_path / "gradient"
    code, _, err = run(capsys, "explain", *setup.images, "--concepts", "dog", "--method", "gradient",
                       "--out", out, "--export-wsol", tmp_path / "wsol", *setup.options())
    assert (code, err) == (0, "")
    dogs = convis.vocabulary.resolve("dog")  # a word stands for all its noun synsets
    maps = check_outputs(out, setup, dogs, convis.model.image_size, "gradient")
    raw = convis.gradient_maps(list(setup.images), dogs)
    low = raw.min(axis=(-2, -1), keepdims=True)
    high = raw.max(axis=(-2, -1), keepdims=True)
    np.testing.assert_allclose(maps, (raw - low) / (high - low), rtol=0, atol=1e-6)
    # --export-wsol: <DIR>/<concept>/<image file name>.npy, the map on its photo as
    # wsolevaluation scores it (224 x 224, maximum 1).
    for n, source in enumerate(setup.images):
        size = photo(source).shape[:2]
        for k, concept in enumerate(dogs):
            saved = np.load(tmp_path / "wsol" / concept / (Path(source).name + ".npy"))
            assert saved.shape == (224, 224) and saved.max() == 1.0
            np.testing.assert_array_equal(saved, wsolevaluation_map(map_to_image(maps[n, k], size)))


def top_reference(convis, images, k):
    return [{"image": path, "flat": dict(zip(r.flat.names, map(float, r.flat.scores))),
             "hierarchical": dict(zip(r.hierarchical.names, map(float, r.hierarchical.scores)))}
            for path, r in zip(images, convis.top_concepts(list(images), k=k))]


def test_top_prints_json_and_a_table(setup, convis, capsys):
    code, stdout, err = run(capsys, "top", *setup.images, "--k", 4, "--json", *setup.options())
    assert (code, err) == (0, "")
    printed = json.loads(stdout)
    assert printed == top_reference(convis, setup.images, 4)
    assert [len(entry["flat"]) for entry in printed] == [4, 4]

    code, stdout, err = run(capsys, "top", setup.images[0], "--k", 3, *setup.options())
    assert (code, err) == (0, "")
    lines = stdout.splitlines()
    assert lines[0] == setup.images[0] and lines[1].split() == ["rank", "flat", "cosine",
                                                                "hierarchical", "cosine"]
    flat, hierarchical = printed[0]["flat"], printed[0]["hierarchical"]
    for rank, (line, (f, fs), (h, hs)) in enumerate(zip(lines[2:], flat.items(), hierarchical.items())):
        assert line.split() == [str(rank + 1), f, f"{fs:.4f}", h, f"{hs:.4f}"]
    assert len(lines) == 2 + 3


def test_bank_writes_a_cache_file_that_loads(setup, convis, capsys):
    from convis_jax.core.cache import load_arrays

    code, stdout, err = run(capsys, "bank", *setup.options())
    assert (code, err) == (0, "")
    path = Path(stdout.rsplit("cached at ", 1)[1].strip())
    assert path.parent == setup.cache / "banks"
    assert f"{len(convis.vocabulary)} concepts x {convis.model.embedding_dim} dims" in stdout
    np.testing.assert_array_equal(load_arrays(path)["embeddings"], convis.bank.embeddings)


def test_explore_writes_one_page_naming_the_images(setup, capsys, tmp_path):
    code, stdout, err = run(capsys, "explore", *setup.images, "--out", tmp_path / "page",
                            *setup.options())
    assert (code, err) == (0, "")
    page = tmp_path / "page" / "index.html"
    assert stdout.strip() == f"wrote {page}"
    html = page.read_text()
    assert "a.png" in html and "b.jpg" in html and len(html) > 10_000


def test_a_slash_in_a_synset_name_stays_in_the_file_name(tmp_path):
    """`read/write_head.n.01` gets one overlay file in the image's folder, not a subfolder."""
    from types import SimpleNamespace

    from convis_jax.cli import write_explanations
    from convis_jax.core.vocabulary import ConceptVocabulary

    maps = np.linspace(0, 1, 224 * 224, dtype=np.float32).reshape(1, 1, 224, 224)
    stand_in = SimpleNamespace(  # only what write_explanations reads from a ConVis
        vocabulary=ConceptVocabulary.from_synsets(["read/write_head.n.01"]),
        model=SimpleNamespace(name="stand-in"), bank=SimpleNamespace(text="definition"),
        occlusion_maps=lambda photos, concepts, **options: maps)
    summary = write_explanations(stand_in, [np.zeros((20, 30, 3), np.uint8)], ["photo"],
                                 ["read/write head"], tmp_path)
    name = summary["images"][0]["overlays"]["read/write_head.n.01"]
    assert name == "read%2Fwrite_head.n.01.png"
    assert sorted(p.name for p in (tmp_path / "photo").iterdir()) == ["grid.png", name]


def test_gradient_choices_are_the_backends():
    """The parser spells the choices out (so `--help` and typos need no jax import); they must
    stay those the gradients backend accepts."""
    from convis_jax.cli import build_parser
    from convis_jax.kernels import gradients

    explain = build_parser()._subparsers._group_actions[0].choices["explain"]
    choices = {action.dest: action.choices for action in explain._actions}
    assert tuple(choices["score"]) == gradients.SCORES and tuple(choices["kind"]) == gradients.KINDS


def test_help_and_version_exit_zero(capsys):
    code, stdout, _ = run(capsys, "--help")
    assert code == 0 and "explain" in stdout and "top" in stdout
    code, stdout, _ = run(capsys, "--version")
    assert code == 0 and stdout.startswith("convis-jax ")


# ------------------------------------------------------------------ user mistakes


def truncated_png(path: Path) -> Path:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 7).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def mistakes(setup: Setup, tmp: Path) -> dict[str, tuple[list, str]]:
    """name -> (argv, regex the one-line message must match); `tmp` is `mistake_folder`."""
    image = setup.images[0]
    explain = ["explain", image, "--out", str(tmp / "out"), *setup.options(), "--concepts"]
    return {
        "missing image": (["explain", str(tmp / "nope.png"), "--concepts", "dog", "--out", str(tmp),
                           "--model", str(tmp / "no-model")], r"nope\.png' does not exist"),
        "text file named .jpg": (["top", str(tmp / "notes.jpg"), *setup.options()],
                                 r"notes\.jpg' is not an image Pillow can read"),
        "truncated image": (["top", image, str(tmp / "half.png"), *setup.options()],
                            r"half\.png' is truncated or damaged"),
        "directory as image": (["top", str(tmp), *setup.options()], "is a directory"),
        "unknown synset": (explain + ["zzzq.n.01"], r"'zzzq\.n\.01' is not a WordNet noun synset"),
        "verb synset": (explain + ["run.v.01"], r"'run\.v\.01' is a verb synset, expected a noun synset"),
        "misspelt word": (explain + ["dgo"], r"'dgo' is neither a synset name nor a word.*did you mean dog\?"),
        "synset outside the vocabulary": (explain + ["cathedral.n.01"],
                                          r"noun synset outside this vocabulary of \d+ synsets"),
        "several problems on one line": (explain + ["dgo", "run.v.01"],
                                         r"2 problems in the requested concepts: 'dgo' .*; 'run\.v\.01'"),
        "empty concept list": (explain, r"--concepts: expected at least one argument"),
        "empty concept name": (explain + [""], r"'' is neither a synset name nor a word"),
        "duplicated synset": (explain + ["dog.n.01", "dog.n.01"], r"dog\.n\.01 is requested 2 times"),
        "word overlapping a synset": (explain + ["dog", "dog.n.01"],
                                      r"dog\.n\.01 is requested 2 times.*name synsets to avoid"),
        "unknown model path": (["top", image, "--model", str(tmp / "no-model")],
                               r"no checkpoint folder at '.*no-model'"),
        "model folder without config": (["top", image, "--model", str(tmp)], r"no config\.json at"),
        "model folder without weights": (["top", image, "--model", str(tmp / "weightless")],
                                         r"no weights in .*weightless: expected one of model\.safetensors"),
        "missing vocabulary file": (["top", image, "--model", setup.model, "--vocabulary",
                                     str(tmp / "words.txt")], r"vocabulary must be .* \(no such file\)"),
        "bad text mode": (["bank", *setup.options(), "--text", "bogus"],
                          r"template containing '\{\}', found 'bogus'"),
        "out is a file": (["explain", image, "--concepts", "dog", "--out", str(tmp / "file"),
                           *setup.options()], r"--out must be a folder, found a file"),
        "k zero": (["top", image, "--k", "0"], r"--k: expected a positive integer, found '0'"),
        "k not a number": (["top", image, "--k", "ten"], r"--k: expected a positive integer, found 'ten'"),
        "negative gamma": (explain + ["dog", "--gamma", "-1"], r"--gamma: expected a positive number"),
        "nan gamma": (explain + ["dog", "--gamma", "nan"], r"--gamma: expected a positive number, found 'nan'"),
        "negative seed": (explain + ["dog", "--seed", "-2"], r"--seed: expected a non-negative integer"),
        "export-wsol with one file name twice": (
            ["explain", image, image, "--concepts", "dog", "--out", str(tmp / "out"),
             "--export-wsol", str(tmp / "wsol"), *setup.options()],
            r"--export-wsol: expected images with distinct file names"),
        "unknown method": (explain + ["dog", "--method", "lime"], r"--method: invalid choice: 'lime'"),
        "unknown dtype": (["bank", "--dtype", "float16"], r"--dtype: invalid choice"),
        "unknown option": (["top", image, "--colour", "red"], r"unrecognized arguments: --colour red"),
        "unknown command": (["explian", image], r"invalid choice: 'explian'"),
        "no command": ([], r"the following arguments are required: command"),
        "missing --out": (["explain", image, "--concepts", "dog"], r"required: --out"),
        "atlas without a subcommand": (["atlas"], r"required: atlas_command"),
        "atlas build of a missing folder": (["atlas", "build", str(tmp / "no-photos"), "--out",
                                             str(tmp / "atlas")], r"no such path '.*no-photos'"),
        "atlas build with an unknown store": (["atlas", "build", str(tmp), "--out",
                                               str(tmp / "atlas"), "--store", "int8"],
                                              r"--store: invalid choice: 'int8'"),
        "atlas explore of a folder that is no atlas": (
            ["atlas", "explore", str(tmp), "--out", str(tmp / "page")],
            r"expected an atlas folder with atlas\.json, found none"),
    }


def assert_one_clear_line(code: int, stdout: str, stderr: str, pattern: str) -> None:
    import re

    assert code == 2, (stdout, stderr)
    assert "Traceback" not in stderr and stdout == ""
    lines = stderr.strip("\n").split("\n")
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    assert re.search(pattern, lines[0]), lines[0]


@pytest.fixture(scope="module")
def mistake_folder(tiny_checkpoint, tmp_path_factory):
    """A folder with the bad files `mistakes` names (and no model, no vocabulary)."""
    folder = tmp_path_factory.mktemp("mistakes")
    (folder / "weightless").mkdir()
    (folder / "weightless" / "config.json").write_bytes((tiny_checkpoint[0] / "config.json").read_bytes())
    (folder / "notes.jpg").write_text("hello, this is text\n")
    (folder / "file").write_text("")
    truncated_png(folder / "half.png")
    return folder


MISTAKES = list(mistakes(Setup(Path("."), Path("."), "m", "w", ("a", "b")), Path("/tmp")))


@pytest.mark.parametrize("name", MISTAKES)
def test_mistakes_end_in_one_line_and_exit_2(name, setup, mistake_folder, capsys):
    argv, pattern = mistakes(setup, mistake_folder)[name]
    code, stdout, stderr = run(capsys, *argv)
    assert_one_clear_line(code, stdout, stderr, pattern)


def test_concepts_are_checked_before_the_bank_is_built(setup, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("CONVIS_JAX_CACHE", str(tmp_path / "fresh-cache"))
    code, stdout, stderr = run(capsys, "explain", setup.images[0], "--concepts", "dgo", "--out",
                               tmp_path / "out", *setup.options())
    assert_one_clear_line(code, stdout, stderr, "did you mean dog")
    assert not (tmp_path / "fresh-cache" / "banks").exists()
    assert not (tmp_path / "out").exists()


def test_unwritable_output_is_one_line_and_exit_2(setup, capsys, tmp_path):
    blocked = tmp_path / "blocked"
    blocked.write_text("")  # a file where a folder of the output should go
    code, stdout, stderr = run(capsys, "explore", setup.images[0], "--out", blocked / "page",
                               *setup.options())
    assert code == 2 and stdout == "" and "Traceback" not in stderr
    assert len(stderr.strip().split("\n")) == 1 and "blocked" in stderr


def test_one_line_joins_a_list_of_problems():
    assert one_line("2 problems in x:\n  - a\n  - b") == "2 problems in x: a; b"
    assert one_line("plain") == "plain"


# ------------------------------------------------------------------ real processes


def cli_process(*argv, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "convis_jax.cli", *map(str, argv)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def process_env(setup: Setup) -> dict[str, str]:
    return dict(os.environ, CONVIS_JAX_CACHE=str(setup.cache), HF_HUB_OFFLINE="1",
                PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    try:
        stdout, stderr = process.communicate(timeout=SUBPROCESS_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"convis-jax did not finish in {SUBPROCESS_TIMEOUT} s: {process.args}")
    return process.returncode, stdout, stderr


def test_real_processes_print_the_same_and_fail_cleanly(setup, real_top, convis, mistake_folder):
    every = mistakes(setup, mistake_folder)
    failing = ["missing image", "text file named .jpg", "k zero"]
    processes = [cli_process(*every[name][0], env=process_env(setup)) for name in failing]
    code, stdout, stderr = finish(real_top)
    assert code == 0 and "Traceback" not in stderr, stderr
    # Another process, the same bits: JSON floats are printed exactly.
    assert json.loads(stdout) == top_reference(convis, setup.images, 5)
    for name, process in zip(failing, processes):
        assert_one_clear_line(*finish(process), every[name][1])
