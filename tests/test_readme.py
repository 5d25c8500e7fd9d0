"""The README's Python example runs as written, its commands are the ones CI runs, and its pictures are current."""

import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_python_example_runs_as_written(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks, "the README has no Python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    maps, cells, grads = namespace["maps"], namespace["cells"], namespace["grads"]
    vocabulary = namespace["convis"].vocabulary
    assert maps.shape == (1, 2, 224, 224) and 0 <= maps.min() and maps.max() <= 1
    assert cells.shape == (1, len(vocabulary), 14, 14)
    size = namespace["model"].image_size
    assert grads.shape == (1, 1, size, size) and np.all(np.isfinite(grads))
    assert (tmp_path / "circle.png").is_file()


def test_python_example_shows_its_concepts(bundled):
    """The example's scene holds what its comments say, each mapped concept is drawn in it
    (itself or a kind of it), the maps are higher on it than off it, and the printed
    hierarchical scores are the circle's and its ancestors', as the comment explains."""
    from convis_jax.scenes import render_scene

    block = re.findall(r"```python\n(.*?)```", README, flags=re.S)[0]
    call = re.search(r"render_scene\((.*?)\)\.image", block).group(1)
    scene = eval(f"render_scene({call})", {"render_scene": render_scene})  # noqa: S307
    assert "A circle and a hexagon" in block
    assert sorted(scene.concepts) == ["circle.n.01", "hexagon.n.01"]
    mapped = ast_list(re.search(r"occlusion_maps\(photo, (\[.*?\])\)", block).group(1))
    convis = bundled
    maps = convis.occlusion_maps(scene.image, mapped)[0]
    for concept, m in zip(mapped, maps):
        drawn = drawn_in_subtree(convis.vocabulary, concept, scene.concepts)
        assert drawn, f"{concept} is not drawn in the README's scene {scene.concepts}"
        mask = scene.masks[scene.concepts.index(drawn[0])]
        assert m[mask].mean() > m[~mask].mean() + 0.1, (concept, m[mask].mean(), m[~mask].mean())
    top = convis.top_concepts(scene.image, k=3)[0]
    assert top.hierarchical.names == ("circle.n.01", "ellipse.n.01", "conic_section.n.01")
    assert np.all(top.hierarchical.scores == top.hierarchical.scores[0])
    assert "ellipse.n.01 and conic_section.n.01 print the same number" in block


def ast_list(text: str) -> list[str]:
    import ast

    return list(ast.literal_eval(text))


@pytest.fixture(scope="module")
def bundled():
    """ConVis on the bundled model and its own vocabulary."""
    from convis_jax.api import ConVis
    from convis_jax.models.loading import load_clip

    return ConVis(load_clip(None), None, progress=False)


def drawn_in_subtree(vocabulary, concept: str, drawn: tuple[str, ...]) -> list[str]:
    """The drawn shapes that are `concept` or a kind of it."""
    return [name for name in drawn if name == concept or concept in ancestors(vocabulary, name)]


def ancestors(vocabulary, name: str) -> set[str]:
    found, todo = set(), [name]
    while todo:
        for parent in vocabulary.parents(todo.pop()):
            if parent not in found:
                found.add(parent)
                todo.append(parent)
    return found


def test_demo_and_cli_examples_show_their_concepts(bundled):
    """The demo's scenes are what the quick start says; every `explain demo/scene-N.png`
    example maps concepts drawn in scene N (themselves or a kind of them); and the
    explorer opens each scene on its top flat concept, which is drawn in it."""
    from convis_jax.cli import demo_scenes

    convis = bundled
    scenes = demo_scenes(convis)
    described = re.search(r"`demo/scene-0\.png` is (.*?)\. They are", README, flags=re.S).group(1)
    described = " ".join(described.split())
    shows = [scene.captions[1] for scene in scenes]  # "a heart", "a spiral and an arrow"
    middle = "".join(f", `scene-{i}` {text}" for i, text in enumerate(shows[1:-1], 1))
    assert described == f"{shows[0]}{middle} and `scene-{len(shows) - 1}` {shows[-1]}", described
    examples = re.findall(r"^convis-jax explain demo/scene-(\d+)\.png --concepts ((?:[^-\s]\S* )+)",
                          README, flags=re.M)
    assert len(examples) >= 2, "the README has no explain example on a demo scene"
    for number, concepts in examples:
        scene = scenes[int(number)]
        for concept in convis.vocabulary.resolve(concepts.split()):
            assert drawn_in_subtree(convis.vocabulary, concept, scene.concepts), (
                f"the README maps {concept} on scene-{number}, which shows {scene.concepts}")
    flat = convis.similarity([s.image for s in scenes])  # what the explorer orders by
    for scene, scores in zip(scenes, flat):
        assert convis.vocabulary.names[int(np.argmax(scores))] in scene.concepts


def test_atlas_snippet_runs_and_warns_at_its_own_lines(tmp_path, monkeypatch):
    """The atlas section's Python runs as written on an atlas of two scenes, and any
    warning the library gives points at the snippet's line, not at library source."""
    import warnings

    from convis_jax import cli
    from convis_jax.pictures.overlays import save_png
    from convis_jax.scenes import make_dataset

    blocks = [b for b in re.findall(r"```python\n(.*?)```", README, flags=re.S) if "Atlas.open" in b]
    assert len(blocks) == 1
    monkeypatch.setenv("CONVIS_JAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    for i, scene in enumerate(make_dataset(5, 2, size=96)):
        save_png(scene.image, tmp_path / "photos" / f"scene-{i}.png")
    assert cli.main(["atlas", "build", "photos/", "--out", "atlas/", "--quiet"]) == 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(compile(blocks[0], "README.md", "exec"), {})
    assert caught, "expected the bundled model's long-text warning from the bank"
    for warning in caught:
        assert warning.filename == "README.md", (warning.filename, warning.lineno, warning.message)


def test_outside_encoder_example_draws_maps(tmp_path, monkeypatch):
    """The Models section's Flax module wrapped as an Encoder draws maps through ConVis."""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README, flags=re.S)
              if "cj.Encoder(" in b]
    assert len(blocks) == 1, "the README has no outside-encoder example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    maps, grads = namespace["my_maps"], namespace["my_grads"]
    assert maps.shape == (1, 1, 224, 224) and 0 <= maps.min() and maps.max() <= 1
    assert grads.shape == (1, 1, 64, 64) and np.all(np.isfinite(grads))


