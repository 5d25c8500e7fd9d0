"""The ConVis occlusion sweep (Algorithm 1) for many images and every concept, in one jitted call.

Per window size, the windows of all images are cut with `dynamic_slice`
(static shapes, no Python loop over windows), resized (bicubic) to the
model's input size, normalised and encoded in fixed-size chunks under
`lax.map`, so memory stays bounded by the chunk. Each window's similarity
to the whole concept bank gives the rank of every synset; the subtree
minimum gives every requested concept's score at once; summed-area tables
over the window lattice (`core.cells.accumulate_cells`) turn window scores
into cell maps. The window embeddings do not depend on the concept, so
maps for all of a vocabulary cost one sweep (METHOD.md section 3).

Two entry points, each on one device or on all local devices:
`occlusion_cells` (Algorithm 1's cell maps) and `window_rank_similarities`
(the web app's per-window ranks). With several devices, each window size's
table of chunks (`window_tables`) is split over a mesh (`sharding.shard_rows`);
each device cuts, encodes and ranks its own chunks with the same `lax.map`, so
every window is computed exactly as on one device. The padded images are
replicated (one is 2.8 MB; the windows are the work), so even a single image
uses every device. The concept bank is replicated, or split by concept when it
is large (`sharding.split_bank_rows`): each device then scores every device's
current windows against its rows and an all-to-all hands each device the whole
similarity rows of its own windows (`sharding.gathered_similarities`).

The pieces: `window_tables` lists the windows, `table_outputs` encodes one
table and finishes each window's similarities (`subtree_min_ranks` or
`rank_similarities`), `sweep_tables` runs it per window size (on one device or
split over the mesh), `lattice_outputs` and `cells_from_window_scores`
accumulate.
"""

from __future__ import annotations

import collections
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from convis_jax.core.batches import pad_to_multiple
from convis_jax.core.cells import accumulate_cells, normalise_maps
from convis_jax.core.ranks import ranks
from convis_jax.core.windows import WindowGrid
from convis_jax.jax_backend import clip, sharding

# How often each jitted function below was traced; tests read it to prove
# that repeated calls with the same shapes do not trace (or compile) again.
TRACES: collections.Counter = collections.Counter()


