#!/usr/bin/env bash
# Rehearses the offline GPU check on this CPU machine, as the GPU machine runs it:
#
#   bash benchmarks/gpu_rehearsal.sh [WORK_DIR]     # default $TMPDIR/convis_gpu_rehearsal
#
# 1. a fresh clone of this repository's current commit (uncommitted changes are
#    not in it); `bash benchmarks/gpu_run.sh prepare` there, with the index;
# 2. a scratch virtual environment holding only jax, flax, orbax-checkpoint,
#    transformers, torch (==2.13.0, the CPU build this project's machines carry),
#    safetensors, numpy and Pillow (and what those depend on); made once in
#    WORK_DIR/venv and reused, everything installed into it later removed first;
# 3. with no index (PIP_NO_INDEX=1, no pip configuration, no find-links but
#    wheels/), `bash benchmarks/gpu_run.sh check --small` in the clone.
#
# Exit 0 when the check exited 0 and wrote its JSON (WORK_DIR/gpu-check-small.json),
# with status "finished".
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-${TMPDIR:-/tmp}/convis_gpu_rehearsal}
venv=$work/venv
clone=$work/clone
out=$work/gpu-check-small.json
unset PYTHONPATH
mkdir -p "$work"

if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no)" ]; then
    echo "rehearsal: uncommitted changes in $repo are not part of the clone" >&2
fi
rm -rf "$clone" "$out"
git clone --quiet --branch "$(git -C "$repo" rev-parse --abbrev-ref HEAD)" "$repo" "$clone"
echo "rehearsal: clone of $(git -C "$clone" rev-parse --short HEAD) in $clone"
(cd "$clone" && bash benchmarks/gpu_run.sh prepare 2>&1 | grep -v '^WARNING: Location')

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet jax flax orbax-checkpoint transformers \
        "torch==2.13.0" safetensors numpy Pillow
    "$venv/bin/python" -m pip freeze --all > "$work/venv-base.txt"
fi
# Back to the base set: remove whatever an earlier rehearsal installed.
extra=$(comm -13 <(sort "$work/venv-base.txt") <("$venv/bin/python" -m pip freeze --all | sort) \
        | sed -e 's/[ =@].*//')
if [ -n "$extra" ]; then
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pip uninstall --quiet --yes $extra
fi
(cd "$work" && "$venv/bin/python" - <<'EOF'
import importlib.util
import sys

present = [name for name in ("convis_jax", "nltk", "matplotlib") if importlib.util.find_spec(name)]
if present:
    sys.exit(f"rehearsal: the scratch environment already holds {present}")
print("rehearsal: scratch environment without convis_jax, nltk or matplotlib")
EOF
)

cd "$clone"
set +e
env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL PIP_NO_INDEX=1 PIP_CONFIG_FILE=/dev/null \
    PYTHON="$venv/bin/python" bash benchmarks/gpu_run.sh check --small --out "$out"
code=$?
set -e
status=$("$venv/bin/python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["status"])' \
         "$out" 2>/dev/null || echo "no JSON")
echo "rehearsal: check exited $code, $out: $status"
[ "$code" -eq 0 ] && [ "$status" = "finished" ]
