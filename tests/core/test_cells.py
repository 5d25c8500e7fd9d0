"""Cell accumulation, normalisation, upsampling and the web-app order, against
plain loops; and the whole Algorithm 1 fast path against the plain reference."""

import numpy as np
import pytest

from convis_jax.core.cells import (
    accumulate_cells,
    cell_maps,
    cells_to_pixels,
    coverage,
    coverage_matrix,
    min_max,
    normalise_maps,
    webapp_cell_maps,
)
from convis_jax.core.ranks import rank_similarity, ranks
from convis_jax.core.windows import crop_windows, pad_images, prepare_image, window_grid
from convis_jax.errors import InputError
from tests.reference import (
    plain_accumulate,
    plain_map_from_ranks,
    plain_occlusion_map,
    plain_subtree_index,
    plain_subtree_min,
    plain_window_ranks,
)

PAPER_GRID = window_grid((224, 224))
ODD_GRID = window_grid((100, 70), (32, 16), 8, 32)
# Padding 0 and a lattice that stops short of the bottom and the right: the
# last (partial) row and column of cells are covered by no window.
UNCOVERED_GRID = window_grid((44, 30), (16, 8), 8, 0)

# The small DAG of test_ranks: 0 is the root, 4 has two parents.
DAG_SIZE = 9
DAG_EDGES = [(0, 1), (0, 2), (1, 3), (1, 4), (2, 4), (2, 5), (4, 6), (5, 7), (5, 8)]


def _random_scores(grid, leading=(), seed=0, integer=True):
    rng = np.random.default_rng(seed)
    if integer:
        return tuple(rng.integers(0, 1000, leading + shape) for shape in grid.lattice_shapes)
    return tuple(rng.normal(size=leading + shape) for shape in grid.lattice_shapes)


@pytest.mark.parametrize("grid", [PAPER_GRID, ODD_GRID, UNCOVERED_GRID])
def test_accumulation_equals_the_plain_pixel_loop_exactly_for_integers(grid):
    scores = _random_scores(grid, leading=(2, 3))
    cells = accumulate_cells(scores, grid)
    assert cells.shape == (2, 3) + grid.cells_shape
    assert np.issubdtype(cells.dtype, np.integer)
    np.testing.assert_array_equal(cells_to_pixels(cells, grid), plain_accumulate(scores, grid))


@pytest.mark.parametrize("grid", [PAPER_GRID, ODD_GRID])
def test_accumulation_of_float_scores(grid):
    scores = _random_scores(grid, leading=(2,), seed=1, integer=False)
    pixels = cells_to_pixels(accumulate_cells(scores, grid), grid)
    np.testing.assert_allclose(pixels, plain_accumulate(scores, grid), atol=1e-9)


def test_accumulation_rejects_scores_that_do_not_fit_the_grid():
    scores = _random_scores(PAPER_GRID)
    with pytest.raises(InputError, match="tuple of 2"):
        accumulate_cells(scores[:1], PAPER_GRID)
    with pytest.raises(InputError, match=r"\[\.\.\., 17, 17\]"):
        accumulate_cells((scores[0], scores[0]), PAPER_GRID)
    with pytest.raises(InputError, match="leading axes"):
        accumulate_cells((scores[0][None], scores[1]), PAPER_GRID)


def test_coverage_of_the_paper_grid_is_80_everywhere():
    # Every cell of the 224 image lies under 8 x 8 windows of 128 and
    # 4 x 4 windows of 64.
    np.testing.assert_array_equal(coverage(PAPER_GRID), np.full((14, 14), 80))


@pytest.mark.parametrize("grid", [ODD_GRID, UNCOVERED_GRID])
def test_coverage_counts_windows_pixel_by_pixel(grid):
    ones = tuple(np.ones(shape, np.int64) for shape in grid.lattice_shapes)
    np.testing.assert_array_equal(cells_to_pixels(coverage(grid), grid), plain_accumulate(ones, grid))


