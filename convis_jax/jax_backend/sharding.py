"""The occlusion and gradient sweeps spread over every local device with `jax.sharding`.

A 1-D `Mesh` over this process's local devices, axis `AXIS`:

* Occlusion: each window size's table of windows (`occlusion.window_tables`:
  chunks of the windows of every image) is split along its chunk axis with
  `jax.shard_map`; each device cuts, encodes and ranks its own chunks with
  the same `lax.map` as the single-device sweep, so every window is computed
  exactly as on one device. The padded images are replicated (one is 2.8 MB;
  the windows are the work), so even a single image uses every device. The
  concept bank is replicated, or split by concept (bank rows) when it is
  large: each device then scores every device's current windows against its
  rows and an all-to-all hands each device the whole similarity rows of its
  own windows, which the ranks need.
* Gradients: the images are split along the batch axis with `jax.shard_map`,
  the rest replicated, and `gradients.concept_gradient_maps` runs unchanged
  on every device's block of images. SmoothGrad, whose noise is drawn over
  the whole batch, stays on one device.

Sharding changes where work runs, not what it computes: the `*_auto` entry
points give the single-device results (the tests hold them to 1e-6).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from convis_jax.core.windows import WindowGrid
from convis_jax.errors import InputError
from convis_jax.jax_backend import occlusion

# The one mesh axis: windows (occlusion) or images (gradients) are split along it.
AXIS = "devices"

# Banks larger than this are split by concept rather than replicated on every device.
# All 82,115 WordNet nouns against a 768-wide CLIP take 252 MB, so the default keeps
# every WordNet bank replicated; the split is for larger custom vocabularies.
SPLIT_BANK_BYTES = 1 << 30


def local_mesh(devices=None) -> Mesh:
    """A 1-D mesh (axis `AXIS`) over the given devices, default this process's local devices.

    Local, not global: under `jax.distributed` every process sweeps its own images
    (scripts/sweep_dataset.py), so no computation spans hosts.

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


def _split_bank(bank, split_bank: bool | None) -> bool:
    if split_bank is None:
        return int(np.prod(bank.shape)) * jnp.dtype(bank.dtype).itemsize > SPLIT_BANK_BYTES
    return bool(split_bank)


# ----------------------------------------------------------------------------- occlusion


def _gathered_similarities(v, bank_rows, *, num_synsets: int):
    """z [chunk, T] of this device's windows when each device holds T / D rows of the bank.

    Args:
        v: float [chunk, d] unit embeddings of this device's current windows.
        bank_rows: float [T_padded / D, d], this device's rows of the bank (padded with
            zero rows to a multiple of the D devices).
        num_synsets: T, the real vocabulary size.
    """
    everyone = jax.lax.all_gather(v, AXIS, tiled=True)  # [D * chunk, d]
    z = everyone @ bank_rows.T  # [D * chunk, T_padded / D]
    # Device i receives row block i from every device j, laid side by side in j order:
    # the whole (padded) bank for its own windows.
    mine = jax.lax.all_to_all(z, AXIS, split_axis=0, concat_axis=1, tiled=True)
    return mine[:, :num_synsets]


def _sharded_table_outputs(mesh: Mesh, split_bank: bool, num_synsets: int):
    """A stand-in for `occlusion.table_outputs` that splits the table's chunks over `mesh`."""
    similarities = (partial(_gathered_similarities, num_synsets=num_synsets) if split_bank
                    else occlusion.dense_similarities)
    bank_spec = P(AXIS) if split_bank else P()

    def run_table(params, padded, table, bank, finish, *, config, size, mean, std):
        local = partial(occlusion.table_outputs, finish=finish, config=config, size=size,
                        mean=mean, std=std, similarities=similarities)
        return jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), P(AXIS), bank_spec),
                             out_specs=P(AXIS))(params, padded, table, bank)

    return run_table


def _sharded_sweep(params, padded, bank, finish, *, config, grid, chunk, mean, std, mesh,
                   split_bank):
    num_synsets = bank.shape[0]
    if split_bank:
        bank = jnp.pad(bank, ((0, -num_synsets % mesh.size), (0, 0)))
    return occlusion.sweep_tables(params, padded, bank, finish, config=config, grid=grid,
                                  chunk=chunk, mean=mean, std=std, parts=mesh.size,
                                  run_table=_sharded_table_outputs(mesh, split_bank, num_synsets))


_OCCLUSION_STATIC = ("config", "grid", "chunk", "mean", "std", "num_concepts", "mesh",
                     "split_bank")


