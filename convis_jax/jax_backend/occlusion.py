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
"""

from __future__ import annotations

import collections
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from convis_jax.core.cells import accumulate_cells, normalise_maps
from convis_jax.core.ranks import ranks
from convis_jax.core.windows import WindowGrid
from convis_jax.jax_backend import clip

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


def _window_table(grid: WindowGrid, size_index: int, n_images: int, chunk: int) -> np.ndarray:
    """int32 [n_chunks, chunk, 3] of (image, y origin, x origin), padded by repeating the last."""
    oy, ox = grid.origins[size_index]
    yy, xx = np.meshgrid(oy, ox, indexing="ij")
    per_image = np.stack([yy.ravel(), xx.ravel()], axis=1)
    table = np.concatenate([np.concatenate([np.full((len(per_image), 1), n), per_image], axis=1)
                            for n in range(n_images)])
    pad = -len(table) % chunk
    table = np.concatenate([table, np.repeat(table[-1:], pad, axis=0)])
    return table.reshape(-1, chunk, 3).astype(np.int32)


def _window_embeddings(params, config, padded, grid, size_index, chunk, mean, std, per_chunk):
    """Runs `per_chunk(unit embeddings [chunk, d])` over every window of one size.

    Returns per_chunk's outputs stacked over windows, [N, ny, nx, ...].
    """
    n_images = padded.shape[0]
    size = grid.window_sizes[size_index]
    table = jnp.asarray(_window_table(grid, size_index, n_images, chunk))

    def one_chunk(rows):
        crops = jax.vmap(lambda r: jax.lax.dynamic_slice(
            padded, (r[0], r[1], r[2], 0), (1, size, size, 3))[0])(rows)
        pixels = window_pixel_values(crops, config.vision.image_size, mean, std)
        return per_chunk(clip.encode_images(params, config, pixels))

    out = jax.lax.map(one_chunk, table)
    out = out.reshape((-1,) + out.shape[2:])
    ny, nx = grid.lattice_shapes[size_index]
    return out[: n_images * ny * nx].reshape((n_images, ny, nx) + out.shape[1:])


@partial(jax.jit, static_argnames=("config", "grid", "chunk", "mean", "std", "num_concepts"))
def occlusion_cells(params, padded, bank, members, segment_ids, *, config, grid: WindowGrid,
                    chunk: int, mean, std, num_concepts: int):
    """Algorithm 1 for N images and K concepts: normalised cell maps [N, K, cy, cx].

    Args:
        params: the CLIP parameter tree.
        padded: float [N, Hp, Wp, 3] padded images in [0, 255] ((Hp, Wp) = grid.padded_size).
        bank: float32 [T, d] unit text embeddings of the whole vocabulary.
        members: int32 [M] vocabulary indices of the requested concepts' subtrees, concatenated.
        segment_ids: int32 [M] which requested concept each member belongs to, sorted;
            entries equal to `num_concepts` are padding and are dropped.
        config: the ClipConfig (static).
        grid: the window grid (static).
        chunk: windows encoded per step.
        mean, std: the model's normalisation (static tuples).
        num_concepts: K (static), padded to a bucket by the caller.

    Returns:
        float32 [N, K, cy, cx] in [0, 1], high where the concept is.
    """
    TRACES["occlusion_cells"] += 1

    def scores(v):  # [chunk, d] -> [chunk, K] subtree-minimum rank of each concept
        r = ranks(v @ bank.T, xp=jnp)
        best = jax.ops.segment_min(r[:, members].T, segment_ids, num_segments=num_concepts + 1,
                                   indices_are_sorted=True)
        return best[:num_concepts].T

    per_size = [jnp.moveaxis(_window_embeddings(params, config, padded, grid, i, chunk, mean,
                                                std, scores), -1, 1)
                for i in range(len(grid.window_sizes))]
    return normalise_maps(accumulate_cells(tuple(per_size), grid, xp=jnp), xp=jnp)


@partial(jax.jit, static_argnames=("config", "grid", "chunk", "mean", "std"))
def window_rank_similarities(params, padded, bank, *, config, grid: WindowGrid, chunk: int,
                             mean, std):
    """Normalised rank 1 - rank/T of every synset in every window: float32 [N, n_windows, T].

    Windows are listed per size, each row-major (the order of
    `core.cells.coverage_matrix`), for the web app's aggregation order.
    """
    TRACES["window_rank_similarities"] += 1
    n_synsets = bank.shape[0]
    per_chunk = lambda v: 1.0 - ranks(v @ bank.T, xp=jnp) / n_synsets
    parts = [_window_embeddings(params, config, padded, grid, i, chunk, mean, std, per_chunk)
             for i in range(len(grid.window_sizes))]
    return jnp.concatenate([p.reshape(p.shape[0], -1, n_synsets) for p in parts], axis=1)


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