def test_uncovered_cells_exist_and_sum_to_zero():
    counts = coverage(UNCOVERED_GRID)
    assert counts.shape == (6, 4)
    assert np.all(counts[-1] == 0) and np.all(counts[:, -1] == 0)
    assert np.all(counts[:-1, :-1] > 0)


@pytest.mark.parametrize("grid", [PAPER_GRID, ODD_GRID, UNCOVERED_GRID])
def test_coverage_matrix_gives_the_same_sums(grid):
    matrix = coverage_matrix(grid)
    assert matrix.shape == (grid.cells_shape[0] * grid.cells_shape[1], grid.n_windows)
    assert set(np.unique(matrix)) <= {0.0, 1.0}
    scores = _random_scores(grid, leading=(2,), seed=4)
    flat = np.concatenate([s.reshape(2, -1) for s in scores], axis=1)
    sums = (matrix.astype(np.int64) @ flat[..., None])[..., 0]
    np.testing.assert_array_equal(sums.reshape((2,) + grid.cells_shape), accumulate_cells(scores, grid))


def test_cells_to_pixels_repeats_every_cell_over_its_pixels():
    cells = np.arange(2 * 13 * 9).reshape(2, 13, 9)
    pixels = cells_to_pixels(cells, ODD_GRID)
    assert pixels.shape == (2, 100, 70)
    for y in range(100):
        for x in range(70):
            assert np.all(pixels[:, y, x] == cells[:, y // 8, x // 8])
    with pytest.raises(InputError, match="13, 9"):
        cells_to_pixels(cells[:, :12], ODD_GRID)


def test_normalise_maps_min_max_and_invert():
    cells = np.array([[[3, 5], [7, 11]], [[2, 2], [2, 2]]])
    maps = normalise_maps(cells)
    assert maps.dtype == np.float32
    np.testing.assert_allclose(maps[0], [[1.0, 0.75], [0.5, 0.0]])
    # A map that is the same everywhere has nothing to normalise: all ones.
    np.testing.assert_array_equal(maps[1], np.ones((2, 2)))


def test_normalise_commutes_with_upsampling():
    cells = accumulate_cells(_random_scores(ODD_GRID, leading=(3,), seed=5), ODD_GRID)
    pixels = plain_accumulate(_random_scores(ODD_GRID, leading=(3,), seed=5), ODD_GRID)
    np.testing.assert_array_equal(
        cells_to_pixels(normalise_maps(cells), ODD_GRID), normalise_maps(pixels)
    )


def test_jax_numpy_path_matches_numpy_under_jit():
    import jax
    import jax.numpy as jnp

    scores = tuple(s.astype(np.int32) for s in _random_scores(ODD_GRID, leading=(2, 3), seed=6))

    @jax.jit
    def maps(window_scores):
        cells = accumulate_cells(window_scores, ODD_GRID, xp=jnp)
        return cells, cells_to_pixels(normalise_maps(cells, xp=jnp), ODD_GRID, xp=jnp)

    cells, pixels = maps(scores)
    np.testing.assert_array_equal(np.asarray(cells), accumulate_cells(scores, ODD_GRID))
    expected = cells_to_pixels(normalise_maps(accumulate_cells(scores, ODD_GRID)), ODD_GRID)
    np.testing.assert_allclose(np.asarray(pixels), expected, atol=1e-6)


def _plain_webapp(sims, grid, offsets, members):
    """Per cell: average the rows of the windows covering its first pixel,
    subtree max, exp(-10 (1 - x)); 0 for uncovered cells."""
    boxes = [
        (oy - grid.padding, ox - grid.padding, size)
        for size, (origins_y, origins_x) in zip(grid.window_sizes, grid.origins)
        for oy in origins_y
        for ox in origins_x
    ]
    cells_y, cells_x = grid.cells_shape
    out = np.zeros(sims.shape[:-2] + (len(offsets) - 1, cells_y, cells_x))
    for i in range(cells_y):
        for j in range(cells_x):
            y, x = grid.cell_edges[0][i], grid.cell_edges[1][j]
            covering = [
                w for w, (y0, x0, size) in enumerate(boxes)
                if y0 <= y < y0 + size and x0 <= x < x0 + size
            ]
            if not covering:
                continue
            mean = sims[..., covering, :].mean(axis=-2)
            for k in range(len(offsets) - 1):
                subtree = members[offsets[k] : offsets[k + 1]]
                out[..., k, i, j] = np.exp(-10 * (1 - mean[..., subtree].max(axis=-1)))
    return out


@pytest.mark.parametrize("grid", [UNCOVERED_GRID, window_grid((64, 48), (32, 16), 16, 0)])
def test_webapp_order_matches_a_plain_loop(grid):
    offsets, members = plain_subtree_index(DAG_SIZE, DAG_EDGES)
    similarities = np.random.default_rng(7).normal(size=(2, grid.n_windows, DAG_SIZE))
    sims = rank_similarity(ranks(similarities), DAG_SIZE)
    maps = webapp_cell_maps(sims, grid, offsets, members)
    assert maps.shape == (2, DAG_SIZE) + grid.cells_shape and maps.dtype == np.float32
    np.testing.assert_allclose(maps, _plain_webapp(sims, grid, offsets, members), atol=1e-6)
    assert np.all((maps >= 0) & (maps <= 1))
    # The root's subtree holds every other subtree, so its maximum is largest.
    assert np.all(maps[:, :1] >= maps)
    with pytest.raises(InputError, match="one row per window"):
        webapp_cell_maps(sims[:, 1:], grid, offsets, members)


# --- The whole of Algorithm 1: fast path vs the plain reference --------------


class QuadrantEncoder:
    """Toy image encoder: a fixed random linear map of the mean colour of each
    quadrant of the crop (every 4th pixel, for speed), normalised.

    It is quantised to multiples of 1/256, and the bank below to multiples of
    1/16, so that every similarity is exact in floating point whether the
    crops are encoded one at a time or in batches: equal similarities (the
    bank repeats a synset) tie exactly in both paths.
    """

    def __init__(self, dim=5, seed=0):
        self.projection = np.random.default_rng(seed).normal(size=(12, dim))

    def __call__(self, crops):
        """crops float [..., h, w, 3] in [0, 255] -> [..., dim]."""
        crops = np.asarray(crops)[..., ::4, ::4, :].astype(np.float64)
        height, width = crops.shape[-3:-1]
        halves = (crops[..., : (height + 1) // 2, :, :], crops[..., height // 2 :, :, :])
        quadrants = [
            part for half in halves
            for part in (half[..., : (width + 1) // 2, :], half[..., width // 2 :, :])
        ]
        means = np.concatenate([q.mean(axis=(-3, -2)) for q in quadrants], axis=-1) / 255 - 0.5
        embedding = means @ self.projection
        embedding = embedding / np.linalg.norm(embedding, axis=-1, keepdims=True)
        return np.round(embedding * 256) / 256


def _toy_bank(dim=5, seed=1):
    bank = np.random.default_rng(seed).integers(-16, 17, (DAG_SIZE, dim)) / 16
    bank[8] = bank[3]  # a tie in every window
    return bank


def _toy_photo(height, width, seed):
    rng = np.random.default_rng(seed)
    photo = np.empty((height, width, 3), np.uint8)
    photo[:] = rng.integers(0, 256, 3)
    for _ in range(6):
        top, left = rng.integers(0, height), rng.integers(0, width)
        bottom = top + rng.integers(height // 8 + 1, height // 2 + 2)
        right = left + rng.integers(width // 8 + 1, width // 2 + 2)
        photo[top:bottom, left:right] = rng.integers(0, 256, 3)
    return photo


def _fast_cell_maps(images, encode, bank, offsets, members, grid):
    """Algorithm 1 on cells with the core functions: window ranks per size
    ([N, ny, nx, T]) and normalised cell maps [N, K, cy, cx]."""
    padded = pad_images(images, grid.padding, "constant")
    window_ranks, scores = [], []
    for size_index in range(len(grid.window_sizes)):
        crops = crop_windows(padded, grid, size_index)
        # One lattice row at a time keeps the float64 copy inside encode small.
        embeddings = np.stack([encode(crops[:, k]) for k in range(crops.shape[1])], axis=1)
        rank = ranks(embeddings @ bank.T)
        window_ranks.append(rank)
        best = plain_subtree_min(rank, offsets, members)  # [N, ny, nx, K]
        scores.append(best.reshape(best.shape[0], -1, best.shape[-1]))
    # The flat window order: sizes in grid order, each lattice row-major.
    return window_ranks, cell_maps(np.concatenate(scores, axis=1), grid)


def test_fast_occlusion_maps_equal_the_plain_reference():
    encode, bank = QuadrantEncoder(), _toy_bank()
    offsets, members = plain_subtree_index(DAG_SIZE, DAG_EDGES)
    photos = [_toy_photo(h, w, seed) for seed, (h, w) in enumerate([(300, 200), (181, 257), (97, 130), (224, 224)])]
    images = np.stack([prepare_image(photo) for photo in photos])
    grid = PAPER_GRID
    # N = 2 in one call and N = 1 in others (crops of 128 take 87 MB per image).
    batches = [(0, 2), (2, 3), (3, 4)]
    non_constant = 0
    for start, stop in batches:
        window_ranks, cell_maps = _fast_cell_maps(
            images[start:stop], encode, bank, offsets, members, grid
        )
        assert cell_maps.shape == (stop - start, DAG_SIZE, 14, 14)
        pixel_maps = cells_to_pixels(cell_maps, grid)
        for n, image in enumerate(images[start:stop]):
            plain_ranks = plain_window_ranks(image, encode, bank)
            for size_index, (size, (origins_y, origins_x)) in enumerate(
                zip(grid.window_sizes, grid.origins)
            ):
                for k, y0 in enumerate(origins_y):
                    for l, x0 in enumerate(origins_x):
                        np.testing.assert_array_equal(
                            window_ranks[size_index][n, k, l], plain_ranks[(size, y0, x0)]
                        )
            for concept in range(DAG_SIZE):
                plain = plain_map_from_ranks(
                    plain_ranks, (224, 224), offsets, members, concept, padding=128
                )
                np.testing.assert_allclose(pixel_maps[n, concept], plain, atol=1e-6, rtol=0)
                non_constant += plain.std() > 0.05
            # The root ranks first everywhere: its map is all ones.
            np.testing.assert_array_equal(pixel_maps[n, 0], 1.0)
    # Most maps carry a real pattern, so the comparison is not between constants.
    assert non_constant >= 4 * (DAG_SIZE - 1) * 3 // 4


def test_plain_occlusion_map_is_the_composition_of_its_steps():
    encode, bank = QuadrantEncoder(), _toy_bank()
    offsets, members = plain_subtree_index(DAG_SIZE, DAG_EDGES)
    image = prepare_image(_toy_photo(150, 90, seed=9))
    window_ranks, cell_maps = _fast_cell_maps(image[None], encode, bank, offsets, members, PAPER_GRID)
    plain = plain_occlusion_map(image, encode, bank, offsets, members, 4)
    np.testing.assert_allclose(cells_to_pixels(cell_maps, PAPER_GRID)[0, 4], plain, atol=1e-6)


def test_min_max_is_the_one_rule_and_algorithm_1_inverts_it():
    rng = np.random.default_rng(3)
    maps = rng.normal(size=(4, 5, 6)) * 100
    maps[2] = 7.0  # constant: points nowhere
    out = min_max(maps)
    for m, o in zip(maps, out):  # plain per-map loop
        span = m.max() - m.min()
        expected = np.zeros_like(m) if span == 0 else (m - m.min()) / span
        np.testing.assert_allclose(o, expected, atol=1e-7)
    assert out.dtype == np.float32 and not out[2].any()
    np.testing.assert_array_equal(normalise_maps(maps), (1 - out).astype(np.float32))
    assert (normalise_maps(maps)[2] == 1).all()
