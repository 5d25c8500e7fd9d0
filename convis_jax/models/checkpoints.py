"""Finding a checkpoint folder (local or on the Hugging Face hub) and reading its tensors.

Formats, in order of preference: `model.safetensors`, sharded safetensors
with `model.safetensors.index.json`, `flax_model.msgpack` (transformers 4's
FlaxCLIPModel) and `pytorch_model.bin` (only when torch is installed); an
OpenCLIP hub folder holds `open_clip_model.safetensors` or
`open_clip_pytorch_model.bin` instead (`OPEN_CLIP_FORMATS`). Every reader
returns a PyTorch-named state dict of NumPy arrays.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from convis_jax.core.cache import atomic_write_bytes
from convis_jax.errors import ModelLoadError, warn
from convis_jax.models.config import read_config_json
from convis_jax.models.pytorch_names import transformers_flax_to_pytorch

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
FLAX_MSGPACK = "flax_model.msgpack"
PYTORCH_BIN = "pytorch_model.bin"
HF_FORMATS = (SAFETENSORS, SAFETENSORS_INDEX, FLAX_MSGPACK, PYTORCH_BIN)
OPEN_CLIP_SAFETENSORS = "open_clip_model.safetensors"
OPEN_CLIP_BIN = "open_clip_pytorch_model.bin"
OPEN_CLIP_FORMATS = (OPEN_CLIP_SAFETENSORS, OPEN_CLIP_BIN)
OPEN_CLIP_CONFIG = "open_clip_config.json"

# The layouts `load_model` recognises, for the message of a folder it does not.
SUPPORTED_LAYOUTS = (
    "Hugging Face CLIP (config.json with model_type 'clip' + model.safetensors, "
    "model.safetensors.index.json, flax_model.msgpack or pytorch_model.bin); "
    "Hugging Face SigLIP, SigLIP 2 at a fixed resolution included (config.json with "
    "model_type 'siglip' + the same weight files); "
    "OpenCLIP hub layout, ViT-CLIP only (open_clip_config.json + open_clip_model.safetensors "
    "or open_clip_pytorch_model.bin)")

# What a hub download fetches besides weights: config, tokenizer (SigLIP's
# SentencePiece `spiece.model` too), preprocessing.
_SIDE_FILES = ["*.json", "*.txt", "*.model"]
_WEIGHT_PATTERNS = ([SAFETENSORS, "model-*.safetensors"], [FLAX_MSGPACK], [PYTORCH_BIN],
                    [OPEN_CLIP_SAFETENSORS], [OPEN_CLIP_BIN])


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """A local folder holding the checkpoint, fetching a hub id through huggingface_hub.

    Args:
        name_or_path: a local folder, or a hub id such as `openai/clip-vit-base-patch32`
            (looked up in the standard Hugging Face cache, downloaded when online).

    Raises:
        ModelLoadError: the folder does not exist, or the id is neither cached nor downloadable.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    name = str(name_or_path)
    if path.exists() or name.count("/") != 1 or name.startswith((".", "/", "~")):
        raise ModelLoadError(f"no checkpoint folder at {name!r} (expected a folder with "
                             f"config.json and weights, or a hub id like 'org/name')")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    folder = None
    for patterns in _WEIGHT_PATTERNS:
        try:
            folder = Path(snapshot_download(name, allow_patterns=_SIDE_FILES + patterns))
        except HFValidationError as err:
            raise ModelLoadError(f"{name!r} is neither a folder nor a valid hub id: {err}") from None
        except Exception as err:  # offline, not cached, unknown repo, network errors
            raise ModelLoadError(
                f"cannot get {name!r} from the Hugging Face hub: it is not in the local cache "
                f"({_hub_cache()}) and {_why_not_downloaded(err)}; or download the folder "
                f"elsewhere (`hf download {name}`) and pass its local path") from None
        # Only the family's own weights count: a timm or OpenCLIP repo may also hold a
        # `model.safetensors` of another layout.
        if weight_format(folder, _family_formats(folder)) is not None:
            return folder
    return folder


