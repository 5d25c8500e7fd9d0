"""`load_clip`: a Hugging Face CLIP checkpoint (folder or hub id) -> `ClipModel`."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from convis_jax.errors import InputError, ModelLoadError
from convis_jax.jax_backend import checkpoints
from convis_jax.jax_backend.clip import parameter_shapes
from convis_jax.jax_backend.config import ClipConfig
from convis_jax.jax_backend.model import ClipModel
from convis_jax.jax_backend.pytorch_names import pytorch_to_flax
from convis_jax.jax_backend.tokenizer import load_tokenizer

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
VOCABULARY_FILE = "convis_vocabulary.json"


def load_clip(name_or_path: str | Path | None = None, *, dtype: str = "float32") -> ClipModel:
    """Loads a CLIP checkpoint as written by transformers' `save_pretrained`.

    Args:
        name_or_path: a local folder, or a hub id such as `openai/clip-vit-base-patch32`
            (resolved through huggingface_hub's cache; downloaded when online). None loads
            the small model bundled with convis_jax.
        dtype: "float32" (default) or "bfloat16", the dtype of parameters and compute.

    Returns:
        The model, its tokenizer and preprocessing.

    Raises:
        ModelLoadError: missing or damaged files, or weights that do not match the config
            (every missing, unexpected or mis-shaped tensor is named).
        InputError: an unknown dtype.
    """
    if dtype not in DTYPES:
        raise InputError(f"dtype must be one of {sorted(DTYPES)}, found {dtype!r}")
    if name_or_path is None:
        name_or_path = default_model_path()
    folder = checkpoints.resolve_checkpoint(name_or_path)
    config = ClipConfig.from_json(folder / "config.json")
    files = checkpoints.weight_files(folder)
    state = checkpoints.read_state_dict(folder)
    params = pytorch_to_flax(state, parameter_shapes(config), source=str(folder))
    _warn_non_finite(params, folder)
    params = _to_device(params, DTYPES[dtype])
    from convis_jax.core.images import PreprocessConfig

    preprocess_config = PreprocessConfig.from_pretrained_dir(
        folder, image_size=config.vision.image_size)
    vocabulary = folder / VOCABULARY_FILE
    return ClipModel(config=config, params=params, tokenizer=load_tokenizer(folder),
                     preprocess_config=preprocess_config, name=str(name_or_path),
                     fingerprint=fingerprint_files(files),
                     vocabulary_path=vocabulary if vocabulary.is_file() else None)


def default_model_path() -> Path:
    """The folder of the small CLIP bundled with the package."""
    from importlib import resources

    path = Path(str(resources.files("convis_jax") / "data" / "default_model"))
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"the bundled default model is missing from {path}; reinstall "
                             f"convis_jax or pass a model folder or hub id")
    return path


def fingerprint_files(files: list[Path]) -> str:
    """A content hash of the weight files (the key of converted-weight and concept-bank caches).

    Files in a Hugging Face cache are links to blobs named by their own
    content hash, which is used as is; other files are hashed.
    """
    digest = hashlib.sha256()
    for file in files:
        target = file.resolve()
        if target.parent.name == "blobs" and len(target.name) >= 40:
            digest.update(target.name.encode())
            continue
        with open(target, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()[:32]


def _warn_non_finite(params: dict, folder: Path) -> None:
    from convis_jax.jax_backend.pytorch_names import flax_to_pytorch

    bad = [k for k, v in flax_to_pytorch(params).items() if not np.all(np.isfinite(v))]
    if bad:
        warnings.warn(f"{folder}: {len(bad)} tensor(s) hold NaN or inf values: "
                      f"{', '.join(bad[:5])}; embeddings will not be meaningful", stacklevel=3)


def _to_device(params: dict, dtype) -> dict:
    import jax

    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), params)
