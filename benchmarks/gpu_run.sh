#!/usr/bin/env bash
# The GPU check in two commands (benchmarks/gpu.md):
#
#   bash benchmarks/gpu_run.sh prepare [--python 3.X] [--arch x86_64]
#       here, with the package index: fills wheels/ (ignored by git, at most
#       64 MiB) with this package's wheel and the wheels a GPU image holding
#       jax, flax, orbax-checkpoint, transformers and torch may lack: nltk and
#       matplotlib (a dependency of this package) with their dependencies but
#       numpy and Pillow, compiled for that Python (default: this one's version).
#   bash benchmarks/gpu_run.sh check [gpu_check.py options, e.g. --small --out F]
#       on the GPU machine, offline: installs from wheels/ only
#       (pip install --no-index --find-links wheels) into the Python that runs it
#       ($PYTHON, default python3), then runs benchmarks/gpu_check.py, which
#       writes benchmarks/results/gpu-check-<device>.json and exits 0 when it
#       finished (1: a cross-check failed or a step raised; 124: cut at its budget).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
WHEELS=wheels
LIMIT_BYTES=$((64 * 1024 * 1024))
# Wheels the image may lack: nltk (it reads the WordNet shipped in this package)
# and matplotlib (this package's dependency, for pictures), each with everything
# it depends on, but numpy and Pillow, which the image has (as it has jax, flax,
# orbax, transformers, torch and their own dependencies).
CARRIED=(nltk matplotlib)
IMAGE_HAS=(numpy pillow)

# A digest of what the package wheel is built from: `check` refuses a stale wheels/.
source_digest() {
    "$PYTHON" - <<'EOF'
import hashlib
from pathlib import Path

digest = hashlib.sha256()
for path in sorted([Path("pyproject.toml"), *Path("convis_jax").rglob("*")]):
    if path.is_file() and "__pycache__" not in path.parts:
        digest.update(str(path).encode() + b"\0" + path.read_bytes())
print(digest.hexdigest())
EOF
}

prepare() {
    local version arch
    version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    arch=$(uname -m)
    while [ $# -gt 0 ]; do
        case "$1" in
            --python) version=$2; shift 2 ;;
            --arch) arch=$2; shift 2 ;;
            *) echo "prepare: unknown option $1 (expected --python 3.X, --arch NAME)" >&2; exit 2 ;;
        esac
    done
    local abi="cp${version/./}"
    rm -rf "$WHEELS"
    mkdir -p "$WHEELS"
    echo "prepare: this package's wheel"
    "$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$WHEELS" .
    local target=(--only-binary=:all: --python-version "$version" --implementation cp
                  --abi "$abi" --abi abi3 --abi none --platform "manylinux2014_$arch"
                  --platform "manylinux_2_17_$arch" --platform "manylinux_2_28_$arch"
                  --platform any)
    echo "prepare: ${CARRIED[*]} and their dependencies but ${IMAGE_HAS[*]}," \
         "for CPython $version on $arch"
    # Resolve once (pip's report: names and versions), then fetch all but what the image has.
    local report pinned
    report=$(mktemp)
    "$PYTHON" -m pip install --quiet --dry-run --ignore-installed --target "$WHEELS/.resolve" \
        --report "$report" "${target[@]}" "${CARRIED[@]}"
    pinned=$("$PYTHON" - "$report" "${IMAGE_HAS[@]}" <<'EOF'
import json
import sys

skip = {name.lower() for name in sys.argv[2:]}
for item in json.load(open(sys.argv[1]))["install"]:
    meta = item["metadata"]
    if meta["name"].lower() not in skip:
        print(f"{meta['name']}=={meta['version']}")
EOF
)
    rm -rf "$report" "$WHEELS/.resolve"
    # shellcheck disable=SC2086
    "$PYTHON" -m pip download --quiet --no-deps --dest "$WHEELS" "${target[@]}" $pinned
    source_digest > "$WHEELS/SOURCE"
    echo "$version $arch" > "$WHEELS/PYTHON"
    local size
    size=$(du -sb "$WHEELS" | cut -f1)
    if [ "$size" -gt "$LIMIT_BYTES" ]; then
        echo "prepare: $WHEELS/ holds $size bytes, more than the 64 MiB it may carry" >&2
        exit 1
    fi
    echo "prepare: $WHEELS/ ready, $((size / 1024)) KiB:"
    ls "$WHEELS"
}

check() {
    if [ ! -f "$WHEELS/SOURCE" ]; then
        echo "check: no $WHEELS/; run 'bash benchmarks/gpu_run.sh prepare' first (with network)" >&2
        exit 2
    fi
    if [ "$(source_digest)" != "$(cat "$WHEELS/SOURCE")" ]; then
        echo "check: $WHEELS/ was prepared from other sources than convis_jax/ now;" \
             "run prepare again" >&2
        exit 2
    fi
    local have wanted
    have=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    wanted=$(cut -d' ' -f1 "$WHEELS/PYTHON")
    if [ "$have" != "$wanted" ]; then
        echo "check: $WHEELS/ holds wheels for Python $wanted, this is $have;" \
             "run 'bash benchmarks/gpu_run.sh prepare --python $have'" >&2
        exit 2
    fi
    # This package exactly as prepared (replacing any other version), then whatever of
    # its dependencies and nltk's the Python lacks, from wheels/ only.
    "$PYTHON" -m pip install --quiet --no-index --find-links "$WHEELS" --force-reinstall \
        --no-deps "$WHEELS"/convis_jax-*.whl
    "$PYTHON" -m pip install --quiet --no-index --find-links "$WHEELS" convis_jax nltk
    # (sys.path[0] is the current folder for -c: dropped, so that the installed package answers)
    "$PYTHON" -c 'import sys; sys.path.pop(0); import convis_jax, nltk, jax, torch; print("check: convis_jax", convis_jax.__file__, "| jax", jax.__version__, jax.devices(), "| torch", torch.__version__, "cuda" if torch.cuda.is_available() else "no cuda")'
    exec "$PYTHON" benchmarks/gpu_check.py "$@"
}

case "${1:-}" in
    prepare) shift; prepare "$@" ;;
    check) shift; check "$@" ;;
    *) echo "usage: bash benchmarks/gpu_run.sh prepare [--python 3.X] [--arch x86_64]" >&2
       echo "       bash benchmarks/gpu_run.sh check [gpu_check.py options]" >&2
       exit 2 ;;
esac
