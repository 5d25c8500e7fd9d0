"""Where caches live, and writing them so that a reader never sees half a file."""

from __future__ import annotations

import hashlib
import io
import os
import secrets
from pathlib import Path

import numpy as np

from convis_jax.errors import CacheError, warn

CACHE_ENV = "CONVIS_JAX_CACHE"


def cache_root() -> Path:
    """`$CONVIS_JAX_CACHE` (a leading ~ expanded), or `~/.cache/convis_jax`."""
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/convis_jax").expanduser()


def _temporary_beside(path: Path) -> tuple[int, Path]:
    """A new, empty file beside `path`, open for writing: (descriptor, its path).

    Created with mode 0o666 less the umask, as `open(path, "w")` creates a file
    (`tempfile.mkstemp` would give 0o600 whatever the umask).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes `data` to a temporary file beside `path`, then renames it over `path`.

    Two processes writing the same path at once each rename a complete file,
    so whichever lands last, one good copy remains. The file gets the mode a plain
    `open(path, "w")` gives it (0o666 less the umask).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temporary_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}:{a.dtype.str}:{a.shape}".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Saves arrays as an `.npz` with a checksum, atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, __checksum__=np.array(_checksum(arrays)), **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def load_arrays(path: Path) -> dict[str, np.ndarray] | None:
    """Arrays saved by `save_arrays`; None (with a warning) when the file is damaged.

    A missing file is simply None: the caller builds the cache.
    """
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
        stored = str(arrays.pop("__checksum__"))
        if stored != _checksum(arrays):
            raise CacheError("checksum mismatch")
    except Exception as err:  # zip, pickle and checksum errors all mean "damaged"
        warn(f"cache file {path} is damaged ({type(err).__name__}: {err}); rebuilding it")
        return None
    return arrays
