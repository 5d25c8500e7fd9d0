"""Algorithm 1 from stored window embeddings: ranks, subtree minima, cells, for any concept bank.

The windows of an image do not depend on the concepts (docs/method.md, section 3),
so the atlas (`convis_jax.atlas`) keeps their unit embeddings
[n_windows, d] and runs only the rest of Algorithm 1 here: similarities to
a whole bank, each requested concept's subtree-minimum rank in each window,
then the same accumulation and normalisation as the sweep
(`core.cells.cell_maps`). Given the sweep's own embeddings
the maps are the sweep's maps.

On a CPU the sort is NumPy's (`host_cells`): XLA's CPU sort takes about 2.5
times as long for 730 windows x 7,080 synsets; the similarities still come
from the same jitted matrix product, so the ranks, and the maps, are the
same.

Two exact ways to get a concept's subtree-minimum rank in a window:
* sort: rank every synset (`core.ranks.ranks`, one argsort per window),
  then a segment minimum over the requested subtrees; the cost does not
  grow with the number of concepts, so it serves all of a vocabulary.
* count: the best-ranked member of a subtree is its most similar one (the
  lowest index among equals, as the stable sort orders ties), and its rank
  is the number of synsets ordered before it: one comparison with each of
  the T synsets per concept and window, cheaper than a sort for a few
  concepts.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from convis_jax.core.cells import accumulate_cells, cell_maps, coverage, window_lattices
from convis_jax.core.ranks import ranks, subtree_min_all
from convis_jax.core.windows import WindowGrid
from convis_jax.kernels.occlusion import TRACES, subtree_min_ranks

# Up to this many (padded) concepts the counting path is used; above, the sort.
COUNT_CONCEPTS = 16


def counted_subtree_min_ranks(z, members, segment_ids, num_concepts: int):
    """Each requested concept's subtree-minimum rank, by counting instead of sorting.

    Equal to `occlusion.subtree_min_ranks` (ties in similarity ordered by vocabulary
    index, as the stable sort orders them).

    Args:
        z: float [W, T] similarities of W windows to the whole vocabulary.
        members, segment_ids: int32 [M] the requested subtrees (`sweep.ConceptRequest`).
        num_concepts: K (padded); segment K collects the padding and is dropped.

    Returns:
        int32 [W, K] in [0, T).
    """
    t = z.shape[-1]
    zm = z[:, members].T  # [M, W]
    best = jax.ops.segment_max(zm, segment_ids, num_segments=num_concepts + 1,
                               indices_are_sorted=True)[:num_concepts]  # [K, W]
    # The lowest index among the members that reach the best similarity.
    hits = jnp.where(zm == best[jnp.minimum(segment_ids, num_concepts - 1)],
                     members[:, None], t)
    first = jax.ops.segment_min(hits, segment_ids, num_segments=num_concepts + 1,
                                indices_are_sorted=True)[:num_concepts]  # [K, W]
    index = jnp.arange(t, dtype=jnp.int32)

    def one_concept(best_k, first_k):  # [W], [W] -> [W]
        before = (z > best_k[:, None]) | ((z == best_k[:, None]) & (index < first_k[:, None]))
        return jnp.sum(before, axis=-1, dtype=jnp.int32)

    return jax.lax.map(lambda args: one_concept(*args), (best, first)).T


def window_scores(windows, bank, members, segment_ids, *, num_concepts: int):
    """Subtree-minimum ranks [W, K] of the requested concepts in W windows [W, d]."""
    z = windows.astype(jnp.float32) @ bank.T
    if num_concepts <= COUNT_CONCEPTS:
        return counted_subtree_min_ranks(z, members, segment_ids, num_concepts)
    return subtree_min_ranks(z, members, segment_ids, num_concepts)


@partial(jax.jit, static_argnames=("grid", "num_concepts"))
def stored_cells(windows, bank, members, segment_ids, *, grid: WindowGrid, num_concepts: int):
    """Algorithm 1's normalised cell maps of N images from their window embeddings.

    Args:
        windows: float16 or float32 [N, n_windows, d] unit window embeddings, windows
            per size, each row-major (`occlusion.window_embeddings`).
        bank: float32 [T, d] unit text embeddings of the whole vocabulary.
        members, segment_ids: int32 [M] the requested subtrees (`sweep.ConceptRequest`).
        grid: the window grid the embeddings were cut on (static).
        num_concepts: K (static), padded to a bucket by the caller.

    Returns:
        float32 [N, K, cy, cx] in [0, 1], high where the concept is.
    """
    TRACES["stored_cells"] += 1
    scores = jax.lax.map(partial(window_scores, bank=bank, members=members,
                                 segment_ids=segment_ids, num_concepts=num_concepts), windows)
    return cell_maps(scores, grid, xp=jnp)


@partial(jax.jit, static_argnames=("grid", "num_concepts"))
def stored_peaks(windows, bank, members, segment_ids, *, grid: WindowGrid, num_concepts: int):
    """How strongly each concept shows at its best cell: the peak of the map before min-max.

    The normalised map always peaks at 1, so it cannot rank images; the
    summed scores it is made of can. A cell's value here is the mean, over
    the windows covering it, of the concept's rank similarity 1 - r / T.

    Args:
        as `stored_cells`.

    Returns:
        (peak float32 [N, K] in (0, 1], cell int32 [N, K]: the row-major index of the
        cell where it is reached, the first one among equals).
    """
    TRACES["stored_peaks"] += 1
    t = bank.shape[0]
    scores = jax.lax.map(partial(window_scores, bank=bank, members=members,
                                 segment_ids=segment_ids, num_concepts=num_concepts), windows)
    sums = accumulate_cells(window_lattices(scores, grid, xp=jnp), grid, xp=jnp)  # [N, K, cy, cx]
    counts = np.maximum(coverage(grid), 1)
    mean = 1.0 - sums.astype(jnp.float32) / jnp.asarray(counts, jnp.float32) / t
    flat = mean.reshape(mean.shape[:2] + (-1,))
    return jnp.max(flat, axis=-1), jnp.argmax(flat, axis=-1).astype(jnp.int32)


@jax.jit
def stored_similarities(windows, bank):
    """Cosine similarities float32 [N, n_windows, T] of stored window embeddings to a bank."""
    TRACES["stored_similarities"] += 1
    return jax.lax.map(lambda v: v.astype(jnp.float32) @ bank.T, windows)


def host_cells(z, grid: WindowGrid, levels, index: np.ndarray) -> np.ndarray:
    """`stored_cells` after the similarities, in NumPy (`core.ranks`, `core.cells`).

    Args:
        z: float32 [N, n_windows, T] similarities (`stored_similarities`).
        grid: the window grid.
        levels: `core.ranks.hierarchy_levels` of the vocabulary.
        index: int [K] the requested concepts.

    Returns:
        float32 [N, K, cy, cx] in [0, 1], high where the concept is.
    """
    scores = subtree_min_all(ranks(np.asarray(z)), levels)[..., index]  # [N, n_windows, K]
    return cell_maps(scores, grid)