def _hub_cache() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _why_not_downloaded(err: Exception) -> str:
    """Why a hub download failed, naming what is actually set (offline mode or not)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        which = next((v for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if os.environ.get(v)),
                     "HF_HUB_OFFLINE")
        return (f"{which}={os.environ.get(which, '1')} is set, so nothing is downloaded: unset "
                f"it, with a network connection, to download and cache it once")
    detail = " ".join(str(err).split())
    detail = detail if len(detail) <= 200 else detail[:200].rsplit(" ", 1)[0] + " ..."
    return (f"the download failed ({type(err).__name__}: {detail}; endpoint "
            f"{constants.ENDPOINT}): check the id and the network connection")


def weight_format(folder: Path, formats: tuple[str, ...] = HF_FORMATS) -> str | None:
    """The file name of the preferred weight format (of `formats`) present in `folder`, or None."""
    for name in formats:
        if (folder / name).is_file():
            return name
    return None


def weight_files(folder: Path, formats: tuple[str, ...] = HF_FORMATS) -> list[Path]:
    """Every file that holds the weights of `folder`'s preferred format (of `formats`)."""
    fmt = weight_format(folder, formats)
    if fmt is None:
        present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        raise ModelLoadError(
            f"no weights in {folder}: expected one of {', '.join(formats)}; found {present}")
    if fmt != SAFETENSORS_INDEX:
        return [folder / fmt]
    index = _read_json(folder / fmt)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict):
        raise ModelLoadError(f"{folder / fmt}: expected a 'weight_map' object")
    files = [folder / name for name in sorted(set(weight_map.values()))]
    for file in files:
        if not file.is_file():
            raise ModelLoadError(f"{folder / fmt} names shard {file.name}, which is missing")
    return files


def read_state_dict(folder: Path, formats: tuple[str, ...] = HF_FORMATS) -> dict[str, np.ndarray]:
    """Reads every tensor of the checkpoint in `folder` as a PyTorch-named dict of arrays."""
    files = weight_files(folder, formats)
    name = files[0].name
    if name == FLAX_MSGPACK:
        return _read_msgpack(files[0])
    if name.endswith(".bin"):
        return _read_torch_bin(files[0])
    state: dict[str, np.ndarray] = {}
    for file in files:
        state.update(_read_safetensors(file))
    return state


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelLoadError(f"{path} is not valid JSON: {err}") from None


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    try:
        # NumPy arrays straight from the file (bfloat16 through ml_dtypes), no device copies.
        with safe_open(str(path), framework="numpy") as f:
            return {key: np.asarray(f.get_tensor(key)) for key in f.keys()}
    except Exception as err:  # safetensors raises its own SafetensorError and OSErrors
        raise ModelLoadError(f"cannot read {path} (damaged or truncated safetensors file?): "
                             f"{err}") from None


def _read_msgpack(path: Path) -> dict[str, np.ndarray]:
    from flax.serialization import msgpack_restore

    try:
        tree = msgpack_restore(path.read_bytes())
    except Exception as err:
        raise ModelLoadError(f"cannot read {path} (damaged msgpack file?): {err}") from None
    if not isinstance(tree, dict):
        raise ModelLoadError(f"{path}: expected a parameter tree, found {type(tree).__name__}")
    tree = tree.get("params", tree)
    return transformers_flax_to_pytorch(tree)


