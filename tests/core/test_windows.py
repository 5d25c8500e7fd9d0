"""Window geometry, padding, cropping and the photo <-> square mapping."""

import numpy as np
import pytest
from PIL import Image

from convis_jax.core.windows import (
    SquareCrop,
    center_crop_square,
    crop_windows,
    map_to_image,
    pad_images,
    prepare_image,
    square_crop_box,
    window_grid,
)
from convis_jax.errors import InputError
from tests.reference import plain_window_ranks


def _enumerate_windows(image_size, window_sizes, stride, padding):
    """Plain enumeration: lattice windows inside the padded image that share
    at least one pixel with the image, as {(size, y0, x0)}."""
    height, width = image_size
    kept = set()
    for size in window_sizes:
        for y0 in range(0, height + 2 * padding, stride):
            for x0 in range(0, width + 2 * padding, stride):
                inside = y0 + size <= height + 2 * padding and x0 + size <= width + 2 * padding
                rows = set(range(y0, y0 + size)) & set(range(padding, padding + height))
                cols = set(range(x0, x0 + size)) & set(range(padding, padding + width))
                if inside and rows and cols:
                    kept.add((size, y0, x0))
    return kept


def _grid_windows(grid):
    return {
        (size, int(y0), int(x0))
        for size, (origins_y, origins_x) in zip(grid.window_sizes, grid.origins)
        for y0 in origins_y
        for x0 in origins_x
    }


def test_paper_grid_has_730_windows_on_14_by_14_cells():
    grid = window_grid((224, 224))
    assert grid.window_sizes == (128, 64) and grid.stride == 16 and grid.padding == 128
    assert grid.lattice_shapes == ((21, 21), (17, 17))
    assert grid.n_windows == 730
    assert grid.cell == 16 and grid.cells_shape == (14, 14)
    assert grid.padded_size == (480, 480)
    np.testing.assert_array_equal(grid.origins[0][0], np.arange(16, 337, 16))
    np.testing.assert_array_equal(grid.origins[1][1], np.arange(80, 337, 16))
    np.testing.assert_array_equal(grid.cell_edges[0], np.arange(0, 225, 16))


def test_paper_grid_keeps_exactly_the_plain_lattice_windows_touching_the_image():
    # The plain reference visits 2 x 30 x 30 = 1,800 windows; the grid keeps
    # those that overlap the image, none of them truncated.
    image = np.zeros((224, 224, 3))
    visited = plain_window_ranks(
        image, lambda crop: np.ones(1), np.ones((1, 1)), window_sizes=(128, 64), stride=16
    )
    assert len(visited) == 1800
    touching = {
        (size, y0, x0)
        for size, y0, x0 in visited
        if y0 < 128 + 224 and y0 + size > 128 and x0 < 128 + 224 and x0 + size > 128
    }
    assert all(y0 + size <= 480 and x0 + size <= 480 for size, y0, x0 in touching)
    assert _grid_windows(window_grid((224, 224))) == touching


@pytest.mark.parametrize(
    "image_size, window_sizes, stride, padding",
    [
        ((224, 224), (128, 64), 16, 0),
        ((100, 37), (20, 12), 4, 0),
        ((50, 81), (24, 16), 8, 24),
        ((33, 20), (9, 6), 3, 5),
        ((7, 300), (12,), 5, 30),
    ],
)
def test_grid_matches_plain_enumeration(image_size, window_sizes, stride, padding):
    grid = window_grid(image_size, window_sizes, stride, padding)
    assert _grid_windows(grid) == _enumerate_windows(image_size, window_sizes, stride, padding)
    assert grid.n_windows == len(_enumerate_windows(image_size, window_sizes, stride, padding))


def test_padding_zero_is_the_web_app_grid_inside_the_image():
    grid = window_grid((224, 224), padding=0)
    assert grid.lattice_shapes == ((7, 7), (11, 11))
    assert grid.origins[0][0].max() + 128 == 224


def test_cells_of_an_image_that_is_not_a_multiple_of_the_cell():
    grid = window_grid((100, 70), (32, 16), 8, 32)
    assert grid.cell == 8
    assert grid.cells_shape == (13, 9)
    assert grid.cell_edges[0][-2:].tolist() == [96, 100]
    assert grid.cell_edges[1][-2:].tolist() == [64, 70]


def test_cell_is_the_gcd_of_stride_sizes_and_padding():
    assert window_grid((60, 60), (24, 18), 12, 30).cell == 6
    assert window_grid((60, 60), (24, 16), 8, 0).cell == 8


