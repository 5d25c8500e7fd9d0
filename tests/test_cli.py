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

from convis_jax.cli import HIERARCHY_NOTE, main
from convis_jax.programs import DefaultsHelpFormatter
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
    for rank, (line, (f, fs), (h, hs)) in enumerate(zip(lines[2:5], flat.items(), hierarchical.items())):
        assert line.split() == [str(rank + 1), f, f"{fs:.4f}", h, f"{hs:.4f}"]
    # Equal hierarchical scores (an ancestor inherits its best descendant's) are explained.
    shown = list(hierarchical.values())[:3]
    ties = len(set(shown)) < len(shown)
    assert lines[2 + 3:] == ([HIERARCHY_NOTE] if ties else [])


def test_top_explains_equal_hierarchical_scores():
    """Under a table whose hierarchical column repeats a score, one line says why."""
    from types import SimpleNamespace

    from convis_jax.cli import format_top_table

    def result(scores):
        names = tuple(f"c{i}.n.01" for i in range(len(scores)))
        ranking = SimpleNamespace(names=names, scores=np.array(scores, np.float32))
        return SimpleNamespace(flat=ranking, hierarchical=ranking)

    tied = format_top_table(["a.png"], [result([0.3, 0.3, 0.3])]).splitlines()
    assert tied[-1] == HIERARCHY_NOTE and "ancestors repeat its score" in HIERARCHY_NOTE
    assert HIERARCHY_NOTE not in format_top_table(["a.png"], [result([0.3, 0.2, 0.1])])


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

    from convis_jax.pictures.explanations import write_explanations
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


