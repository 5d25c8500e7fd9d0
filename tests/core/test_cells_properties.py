"""Property tests of the window geometry over random image sizes, window
sizes, strides and paddings: the fast cell accumulation equals the plain
pixel loop, and normalised maps stay in [0, 1] without NaN."""

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from convis_jax.core.cells import (
    accumulate_cells,
    cells_to_pixels,
    coverage,
    normalise_maps,
)
from convis_jax.core.windows import window_grid
from convis_jax.errors import InputError
from tests.reference import plain_accumulate


@st.composite
def geometries(draw):
    """(image_size, window_sizes, stride, padding) with a common cell of
    1 to 8 pixels (the grid may find a larger one) and images that are
    rarely a multiple of it."""
    unit = draw(st.sampled_from([1, 2, 3, 4, 8]))
    stride = unit * draw(st.integers(1, 4))
    window_sizes = tuple(
        unit * k for k in draw(st.lists(st.integers(1, 6), min_size=1, max_size=3, unique=True))
    )
    padding = draw(st.one_of(st.none(), st.integers(0, 6).map(lambda p: unit * p)))
    pad = max(window_sizes) if padding is None else padding
    # Large enough that every window fits in the padded image, and the image at
    # least as wide as the largest window (window_grid refuses a larger one).
    smallest = max(1, max(window_sizes) - 2 * pad)
    image_size = (
        draw(st.integers(smallest, smallest + 40)),
        draw(st.integers(max(window_sizes), max(window_sizes) + 40)),
    )
    return image_size, window_sizes, stride, padding


def _lattice_misses_the_image(length, size, stride, padding):
    """True when no lattice window of this size inside the padded axis
    overlaps the image along it (plain enumeration)."""
    return not any(
        origin < padding + length and origin + size > padding
        for origin in range(0, length + 2 * padding - size + 1, stride)
    )


@settings(max_examples=200, deadline=None)
@given(geometry=geometries(), seed=st.integers(0, 2**32 - 1))
def test_fast_accumulation_equals_plain_and_maps_are_normalised(geometry, seed):
    image_size, window_sizes, stride, padding = geometry
    try:
        grid = window_grid(image_size, window_sizes, stride, padding)
    except InputError:
        # The only refusal left by the strategy: a lattice too coarse to
        # reach the image.
        pad = max(window_sizes) if padding is None else padding
        assert any(
            _lattice_misses_the_image(length, size, stride, pad)
            for size in window_sizes
            for length in image_size
        )
        return

    height, width = image_size
    assert grid.cell == math.gcd(stride, grid.padding, *window_sizes)
    assert grid.cells_shape == (-(-height // grid.cell), -(-width // grid.cell))
    for edges, length in zip(grid.cell_edges, image_size):
        assert edges[0] == 0 and edges[-1] == length and np.all(np.diff(edges) > 0)

    rng = np.random.default_rng(seed)
    scores = tuple(rng.integers(0, 500, (2,) + shape) for shape in grid.lattice_shapes)
    cells = accumulate_cells(scores, grid)
    plain = plain_accumulate(scores, grid)
    np.testing.assert_array_equal(cells_to_pixels(cells, grid), plain)

    ones = tuple(np.ones(shape, np.int64) for shape in grid.lattice_shapes)
    np.testing.assert_array_equal(cells_to_pixels(coverage(grid), grid), plain_accumulate(ones, grid))

    maps = normalise_maps(cells)
    assert maps.dtype == np.float32 and not np.any(np.isnan(maps))
    assert np.all((maps >= 0) & (maps <= 1))
    np.testing.assert_allclose(cells_to_pixels(maps, grid), normalise_maps(plain), atol=1e-6)

    float_scores = tuple(rng.normal(size=(2,) + shape) for shape in grid.lattice_shapes)
    np.testing.assert_allclose(
        cells_to_pixels(accumulate_cells(float_scores, grid), grid),
        plain_accumulate(float_scores, grid),
        atol=1e-9,
    )