def test_ci_runs_the_readme_test_commands():
    """The README's test command is `.ci/run`, which ends with the plain command it also gives."""
    assert "```bash\nbash .ci/run\n```" in README, "the README names no one-command test run"
    ci = (ROOT / ".ci" / "run").read_text()
    command = re.search(r"pip install -e \"\.\[test\]\" && python (-m pytest[^\n`]*)", README)
    assert command, "the README names no plain test command"
    assert f'"$python" {command.group(1).strip()}' in ci
    assert '-e ".[test]"' in ci and "apt-get install" in ci
    for package in ("chromium", "wordnet-base", "wordnet-sense-index"):
        assert f"need+=({package})" in ci and package in README


def test_readme_pictures_show_the_current_demo(tmp_path):
    """docs/demo-grid.png and docs/explorer.png are what scripts/readme_pictures.py draws now."""
    import importlib.util

    from PIL import Image

    spec = importlib.util.spec_from_file_location("readme_pictures", ROOT / "scripts" / "readme_pictures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not module.CHROMIUM.is_file():
        pytest.fail(f"drawing docs/explorer.png needs Debian's Chromium at {module.CHROMIUM}: "
                    f"apt-get install -y chromium (as .ci/run does; see the README)", pytrace=False)
    for drawn in module.draw(tmp_path):
        new = np.asarray(Image.open(drawn), np.float32)
        shipped = np.asarray(Image.open(ROOT / "docs" / drawn.name), np.float32)
        assert new.shape == shipped.shape and np.abs(new - shipped).mean() < 1.0, (
            f"docs/{drawn.name} is out of date: python scripts/readme_pictures.py")
