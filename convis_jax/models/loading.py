"""`load_model` / `load_clip`: a checkpoint (folder or hub id) -> `ClipModel` or `SiglipModel`.

`load_model` recognises the family from the folder (`checkpoints.detect_family`): a
Hugging Face CLIP, a Hugging Face SigLIP, or OpenCLIP's hub layout, which is
mapped onto the Flax CLIP (`openclip.py`). `load_clip` takes the two CLIP
families only.

Converted parameters are cached with orbax-checkpoint under the cache root
(`$CONVIS_JAX_CACHE`, default `~/.cache/convis_jax`), in
`converted/<weights hash>-<dtype>-<structure hash>/`:

* `params/`: the Flax parameter tree (NumPy leaves), written uncompressed by
  orbax's PyTreeCheckpointer;
* `manifest.json`: the names, shapes and dtype of every tensor, the size and
  CRC-32 of every file under `params/`, and the names of tensors holding NaN
  or inf.

An entry is built in a private temporary folder beside it and appears only
through one `rename` of the finished folder, so a half-written entry is never
read; when two processes build the same entry at once, the first rename wins
and the other discards its copy. On load, the manifest, then the size and
CRC-32 of every file (before orbax parses any), then the restored names,
shapes and dtypes (against `clip.parameter_shapes`) are checked; a damaged
entry gives a warning and is rebuilt from the weights. A cache that cannot be
written gives a warning; loading never fails for it.

Only the formats whose reading is slow use the converted cache
(`CACHED_FORMATS`: `flax_model.msgpack`, `pytorch_model.bin` and OpenCLIP's
`open_clip_pytorch_model.bin`). Loads of a
full-depth ViT-B/32 (151M parameters, 605 MB), each in a fresh process,
`load_clip` alone, on a shared 2-core machine, wall / CPU seconds (each the
best of 5):

| format             | hashed each time | memoised hash | first load, writes | cache hit |
|--------------------|------------------|---------------|--------------------|-----------|
| model.safetensors  | 3.4 / 2.4        | 3.1 / 2.1     | (5.3 / 3.7)        | (3.2 / 2.4) |
| flax_model.msgpack | 4.2 / 2.8        | 3.8 / 2.5     | 10.1 / 5.0         | 3.4 / 2.5 |
| pytorch_model.bin  | 6.8 / 3.4        | 6.2 / 3.2     | 9.4 / 4.8          | 4.6 / 2.4 |

About 2 s CPU of every load is fixed (parameter shapes, tokenizer, lazy
imports). safetensors are memory-mapped and need only a few transposes: a
cache entry would load no faster (bracketed: measured with safetensors
cached) and double the disk used, so they only get the memoised hash (see
`fingerprint_files`). The pickle gains most; msgpack a little.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
import zlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from convis_jax.core.cache import cache_root
from convis_jax.errors import CacheError, InputError, ModelLoadError, warn
from convis_jax.models import checkpoints, clip, openclip, siglip
from convis_jax.models.checkpoints import (
    VOCABULARY_FILE,
    default_model_path,
    fingerprint_files,
)
from convis_jax.models.config import ClipConfig, SiglipConfig
from convis_jax.models.model import ClipModel, SiglipModel
from convis_jax.models.precision import DTYPES, Precision, resolve_dtype
from convis_jax.models.preprocessing import PreprocessConfig
from convis_jax.models.pytorch_names import pytorch_key, pytorch_to_flax
from convis_jax.models.tokenizer import (
    check_tokenizer,
    load_folder_tokenizer,
    load_tokenizer,
    tokenizer_fingerprint,
)

CACHED_FORMATS = (checkpoints.FLAX_MSGPACK, checkpoints.PYTORCH_BIN, checkpoints.OPEN_CLIP_BIN)

_CONVERTED = "converted"
_PARAMS = "params"
_MANIFEST = "manifest.json"
_MANIFEST_VERSION = 1
# Temporary folders of a crashed writer are removed once they are this old.
_STALE_SECONDS = 3600


def load_model(name_or_path: str | Path | None = None, *, dtype: str | None = None,
               cache: bool = True) -> ClipModel | SiglipModel:
    """Loads a checkpoint of any supported family, recognised from the folder's files.

    The families (`checkpoints.detect_family`): a Hugging Face CLIP ("clip"), a Hugging Face
    SigLIP ("siglip"; fixed-resolution SigLIP 2 checkpoints are written as this
    family too) and OpenCLIP's hub layout ("open_clip", loaded as the Flax CLIP).
    The returned model's `family` names what was found.

    Args:
        name_or_path: a local folder, or a hub id such as `google/siglip-base-patch16-224`
            (resolved through huggingface_hub's cache; downloaded when online). None loads
            the small CLIP bundled with convis_jax.
        dtype: "float32" (the exact path), "bfloat16" (products on bfloat16 units, see
            `precision.py`), or None / "auto" (default): `$CONVIS_JAX_DTYPE` if set, else
            bfloat16 on GPUs, TPUs and CPUs with bfloat16 units and float32 elsewhere
            (`precision.resolve_dtype`; the model's `precision` says which and why).
        cache: use the cache root (`$CONVIS_JAX_CACHE`, default `~/.cache/convis_jax`) for
            converted parameters and memoised file hashes; False reads and hashes the
            weight files every time and writes nothing.

    Returns:
        A `ClipModel` (families "clip" and "open_clip") or a `SiglipModel` ("siglip").

    Raises:
        ModelLoadError: an unknown layout (the message lists the supported ones),
            missing or damaged files, or weights that do not match the config (every
            missing, unexpected or mis-shaped tensor is named).
        InputError: an unknown dtype.
    """
    folder, name, chosen = _resolve(name_or_path, dtype)
    family = checkpoints.detect_family(folder)
    return _LOADERS[family](folder, name, chosen, cache)


def load_clip(name_or_path: str | Path | None = None, *, dtype: str | None = None,
              cache: bool = True) -> ClipModel:
    """Loads a CLIP: a Hugging Face CLIPModel folder, or an OpenCLIP ViT-CLIP in its hub layout.

    Args:
        name_or_path: a local folder, or a hub id such as `openai/clip-vit-base-patch32`
            (resolved through huggingface_hub's cache; downloaded when online). None loads
            the small model bundled with convis_jax.
        dtype: "float32" (the exact path), "bfloat16" (products on bfloat16 units, see
            `precision.py`), or None / "auto" (default): `$CONVIS_JAX_DTYPE` if set, else
            bfloat16 on GPUs, TPUs and CPUs with bfloat16 units and float32 elsewhere
            (`precision.resolve_dtype`; the model's `precision` says which and why).
        cache: use the cache root (`$CONVIS_JAX_CACHE`, default `~/.cache/convis_jax`) for
            converted parameters and memoised file hashes; False reads and hashes the
            weight files every time and writes nothing.

    Returns:
        The model, its tokenizer and preprocessing.

    Raises:
        ModelLoadError: a checkpoint of another family (SigLIP: see `load_model`), missing or
            damaged files, or weights that do not match the config (every missing,
            unexpected or mis-shaped tensor is named).
        InputError: an unknown dtype.
    """
    if isinstance(name_or_path, SiglipModel):
        raise ModelLoadError(
            f"{name_or_path.name} is a loaded siglip model, not a CLIP: pass it to ConVis as it "
            f"is, or use its model.encoder")
    folder, name, chosen = _resolve(name_or_path, dtype)
    family = checkpoints.detect_family(folder)
    if family not in ("clip", "open_clip"):
        raise ModelLoadError(
            f"{name} is a {family} checkpoint, not a CLIP: load it with convis_jax.load_model "
            f"(ConVis and the command line take CLIP and OpenCLIP models only, until their "
            f"sweeps take an Encoder)")
    return _LOADERS[family](folder, name, chosen, cache)


def _resolve(name_or_path, dtype: str | None) -> tuple[Path, str, Precision]:
    """(checkpoint folder, display name, precision); resolves the dtype first."""
    chosen = resolve_dtype(dtype)
    if name_or_path is not None and not isinstance(name_or_path, (str, os.PathLike)):
        raise InputError(f"expected a model folder or hub id (str or path), found "
                         f"{type(name_or_path).__name__}")
    name = "convis_jax default model" if name_or_path is None else str(name_or_path)
    if name_or_path is None:
        name_or_path = default_model_path()
    return checkpoints.resolve_checkpoint(name_or_path), name, chosen


def _vocabulary(folder: Path) -> Path | None:
    vocabulary = folder / VOCABULARY_FILE
    return vocabulary if vocabulary.is_file() else None


def _load_hf_clip(folder: Path, name: str, chosen: Precision, cache: bool) -> ClipModel:
    dtype = chosen.dtype
    config = ClipConfig.from_json(folder / "config.json")
    tokenizer = _checked_tokenizer(folder, config)
    files = checkpoints.weight_files(folder)
    root = cache_root() if cache else None
    fingerprint = fingerprint_files(files, memo_dir=root)
    params = _converted_params(folder, files[0].name, clip.parameter_shapes(config), dtype,
                               fingerprint, root, lambda: checkpoints.read_state_dict(folder))
    preprocess_config = PreprocessConfig.from_pretrained_dir(
        folder, image_size=config.vision.image_size)
    return ClipModel(config=config, params=jax.tree_util.tree_map(jnp.asarray, params),
                     tokenizer=tokenizer, preprocess_config=preprocess_config,
                     name=name, fingerprint=fingerprint, vocabulary_path=_vocabulary(folder),
                     family="clip", tokenizer_fingerprint=tokenizer_fingerprint(folder),
                     precision=str(chosen))


def _load_open_clip(folder: Path, name: str, chosen: Precision, cache: bool) -> ClipModel:
    dtype = chosen.dtype
    config, preprocess_config = openclip.read_config(folder)
    tokenizer = _checked_tokenizer(folder, config)
    formats = checkpoints.OPEN_CLIP_FORMATS
    files = checkpoints.weight_files(folder, formats)
    root = cache_root() if cache else None
    fingerprint = fingerprint_files(files, memo_dir=root)
    read = lambda: openclip.clip_state(checkpoints.read_state_dict(folder, formats))
    params = _converted_params(folder, files[0].name, clip.parameter_shapes(config), dtype,
                               fingerprint, root, read)
    return ClipModel(config=config, params=jax.tree_util.tree_map(jnp.asarray, params),
                     tokenizer=tokenizer, preprocess_config=preprocess_config,
                     name=name, fingerprint=fingerprint, vocabulary_path=_vocabulary(folder),
                     family="open_clip", tokenizer_fingerprint=tokenizer_fingerprint(folder),
                     precision=str(chosen))


def siglip_preprocess_defaults(image_size: int) -> dict:
    """transformers' SiglipImageProcessor defaults: bicubic square resize, no crop, mean = std = 0.5."""
    return {"size": {"height": image_size, "width": image_size}, "do_center_crop": False,
            "resample": 3, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}


def _load_siglip(folder: Path, name: str, chosen: Precision, cache: bool) -> SiglipModel:
    dtype = chosen.dtype
    config = SiglipConfig.from_json(folder / "config.json")
    files = checkpoints.weight_files(folder)
    root = cache_root() if cache else None
    fingerprint = fingerprint_files(files, memo_dir=root)
    params = _converted_params(folder, files[0].name, siglip.parameter_shapes(config), dtype,
                               fingerprint, root, lambda: checkpoints.read_state_dict(folder))
    size = config.vision.image_size
    preprocess_config = PreprocessConfig.from_pretrained_dir(
        folder, defaults=siglip_preprocess_defaults(size))
    if preprocess_config.output_size != (size, size):
        raise ModelLoadError(f"{folder}: the image processor makes images of "
                             f"{preprocess_config.output_size}, the model takes {size} x {size}")
    return SiglipModel(config=config, params=jax.tree_util.tree_map(jnp.asarray, params),
                       tokenizer=load_folder_tokenizer(folder),
                       preprocess_config=preprocess_config, name=name, fingerprint=fingerprint,
                       vocabulary_path=_vocabulary(folder), family="siglip",
                       tokenizer_fingerprint=tokenizer_fingerprint(folder),
                       precision=str(chosen))


_LOADERS = {"clip": _load_hf_clip, "open_clip": _load_open_clip, "siglip": _load_siglip}


def _checked_tokenizer(folder: Path, config: ClipConfig):
    """The folder's tokenizer, validated against the text tower before any weight is read.

    Raises:
        ModelLoadError: see `tokenizer.check_tokenizer`.
    """
    tokenizer = load_tokenizer(folder)
    check_tokenizer(tokenizer, config.text, folder)
    return tokenizer


# ------------------------------------------------------------ converted parameters


def _converted_params(folder: Path, weight_format: str, expected: dict, dtype: str,
                      fingerprint: str, root: Path | None, read_state) -> dict:
    """The Flax parameter tree (NumPy leaves of `dtype`), from the cache or the weight files.

    Args:
        expected: the parameter tree of shapes (`clip.parameter_shapes`, `siglip.parameter_shapes`).
        read_state: () -> the checkpoint's state dict under PyTorch CLIPModel / SiglipModel names.
    """
    entry = None
    if root is not None and weight_format in CACHED_FORMATS:
        entry = Path(root) / _CONVERTED / f"{fingerprint}-{dtype}-{_structure_hash(expected)}"
    damaged = False
    if entry is not None and entry.exists():
        try:
            params, non_finite = read_converted(entry, expected, dtype)
            _warn_non_finite(non_finite, folder)
            return params
        except CacheError as err:
            warn(f"{err}; rebuilding it from {folder}")
            damaged = True
    state = read_state()
    params = pytorch_to_flax(state, expected, source=str(folder), dtype=DTYPES[dtype])
    non_finite = _non_finite_names(params)
    _warn_non_finite(non_finite, folder)
    if entry is not None:
        write_converted(entry, params, dtype, non_finite, replace=damaged)
    return params


def read_converted(entry: Path, expected: dict, dtype: str) -> tuple[dict, list[str]]:
    """Reads and verifies one converted-weight cache entry.

    Args:
        entry: the entry folder (`converted/<key>` under the cache root).
        expected: the parameter tree of shapes (`clip.parameter_shapes`).
        dtype: "float32" or "bfloat16", the dtype the entry must hold.

    Returns:
        (params, non_finite): the parameter tree of NumPy arrays, and the PyTorch
        names of tensors that hold NaN or inf.

    Raises:
        CacheError: the entry is incomplete or damaged; the message says what is wrong.
    """
    import orbax.checkpoint as ocp

    damaged = f"the converted-weight cache {entry} is damaged"
    try:
        manifest = json.loads((entry / _MANIFEST).read_text())
        want_files, non_finite = dict(manifest["files"]), list(manifest["non_finite"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CacheError(f"{damaged}: unreadable {_MANIFEST} ({type(err).__name__}: {err})") from None
    want = _describe_tree(expected, np.dtype(DTYPES[dtype]))
    if manifest.get("version") != _MANIFEST_VERSION or manifest.get("tensors") != want:
        raise CacheError(f"{damaged}: its {_MANIFEST} does not list the expected {len(want)} "
                         f"{dtype} tensors")
    # Every file is checked before orbax parses any of them: a truncated or garbled
    # file is caught here rather than deep inside tensorstore.
    found_files = _file_checksums(entry / _PARAMS)
    if found_files != want_files:
        bad = sorted(name for name in set(want_files) | set(found_files)
                     if want_files.get(name) != found_files.get(name))
        raise CacheError(f"{damaged}: {len(bad)} file(s) missing, changed or unexpected "
                         f"(size or CRC-32): {', '.join(bad[:4])}")
    try:
        params = ocp.PyTreeCheckpointer().restore(entry / _PARAMS)  # NumPy leaves, as saved
    except Exception as err:  # orbax and tensorstore raise many kinds
        raise CacheError(f"{damaged}: orbax cannot restore it ({type(err).__name__}: "
                         f"{str(err)[:300]})") from None
    found = _describe_tree(params) if isinstance(params, dict) else {}
    if found != want:
        wrong = sorted(set(want.items()) ^ set(found.items()))[:4]
        raise CacheError(f"{damaged}: restored tensors do not match the expected names, shapes "
                         f"and dtypes (e.g. {wrong})")
    return params, non_finite


def write_converted(entry: Path, params: dict, dtype: str, non_finite: list[str], *,
                    replace: bool = False) -> None:
    """Writes a converted-weight cache entry atomically; failures only warn.

    Args:
        entry: the entry folder to create.
        params: the parameter tree of NumPy arrays of `dtype`.
        dtype: "float32" or "bfloat16".
        non_finite: PyTorch names of tensors holding NaN or inf (warned about on every load).
        replace: the entry exists and was found damaged: move it away first. Otherwise an
            existing entry (another process finished first) is kept and this copy dropped.
    """
    import orbax.checkpoint as ocp

    tmp = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(entry.parent)
        # A cache disk without room is found before orbax starts writing: its worker
        # threads would each print a traceback on the way to the same failure.
        needed = sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(params)) + (1 << 20)
        free = shutil.disk_usage(entry.parent).free
        if free < needed:
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({needed / 1e6:.1f} MB "
                                        f"needed, {free / 1e6:.1f} MB free)")
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{entry.name}-", dir=entry.parent))
        # Uncompressed: zstd saves 8% of the disk and makes every restore 2.5x slower.
        with _quiet_threads():
            ocp.PyTreeCheckpointer(use_compression=False).save(tmp / _PARAMS, params)
        manifest = {"version": _MANIFEST_VERSION, "dtype": dtype,
                    "tensors": _describe_tree(params), "non_finite": non_finite,
                    "files": _file_checksums(tmp / _PARAMS)}
        (tmp / _MANIFEST).write_text(json.dumps(manifest))
        if replace:
            _remove(entry)
        try:
            os.rename(tmp, entry)  # atomic; fails when another process got there first
        except OSError:
            if not entry.is_dir():
                raise
    except Exception as err:  # a full disk or a read-only cache must not stop the load
        reason = str(err.strerror if isinstance(err, OSError) and err.strerror else err)
        warn(f"could not write the converted-weight cache {entry} "
             f"({type(err).__name__}: {reason.splitlines()[0][:200]}); loading "
             f"goes on without it")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _quiet_threads():
    """Silences tracebacks of worker threads (orbax's) while a write that warns on failure runs."""
    previous = threading.excepthook
    threading.excepthook = lambda args: None
    try:
        yield
    finally:
        threading.excepthook = previous


def _remove(path: Path) -> None:
    """Deletes a folder after renaming it aside, so that readers never see it half-deleted."""
    trash = path.parent / f".trash-{path.name}-{os.getpid()}-{time.monotonic_ns()}"
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _remove_stale(folder: Path) -> None:
    """Removes temporary and trash folders that crashed writers left behind."""
    now = time.time()
    for path in folder.iterdir():
        try:
            if path.name.startswith((".tmp-", ".trash-")) and now - path.stat().st_mtime > _STALE_SECONDS:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:  # another process removed it first
            pass


def _flat_items(tree: dict) -> list[tuple[str, object]]:
    """(PyTorch key, leaf) pairs in sorted key order."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    items = [(pytorch_key(tuple(k.key for k in path)), leaf) for path, leaf in leaves]
    return sorted(items, key=lambda item: item[0])


def _describe_tree(tree: dict, dtype=None) -> dict[str, str]:
    """PyTorch key -> "dtype[shape]" of every leaf (`dtype` overrides the leaves' own)."""
    return {key: f"{np.dtype(leaf.dtype if dtype is None else dtype).name}{list(leaf.shape)}"
            for key, leaf in _flat_items(tree)}


def _structure_hash(expected: dict) -> str:
    """A short hash of the expected names and shapes: configs that disagree get separate entries."""
    text = json.dumps(_describe_tree(expected, np.float32), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _file_checksums(folder: Path) -> dict[str, list]:
    """Relative path -> [size, CRC-32 as 8 hex digits] of every file under `folder`."""
    sums = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        crc = 0
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                crc = zlib.crc32(block, crc)
        sums[path.relative_to(folder).as_posix()] = [path.stat().st_size, f"{crc:08x}"]
    return sums


def _non_finite_names(params: dict) -> list[str]:
    return [key for key, leaf in _flat_items(params) if not np.isfinite(leaf).all()]


def _warn_non_finite(names: list[str], folder: Path) -> None:
    if names:
        warn(f"{folder}: {len(names)} tensor(s) hold NaN or inf values: "
             f"{', '.join(names[:5])}; embeddings will not be meaningful")