@partial(jax.jit, static_argnames=_OCCLUSION_STATIC)
def occlusion_window_scores(params, padded, bank, members, segment_ids, *, config,
                            grid: WindowGrid, chunk: int, mean, std, num_concepts: int,
                            mesh: Mesh, split_bank: bool = False):
    """Every requested concept's subtree-minimum rank in every window, computed across `mesh`.

    Arguments as `occlusion.occlusion_cells`, plus:
        mesh: a 1-D mesh over axis `AXIS` (`local_mesh`).
        split_bank: split the bank's rows over the devices instead of replicating it.

    Returns:
        Per window size, int32 [n_chunks, chunk, K] in [0, T), sharded along the chunk
        axis over the mesh (n_chunks a multiple of the mesh size; rows as
        `occlusion.window_tables`, whose filler rows `occlusion.lattice_outputs` drops).
    """
    finish = partial(occlusion.subtree_min_ranks, members=members, segment_ids=segment_ids,
                     num_concepts=num_concepts)
    return _sharded_sweep(params, padded, bank, finish, config=config, grid=grid, chunk=chunk,
                          mean=mean, std=std, mesh=mesh, split_bank=split_bank)


@partial(jax.jit, static_argnames=_OCCLUSION_STATIC)
def occlusion_cells_sharded(params, padded, bank, members, segment_ids, *, config,
                            grid: WindowGrid, chunk: int, mean, std, num_concepts: int,
                            mesh: Mesh, split_bank: bool = False):
    """`occlusion.occlusion_cells` with the windows split over `mesh` (see
    `occlusion_window_scores`); float32 [N, K, cy, cx] in [0, 1]."""
    scores = occlusion_window_scores(params, padded, bank, members, segment_ids, config=config,
                                     grid=grid, chunk=chunk, mean=mean, std=std,
                                     num_concepts=num_concepts, mesh=mesh,
                                     split_bank=split_bank)
    per_size = occlusion.lattice_outputs(scores, grid, padded.shape[0])
    return occlusion.cells_from_window_scores(per_size, grid)


@partial(jax.jit, static_argnames=("config", "grid", "chunk", "mean", "std", "mesh",
                                   "split_bank"))
def window_rank_similarities_sharded(params, padded, bank, *, config, grid: WindowGrid,
                                     chunk: int, mean, std, mesh: Mesh,
                                     split_bank: bool = False):
    """`occlusion.window_rank_similarities` with the windows split over `mesh`:
    float32 [N, n_windows, T] in (0, 1]."""
    outputs = _sharded_sweep(params, padded, bank, occlusion.rank_similarities, config=config,
                             grid=grid, chunk=chunk, mean=mean, std=std, mesh=mesh,
                             split_bank=split_bank)
    return occlusion.window_list(occlusion.lattice_outputs(outputs, grid, padded.shape[0]))


def occlusion_cells_auto(params, padded, bank, members, segment_ids, *, config,
                         grid: WindowGrid, chunk: int, mean, std, num_concepts: int,
                         devices=None, split_bank: bool | None = None):
    """`occlusion.occlusion_cells` on every local device: sharded when there are several.

    Arguments as `occlusion.occlusion_cells`, plus:
        devices: the devices to use; None means all of this process's local devices.
        split_bank: split the bank by concept over the devices; None splits banks larger
            than `SPLIT_BANK_BYTES`.

    Returns:
        float32 [N, K, cy, cx] in [0, 1], equal to the single-device sweep.
    """
    mesh = local_mesh(devices)
    static = dict(config=config, grid=grid, chunk=chunk, mean=mean, std=std,
                  num_concepts=num_concepts)
    if mesh.size == 1:
        with jax.default_device(mesh.devices.flat[0]):
            return occlusion.occlusion_cells(params, padded, bank, members, segment_ids,
                                             **static)
    return occlusion_cells_sharded(params, padded, bank, members, segment_ids, mesh=mesh,
                                   split_bank=_split_bank(bank, split_bank), **static)


def window_rank_similarities_auto(params, padded, bank, *, config, grid: WindowGrid,
                                  chunk: int, mean, std, devices=None,
                                  split_bank: bool | None = None):
    """`occlusion.window_rank_similarities` on every local device (options as
    `occlusion_cells_auto`): float32 [N, n_windows, T] in (0, 1]."""
    mesh = local_mesh(devices)
    static = dict(config=config, grid=grid, chunk=chunk, mean=mean, std=std)
    if mesh.size == 1:
        with jax.default_device(mesh.devices.flat[0]):
            return occlusion.window_rank_similarities(params, padded, bank, **static)
    return window_rank_similarities_sharded(params, padded, bank, mesh=mesh,
                                            split_bank=_split_bank(bank, split_bank), **static)


# ----------------------------------------------------------------------------- gradients


def replicate(tree, mesh: Mesh):
    """Places every array of a PyTree (e.g. the CLIP parameters) on every device of `mesh`.

    Sweeps copy parameters that are not yet replicated on every call; replicate them
    once and pass the result instead. Arrays already replicated stay where they are.
    """
    return jax.device_put(tree, NamedSharding(mesh, P()))


class _Static:
    """A NumPy array as a static jit argument: hashed and compared by its bytes."""

    def __init__(self, array):
        self.array = np.ascontiguousarray(array)
        self._key = (self.array.dtype.str, self.array.shape, self.array.tobytes())

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other) -> bool:
        return isinstance(other, _Static) and self._key == other._key


