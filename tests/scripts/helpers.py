"""Loading the scripts under test and reading what they write (tests only)."""

import importlib.util
import json
from pathlib import Path
from types import ModuleType

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def load_script(name: str) -> ModuleType:
    """scripts/<name>.py as a module, loaded by its path."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_log(path: Path) -> list[dict]:
    """The records of a per-image JSON-lines log, after its settings line."""
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines[1:]]
