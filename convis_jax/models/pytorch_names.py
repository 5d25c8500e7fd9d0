"""Where PyTorch (Hugging Face) parameter names and layouts are mapped to Flax.

A PyTorch key such as `vision_model.encoder.layers.3.mlp.fc1.weight` names
the Flax path `vision_model/encoder/layers_3/mlp/fc1/kernel`. The rules:

| Flax leaf   | PyTorch leaf | layout change                                   |
|-------------|--------------|-------------------------------------------------|
| `kernel` (Dense, 2-D) | `weight` | transpose: [in, out] <- [out, in]         |
| `kernel` (Conv, 4-D)  | `weight` | [kh, kw, in, out] <- [out, in, kh, kw]    |
| `scale` (LayerNorm)   | `weight` | none                                       |
| `embedding` (Embed)   | `weight` | none                                       |
| anything else         | same name | none                                     |

and `layers_N` <-> `layers.N`. Conversion is strict: every expected
parameter must be present with the right shape, and nothing may be left
over, except buffers that old checkpoints saved (`position_ids`).
"""

from __future__ import annotations

import re

import numpy as np

from convis_jax.errors import ModelLoadError

# Buffers, not parameters: transformers < 4.31 saved them in checkpoints.
IGNORED_SUFFIXES = ("position_ids",)

_LAYERS_FLAX = re.compile(r"^layers_(\d+)$")


def _flax_leaf_to_pytorch(leaf: str) -> str:
    return "weight" if leaf in ("kernel", "scale", "embedding") else leaf


def pytorch_key(flax_path: tuple[str, ...]) -> str:
    """The PyTorch state-dict key of a Flax parameter path."""
    parts = []
    for part in flax_path[:-1]:
        match = _LAYERS_FLAX.match(part)
        parts.extend(["layers", match.group(1)] if match else [part])
    return ".".join(parts + [_flax_leaf_to_pytorch(flax_path[-1])])


def _to_flax_layout(leaf: str, array: np.ndarray) -> np.ndarray:
    if leaf == "kernel" and array.ndim == 2:
        return array.T
    if leaf == "kernel" and array.ndim == 4:
        return array.transpose(2, 3, 1, 0)
    return array


def _to_pytorch_layout(leaf: str, array: np.ndarray) -> np.ndarray:
    if leaf == "kernel" and array.ndim == 2:
        return array.T
    if leaf == "kernel" and array.ndim == 4:
        return array.transpose(3, 2, 0, 1)
    return array


def _flatten(tree: dict, prefix: tuple = ()) -> dict[tuple, object]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, prefix + (key,)))
        else:
            flat[prefix + (key,)] = value
    return flat


def _unflatten(flat: dict[tuple, object]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree


def _describe(names_shapes: list[tuple[str, tuple]]) -> str:
    shown = ", ".join(f"{name} {list(shape)}" for name, shape in names_shapes[:12])
    more = len(names_shapes) - 12
    return shown + (f" (and {more} more)" if more > 0 else "")


def pytorch_to_flax(state: dict[str, np.ndarray], expected: dict, *, source: str = "checkpoint",
                    dtype=np.float32) -> dict:
    """Converts a PyTorch-named state dict to the Flax parameter tree, strictly.

    Args:
        state: PyTorch key -> array, as read from the checkpoint.
        expected: the Flax parameter tree of shapes (`clip.parameter_shapes`).
        source: named in error messages.
        dtype: dtype of the returned arrays.

    Returns:
        The Flax parameter tree (nested dicts of NumPy arrays).

    Raises:
        ModelLoadError: listing every missing, unexpected or mis-shaped tensor.
    """
    wanted = {pytorch_key(path): path for path in _flatten(expected)}
    flat_expected = _flatten(expected)
    missing = [(key, tuple(flat_expected[path].shape)) for key, path in wanted.items()
               if key not in state]
    unexpected = [(key, tuple(np.shape(value))) for key, value in state.items()
                  if key not in wanted and not key.endswith(IGNORED_SUFFIXES)]
    converted, misshaped = {}, []
    for key, path in wanted.items():
        if key not in state:
            continue
        array = _to_flax_layout(path[-1], np.asarray(state[key]))
        want = tuple(flat_expected[path].shape)
        if array.shape != want:
            misshaped.append(f"{key}: expected {list(want)} (Flax layout), found {list(array.shape)}")
            continue
        converted[path] = array.astype(dtype)
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensor(s): {_describe(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} tensor(s): {_describe(unexpected)}")
    if misshaped:
        problems.append(f"{len(misshaped)} tensor(s) of the wrong shape: " + "; ".join(misshaped[:12]))
    if problems:
        raise ModelLoadError(f"{source} does not match its config: " + "; ".join(problems))
    return _unflatten(converted)


def flax_to_pytorch(params: dict) -> dict[str, np.ndarray]:
    """The inverse of `pytorch_to_flax`: Flax tree -> PyTorch-named state dict.

    Arrays come out C-contiguous (safetensors needs that) and keep their rank:
    np.ascontiguousarray would lift the 0-d logit scale to shape [1].
    """
    return {pytorch_key(path): np.asarray(_to_pytorch_layout(path[-1], np.asarray(value)), order="C")
            for path, value in _flatten(params).items()}


def transformers_flax_to_pytorch(tree: dict) -> dict[str, np.ndarray]:
    """transformers 4's FlaxCLIPModel tree (`flax_model.msgpack`) -> PyTorch-named state dict.

    Its layers are named `layers/0/...` rather than `layers_0`; the leaf rules
    are the same as ours.
    """
    state = {}
    for path, value in _flatten(tree).items():
        key = ".".join(path[:-1] + (_flax_leaf_to_pytorch(path[-1]),))
        state[key] = np.asarray(_to_pytorch_layout(path[-1], np.asarray(value)), order="C")
    return state