@partial(jax.jit, static_argnames=("config", "concepts", "subtree", "options", "mesh"))
def _gradient_maps_spmd(params, pixel_values, bank, logit_scale, *, config, concepts, subtree,
                        options, mesh):
    """One SPMD program: each device runs `concept_gradient_maps` on its block of images.

    concepts and subtree are `_Static` so that the kernel's argument checks see
    concrete values; `ensure_compile_time_eval` runs those checks (which read array
    values) while tracing, and only the work on images is staged. The kernel uses no
    collectives, so shard_map's replication checks have nothing to verify.
    """
    from convis_jax.jax_backend.gradients import concept_gradient_maps

    subtree = None if subtree is None else tuple(a.array for a in subtree)

    def block(params, pixels, bank, logit_scale):
        with jax.ensure_compile_time_eval():
            return concept_gradient_maps(params, config, pixels, bank, concepts.array, subtree,
                                         logit_scale, **dict(options))

    return jax.shard_map(block, mesh=mesh, in_specs=(P(), P(AXIS), P(), P()),
                         out_specs=P(AXIS), check_vma=False)(params, pixel_values, bank,
                                                             logit_scale)


def gradient_maps_sharded(params, config, pixel_values, bank, concept_index, subtree,
                          logit_scale, *, mesh: Mesh, **options):
    """`gradients.concept_gradient_maps` with the images split over `mesh`.

    The batch is padded to a multiple of the mesh size with copies of its last image
    (their maps are cut away) and split into one block of images per device
    (`jax.shard_map`); every device runs the unchanged kernel on its block, in one
    compiled program. Every image's maps depend on that image alone, so the result
    equals one call on one device.

    Args:
        params, config, pixel_values, bank, concept_index, subtree, logit_scale: as
            `concept_gradient_maps` (pixel_values float [N, 3, S, S]; concept_index
            int [K]; subtree None or three int arrays).
        mesh: a 1-D mesh over axis `AXIS` (`local_mesh`).
        **options: `concept_gradient_maps`'s keyword options (score, kind, reduce,
            strategy, chunk, layer), except SmoothGrad.

    Returns:
        float32 [N, K, S, S] (or [N, K, 3, S, S]), sharded over the mesh along N when N
        is a multiple of the mesh size.

    Raises:
        InputError: kind="smoothgrad": its kernel draws image i's noise from the i-th
            key of `jax.random.split(key, N)` over the whole batch, which a block per
            device would change (`gradient_maps_auto` runs it on one device); or
            pixel_values that are not [N, 3, S, S] with N >= 1.
    """
    if options.get("kind") == "smoothgrad":
        raise InputError("SmoothGrad draws each image's noise from a key split over the whole "
                         "batch, so it cannot be split into per-device blocks; found "
                         "kind='smoothgrad' (gradient_maps_auto runs it on one device)")
    pixel_values = np.asarray(pixel_values)
    if pixel_values.ndim != 4 or pixel_values.shape[0] == 0:
        raise InputError(f"expected pixel_values [N, 3, S, S] with N >= 1, found shape "
                         f"{list(pixel_values.shape)}")
    n = pixel_values.shape[0]
    padded = np.concatenate([pixel_values, np.repeat(pixel_values[-1:], -n % mesh.size, 0)])
    # The kernel ignores the key outside SmoothGrad; an array cannot be a static option.
    options = {name: value for name, value in options.items() if name != "key"}
    subtree = None if subtree is None else tuple(_Static(np.asarray(a)) for a in subtree)
    maps = _gradient_maps_spmd(params, jax.device_put(padded, NamedSharding(mesh, P(AXIS))),
                               jnp.asarray(bank), jnp.asarray(logit_scale, jnp.float32),
                               config=config, concepts=_Static(np.asarray(concept_index)),
                               subtree=subtree, options=tuple(sorted(options.items())),
                               mesh=mesh)
    return maps[:n] if n < len(padded) else maps


def gradient_maps_auto(params, config, pixel_values, bank, concept_index, subtree,
                       logit_scale, *, devices=None, **options):
    """`gradients.concept_gradient_maps` on every local device.

    With several devices the images are split over them (`gradient_maps_sharded`);
    with one device, or for SmoothGrad (whose noise is drawn over the whole batch), the
    plain kernel runs. With fewer images than devices some devices idle: pass batches
    of at least as many images as devices.

    Arguments and result as `concept_gradient_maps`, plus devices: the devices to use,
    None for all of this process's local devices (the plain kernel runs on the first;
    arrays already placed elsewhere stay there).
    """
    from convis_jax.jax_backend.gradients import concept_gradient_maps

    mesh = local_mesh(devices)
    if mesh.size == 1 or options.get("kind") == "smoothgrad":
        with jax.default_device(mesh.devices.flat[0]):
            return concept_gradient_maps(params, config, pixel_values, bank, concept_index,
                                         subtree, logit_scale, **options)
    return gradient_maps_sharded(params, config, pixel_values, bank, concept_index, subtree,
                                 logit_scale, mesh=mesh, **options)