def window_pixel_values(crops, size: int, mean, std):
    """Crops [..., w, w, 3] in [0, 255] -> the model's pixel_values [..., 3, size, size].

    A square crop only needs resizing (bicubic, antialiased when shrinking),
    rescaling to [0, 1] and normalising with the model's mean and std: the
    standard CLIP preprocessing of a square image, done in float (the
    reference code's PIL path rounds to uint8 in between).
    """
    lead = crops.shape[:-3]
    resized = jax.image.resize(crops, lead + (size, size, 3), method="bicubic")
    pixels = (resized / 255.0 - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
    return jnp.moveaxis(pixels, -1, -3)


def window_tables(grid: WindowGrid, n_images: int, chunk: int,
                  parts: int = 1) -> tuple[np.ndarray, ...]:
    """Every window of every image, per window size, as a table cut into chunks.

    Args:
        grid: the window grid.
        n_images: N, the images of the batch.
        chunk: windows per chunk, >= 1.
        parts: the number of chunks is rounded up to a multiple of this (the
            devices that will share the table), >= 1.

    Returns:
        One int32 [n_chunks, chunk, 3] table per window size, in grid order: rows
        (image, y origin, x origin) in padded pixels, image-major, then row-major
        over that size's lattice; the last row is repeated to fill the table, and
        `lattice_outputs` cuts those repeats away again.
    """
    tables = []
    for oy, ox in grid.origins:
        yy, xx = np.meshgrid(oy, ox, indexing="ij")
        per_image = np.stack([yy.ravel(), xx.ravel()], axis=1)
        table = np.concatenate([np.concatenate([np.full((len(per_image), 1), n), per_image],
                                               axis=1) for n in range(n_images)])
        table, _ = pad_to_multiple(table, chunk * parts)
        tables.append(table.reshape(-1, chunk, 3).astype(np.int32))
    return tuple(tables)


def dense_similarities(v, bank):
    """Cosine similarities z [chunk, T] of unit embeddings v [chunk, d] to a whole bank [T, d]."""
    return v @ bank.T


def table_outputs(params, padded, table, bank, finish, *, config, size: int, mean, std,
                  similarities=dense_similarities):
    """Encodes the windows of one table chunk by chunk and finishes their similarities.

    Memory stays bounded by one chunk: `lax.map` runs the chunks in sequence.

    Args:
        params: the CLIP parameter tree.
        padded: float [N, Hp, Wp, 3] padded images in [0, 255].
        table: int32 [n_chunks, chunk, 3] rows (image, y, x) of windows of side `size`
            (`window_tables`).
        bank: float32 [T, d] unit text embeddings (or this device's share of them, for
            a `similarities` that gathers the rest).
        finish: z [chunk, T] -> what to keep of each window, e.g. subtree-minimum ranks.
        config: the ClipConfig.
        size: the window side in pixels.
        mean, std: the model's normalisation.
        similarities: (v [chunk, d] unit embeddings, bank) -> z [chunk, T].

    Returns:
        finish's outputs stacked over chunks: [n_chunks, chunk, ...].
    """
    def one_chunk(rows):
        crops = jax.vmap(lambda r: jax.lax.dynamic_slice(
            padded, (r[0], r[1], r[2], 0), (1, size, size, 3))[0])(rows)
        pixels = window_pixel_values(crops, config.vision.image_size, mean, std)
        return finish(similarities(clip.encode_images(params, config, pixels), bank))

    return jax.lax.map(one_chunk, table)


def subtree_min_ranks(z, members, segment_ids, num_concepts: int):
    """Every requested concept's score in each window: the best rank in its subtree.

    Args:
        z: float [chunk, T] similarities of each window to the whole vocabulary.
        members, segment_ids: int32 [M] the requested subtrees (`subtree_request`).
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
    return 1.0 - ranks(z, xp=jnp) / z.shape[-1]


def sweep_tables(params, padded, bank, finish, *, config, grid: WindowGrid, chunk: int, mean,
                 std, mesh=None, split_bank: bool = False, similarities=dense_similarities):
    """`table_outputs` over the window table of every window size (`window_tables`).

    Args:
        params, padded, bank, finish, config, mean, std: as `table_outputs` (bank: the
            whole bank [T, d]).
        grid: the window grid.
        chunk: windows per chunk.
        mesh: None to run on the current device, or a 1-D mesh (`sharding.local_mesh`)
            whose devices each take a block of every table's chunks.
        split_bank: with a mesh, split the bank's rows over its devices instead of
            replicating it.
        similarities: (v [chunk, d], bank) -> what `finish` receives: z by default;
            `keep_embeddings` passes the embeddings on (then bank may be None).

    Returns:
        Per window size, [n_chunks, chunk, ...] outputs of `finish` (sharded along the
        chunk axis over the mesh, if any; n_chunks then a multiple of its size).
    """
    parts = 1 if mesh is None else mesh.size
    if mesh is not None and split_bank:
        num_synsets = bank.shape[0]
        bank = jnp.pad(bank, ((0, -num_synsets % parts), (0, 0)))
        similarities = partial(sharding.gathered_similarities, num_synsets=num_synsets)
    tables = window_tables(grid, padded.shape[0], chunk, parts)
    outputs = []
    for size, table in zip(grid.window_sizes, tables):
        run = partial(table_outputs, finish=finish, config=config, size=size, mean=mean,
                      std=std, similarities=similarities)
        if mesh is not None:
            run = sharding.shard_rows(run, mesh, (False, False, True, split_bank))
        outputs.append(run(params, padded, jnp.asarray(table), bank))
    return tuple(outputs)


def lattice_outputs(outputs, grid: WindowGrid, n_images: int):
    """Per-size `sweep_tables` outputs [n_chunks, chunk, ...] -> per size [N, ny, nx, ...].

    Drops the rows that only fill the tables (`window_tables`).
    """
    per_size = []
    for out, (ny, nx) in zip(outputs, grid.lattice_shapes):
        flat = out.reshape((-1,) + out.shape[2:])
        per_size.append(flat[: n_images * ny * nx].reshape((n_images, ny, nx) + flat.shape[1:]))
    return tuple(per_size)


def cells_from_window_scores(per_size, grid: WindowGrid):
    """Algorithm 1 steps 4-5: window scores per size [N, ny, nx, K] -> maps [N, K, cy, cx].

    Returns:
        float32 [N, K, cy, cx] in [0, 1], high where the concept is.
    """
    scores = tuple(jnp.moveaxis(s, -1, 1) for s in per_size)
    return normalise_maps(accumulate_cells(scores, grid, xp=jnp), xp=jnp)


def window_list(per_size):
    """Per-size window outputs [N, ny, nx, T] -> one flat window axis [N, n_windows, T]."""
    return jnp.concatenate([p.reshape(p.shape[0], -1, p.shape[-1]) for p in per_size], axis=1)


_STATIC = ("config", "grid", "chunk", "mean", "std", "mesh", "split_bank")


@partial(jax.jit, static_argnames=_STATIC + ("num_concepts",))
def occlusion_window_scores(params, padded, bank, members, segment_ids, *, config,
                            grid: WindowGrid, chunk: int, mean, std, num_concepts: int,
                            mesh=None, split_bank: bool = False):
    """Every requested concept's subtree-minimum rank in every window.

    Arguments as `occlusion_cells`, plus mesh and split_bank as `sweep_tables`.

    Returns:
        Per window size, int32 [n_chunks, chunk, K] in [0, T) (rows as `window_tables`,
        whose filler rows `lattice_outputs` drops), sharded along the chunk axis over
        the mesh, if any.
    """
    finish = partial(subtree_min_ranks, members=members, segment_ids=segment_ids,
                     num_concepts=num_concepts)
    return sweep_tables(params, padded, bank, finish, config=config, grid=grid, chunk=chunk,
                        mean=mean, std=std, mesh=mesh, split_bank=split_bank)


@partial(jax.jit, static_argnames=_STATIC + ("num_concepts",))
def _occlusion_cells(params, padded, bank, members, segment_ids, *, config, grid: WindowGrid,
                     chunk: int, mean, std, num_concepts: int, mesh, split_bank: bool):
    TRACES["occlusion_cells"] += 1
    scores = occlusion_window_scores(params, padded, bank, members, segment_ids, config=config,
                                     grid=grid, chunk=chunk, mean=mean, std=std,
                                     num_concepts=num_concepts, mesh=mesh,
                                     split_bank=split_bank)
    return cells_from_window_scores(lattice_outputs(scores, grid, padded.shape[0]), grid)


@partial(jax.jit, static_argnames=_STATIC)
def _window_rank_similarities(params, padded, bank, *, config, grid: WindowGrid, chunk: int,
                              mean, std, mesh, split_bank: bool):
    TRACES["window_rank_similarities"] += 1
    outputs = sweep_tables(params, padded, bank, rank_similarities, config=config, grid=grid,
                           chunk=chunk, mean=mean, std=std, mesh=mesh, split_bank=split_bank)
    return window_list(lattice_outputs(outputs, grid, padded.shape[0]))


def _on_devices(kernel, devices, split_bank, bank, *args, **static):
    """kernel(*args, **static) on the one device given, or split over a mesh of several."""
    mesh = sharding.local_mesh(devices)
    if mesh.size == 1:
        with jax.default_device(mesh.devices.flat[0]):
            return kernel(*args, mesh=None, split_bank=False, **static)
    return kernel(*args, mesh=mesh, split_bank=sharding.split_bank_rows(bank, split_bank),
                  **static)


def occlusion_cells(params, padded, bank, members, segment_ids, *, config, grid: WindowGrid,
                    chunk: int, mean, std, num_concepts: int, devices=None,
                    split_bank: bool | None = None):
    """Algorithm 1 for N images and K concepts: normalised cell maps [N, K, cy, cx].

    One compiled sweep per shape (see `TRACES`); with several devices the windows are
    split over them, with the single-device result.

    Args:
        params: the CLIP parameter tree (replicate it once with `sharding.replicate`
            when sweeping on several devices repeatedly).
        padded: float [N, Hp, Wp, 3] padded images in [0, 255] ((Hp, Wp) = grid.padded_size).
        bank: float32 [T, d] unit text embeddings of the whole vocabulary.
        members: int32 [M] vocabulary indices of the requested concepts' subtrees, concatenated.
        segment_ids: int32 [M] which requested concept each member belongs to, sorted;
            entries equal to `num_concepts` are padding and are dropped.
        config: the ClipConfig (static).
        grid: the window grid (static).
        chunk: windows encoded per step.
        mean, std: the model's normalisation (static tuples).
        num_concepts: K (static), padded to a bucket by the caller (`subtree_request`).
        devices: the devices to use: one runs the plain sweep there, several split the
            windows over them; None means all of this process's local devices.
        split_bank: with several devices, split the bank by concept over them; None
            splits banks larger than `sharding.SPLIT_BANK_BYTES`.

    Returns:
        float32 [N, K, cy, cx] in [0, 1], high where the concept is.
    """
    return _on_devices(_occlusion_cells, devices, split_bank, bank, params, padded, bank,
                       members, segment_ids, config=config, grid=grid, chunk=chunk, mean=mean,
                       std=std, num_concepts=num_concepts)


def window_rank_similarities(params, padded, bank, *, config, grid: WindowGrid, chunk: int,
                             mean, std, devices=None, split_bank: bool | None = None):
    """Normalised rank 1 - rank/T of every synset in every window: float32 [N, n_windows, T].

    Windows are listed per size, each row-major (the order of
    `core.cells.coverage_matrix`), for the web app's aggregation order. Arguments,
    devices and split_bank as `occlusion_cells`.

    Returns:
        float32 [N, n_windows, T] in (0, 1].
    """
    return _on_devices(_window_rank_similarities, devices, split_bank, bank, params, padded,
                       bank, config=config, grid=grid, chunk=chunk, mean=mean, std=std)


def keep_embeddings(v, bank):
    """The `similarities` that keep the unit window embeddings v [chunk, d] instead (the atlas)."""
    return v


@partial(jax.jit, static_argnames=_STATIC)
def _window_embeddings(params, padded, *, config, grid: WindowGrid, chunk: int, mean, std,
                       mesh, split_bank: bool):
    TRACES["window_embeddings"] += 1
    outputs = sweep_tables(params, padded, None, lambda v: v, config=config, grid=grid,
                           chunk=chunk, mean=mean, std=std, mesh=mesh,
                           similarities=keep_embeddings)
    return window_list(lattice_outputs(outputs, grid, padded.shape[0]))


def window_embeddings(params, padded, *, config, grid: WindowGrid, chunk: int, mean, std,
                      devices=None):
    """The unit embedding of every window (Algorithm 1 steps 1-3, no concepts): the atlas's input.

    The windows are cut and encoded exactly as by `occlusion_cells` (split over the
    devices the same way); only the finish differs: the embeddings are kept instead of
    ranked, so that ranks against any concept bank can be taken later
    (`jax_backend.stored_windows`, `convis_jax.atlas`).

    Args:
        params, padded, config, grid, chunk, mean, std, devices: as `occlusion_cells`.

    Returns:
        float32 [N, n_windows, d] unit vectors, windows listed per size, each row-major
        (the order of `window_list` and `core.cells.coverage_matrix`).
    """
    return _on_devices(_window_embeddings, devices, False, None, params, padded,
                       config=config, grid=grid, chunk=chunk, mean=mean, std=std)


def subtree_request(offsets: np.ndarray, members: np.ndarray, concept_index: np.ndarray,
                    bucket: int = 8) -> tuple[np.ndarray, np.ndarray, int]:
    """The CSR of the requested concepts' subtrees, padded to static sizes.

    K is rounded up to a multiple of `bucket` and M to a power of two, so
    that requests of similar size reuse one compiled sweep. Padding entries
    point at synset 0 and at the dropped segment K_padded.

    Returns:
        (members [M_padded], segment_ids [M_padded], K_padded).
    """
    concept_index = np.asarray(concept_index, np.int64)
    k_padded = -(-len(concept_index) // bucket) * bucket
    parts = [members[offsets[c]:offsets[c + 1]] for c in concept_index]
    flat = np.concatenate(parts).astype(np.int32)
    seg = np.repeat(np.arange(len(parts), dtype=np.int32), [len(p) for p in parts])
    m_padded = 1 << int(np.ceil(np.log2(max(len(flat), 1))))
    extra = m_padded - len(flat)
    flat = np.concatenate([flat, np.zeros(extra, np.int32)])
    seg = np.concatenate([seg, np.full(extra, k_padded, np.int32)])
    return flat, seg, k_padded
