"""The package's layering, read from the source: no import cycles, `core` stays the method,
nothing in the library imports the command line, the benchmarks import each other without
a cycle, and no test, benchmark or script edits `sys.path`. Also, at run time, importing
`convis_jax.core` loads no framework. And its shape: no module over 600 lines; `api`,
`atlas` and `evaluation` use no other module's private names; the tests mirror the package.

The import graph is built statically (ast) from every `import` and `from ... import`
of every module under convis_jax/, at module level and inside functions, so that a
cycle closed by a deferred import is found too. `from pkg import name` is an edge to
the submodule `pkg.name` when that is a module, else to `pkg` itself. Imports under
`if TYPE_CHECKING:` do not run, so they are left out of the cycle check (but not out
of the layering rules).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "convis_jax"
FRAMEWORKS = ("jax", "jaxlib", "flax", "torch", "transformers", "orbax")
CORE = "convis_jax.core"
CORE_MAY_IMPORT = ("convis_jax.core", "convis_jax.errors")
CLI = "convis_jax.cli"
CLI_MAY_BE_IMPORTED_BY = ("convis_jax.cli", "convis_jax.__main__")
MODELS = "convis_jax.models"  # the checkpoints and towers: they never know the method
KERNELS = "convis_jax.kernels"
MAX_MODULE_LINES = 600
# These use only the public names of other modules (no `from x import _y`, no `x._y`).
NO_PRIVATE_USE = ("convis_jax.api", "convis_jax.atlas", "convis_jax.evaluation")
# The test files at the top of tests/ that mirror no one module: they cut across the package.
CROSS_CUTTING_TESTS = ("test_layout", "test_readme", "test_fault_corpus", "test_robustness",
                       "test_determinism", "test_default_model", "test_benchmarks_smoke", "test_docs")


# ---------------------------------------------------------------------------
# The static import graph


def package_sources(root: Path, package: str = PACKAGE) -> dict[str, str]:
    """Dotted module name -> source of every .py file of the package under root."""
    sources = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        sources[".".join(parts)] = path.read_text(encoding="utf-8")
    return sources


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST, type_checking: bool = False):
    """(node, under_type_checking) for every Import/ImportFrom in the tree, at any depth."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, type_checking
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for node in child.body:
                yield from _import_nodes(ast.Module(body=[node], type_ignores=[]), True)
            for node in child.orelse:
                yield from _import_nodes(ast.Module(body=[node], type_ignores=[]), type_checking)
        else:
            yield from _import_nodes(child, type_checking)


def _from_module(name: str, node: ast.ImportFrom, is_package: bool) -> str:
    """The absolute module of a `from ... import`, relative ones resolved against `name`."""
    if not node.level:
        return node.module
    base = name.split(".") if is_package else name.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_package(name: str, modules: set[str], package: str) -> bool:
    return name in {m.rsplit(".", 1)[0] for m in modules if "." in m} or name == package


def imports_of(name: str, source: str, modules: set[str],
               package: str = PACKAGE) -> list[tuple[str, int, bool]]:
    """(imported module of the package, line, under TYPE_CHECKING) for each import in source.

    Args:
        name: the importing module's dotted name (a package's is its __init__'s).
        source: its source text.
        modules: every module name of the package, to tell `from pkg import submodule`
            from `from pkg import function`.
        package: the top-level package; imports outside it are ignored.
    """
    is_package = _is_package(name, modules, package)
    out = []
    for node, type_checking in _import_nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            module = _from_module(name, node, is_package)
            targets = []
            for alias in node.names:
                child = f"{module}.{alias.name}"
                targets.append(child if child in modules else module)
        for target in targets:
            if target == package or target.startswith(package + "."):
                # `import convis_jax.core.cells.x` where x is a name: the longest module prefix.
                while target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                out.append((target, node.lineno, type_checking))
    return out


def import_graph(sources: dict[str, str], package: str = PACKAGE):
    """(runtime edges, all edges): module -> {imported module: first line}."""
    modules = set(sources)
    runtime, every = {m: {} for m in modules}, {m: {} for m in modules}
    for name, source in sources.items():
        for target, line, type_checking in imports_of(name, source, modules, package):
            if target == name:
                continue
            every[name].setdefault(target, line)
            if not type_checking:
                runtime[name].setdefault(target, line)
    return runtime, every


def _is_reexport(source: str, target: str) -> bool:
    """A package __init__ importing one of its own submodules."""
    return target.startswith(source + ".")