def _read_torch_bin(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise ModelLoadError(
            f"{path} is a PyTorch pickle, which needs torch to read; install torch, or convert "
            f"the checkpoint to safetensors (transformers: model.save_pretrained(dir))") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ModelLoadError(f"cannot read {path}: {err}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # an OpenCLIP training checkpoint rather than bare weights
    if not isinstance(state, dict):
        raise ModelLoadError(f"{path}: expected a state dict, found {type(state).__name__}")
    return {key: value.float().numpy() for key, value in state.items()
            if hasattr(value, "numpy")}


def detect_family(folder: Path) -> str:
    """Which family a checkpoint folder holds: "clip", "siglip" or "open_clip".

    `config.json` decides when it names model_type "clip" or "siglip"; otherwise
    `open_clip_config.json` makes it OpenCLIP; a `config.json` without model_type
    is read as CLIP (old checkpoints).

    Raises:
        ModelLoadError: one line naming what was found and listing the supported layouts.
    """
    folder = Path(folder)
    config_file = folder / "config.json"
    model_type = None
    if config_file.is_file():
        model_type = read_config_json(config_file).get("model_type")
        if model_type in ("clip", "siglip"):
            return model_type
    if (folder / OPEN_CLIP_CONFIG).is_file():
        return "open_clip"
    if model_type == "siglip2":
        raise ModelLoadError(
            f"{folder}: config.json has model_type 'siglip2', the NaFlex SigLIP 2 (linear patch "
            f"embedding, position embeddings resized per image), which is not supported; "
            f"fixed-resolution SigLIP 2 checkpoints (e.g. google/siglip2-base-patch16-224, "
            f"model_type 'siglip') load. Supported layouts: {SUPPORTED_LAYOUTS}")
    if config_file.is_file() and model_type is None:
        return "clip"
    if config_file.is_file():
        where = f"{folder}: unknown model layout (config.json with model_type {model_type!r})"
    else:
        present = sorted(p.name for p in folder.iterdir())[:12] if folder.is_dir() else []
        where = (f"no config.json at {config_file} nor {OPEN_CLIP_CONFIG}: unknown model "
                 f"layout (files {present})")
    raise ModelLoadError(f"{where}; supported layouts: {SUPPORTED_LAYOUTS}")


def _family_formats(folder: Path) -> tuple[str, ...]:
    """The weight files of the family in `folder` (HF's when it cannot tell yet)."""
    try:
        family = detect_family(folder)
    except ModelLoadError:
        return HF_FORMATS
    return OPEN_CLIP_FORMATS if family == "open_clip" else HF_FORMATS


# ------------------------------------------------------------------ fingerprints

VOCABULARY_FILE = "convis_vocabulary.json"
_HASH_MEMO = "file_hashes.json"
# Hashing a file this small costs less than reading and writing the memo.
_MEMO_MIN_BYTES = 32 << 20
# Files modified more recently than this are hashed every time (see fingerprint_files).
_SETTLED_NS = 2_000_000_000


def fingerprint_files(files: list[Path], *, memo_dir: Path | None = None) -> str:
    """A content hash of the weight files (the key of converted-weight and concept-bank caches).

    Each file contributes its SHA-256. Files in a Hugging Face cache are links
    to blobs named by that very hash (for LFS files), which is used as is, so
    a checkpoint hashes the same in the hub cache and copied elsewhere.

    Args:
        files: the weight files, in a fixed order (`checkpoints.weight_files`).
        memo_dir: where `file_hashes.json` memoises the hashes of large files by
            (path, size, mtime_ns, ctime_ns, inode); None hashes every file. Rewriting
            a file changes its times; only a file modified over two seconds ago is
            memoised, so a rewrite within one tick of the clock cannot go unseen.

    Returns:
        32 hex digits.
    """
    memo_file = None if memo_dir is None else Path(memo_dir) / _HASH_MEMO
    memo = _read_hash_memo(memo_file) if memo_file is not None else {}
    changed = False
    digest = hashlib.sha256()
    for file in files:
        target = Path(file).resolve()
        if target.parent.name == "blobs" and _is_sha256(target.name):
            digest.update(target.name.encode())
            continue
        stat = target.stat()
        stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]
        known = memo.get(str(target))
        if known is not None and known.get("stamp") == stamp:
            digest.update(known["sha256"].encode())
            continue
        file_hash = _sha256_file(target)
        digest.update(file_hash.encode())
        # A file modified within the clock's granularity of now could change again
        # without changing its times ("racy" stamps, as git calls them): not memoised.
        settled = time.time_ns() - stat.st_mtime_ns > _SETTLED_NS
        if memo_file is not None and stat.st_size >= _MEMO_MIN_BYTES and settled:
            memo[str(target)] = {"stamp": stamp, "sha256": file_hash}
            changed = True
    if changed:
        try:
            atomic_write_bytes(memo_file, json.dumps(memo).encode())
        except OSError as err:
            warn(f"could not write the file-hash memo {memo_file}: {err}")
    return digest.hexdigest()[:32]


def _is_sha256(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_hash_memo(memo_file: Path) -> dict:
    try:
        memo = json.loads(memo_file.read_text())
    except OSError:  # none yet, or an unusable cache root (writing will say so)
        return {}
    except ValueError as err:
        warn(f"the file-hash memo {memo_file} is damaged ({err}); rebuilding it")
        return {}
    if not isinstance(memo, dict):
        return {}
    # Entries written by another version, or by hand, are dropped (and so rehashed).
    return {path: entry for path, entry in memo.items()
            if isinstance(entry, dict) and isinstance(entry.get("stamp"), list)
            and isinstance(entry.get("sha256"), str) and _is_sha256(entry["sha256"])}


def default_model_path() -> Path:
    """The folder of the small CLIP bundled with the package."""
    from importlib import resources

    path = Path(str(resources.files("convis_jax") / "data" / "default_model"))
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"the bundled default model is missing from {path}; reinstall "
                             f"convis_jax or pass a model folder or hub id")
    return path
