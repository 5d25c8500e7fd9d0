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


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    command = re.search(r"pip install -e \"\.\[test\]\" && (python -m pytest[^\n`]*)", README)
    assert command, "the README names no test command"
    assert command.group(1).strip() in ci


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