def find_cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle path [a, b, ..., a] per strongly connected group of modules.

    Edges from a package's __init__ to its own submodules (re-exports) are left
    out: a submodule importing the package's __init__ back still closes a cycle
    only through some other edge.
    """
    graph = {m: sorted(t for t in targets if not _is_reexport(m, t))
             for m, targets in edges.items()}
    index, low, on_stack, stack, groups = {}, {}, set(), [], []

    def connect(v):  # Tarjan's algorithm, recursive (the package has < 100 modules)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    cycles = []
    for group in groups:
        members = set(group)
        start = group[0]
        # Breadth-first from start back to start inside the group: a shortest cycle.
        previous, frontier = {}, [start]
        while frontier and start not in previous:
            following = []
            for v in frontier:
                for w in graph[v]:
                    if w in members and w not in previous:
                        previous[w] = v
                        following.append(w)
            frontier = following
        path, v = [start], previous[start]
        while v != start:
            path.append(v)
            v = previous[v]
        path.append(start)
        cycles.append(path[::-1])
    return cycles


def layering_violations(edges: dict[str, dict[str, int]]) -> list[str]:
    """Imports that break the layering: core reaching out, the models reaching the
    method's kernels, anything importing the CLI."""
    problems = []
    for source, targets in sorted(edges.items()):
        for target, line in sorted(targets.items()):
            where = f"{source} (line {line}) imports {target}"
            if (source == CORE or source.startswith(CORE + ".")) and not any(
                    target == allowed or target.startswith(allowed + ".")
                    for allowed in CORE_MAY_IMPORT):
                problems.append(f"{where}: core may import only core and errors")
            if (source == MODELS or source.startswith(MODELS + ".")) and (
                    target == KERNELS or target.startswith(KERNELS + ".")):
                problems.append(f"{where}: the models never import the method's kernels")
            if target == CLI and source not in CLI_MAY_BE_IMPORTED_BY:
                problems.append(f"{where}: the library never imports its command line")
    return problems


def reaches(edges: dict[str, dict[str, int]], source: str, target: str) -> list[str] | None:
    """A path of imports from source to target, or None."""
    previous, frontier = {source: None}, [source]
    while frontier:
        following = []
        for v in frontier:
            for w in edges.get(v, ()):
                if w not in previous:
                    previous[w] = v
                    following.append(w)
        frontier = following
    if target not in previous:
        return None
    path, v = [], target
    while v is not None:
        path.append(v)
        v = previous[v]
    return path[::-1]


def describe(edges, cycle: list[str]) -> str:
    return " -> ".join(f"{a} (line {edges[a][b]})" for a, b in zip(cycle, cycle[1:])) \
        + f" -> {cycle[-1]}"


@pytest.fixture(scope="module")
def graph():
    return import_graph(package_sources(REPO))


def test_the_walk_sees_every_module_and_deferred_imports(graph):
    runtime, every = graph
    files = {p for p in (REPO / PACKAGE).rglob("*.py")}
    assert len(runtime) == len(files) > 30
    # A module-level import, a function-level one, and `from pkg import submodule`.
    assert "convis_jax.errors" in runtime["convis_jax.core.cells"]
    assert "convis_jax.api" in every["convis_jax.cli"]
    assert "convis_jax.core.windows" in every["convis_jax.api"]


def test_no_import_cycles(graph):
    runtime, _ = graph
    cycles = find_cycles(runtime)
    assert not cycles, "import cycles:\n" + "\n".join(describe(runtime, c) for c in cycles)


def test_core_stays_the_method_and_nothing_imports_the_cli(graph):
    runtime, every = graph
    problems = layering_violations(every)
    for package in ("convis_jax.evaluation", CORE, "convis_jax.pictures", MODELS, KERNELS):
        path = reaches(every, package, CLI)
        if path:
            problems.append(f"{package} reaches the CLI: {' -> '.join(path)}")
    assert not problems, "\n".join(problems)


