"""The README's Python example runs as written, and its commands are the ones CI runs."""

import re
from pathlib import Path

import numpy as np

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
