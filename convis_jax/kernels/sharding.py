"""Mesh helpers: how the sweeps spread over every local device with `jax.sharding`.

A 1-D `Mesh` over this process's local devices, axis `AXIS`. This module knows
meshes, not sweeps: the sweeps' entry points (`occlusion.occlusion_cells`,
`occlusion.window_rank_similarities`, `gradients.concept_gradient_maps`) pick
one device or the mesh themselves and use these helpers:

* `local_mesh`: the mesh; `replicate`: a PyTree copied to every device once.
* `shard_rows`: a per-device function run under `jax.shard_map`, chosen
  arguments split along their first axis over the mesh, the rest replicated.
  The occlusion sweep splits each window size's table of chunks this way; the
  gradient sweep splits its batch of images.
* `gathered_similarities`: the collective for a bank split by concept (bank
  rows) over the devices; `split_bank_rows` decides when to split it.
* `StaticArray`: a NumPy array as a static jit argument.

Sharding changes where work runs, not what it computes: the entry points give
the single-device results (tests/kernels/test_sharding.py holds them to 1e-6).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from convis_jax.errors import InputError

# The one mesh axis: windows (occlusion) or images (gradients) are split along it.
AXIS = "devices"

# Banks larger than this are split by concept rather than replicated on every device.
# All 82,115 WordNet nouns against a 768-wide CLIP take 252 MB, so the default keeps
# every WordNet bank replicated; the split is for larger custom vocabularies.
SPLIT_BANK_BYTES = 1 << 30


def local_mesh(devices=None) -> Mesh:
    """A 1-D mesh (axis `AXIS`) over the given devices, default this process's local devices.

    Local, not global: under `jax.distributed` every process sweeps its own images
    (`convis-jax atlas build`), so no computation spans hosts.

    Args:
        devices: a sequence of jax devices, or None for `jax.local_devices()`.

    Raises:
        InputError: an empty device list.
    """
    devices = list(jax.local_devices() if devices is None else devices)
    if not devices:
        raise InputError("expected at least one device for the mesh, found none")
    # Auto axes: shard_map and NamedSharding place the data; jit infers the rest.
    return Mesh(np.array(devices), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def replicate(tree, mesh: Mesh):
    """Places every array of a PyTree (e.g. the CLIP parameters) on every device of `mesh`.

    Sweeps copy parameters that are not yet replicated on every call; replicate them
    once and pass the result instead. Arrays already replicated stay where they are.
    """
    return jax.device_put(tree, NamedSharding(mesh, P()))


def place_rows(array, mesh: Mesh):
    """Places an array on `mesh` split along its first axis (a multiple of the mesh size)."""
    return jax.device_put(array, NamedSharding(mesh, P(AXIS)))


def split_bank_rows(bank, split_bank: bool | None) -> bool:
    """Whether to split a concept bank [T, d] by rows over the devices.

    Args:
        bank: the bank (only its shape and dtype are read).
        split_bank: True or False to force the choice; None splits banks larger than
            `SPLIT_BANK_BYTES`.
    """
    if split_bank is None:
        return int(np.prod(bank.shape)) * jnp.dtype(bank.dtype).itemsize > SPLIT_BANK_BYTES
    return bool(split_bank)


def shard_rows(fn: Callable, mesh: Mesh, split: Sequence[bool], *,
               check_vma: bool = True) -> Callable:
    """`fn` run once per device of `mesh` on its block of rows (`jax.shard_map`).

    Args:
        fn: the per-device function of len(split) positional arguments (PyTrees); it
            returns an array (or PyTree) whose first axis holds the device's rows.
        mesh: a 1-D mesh over axis `AXIS` (`local_mesh`).
        split: per argument, True to split it along its first axis over the devices
            (that axis a multiple of the mesh size), False to replicate it.
        check_vma: shard_map's replication check; pass False for a function whose
            collectives (none) need no checking but whose tracing reads concrete values.

    Returns:
        A function of the same arguments whose outputs are the per-device outputs laid
        end to end along the first axis (split over the mesh).
    """
    in_specs = tuple(P(AXIS) if s else P() for s in split)
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=P(AXIS),
                         check_vma=check_vma)


def gathered_similarities(v, bank_rows, *, num_synsets: int):
    """z [chunk, T] of this device's windows when each device holds T / D rows of the bank.

    Runs inside `shard_rows` (it names the mesh axis).

    Args:
        v: float [chunk, d] unit embeddings of this device's current windows.
        bank_rows: float [T_padded / D, d], this device's rows of the bank (padded with
            zero rows to a multiple of the D devices).
        num_synsets: T, the real vocabulary size.

    Returns:
        float [chunk, T]: the cosine similarities to the whole bank, as `v @ bank.T`.
    """
    everyone = jax.lax.all_gather(v, AXIS, tiled=True)  # [D * chunk, d]
    z = everyone @ bank_rows.T  # [D * chunk, T_padded / D]
    # Device i receives row block i from every device j, laid side by side in j order:
    # the whole (padded) bank for its own windows.
    mine = jax.lax.all_to_all(z, AXIS, split_axis=0, concat_axis=1, tiled=True)
    return mine[:, :num_synsets]


class StaticArray:
    """A NumPy array as a static jit argument: hashed and compared by its bytes.

    For kernels whose argument checks read array values while tracing.
    """

    def __init__(self, array):
        self.array = np.ascontiguousarray(array)
        self._key = (self.array.dtype.str, self.array.shape, self.array.tobytes())

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other) -> bool:
        return isinstance(other, StaticArray) and self._key == other._key
