"""Loads the benchmark scripts in the test process, as `python benchmarks/<name>.py` would.

The benchmarks are scripts, not a package: they import each other as sibling
modules (`import common`), which works because a script's own folder is the
first entry of `sys.path`. Here each file is loaded by its path instead, the
sibling modules it imports first, and registered in `sys.modules` under its
bare name, so that those imports find it; `sys.path` is left alone.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def sibling_imports(path: Path) -> list[str]:
    """Names of the benchmark files that `path` imports at module level, in order."""
    names = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return [n for n in names if (BENCHMARKS / f"{n}.py").is_file()]


def load_benchmark(name: str) -> ModuleType:
    """The module benchmarks/<name>.py, loaded once (after its sibling imports).

    Args:
        name: the file's stem, e.g. "bench_occlusion".

    Returns:
        The module, also in `sys.modules[name]`.
    """
    if name in sys.modules:
        module = sys.modules[name]
        if Path(getattr(module, "__file__", "")).resolve() != BENCHMARKS / f"{name}.py":
            raise ImportError(f"sys.modules[{name!r}] is {module!r}, not benchmarks/{name}.py")
        return module
    path = BENCHMARKS / f"{name}.py"
    for sibling in sibling_imports(path):
        load_benchmark(sibling)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