def test_grid_equality_hash_and_read_only_arrays():
    grid = window_grid((224, 224))
    same = window_grid((224, 224), (128, 64), 16, 128)
    assert grid == same and hash(grid) == hash(same)
    assert grid != window_grid((224, 224), padding=0)
    with pytest.raises(ValueError):
        grid.origins[0][0][0] = 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(image_size=(0, 10)), "positive"),
        (dict(image_size=(10,)), "height, width"),
        (dict(image_size=(10, 10), window_sizes=()), "at least one"),
        (dict(image_size=(10, 10), window_sizes=(4, 4)), "distinct"),
        (dict(image_size=(10, 10), window_sizes=(-4,)), "positive"),
        (dict(image_size=(10, 10), window_sizes=(4,), stride=0), "positive"),
        (dict(image_size=(10, 10), window_sizes=(4,), padding=-1), "non-negative"),
        (dict(image_size=(10, 10), window_sizes=(12,), padding=0), "larger than the 10 x 10 image"),
        (dict(image_size=(4, 12), window_sizes=(12,), padding=2), "does not fit"),
        (dict(image_size=(224, 224), window_sizes=(1000,)), "window size 1000 is larger than"),
        (dict(image_size=(10, 11), window_sizes=(12,), padding=4), "up to 11"),
        (dict(image_size=(10, 10), window_sizes=(4,), stride=2.0), "positive integer"),
        (dict(image_size=(4, 4), window_sizes=(2,), stride=7, padding=3), "no window"),
    ],
)
def test_window_grid_rejects_bad_arguments(kwargs, message):
    with pytest.raises(InputError, match=message):
        window_grid(**kwargs)


def _images(count=2, height=12, width=9, seed=1):
    return np.random.default_rng(seed).uniform(0, 255, (count, height, width, 3)).astype(np.float32)


def test_pad_images_noise_seed_changes_only_the_padding():
    images = _images()
    first = pad_images(images, 5, "noise", seed=3)
    again = pad_images(images, 5, "noise", seed=3)
    other = pad_images(images, 5, "noise", seed=4)
    assert first.shape == (2, 22, 19, 3) and first.dtype == np.float32
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first[:, 5:17, 5:14], images)
    np.testing.assert_array_equal(other[:, 5:17, 5:14], images)
    border = np.ones(first.shape, bool)
    border[:, 5:17, 5:14] = False
    assert np.all(first[border] != other[border])
    assert 0 <= first.min() and first.max() <= 255
    # Image 0's padding does not depend on the images after it.
    np.testing.assert_array_equal(pad_images(images[:1], 5, "noise", seed=3), first[:1])


def test_pad_images_constant_is_black():
    images = _images()
    padded = pad_images(images, 3, "constant")
    np.testing.assert_array_equal(padded[:, 3:15, 3:12], images)
    assert padded.sum() == pytest.approx(images.astype(np.float64).sum(), rel=1e-6)
    np.testing.assert_array_equal(pad_images(images, 0, "constant"), images)


@pytest.mark.parametrize(
    "images, padding, mode, message",
    [
        (np.zeros((4, 4, 3), np.float32), 2, "noise", r"\[N, H, W, 3\]"),
        (np.zeros((1, 4, 4, 4), np.float32), 2, "noise", r"\[N, H, W, 3\]"),
        (np.zeros((1, 4, 4, 3), np.uint8), 2, "noise", "floating"),
        (np.full((1, 4, 4, 3), np.nan, np.float32), 2, "noise", "finite"),
        (np.full((1, 4, 4, 3), 300.0, np.float32), 2, "noise", r"\[0, 255\]"),
        (np.zeros((1, 4, 4, 3), np.float32), -1, "noise", "non-negative"),
        (np.zeros((1, 4, 4, 3), np.float32), 2, "mirror", "mode"),
    ],
)
def test_pad_images_rejects_bad_input(images, padding, mode, message):
    with pytest.raises(InputError, match=message):
        pad_images(images, padding, mode)


def test_crop_windows_matches_slicing():
    grid = window_grid((20, 28), (8, 4), 4, 8)
    padded = pad_images(_images(2, 20, 28), grid.padding, "noise", seed=0)
    for size_index, size in enumerate(grid.window_sizes):
        windows = crop_windows(padded, grid, size_index)
        origins_y, origins_x = grid.origins[size_index]
        assert windows.shape == (2, len(origins_y), len(origins_x), size, size, 3)
        for k, y0 in enumerate(origins_y):
            for l, x0 in enumerate(origins_x):
                np.testing.assert_array_equal(
                    windows[:, k, l], padded[:, y0 : y0 + size, x0 : x0 + size]
                )
    with pytest.raises(InputError, match="padded images"):
        crop_windows(padded[:, 1:], grid, 0)
    with pytest.raises(InputError, match="size_index"):
        crop_windows(padded, grid, 2)


