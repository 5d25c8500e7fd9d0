"""`convis_jax.core` and every module under it import without jax, flax, torch or transformers."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FRAMEWORKS = ("jax", "jaxlib", "flax", "torch", "transformers", "orbax")

# Walks the package (importing each module) in a fresh interpreter, then reports
# which modules it imported and which framework packages ended up in sys.modules.
PROBE = """
import json, pkgutil, sys
import convis_jax.core
names = ["convis_jax.core"]
for info in pkgutil.walk_packages(convis_jax.core.__path__, "convis_jax.core."):
    __import__(info.name)
    names.append(info.name)
roots = sorted({name.split(".")[0] for name in sys.modules})
print(json.dumps({"imported": names, "roots": roots}))
"""


def test_core_imports_no_framework():
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True,
                            text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    modules = {p.stem for p in (REPO / "convis_jax" / "core").glob("*.py")} - {"__init__"}
    imported = {name.rsplit(".", 1)[-1] for name in report["imported"][1:]}
    assert modules <= imported, f"modules not walked: {sorted(modules - imported)}"
    loaded = sorted(set(FRAMEWORKS) & set(report["roots"]))
    assert not loaded, f"importing convis_jax.core loaded {loaded}"
