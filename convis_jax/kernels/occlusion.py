"""The ConVis occlusion sweep (Algorithm 1) for many images and every concept, in one jitted call.

The windows of all images and sizes form one table; they are cut with
`dynamic_slice` (static shapes, no Python loop over windows), resized
(bicubic, as two matrix products) to the model's input size, normalised and
encoded in fixed-size chunks under `lax.map`, so memory stays bounded by the
chunk. Each window's similarity
to the whole concept bank gives the rank of every synset; the subtree
minimum gives every requested concept's score at once; summed-area tables
over the window lattice (`core.cells.accumulate_cells`) turn window scores
into cell maps. The window embeddings do not depend on the concept, so
maps for all of a vocabulary cost one sweep (docs/method.md, section 3).

Three entry points, each on one device or on all local devices:
`occlusion_cells` (Algorithm 1's cell maps), `window_rank_similarities`
(the web app's per-window ranks) and `window_embeddings` (the atlas's input).
They take the sweep's static settings as one `SweepSpec`; `kernels.sweep.Sweep`
is what callers use. With several devices, the table of chunks
(`window_tables`) is split over a mesh (`sharding.shard_rows`);
each device cuts, encodes and ranks its own chunks with the same `lax.map`, so
every window is computed exactly as on one device. The padded images are
replicated (one is 2.8 MB; the windows are the work), so even a single image
uses every device. The concept bank is replicated, or split by concept when it
is large (`sharding.split_bank_rows`): each device then scores every device's
current windows against its rows and an all-to-all hands each device the whole
similarity rows of its own windows (`sharding.gathered_similarities`).

The pieces: `window_tables` lists the windows, `table_outputs` encodes one
table and finishes each window's similarities (`subtree_min_ranks` or
`rank_similarities`), `sweep_table` runs it (on one device or split over the
mesh) and `window_rows` puts the rows back in window order, for
`core.cells.cell_maps`.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from convis_jax.core.batches import pad_to_multiple
from convis_jax.core.cells import cell_maps
from convis_jax.core.ranks import rank_similarity, ranks
from convis_jax.core.windows import WindowGrid
from convis_jax.kernels import sharding
from convis_jax.kernels.memory import window_bytes

@dataclass(frozen=True)
class SweepSpec:
    """The static part of a sweep: what the compiled program depends on.

    Attributes:
        embed: the encoder's `embed_images`, (params, pixel_values [B, 3, S, S]) ->
            unit embeddings [B, d]; hashable.
        image_size: S, the encoder's input size: windows are resized to it.
        mean, std: the encoder's normalisation, tuples of 3.
        grid: the window grid.
        chunk: windows encoded per step.
    """

    embed: Callable
    image_size: int
    mean: tuple
    std: tuple
    grid: WindowGrid
    chunk: int

    @classmethod
    def of(cls, encoder, grid: WindowGrid, chunk: int) -> SweepSpec:
        """The spec of an `Encoder` on a grid."""
        return cls(encoder.embed_images, int(encoder.image_size), tuple(encoder.image_mean),
                   tuple(encoder.image_std), grid, int(chunk))


# How often each jitted function below was traced; tests read it to prove
# that repeated calls with the same shapes do not trace (or compile) again.
TRACES: collections.Counter = collections.Counter()


def resize_matrix(source: int, target: int, width: int | None = None) -> np.ndarray:
    """The bicubic resize of one axis from `source` to `target` pixels as a matrix.

    `jax.image.resize` (bicubic, antialiased when shrinking) is separable and
    linear, so resizing the identity gives its weights: resize(x) = R @ x
    along an axis. Columns past `source` (up to `width`) are zero, so that a
    window smaller than `width` can be cut as a `width`-sided block and still
    resized exactly (`table_outputs`).

    Args:
        source: the input side in pixels.
        target: the output side in pixels.
        width: columns of the result, >= source; default source.

    Returns:
        float32 [target, width].
    """
    with jax.ensure_compile_time_eval():
        weights = np.asarray(jax.image.resize(jnp.eye(source, dtype=jnp.float32),
                                              (target, source), method="bicubic"))
    out = np.zeros((target, width or source), np.float32)
    out[:, :source] = weights
    return out


def resized_pixel_values(crops, rows, columns, mean, std):
    """Crops [B, h, w, 3] in [0, 255] and resize matrices rows [B, S, h], columns [B, S, w]
    -> pixel_values [B, 3, S, S]: rows @ crop @ columns.T per channel, rescaled to
    [0, 1] and normalised.

    Two matrix products per crop (the resize's weights are `resize_matrix`), in
    float32 whatever the model's dtype; the channel axis moves to the front here,
    once, where the resize writes its output anyway.
    """
    mean = jnp.asarray(mean, jnp.float32)[:, None, None]
    std = jnp.asarray(std, jnp.float32)[:, None, None]
    # Highest precision: on GPUs the default would round the pixels through TF32 (this is
    # 1% of the encoder's arithmetic, as jax.image.resize does it).
    exact = jax.lax.Precision.HIGHEST
    tall = jnp.einsum("bis,bstc->bitc", rows, crops.astype(jnp.float32), precision=exact)
    resized = jnp.einsum("bitc,bjt->bcij", tall, columns, precision=exact)
    return (resized / 255.0 - mean) / std


def window_pixel_values(crops, size: int, mean, std):
    """Crops [..., h, w, 3] in [0, 255] -> the model's pixel_values [..., 3, size, size].

    A square crop only needs resizing (bicubic, antialiased when shrinking),
    rescaling to [0, 1] and normalising with the model's mean and std: the
    standard CLIP preprocessing of a square image, done in float (the
    reference code's PIL path rounds to uint8 in between). The arithmetic of
    the sweep (`resized_pixel_values`); a crop that is not square is
    stretched to the square.
    """
    lead, (height, width) = crops.shape[:-3], crops.shape[-3:-1]
    flat = crops.reshape((-1,) + crops.shape[-3:])
    rows = jnp.broadcast_to(resize_matrix(height, size), (len(flat), size, height))
    columns = jnp.broadcast_to(resize_matrix(width, size), (len(flat), size, width))
    return resized_pixel_values(flat, rows, columns, mean, std).reshape(lead + (3, size, size))


def window_tables(grid: WindowGrid, n_images: int, chunk: int, parts: int = 1) -> np.ndarray:
    """Every window of every image, of every size, as one table cut into chunks.

    One table for all window sizes, cut into the fewest chunks of at most `chunk`
    windows and as even as that allows, so that at most n_chunks - 1 repeats fill it
    (164 windows in chunks of exactly 32 would encode 28 repeats, 17% more, against
    4 in 6 chunks of 28).

    Args:
        grid: the window grid.
        n_images: N, the images of the batch.
        chunk: the most windows per chunk, >= 1.
        parts: the number of chunks is rounded up to a multiple of this (the
            devices that will share the table), >= 1.

    Returns:
        int32 [n_chunks, size <= chunk, 4]: rows (image, y origin, x origin, size index) in
        padded pixels, image-major, then in the flat window order (sizes in grid order,
        each lattice row-major); the last row is repeated to fill the table
        (`window_rows` drops the repeats).
    """
    per_image = []
    for size_index, (oy, ox) in enumerate(grid.origins):
        yy, xx = np.meshgrid(oy, ox, indexing="ij")
        per_image.append(np.stack([yy.ravel(), xx.ravel(), np.full(yy.size, size_index)], 1))
    per_image = np.concatenate(per_image)
    rows = np.concatenate([np.concatenate([np.full((len(per_image), 1), n), per_image], 1)
                           for n in range(n_images)])
    n_chunks = -(-len(rows) // (chunk * parts)) * parts
    size = -(-len(rows) // n_chunks)
    table, _ = pad_to_multiple(rows, n_chunks * size)
    return table.reshape(n_chunks, size, 4).astype(np.int32)


def window_rows(outputs, grid: WindowGrid, n_images: int):
    """Table outputs [n_chunks, chunk, ...] -> [N, n_windows, ...] in the flat window order."""
    flat = outputs.reshape((-1,) + outputs.shape[2:])[: n_images * grid.n_windows]
    return flat.reshape((n_images, grid.n_windows) + flat.shape[1:])


def dense_similarities(v, bank):
    """Cosine similarities z [chunk, T] of unit embeddings v [chunk, d] to a whole bank [T, d]."""
    return v @ bank.T


def table_outputs(params, padded, table, bank, finish, *, spec: SweepSpec,
                  similarities=dense_similarities):
    """Encodes the windows of one table chunk by chunk and finishes their similarities.

    Memory stays bounded by one chunk: `lax.map` runs the chunks in sequence.
    Every window is cut as a block of the largest window side and resized with
    its own size's matrix, whose columns past its side are zero
    (`resize_matrix`), so that chunks may mix window sizes.

    Args:
        params: the encoder's parameter tree (`Encoder.params`).
        padded: float [N, Hp, Wp, 3] padded images in [0, 255], with room for a block
            of the largest window side at every window's origin (`sweep_table`).
        table: int32 [n_chunks, chunk, 4] rows (image, y, x, size index) (`window_tables`).
        bank: float32 [T, d] unit text embeddings (or this device's share of them, for
            a `similarities` that gathers the rest).
        finish: z [chunk, T] -> what to keep of each window, e.g. subtree-minimum ranks.
        spec: the sweep's static settings (the grid's window sizes are indexed by the
            table's size column).
        similarities: (v [chunk, d] unit embeddings, bank) -> z [chunk, T].

    Returns:
        finish's outputs stacked over chunks: [n_chunks, chunk, ...].
    """
    window_sizes = spec.grid.window_sizes
    side = max(window_sizes)
    operators = jnp.asarray(np.stack([resize_matrix(w, spec.image_size, side)
                                      for w in window_sizes]))

    def one_chunk(rows):
        crops = jax.vmap(lambda r: jax.lax.dynamic_slice(
            padded, (r[0], r[1], r[2], 0), (1, side, side, 3))[0])(rows)
        resize = operators[rows[:, 3]]
        pixels = resized_pixel_values(crops, resize, resize, spec.mean, spec.std)
        return finish(similarities(spec.embed(params, pixels), bank))

    return jax.lax.map(one_chunk, table)


def subtree_min_ranks(z, members, segment_ids, num_concepts: int):
    """Every requested concept's score in each window: the best rank in its subtree.

    Args:
        z: float [chunk, T] similarities of each window to the whole vocabulary.
        members, segment_ids: int32 [M] the requested subtrees (`sweep.ConceptRequest`).
        num_concepts: K (padded); segment K collects the padding and is dropped.

    Returns:
        int32 [chunk, K] in [0, T).
    """
    r = ranks(z, xp=jnp)
    best = jax.ops.segment_min(r[:, members].T, segment_ids, num_segments=num_concepts + 1,
                               indices_are_sorted=True)
    return best[:num_concepts].T


def rank_similarities(z):
    """Normalised ranks 1 - rank / T of similarities z [chunk, T]: float32 [chunk, T] in (0, 1]."""
    return rank_similarity(ranks(z, xp=jnp), z.shape[-1])


def sweep_table(params, padded, bank, finish, *, spec: SweepSpec, mesh=None,
                split_bank: bool = False, similarities=dense_similarities):
    """`table_outputs` over the grid's one window table (`window_rows` puts them in window
    order).

    Args:
        params, padded, bank, finish, spec, similarities: as `table_outputs` (bank: the
            whole bank [T, d]).
        mesh: None to run on the current device, or a 1-D mesh (`sharding.local_mesh`)
            whose devices each take a block of the table's chunks.
        split_bank: with a mesh, split the bank's rows over its devices instead of
            replicating it.

    Returns:
        [n_chunks, chunk, ...] outputs of `finish`, rows as `window_tables` (sharded along
        the chunk axis over the mesh, if any; n_chunks then a multiple of its size).
    """
    grid = spec.grid
    parts = 1 if mesh is None else mesh.size
    if mesh is not None and split_bank:
        num_synsets = bank.shape[0]
        bank = jnp.pad(bank, ((0, -num_synsets % parts), (0, 0)))
        similarities = partial(sharding.gathered_similarities, num_synsets=num_synsets)
    # Room for a block of the largest side at a smaller window's origin (the extra
    # rows and columns meet only the zero columns of its resize matrix).
    extra = max(grid.window_sizes) - min(grid.window_sizes)
    n_images = padded.shape[0]
    padded = jnp.pad(padded, ((0, 0), (0, extra), (0, extra), (0, 0)))
    table = window_tables(grid, n_images, spec.chunk, parts)
    run = partial(table_outputs, finish=finish, spec=spec, similarities=similarities)
    if mesh is not None:
        run = sharding.shard_rows(run, mesh, (False, False, True, split_bank))
    return run(params, padded, jnp.asarray(table), bank)


_STATIC = ("spec", "mesh", "split_bank")


@partial(jax.jit, static_argnames=_STATIC + ("num_concepts",))
def occlusion_window_scores(params, padded, bank, members, segment_ids, *, spec: SweepSpec,
                            num_concepts: int, mesh=None, split_bank: bool = False):
    """Every requested concept's subtree-minimum rank in every window.

    Arguments as `occlusion_cells`, plus mesh and split_bank as `sweep_table`.

    Returns:
        int32 [n_chunks, chunk, K] in [0, T), rows as `window_tables`, sharded along the
        chunk axis over the mesh, if any.
    """
    finish = partial(subtree_min_ranks, members=members, segment_ids=segment_ids,
                     num_concepts=num_concepts)
    return sweep_table(params, padded, bank, finish, spec=spec, mesh=mesh,
                       split_bank=split_bank)


@partial(jax.jit, static_argnames=_STATIC + ("num_concepts",))
def _occlusion_cells(params, padded, bank, members, segment_ids, *, spec: SweepSpec,
                     num_concepts: int, mesh, split_bank: bool):
    TRACES["occlusion_cells"] += 1
    scores = occlusion_window_scores(params, padded, bank, members, segment_ids, spec=spec,
                                     num_concepts=num_concepts, mesh=mesh,
                                     split_bank=split_bank)
    return cell_maps(window_rows(scores, spec.grid, padded.shape[0]), spec.grid, xp=jnp)


@partial(jax.jit, static_argnames=_STATIC)
def _window_rank_similarities(params, padded, bank, *, spec: SweepSpec, mesh,
                              split_bank: bool):
    TRACES["window_rank_similarities"] += 1
    sims = sweep_table(params, padded, bank, rank_similarities, spec=spec, mesh=mesh,
                       split_bank=split_bank)
    return window_rows(sims, spec.grid, padded.shape[0])


def _on_devices(kernel, devices, split_bank, bank, *args, **static):
    """kernel(*args, **static) on the one device given, or split over a mesh of several."""
    mesh = sharding.local_mesh(devices)
    if mesh.size == 1:
        with jax.default_device(mesh.devices.flat[0]):
            return kernel(*args, mesh=None, split_bank=False, **static)
    return kernel(*args, mesh=mesh, split_bank=sharding.split_bank_rows(bank, split_bank),
                  **static)


def occlusion_cells(params, padded, bank, members, segment_ids, *, spec: SweepSpec,
                    num_concepts: int, devices=None, split_bank: bool | None = None):
    """Algorithm 1 for N images and K concepts: normalised cell maps [N, K, cy, cx].

    One compiled sweep per shape (see `TRACES`); with several devices the windows are
    split over them, with the single-device result.

    Args:
        params: the encoder's parameter tree (replicate it once with
            `sharding.replicate` when sweeping on several devices repeatedly).
        padded: float [N, Hp, Wp, 3] padded images in [0, 255] ((Hp, Wp) = grid.padded_size).
        bank: float32 [T, d] unit text embeddings of the whole vocabulary.
        members: int32 [M] vocabulary indices of the requested concepts' subtrees, concatenated.
        segment_ids: int32 [M] which requested concept each member belongs to, sorted;
            entries equal to `num_concepts` are padding and are dropped.
        spec: the sweep's static settings.
        num_concepts: K (static), padded to a bucket (`sweep.ConceptRequest`).
        devices: the devices to use: one runs the plain sweep there, several split the
            windows over them; None means all of this process's local devices.
        split_bank: with several devices, split the bank by concept over them; None
            splits banks larger than `sharding.SPLIT_BANK_BYTES`.

    Returns:
        float32 [N, K, cy, cx] in [0, 1], high where the concept is.
    """
    return _on_devices(_occlusion_cells, devices, split_bank, bank, params, padded, bank,
                       members, segment_ids, spec=spec, num_concepts=num_concepts)


def window_rank_similarities(params, padded, bank, *, spec: SweepSpec, devices=None,
                             split_bank: bool | None = None):
    """Normalised rank 1 - rank/T of every synset in every window: float32 [N, n_windows, T].

    Windows in the flat order (`core.cells.window_lattices`), for the web app's
    aggregation. Arguments, devices and split_bank as `occlusion_cells`.
    """
    return _on_devices(_window_rank_similarities, devices, split_bank, bank, params, padded,
                       bank, spec=spec)


# Sizes on CPUs, measured on this project's 2-core machine (ViT-B/32 shape, 64 crops per
# round, two runs of 3 and 4 interleaved rounds; README "Performance"): chunks of 8, 16
# and 64 windows took 1.00-1.22x, 1.03-1.10x and 1.17-1.29x the time of 32, so 32.
# Several images per call gain nothing there (the work grows with them, and a short
# last batch would encode copies), so one; the next image is prepared meanwhile.
CPU_CHUNK = 32
CPU_IMAGES_PER_CALL = 1
# Accelerators: windows per step are sized from the device's memory (`sweep_sizes`),
# between these bounds, and each call holds enough images for GPU_STEPS_PER_CALL steps
# per device, at most GPU_MAX_IMAGES_PER_CALL.
GPU_CHUNK_BOUNDS = (64, 1024)
GPU_STEPS_PER_CALL = 4
GPU_MAX_IMAGES_PER_CALL = 64
# Memory assumed when a device does not report it (bytes).
UNKNOWN_DEVICE_MEMORY = 16 << 30


def sweep_sizes(config, grid: WindowGrid, num_synsets: int, devices=None) -> tuple[int, int]:
    """The default (chunk, images per call) of the occlusion sweep on these devices.

    CPUs: the measured `CPU_CHUNK` and `CPU_IMAGES_PER_CALL`. GPUs and TPUs: the
    largest power-of-two chunk whose windows (`memory.window_bytes`) fit in an eighth of
    one device's memory, within `GPU_CHUNK_BOUNDS`; then enough images per call
    that every device runs `GPU_STEPS_PER_CALL` steps per call (more images per
    call mean fewer round trips to the host), at most `GPU_MAX_IMAGES_PER_CALL`
    and never more than an eighth of the memory holds in window scores. These
    accelerator rules are derived, not yet timed (no GPU was available);
    `benchmarks/gpu_check.py` times 1, 8 and 64 images per call to check them.

    Args:
        config: the ClipConfig.
        grid: the window grid.
        num_synsets: T, the bank's rows.
        devices: the devices the sweep runs on; None means the local devices.

    Returns:
        (chunk >= 1, images per call >= 1).
    """
    devices = list(jax.local_devices() if devices is None else devices)
    if devices[0].platform == "cpu":
        return CPU_CHUNK, CPU_IMAGES_PER_CALL
    try:
        memory = int((devices[0].memory_stats() or {}).get("bytes_limit", 0))
    except Exception:  # backends without memory statistics
        memory = 0
    budget = (memory or UNKNOWN_DEVICE_MEMORY) // 8
    low, high = GPU_CHUNK_BOUNDS
    per_window = window_bytes(config, window_side=max(grid.window_sizes),
                              num_synsets=num_synsets)
    fits = max(budget // per_window, 1)
    chunk = int(min(max(1 << (int(fits).bit_length() - 1), low), high))
    wanted = -(-GPU_STEPS_PER_CALL * chunk * len(devices) // grid.n_windows)
    scores_fit = max(budget // (grid.n_windows * num_synsets * 4), 1)
    return chunk, int(max(1, min(wanted, GPU_MAX_IMAGES_PER_CALL, scores_fit)))


def keep_embeddings(v, bank):
    """The `similarities` that keep the unit window embeddings v [chunk, d] instead (the atlas)."""
    return v


@partial(jax.jit, static_argnames=_STATIC)
def _window_embeddings(params, padded, *, spec: SweepSpec, mesh, split_bank: bool):
    TRACES["window_embeddings"] += 1
    embeddings = sweep_table(params, padded, None, lambda v: v, spec=spec, mesh=mesh,
                             similarities=keep_embeddings)
    return window_rows(embeddings, spec.grid, padded.shape[0])


def window_embeddings(params, padded, *, spec: SweepSpec, devices=None):
    """The unit embedding of every window (Algorithm 1 steps 1-3, no concepts): the atlas's input.

    The windows are cut and encoded exactly as by `occlusion_cells` (split over the
    devices the same way); the embeddings are kept instead of ranked, so that ranks
    against any concept bank can be taken later (`kernels.stored_windows`).

    Args:
        params, padded, spec, devices: as `occlusion_cells`.

    Returns:
        float32 [N, n_windows, d] unit vectors, windows in the flat order.
    """
    return _on_devices(_window_embeddings, devices, False, None, params, padded, spec=spec)