@pytest.mark.parametrize(
    "height, width, expected",
    [
        (7, 4, SquareCrop(top=1, left=0, side=4, original_size=(7, 4))),
        (4, 9, SquareCrop(top=0, left=2, side=4, original_size=(4, 9))),
        (5, 5, SquareCrop(top=0, left=0, side=5, original_size=(5, 5))),
        (1, 2, SquareCrop(top=0, left=0, side=1, original_size=(1, 2))),
    ],
)
def test_square_crop_box_right_and_bottom_lose_the_odd_pixel(height, width, expected):
    assert square_crop_box(height, width) == expected
    image = np.arange(height * width).reshape(height, width)
    crop = center_crop_square(image)
    box = expected
    np.testing.assert_array_equal(
        crop, image[box.top : box.top + box.side, box.left : box.left + box.side]
    )
    # Rows/columns removed before the crop never exceed those removed after.
    assert box.top <= height - box.top - box.side and box.left <= width - box.left - box.side


def test_prepare_image_matches_pillow_crop_and_bicubic_resize():
    photo = np.random.default_rng(0).integers(0, 256, (181, 257, 3), np.uint8)
    prepared = prepare_image(photo)
    assert prepared.shape == (224, 224, 3) and prepared.dtype == np.float32
    expected = Image.fromarray(photo).crop((38, 0, 38 + 181, 181)).resize((224, 224), Image.BICUBIC)
    np.testing.assert_array_equal(prepared, np.asarray(expected, np.float32))
    square = np.random.default_rng(1).integers(0, 256, (224, 224, 3), np.uint8)
    np.testing.assert_array_equal(prepare_image(square), square.astype(np.float32))


@pytest.mark.parametrize(
    "image",
    [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8), np.zeros((10, 10, 3))],
)
def test_prepare_image_rejects_non_rgb_uint8(image):
    with pytest.raises(InputError, match="uint8"):
        prepare_image(image)


@pytest.mark.parametrize("height, width", [(301, 200), (181, 257), (97, 130), (500, 333)])
def test_map_to_image_undoes_prepare_image(height, width):
    # A linear ramp survives the round trip (bicubic and bilinear reproduce
    # it) only if the map lands on the very pixels it came from: a shift of
    # one pixel would bias the error by the ramp's slope, about 1 per pixel.
    rows, cols = np.mgrid[0:height, 0:width]
    box = square_crop_box(height, width)
    slope = 200.0 / box.side
    ramp = 20 + slope * (rows - box.top) + 0.5 * slope * (cols - box.left)
    photo = np.repeat(np.clip(np.round(ramp), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    prepared = prepare_image(photo)
    back = map_to_image(prepared[..., 0], (height, width))
    assert back.shape == (height, width) and back.dtype == np.float32
    inside = np.zeros((height, width), bool)
    inside[box.top : box.top + box.side, box.left : box.left + box.side] = True
    assert np.all(back[~inside] == 0)
    # Away from the crop's border, where resampling clamps.
    margin = 4
    core = np.zeros_like(inside)
    core[
        box.top + margin : box.top + box.side - margin,
        box.left + margin : box.left + box.side - margin,
    ] = True
    error = back[core] - photo[..., 0][core]
    assert abs(error.mean()) < 0.1
    assert np.abs(error).max() < 1.5


def test_map_to_image_keeps_leading_axes_and_constants():
    maps = np.stack([np.full((14, 14), 0.25), np.full((14, 14), 1.0)])[None]  # [1, 2, 14, 14]
    back = map_to_image(maps, (31, 20))
    assert back.shape == (1, 2, 31, 20)
    np.testing.assert_allclose(back[0, :, 5:25], maps[0, :, :1, :1] * np.ones((20, 20)), atol=1e-6)
    assert np.all(back[..., :5, :] == 0) and np.all(back[..., 25:, :] == 0)


def test_map_to_image_is_the_identity_on_a_square_of_the_same_size():
    maps = np.random.default_rng(0).random((3, 224, 224)).astype(np.float32)
    np.testing.assert_array_equal(map_to_image(maps, (224, 224)), maps)


def test_map_to_image_rejects_non_square_maps():
    with pytest.raises(InputError, match="S, S"):
        map_to_image(np.zeros((14, 13)), (100, 100))


def test_pad_squares_draws_each_images_noise_from_its_number():
    from convis_jax.core.windows import pad_squares

    rng = np.random.default_rng(4)
    photos = [rng.integers(0, 256, (40, 60, 3), dtype=np.uint8),
              rng.integers(0, 256, (50, 30, 3), dtype=np.uint8)]
    both = pad_squares(photos, [3, 0], 8, "noise", seed=11, size=32)
    assert both.shape == (2, 48, 48, 3) and both.dtype == np.float32
    for row, photo, number in zip(both, photos, [3, 0]):
        want = pad_images(prepare_image(photo, 32)[None], 8, "noise", seed=[11, number])[0]
        np.testing.assert_array_equal(row, want)
    # Alone or in another batch, image number 3 gets the same padding.
    np.testing.assert_array_equal(pad_squares(photos[:1], [3], 8, "noise", 11, 32)[0], both[0])
    assert not np.array_equal(pad_squares(photos[:1], [4], 8, "noise", 11, 32)[0], both[0])