def subcommands(parser, prefix=()):
    """(command words, parser) of every command and sub-command, depth first."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + (name,), sub
                yield from subcommands(sub, prefix + (name,))


def test_every_option_has_help_that_gives_its_default():
    """`convis-jax COMMAND --help` describes every option with its default (atlas too)."""
    import argparse

    from convis_jax.cli import build_parser

    for words, sub in subcommands(build_parser()):
        if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
            continue  # `atlas` itself: its sub-commands have the options
        assert sub.formatter_class is DefaultsHelpFormatter, words
        text = " ".join(sub.format_help().split())
        for action in sub._actions:
            if action.dest == "help":
                continue
            assert action.help, f"convis-jax {' '.join(words)}: {action.dest} has no help"
            if action.option_strings and action.default not in (None, False):
                assert f"default: {action.default}" in text or "default" in action.help, (
                    words, action.dest)
    build = dict(subcommands(build_parser()))[("atlas", "build")]
    assert "(default: noise)" in " ".join(build.format_help().split())


def test_model_option_is_on_every_command_but_demo_as_the_readme_says():
    from convis_jax.cli import build_parser

    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "Every command but `demo`" in readme
    for words, sub in subcommands(build_parser()):
        if words == ("atlas",):
            continue
        has_model = any("--model" in action.option_strings for action in sub._actions)
        assert has_model == (words != ("demo",)), words


def test_python_m_convis_jax_is_the_program_pip_installs():
    result = subprocess.run([sys.executable, "-m", "convis_jax", "--version"], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                            text=True, timeout=SUBPROCESS_TIMEOUT)
    assert (result.returncode, result.stdout.split()[0], result.stderr) == (0, "convis-jax", "")
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'convis-jax = "convis_jax.__main__:main"' in pyproject


def test_explain_rerun_replaces_the_image_folder_whole(setup, capsys, tmp_path):
    """A rerun into the same --out replaces each image's folder (stale overlays go), and
    says so; an interrupted rerun leaves the earlier folder as it was."""
    import convis_jax.pictures.overlays as overlays

    out = tmp_path / "rerun"
    argv = ["explain", setup.images[0], "--out", out, *setup.options(), "--concepts"]
    code, stdout, _ = run(capsys, *argv, "dog.n.01", "cat.n.01")
    folder = out / "00-a"
    assert code == 0 and "replacing" not in stdout
    assert sorted(p.name for p in folder.iterdir()) == ["cat.n.01.png", "dog.n.01.png", "grid.png"]
    code, stdout, _ = run(capsys, *argv, "cat.n.01")
    assert code == 0 and stdout.strip().endswith("(replacing the earlier 00-a)")
    assert sorted(p.name for p in folder.iterdir()) == ["cat.n.01.png", "grid.png"]
    assert json.loads((out / "summary.json").read_text())["concepts"] == ["cat.n.01"]
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(overlays, "concept_grid", interrupted)
        code, _, _ = run(capsys, *argv, "dog.n.01")
    assert code == 130
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]


def file_modes(folder: Path) -> set[tuple[str, str]]:
    import stat

    return {("folder" if p.is_dir() else "file", oct(stat.S_IMODE(p.stat().st_mode)))
            for p in [folder, *folder.rglob("*")]}


@pytest.mark.parametrize("umask, file, folder", [(0o022, "0o644", "0o755"),
                                                 (0o027, "0o640", "0o750")])
def test_files_get_the_mode_the_umask_gives(umask, file, folder, setup, capsys, tmp_path):
    """As a plain open(path, "w") and mkdir would: 0644 and 0755 under umask 022."""
    previous = os.umask(umask)
    try:
        code, _, err = run(capsys, "explain", *setup.images, "--concepts", "dog.n.01", "--out",
                           tmp_path / "out", *setup.options())
    finally:
        os.umask(previous)
    assert (code, err) == (0, "")
    assert file_modes(tmp_path / "out") == {("file", file), ("folder", folder)}


def test_demo_writes_what_it_says(tmp_path, capsys, monkeypatch):
    """The demo's JSON names the files beside it, every file reads back, and the files have
    the umask's modes; stdout says what each scene shows."""
    from convis_jax.cli import demo_scenes

    monkeypatch.setenv("CONVIS_JAX_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    previous = os.umask(0o022)
    try:
        code, stdout, err = run(capsys, "demo", "--out", out, "--quiet")
    finally:
        os.umask(previous)
    assert (code, err) == (0, "")
    assert file_modes(out) == {("file", "0o644"), ("folder", "0o755")}
    maps_folder = out / "maps"
    assert not (maps_folder / "maps.npz").exists() and not (maps_folder / "summary.json").exists()
    scenes = [p for p in sorted(out.glob("scene-*.png"))]
    assert len(scenes) == 4
    for scene in scenes:
        summary = json.loads((maps_folder / f"{scene.stem}.json").read_text())
        maps_file = summary["maps"].split(":")[0]
        assert maps_file == f"{scene.stem}.npz"
        with np.load(maps_folder / maps_file) as npz:
            assert list(npz["concepts"]) == summary["concepts"]
        entry = summary["images"][0]
        assert entry["image"] == scene.name
        for overlay in [*entry["overlays"].values(), entry["grid"]]:
            assert (maps_folder / entry["folder"] / overlay).is_file()
    assert (out / "explorer" / "index.html").is_file()
    # scene-0: a heart; ... as the README's quick start says.
    from convis_jax.api import ConVis
    from convis_jax.models.loading import load_clip

    chosen = demo_scenes(ConVis(load_clip(None), None, progress=False))
    for i, scene in enumerate(chosen):
        assert f"scene-{i}: {scene.captions[1]}" in stdout
        np.testing.assert_array_equal(photo(str(out / f"scene-{i}.png")), scene.image)


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
        "empty out": (["explain", image, "--concepts", "dog", "--out", "", *setup.options()],
                      r"--out: expected a folder name, found ''"),
        "empty out (demo)": (["demo", "--out", ""], r"--out: expected a folder name"),
        "empty out (atlas build)": (["atlas", "build", str(tmp), "--out", ""],
                                    r"--out: expected a folder name"),
        "decompression bomb (top)": (["top", str(tmp / "bomb.png"), *setup.options()],
                                     r"bomb\.png' is too large to decode safely"),
        "decompression bomb (explain)": (["explain", str(tmp / "bomb.png"), "--concepts", "dog",
                                          "--out", str(tmp / "out"), *setup.options()],
                                         r"bomb\.png' is too large to decode safely"),
        "a word the bundled model does not know": (
            ["explain", image, "--concepts", "dog", "--out", str(tmp / "out"), "--quiet"],
            r"'dog' is neither a synset name nor a word.*the bundled model knows only its 12 "
            r"drawn shapes \(circle, square, .*zigzag\) and their WordNet parents, 44 concepts "
            r"in all: for other concepts pass .*--model openai/clip-vit-base-patch32 "
            r"--vocabulary physical_objects"),
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
    bomb_png(folder / "bomb.png")
    return folder


def bomb_png(path: Path, side: int = 30000) -> Path:
    """The header of a side x side PNG (a decompression bomb), cut off after it."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)))
    return path


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
