"""Window scores -> maps on cells, and cells -> pixels.

Every window edge falls on a cell edge (`WindowGrid.cell`), so a map built
by adding each window's score to the pixels it covers is constant on cells:
the map of a 224 x 224 image under the paper's windows is 14 x 14 numbers.
These functions keep maps in that compact form and upsample on request.

Window scores come per window size, as [..., ny, nx] arrays in the order of
`WindowGrid.origins`. Where a flat window axis is needed (`coverage_matrix`,
`webapp_cell_maps`) it lists the sizes in that order, each row-major.

`accumulate_cells`, `normalise_maps` and `cells_to_pixels` take an array
module `xp` (numpy by default) and use only cumsum, pad, take, where and
arithmetic, so the JAX backend calls them with jax.numpy inside jit: every
index they use is a NumPy constant derived from the (static) grid.
"""

from __future__ import annotations

import numpy as np

from convis_jax.core.ranks import subtree_max
from convis_jax.core.windows import WindowGrid
from convis_jax.errors import InputError


def _covered_cells(
    origins: np.ndarray, size: int, padding: int, cell: int, n_cells: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cells [first, end) covered along one axis by windows at `origins`.

    Window edges are multiples of `cell` in unpadded coordinates, so the
    divisions are exact; clipping drops the parts in the padding (a window
    reaching past the image's last, possibly partial, cell ends at n_cells).
    """
    start = origins - padding
    first = np.clip(start // cell, 0, n_cells)
    end = np.clip(-(-(start + size) // cell), 0, n_cells)
    return first, end


def _window_ranges(grid: WindowGrid, size_index: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """For each cell along `axis` (0 = y, 1 = x), the windows of one size
    covering it: indices [start, stop) into that size's origins.

    first and end grow with the origin, so {k : first_k <= i < end_k} is
    the contiguous range [#{end_k <= i}, #{first_k <= i}).
    """
    n_cells = grid.cells_shape[axis]
    first, end = _covered_cells(
        grid.origins[size_index][axis],
        grid.window_sizes[size_index],
        grid.padding,
        grid.cell,
        n_cells,
    )
    cells = np.arange(n_cells)
    start = np.searchsorted(end, cells, side="right")
    stop = np.searchsorted(first, cells, side="right")
    return start, stop


def _check_window_scores(window_scores, grid: WindowGrid) -> None:
    if not isinstance(window_scores, (tuple, list)) or len(window_scores) != len(grid.window_sizes):
        found = len(window_scores) if isinstance(window_scores, (tuple, list)) else type(window_scores)
        raise InputError(
            f"window_scores must be a tuple of {len(grid.window_sizes)} arrays "
            f"(one per window size), found {found}"
        )
    leading = None
    for size, scores, lattice in zip(grid.window_sizes, window_scores, grid.lattice_shapes):
        shape = tuple(scores.shape)
        if shape[-2:] != lattice:
            raise InputError(
                f"scores of the {size}-pixel windows must be [..., {lattice[0]}, {lattice[1]}], "
                f"found shape {shape}"
            )
        if leading is not None and shape[:-2] != leading:
            raise InputError(
                f"window scores must share their leading axes, found {leading} and {shape[:-2]}"
            )
        leading = shape[:-2]


def accumulate_cells(window_scores, grid: WindowGrid, xp=np):
    """Sum, for every cell, the scores of the windows covering it.

    This is Algorithm 1 step 4 (each window adds its score to every pixel it
    covers) evaluated once per cell. For each window size the scores form a
    regular lattice; a summed-area table over it (two cumulative sums) gives
    the sum over the windows covering a cell, a rectangle of that lattice,
    from four table entries. Cost O(windows + cells) per size, whatever the
    window size. Exact for integer scores.

    Args:
        window_scores: one array per window size, in `grid.window_sizes`
            order, of shape [..., ny, nx] (grid.lattice_shapes), the same
            leading axes for all; any numeric dtype.
        grid: the window grid.
        xp: array module, numpy or jax.numpy.

    Returns:
        [..., cy, cx] (grid.cells_shape) sums; integer scores give integer
        sums (NumPy widens to its default integer). Cells that no window
        covers are 0.

    Raises:
        InputError: the number or shapes of the score arrays do not fit grid.
    """
    _check_window_scores(window_scores, grid)
    total = None
    for size_index, scores in enumerate(window_scores):
        scores = xp.asarray(scores)
        table = xp.cumsum(xp.cumsum(scores, axis=-2), axis=-1)
        # A leading zero row and column: table[k, l] = sum of scores[:k, :l].
        table = xp.pad(table, [(0, 0)] * (table.ndim - 2) + [(1, 0), (1, 0)])
        start_y, stop_y = _window_ranges(grid, size_index, 0)
        start_x, stop_x = _window_ranges(grid, size_index, 1)
        rows = xp.take(table, stop_y, axis=-2) - xp.take(table, start_y, axis=-2)
        sums = xp.take(rows, stop_x, axis=-1) - xp.take(rows, start_x, axis=-1)
        total = sums if total is None else total + sums
    return total


def coverage(grid: WindowGrid) -> np.ndarray:
    """Number of windows covering each cell.

    Args:
        grid: the window grid.

    Returns:
        int64 [cy, cx].
    """
    ones = tuple(np.ones(shape, np.int64) for shape in grid.lattice_shapes)
    return accumulate_cells(ones, grid)


def coverage_matrix(grid: WindowGrid) -> np.ndarray:
    """Which window covers which cell, as a matrix.

    `coverage_matrix(grid) @ scores` with scores [..., n_windows, F] gives
    the per-cell sums of `accumulate_cells` for F features at once.

    Args:
        grid: the window grid.

    Returns:
        float32 [cy * cx, n_windows] of 0 and 1; rows are cells in row-major
        order, columns are windows in the flat order (sizes in
        `grid.window_sizes` order, each lattice row-major).
    """
    cells_y, cells_x = grid.cells_shape
    blocks = []
    for size_index, size in enumerate(grid.window_sizes):
        covers = []
        for axis, n_cells in enumerate((cells_y, cells_x)):
            first, end = _covered_cells(
                grid.origins[size_index][axis], size, grid.padding, grid.cell, n_cells
            )
            cells = np.arange(n_cells)[:, None]
            covers.append((first[None, :] <= cells) & (cells < end[None, :]))
        # [cy, ny] x [cx, nx] -> [cy, cx, ny, nx]: a cell is covered when
        # both its row and its column are.
        block = np.einsum("ik,jl->ijkl", *(c.astype(np.float32) for c in covers))
        blocks.append(block.reshape(cells_y * cells_x, -1))
    return np.concatenate(blocks, axis=1)


def min_max(maps, xp=np):
    """Min-max normalise each map over its last two axes to [0, 1]: the package's one rule.

    A map whose values are all equal has no minimum apart from its maximum;
    it points nowhere, so it becomes all zeros (0 / 0 := 0, as wsolevaluation's
    `normalize_scoremap` does). Algorithm 1's maps are this, inverted
    (`normalise_maps`), so there a constant map is all ones.

    Args:
        maps: [..., h, w] finite values.
        xp: array module, numpy or jax.numpy.

    Returns:
        float32 [..., h, w] in [0, 1] (float64 arithmetic on NumPy, so that large
        integer sums stay exact; float32 on JAX).
    """
    dtype = np.float64 if xp is np else xp.float32
    values = xp.asarray(maps).astype(dtype)
    low = xp.min(values, axis=(-2, -1), keepdims=True)
    span = xp.max(values, axis=(-2, -1), keepdims=True) - low
    flat = span <= 0
    scaled = xp.where(flat, 0, (values - low) / xp.where(flat, 1, span))
    # Clip: float rounding can leave (v - low) / span a hair above 1.
    return xp.clip(scaled, 0, 1).astype(xp.float32)


def normalise_maps(cells, xp=np):
    """Algorithm 1 step 5: min-max normalise each map (`min_max`) and invert it.

    The minimum and maximum are taken over the last two axes. Every cell
    holds at least one pixel, so they equal those over the pixel map, and
    `cells_to_pixels` commutes with this function. A map whose values are
    all equal (the concept scores the same in every window, e.g. the root
    ranks first everywhere) is all zeros before the inversion: all ones.

    Args:
        cells: [..., cy, cx] summed scores (low = concept ranks well), finite.
        xp: array module, numpy or jax.numpy.

    Returns:
        float32 [..., cy, cx] in [0, 1]: 1 where the summed score is lowest,
        i.e. where the concept is.
    """
    return (1 - min_max(cells, xp=xp)).astype(xp.float32)


def window_lattices(scores, grid: WindowGrid, xp=np) -> tuple:
    """Scores [N, n_windows, K] in the flat window order -> per size [N, K, ny, nx].

    The flat order lists the sizes in `grid.window_sizes` order, each lattice
    row-major (that of `coverage_matrix`, of the sweeps and of the atlas).
    """
    lattices, start = [], 0
    for ny, nx in grid.lattice_shapes:
        block = scores[:, start:start + ny * nx]
        lattices.append(xp.moveaxis(block.reshape((scores.shape[0], ny, nx, -1)), -1, 1))
        start += ny * nx
    return tuple(lattices)


def cell_maps(scores, grid: WindowGrid, xp=np):
    """Algorithm 1 steps 4-5, the one finishing step of every sweep: each window's score
    (low where the concept is) summed over the cells it covers, min-max normalised and
    inverted.

    Args:
        scores: [N, n_windows, K] window scores (subtree-minimum ranks), in the flat
            window order (`window_lattices`).
        grid: the window grid.
        xp: array module, numpy or jax.numpy.

    Returns:
        float32 [N, K, cy, cx] in [0, 1], high where the concept is.
    """
    return normalise_maps(accumulate_cells(window_lattices(scores, grid, xp), grid, xp=xp), xp=xp)


def cells_to_pixels(cells, grid: WindowGrid, xp=np):
    """Repeat each cell's value over its pixels.

    Args:
        cells: [..., cy, cx] (grid.cells_shape).
        grid: the window grid.
        xp: array module, numpy or jax.numpy.

    Returns:
        [..., H, W] (grid.image_size), same dtype as cells.

    Raises:
        InputError: the last two axes are not grid.cells_shape.
    """
    if tuple(cells.shape[-2:]) != grid.cells_shape:
        raise InputError(
            f"cells must be [..., {grid.cells_shape[0]}, {grid.cells_shape[1]}], "
            f"found shape {tuple(cells.shape)}"
        )
    cell_of_row, cell_of_col = (
        np.repeat(np.arange(len(edges) - 1), np.diff(edges)) for edges in grid.cell_edges
    )
    return xp.take(xp.take(xp.asarray(cells), cell_of_row, axis=-2), cell_of_col, axis=-1)


def webapp_cell_maps(
    rank_sims_per_window: np.ndarray,
    grid: WindowGrid,
    offsets: np.ndarray,
    members: np.ndarray,
) -> np.ndarray:
    """The authors' web-app aggregation (docs/method.md, section 3), per cell.

    For each cell: average the rank-similarity vectors of the windows
    covering it, take each concept's subtree maximum of that average, and
    map it through exp(-10 (1 - x)). Unlike Algorithm 1 there is no min-max
    step. A cell that no window covers (possible with padding 0, when the
    lattice does not reach the image's far edge) has nothing to average and
    gets 0.

    Args:
        rank_sims_per_window: float [..., n_windows, T] rank similarities
            1 - rank / T (`rank_similarity`) of every synset in every window,
            windows in the flat order of `coverage_matrix`.
        grid: the window grid (the web app used padding=0).
        offsets: int [K + 1] subtree CSR offsets (see `subtree_max`).
        members: int [M] subtree members (see `subtree_max`).

    Returns:
        float32 [..., K, cy, cx] in [0, 1].

    Raises:
        InputError: the window axis does not match the grid, or the subtree
            index is malformed.
    """
    sims = np.asarray(rank_sims_per_window)
    if sims.ndim < 2 or sims.shape[-2] != grid.n_windows:
        raise InputError(
            f"rank similarities must be [..., {grid.n_windows}, T] (one row per window), "
            f"found shape {sims.shape}"
        )
    matrix = coverage_matrix(grid)
    counts = matrix.sum(axis=1)
    covered = counts > 0
    means = (matrix @ sims) / np.where(covered, counts, 1)[:, None]
    best = subtree_max(means.astype(np.float32), offsets, members)  # [..., cells, K]
    maps = np.where(covered[:, None], np.exp(-10.0 * (1.0 - best)), 0.0)
    maps = np.moveaxis(maps, -1, -2)
    return maps.reshape(maps.shape[:-1] + grid.cells_shape).astype(np.float32)