def long_modules(sources: dict[str, str], limit: int = MAX_MODULE_LINES) -> list[str]:
    """Modules of more than `limit` lines, as "name (N lines)"."""
    counts = {name: len(source.splitlines()) for name, source in sources.items()}
    return [f"{name} ({n} lines)" for name, n in sorted(counts.items()) if n > limit]


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _dotted(node: ast.expr) -> str | None:
    """"a.b.c" for a chain of attribute reads on a name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])


def private_uses(sources: dict[str, str], package: str = PACKAGE,
                 scope: tuple[str, ...] = NO_PRIVATE_USE) -> list[str]:
    """Where a module in `scope` imports, or reads as an attribute, another module's `_name`.

    `from pkg.m import _x` is found, and so is `m._x` or `pkg.m._x` after `from pkg import m`,
    `import pkg.m as m` or `import pkg.m`, in a function or at module level.
    """
    modules = set(sources)
    problems = []
    for name, source in sorted(sources.items()):
        if not any(name == s or name.startswith(s + ".") for s in scope):
            continue
        tree = ast.parse(source)
        bound = {}  # local name -> the module of the package it stands for
        for node, _ in _import_nodes(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    local = alias.asname or alias.name.split(".")[0]
                    bound[local] = alias.name if alias.asname else local
                continue
            module = _from_module(name, node, _is_package(name, modules, package))
            for alias in node.names:
                child = f"{module}.{alias.name}"
                if child in modules:
                    bound[alias.asname or alias.name] = child
                elif _is_private(alias.name) and module in modules and module != name:
                    problems.append(f"{name} (line {node.lineno}) imports {child}")
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and _is_private(node.attr)):
                continue
            dotted = _dotted(node.value)
            head, _, rest = (dotted or "").partition(".")
            if head not in bound:
                continue
            target = bound[head] + (f".{rest}" if rest else "")
            if target in modules and target != name:
                problems.append(f"{name} (line {node.lineno}) reads {target}.{node.attr}")
    return problems


def unmirrored_tests(root: Path, package: str = PACKAGE) -> list[str]:
    """Test files under root/tests that do not mirror the package.

    `tests/<path>/test_<m>[_<topic>].py` tests `<package>/<path>/<m>.py`, the subpackage
    `<path>/<m>/` as a whole, or (m the folder's own name) the package `<path>` itself;
    `tests/scripts/test_<s>[_<topic>].py` tests `scripts/<s>.py`. At the top of tests/,
    only `CROSS_CUTTING_TESTS` mirror nothing. Other files (conftest.py, references,
    helpers) are not tests.
    """
    tests = root / "tests"
    problems = []
    for path in sorted(tests.rglob("test_*.py")):
        folder = path.parent.relative_to(tests)
        stem = path.stem.removeprefix("test_")
        if folder == Path(".") and path.stem in CROSS_CUTTING_TESTS:
            continue
        if folder.parts[:1] == ("scripts",):
            names = {p.stem for p in (root / "scripts").glob("*.py")} if folder == Path(
                "scripts") else set()
        else:
            source = root / package / folder
            names = set()
            if source.is_dir():
                names = {p.stem for p in source.glob("*.py") if p.stem != "__init__"}
                names |= {p.name for p in source.iterdir() if (p / "__init__.py").is_file()}
                names |= set(folder.parts[-1:])
        if any(stem == n or stem.startswith(n + "_") for n in names):
            continue
        if folder.parts[:1] == ("scripts",):
            problems.append(f"{path.relative_to(root)}: mirrors no script of scripts/")
        elif folder.parts:
            problems.append(f"{path.relative_to(root)}: mirrors no module of {package}/{folder}/")
        else:
            problems.append(f"{path.relative_to(root)}: mirrors no module of {package}/ and is "
                            f"not in CROSS_CUTTING_TESTS")
    return problems


def test_no_module_is_longer_than_600_lines():
    long = long_modules(package_sources(REPO))
    assert not long, f"modules over {MAX_MODULE_LINES} lines: " + ", ".join(long)


def test_api_atlas_and_evaluation_use_no_private_names_of_other_modules():
    problems = private_uses(package_sources(REPO))
    assert not problems, "private names used across modules:\n" + "\n".join(problems)


def test_tests_mirror_the_package():
    problems = unmirrored_tests(REPO)
    assert not problems, "\n".join(problems)


# The checks themselves, on a made-up package with one fault of each kind: they can fail.
FAULTY = {
    "pkg": "from pkg import a\nfrom pkg.b import thing\n",  # re-exports: fine
    "pkg.a": "import numpy\nfrom pkg.core import c\n",
    "pkg.b": "def f():\n    from . import a\n    from .a import x\n    import pkg.d\n",
    "pkg.d": "from pkg import b\n",  # closes b -> d -> b (through a deferred import)
    "pkg.core": "",
    "pkg.core.c": "from pkg.errors import E\nfrom ..scenes import render\n",
    "pkg.errors": "",
    "pkg.scenes": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n",
    "pkg.cli": "from pkg import a\n",
    "pkg.evaluation": "",
    "pkg.evaluation.wsol": "from pkg.cli import main\n",
    "pkg.models": "",
    "pkg.models.clip": "from pkg.kernels.sweep import Sweep\n",
    "pkg.kernels": "",
    "pkg.kernels.sweep": "from pkg.models import config\n",  # kernels use the models: fine
    "pkg.models.config": "",
}


def test_the_checks_find_faults_in_a_made_up_package(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "CORE", "pkg.core")
    monkeypatch.setattr(sys.modules[__name__], "CORE_MAY_IMPORT", ("pkg.core", "pkg.errors"))
    monkeypatch.setattr(sys.modules[__name__], "CLI", "pkg.cli")
    monkeypatch.setattr(sys.modules[__name__], "CLI_MAY_BE_IMPORTED_BY", ("pkg.cli",))
    monkeypatch.setattr(sys.modules[__name__], "MODELS", "pkg.models")
    monkeypatch.setattr(sys.modules[__name__], "KERNELS", "pkg.kernels")
    runtime, every = import_graph(FAULTY, package="pkg")
    assert every["pkg.b"] == {"pkg.a": 2, "pkg.d": 4}  # relative, deferred, dotted
    assert "pkg.a" not in runtime["pkg.scenes"] and "pkg.a" in every["pkg.scenes"]
    assert find_cycles(runtime) == [["pkg.b", "pkg.d", "pkg.b"]]
    assert describe(runtime, ["pkg.b", "pkg.d", "pkg.b"]) == \
        "pkg.b (line 4) -> pkg.d (line 1) -> pkg.b"
    assert layering_violations(every) == [
        "pkg.core.c (line 2) imports pkg.scenes: core may import only core and errors",
        "pkg.evaluation.wsol (line 1) imports pkg.cli: the library never imports its "
        "command line",
        "pkg.models.clip (line 1) imports pkg.kernels.sweep: the models never import the "
        "method's kernels",
    ]
    assert reaches(every, "pkg.evaluation", "pkg.cli") is None  # the package init itself
    assert reaches(every, "pkg.evaluation.wsol", "pkg.cli") == ["pkg.evaluation.wsol", "pkg.cli"]


def test_the_shape_checks_find_faults_in_a_made_up_package(tmp_path):
    # A module one line too long, and one exactly at the limit.
    sources = {"pkg.a": "x = 1\n" * 601, "pkg.b": "x = 1\n" * 600, "pkg": ""}
    assert long_modules(sources) == ["pkg.a (601 lines)"]

    # Private names of another module, imported or read, in scope; the same outside it.
    sources = {
        "pkg": "", "pkg.core": "", "pkg.core.cells": "", "pkg.atlas": "",
        "pkg.api": "from pkg.core.cells import _split, public\nfrom pkg.api import _own\n",
        "pkg.atlas.query": ("def f():\n    from pkg import api\n    return api._display()\n"
                            "import pkg.core.cells\nimport pkg.core.cells as c\n"
                            "y = pkg.core.cells._n + c._m + c.__name__ + self._ok\n"),
        "pkg.atlas.build": "from ..core.cells import _x\nfrom .query import __doc__\n",
        "pkg.cli": "from pkg.api import _hidden\n",  # outside the scope
    }
    scope = ("pkg.api", "pkg.atlas")
    assert private_uses(sources, "pkg", scope) == [
        "pkg.api (line 1) imports pkg.core.cells._split",
        "pkg.atlas.build (line 1) imports pkg.core.cells._x",
        "pkg.atlas.query (line 3) reads pkg.api._display",
        "pkg.atlas.query (line 6) reads pkg.core.cells._n",
        "pkg.atlas.query (line 6) reads pkg.core.cells._m",
    ]

    # Tests that mirror the package, and ones that do not.
    for file in ("pkg/__init__.py", "pkg/api.py", "pkg/core/__init__.py", "pkg/core/cells.py",
                 "pkg/atlas/__init__.py", "pkg/atlas/query.py", "scripts/train.py",
                 "tests/conftest.py", "tests/reference.py", "tests/core/helpers.py",
                 "tests/test_api.py", "tests/test_api_encoders.py", "tests/test_layout.py",
                 "tests/core/test_cells.py", "tests/core/test_cells_properties.py",
                 "tests/atlas/test_atlas.py", "tests/atlas/test_query.py",
                 "tests/scripts/test_train.py",
                 # faults:
                 "tests/test_cells.py", "tests/test_misc.py", "tests/core/test_cellsx.py",
                 "tests/core/test_ranks.py", "tests/models/test_clip.py",
                 "tests/scripts/test_evaluate.py", "tests/scripts/sub/test_train.py"):
        (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / file).write_text("")
    assert unmirrored_tests(tmp_path, "pkg") == [
        "tests/core/test_cellsx.py: mirrors no module of pkg/core/",
        "tests/core/test_ranks.py: mirrors no module of pkg/core/",
        "tests/models/test_clip.py: mirrors no module of pkg/models/",
        "tests/scripts/sub/test_train.py: mirrors no script of scripts/",
        "tests/scripts/test_evaluate.py: mirrors no script of scripts/",
        "tests/test_cells.py: mirrors no module of pkg/ and is not in CROSS_CUTTING_TESTS",
        "tests/test_misc.py: mirrors no module of pkg/ and is not in CROSS_CUTTING_TESTS",
    ]


def test_benchmarks_import_each_other_without_cycles():
    """The benchmark scripts import their siblings by bare name (`import common`)."""
    folder = REPO / "benchmarks"
    stems = {p.stem for p in folder.glob("*.py")}
    edges = {}
    for path in sorted(folder.glob("*.py")):
        edges[path.stem] = {}
        for node, _ in _import_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) \
                else [node.module] if node.level == 0 and node.module else []
            for name in names:
                if name in stems:
                    edges[path.stem].setdefault(name, node.lineno)
    assert "common" in edges["bench_occlusion"] and "bench_occlusion" in edges["bench_hardware"]
    cycles = find_cycles(edges)
    assert not cycles, "benchmark import cycles:\n" + "\n".join(
        describe(edges, c) for c in cycles)


# ---------------------------------------------------------------------------
# At run time: convis_jax.core loads no framework

# Walks the package (importing each module) in a fresh interpreter, then reports
# which modules it imported and which framework packages ended up in sys.modules.
# `python -c` puts the working directory (the repository) first on sys.path.
PROBE = """
import json, pkgutil, sys
import convis_jax.core
names = ["convis_jax.core"]
for info in pkgutil.walk_packages(convis_jax.core.__path__, "convis_jax.core."):
    __import__(info.name)
    names.append(info.name)
roots = sorted({name.split(".")[0] for name in sys.modules})
print(json.dumps({"imported": names, "roots": roots, "file": convis_jax.core.__file__}))
"""


def test_core_imports_no_framework():
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(report["file"]).resolve().parent == REPO / PACKAGE / "core"
    modules = {p.stem for p in (REPO / PACKAGE / "core").glob("*.py")} - {"__init__"}
    imported = {name.rsplit(".", 1)[-1] for name in report["imported"][1:]}
    assert modules <= imported, f"modules not walked: {sorted(modules - imported)}"
    loaded = sorted(set(FRAMEWORKS) & set(report["roots"]))
    assert not loaded, f"importing convis_jax.core loaded {loaded}"


# ---------------------------------------------------------------------------
# No sys.path edits in tests, benchmarks and scripts

PATH_METHODS = {"insert", "append", "extend", "remove", "pop", "clear", "__setitem__"}


def _is_sys_path(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "path"
            and isinstance(node.value, ast.Name) and node.value.id == "sys")


def sys_path_edits(source: str) -> list[int]:
    """Lines that change sys.path (method calls, assignments, `site.addsitedir`)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in PATH_METHODS and _is_sys_path(node.func.value):
                lines.append(node.lineno)
            if node.func.attr == "addsitedir":
                lines.append(node.lineno)
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) \
                else [node.target]
            for target in targets:
                if _is_sys_path(target) or (isinstance(target, ast.Subscript)
                                            and _is_sys_path(target.value)):
                    lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "sys" and any(
                alias.name == "path" for alias in node.names):
            lines.append(node.lineno)
    return sorted(lines)


def test_sys_path_edits_are_found():
    source = ("import sys, site\nsys.path.insert(0, 'x')\nsys.path += ['y']\n"
              "sys.path[:0] = ['z']\nsite.addsitedir('w')\nfrom sys import path\n"
              "print(sys.path)  # reading is fine\nx = 'sys.path.insert(0, 1)'\n")
    assert sys_path_edits(source) == [2, 3, 4, 5, 6]


def test_no_sys_path_edits_in_tests_benchmarks_scripts():
    files = [p for folder in ("tests", "benchmarks", "scripts")
             for p in sorted((REPO / folder).rglob("*.py"))]
    assert len(files) > 40
    edits = [f"{p.relative_to(REPO)}:{line}" for p in files
             for line in sys_path_edits(p.read_text(encoding="utf-8"))]
    assert not edits, "sys.path edited at " + ", ".join(edits)
