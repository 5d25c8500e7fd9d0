#!/usr/bin/env bash
# Builds the docs site into docs/_build/html (open docs/_build/html/index.html).
#
#   pip install -e ".[docs]" && scripts/build_docs.sh
#
# Offline (every asset is local), warnings as errors (a broken cross-reference,
# a page outside the table of contents or a failing notebook cell fails the
# build); the tutorials and the method page execute on the bundled model.
# Extra arguments go to sphinx-build (e.g. -E to re-read every page); $PYTHON
# picks the interpreter (default: python).
set -euo pipefail
cd "$(dirname "$0")/.."
# Document this checkout, whichever copy of the package is installed.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" -m sphinx -W --keep-going -b html "$@" docs docs/_build/html
