"""Pictures: the white-blend overlay against its formula, sizes kept, figures written."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from convis_jax.errors import InputError
from convis_jax.pictures.overlays import (
    concept_grid,
    heatmap_overlay,
    save_heatmap,
    save_png,
    white_overlay,
)


def photo(height: int = 30, width: int = 50, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def saliency(height: int = 30, width: int = 50, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((height, width))


def test_white_overlay_is_the_papers_blend_pixel_by_pixel():
    rgb, m, gamma = photo(), saliency(), 2.5
    out = white_overlay(rgb, m, gamma)
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    for y, x in [(0, 0), (7, 31), (29, 49), (15, 2)]:
        weight = float(np.float32(m[y, x])) ** gamma
        for c in range(3):
            expected = round(int(rgb[y, x, c]) * weight + 255 * (1 - weight))
            assert abs(int(out[y, x, c]) - expected) <= 1  # float32 vs float64 at .5


def test_map_one_keeps_the_photo_and_zero_turns_white():
    rgb = photo()
    m = np.zeros(rgb.shape[:2])
    m[:, 25:] = 1.0
    out = white_overlay(rgb, m, gamma=3.0)
    np.testing.assert_array_equal(out[:, 25:], rgb[:, 25:])
    assert np.all(out[:, :25] == 255)


def test_values_outside_the_unit_interval_are_clipped():
    rgb = photo()
    np.testing.assert_array_equal(white_overlay(rgb, np.full(rgb.shape[:2], 7.0)), rgb)
    assert np.all(white_overlay(rgb, np.full(rgb.shape[:2], -2.0)) == 255)


def test_gamma_keeps_only_the_strongest_regions():
    rgb = np.zeros((1, 3, 3), np.uint8)  # black: the overlay is 255 (1 - m**gamma)
    m = np.array([[0.25, 0.5, 1.0]])
    np.testing.assert_array_equal(white_overlay(rgb, m, 1.0)[0, :, 0], [191, 128, 0])
    np.testing.assert_array_equal(white_overlay(rgb, m, 2.0)[0, :, 0], [239, 191, 0])


def test_heatmap_overlay_blends_the_colour_map():
    from matplotlib import colormaps

    rgb, m = photo(4, 5), saliency(4, 5)
    out = heatmap_overlay(rgb, m, alpha=0.3, colormap="viridis")
    colours = colormaps["viridis"](m.astype(np.float32))[..., :3] * 255
    np.testing.assert_allclose(out, 0.7 * rgb + 0.3 * colours, atol=0.5 + 1e-6)
    np.testing.assert_array_equal(heatmap_overlay(rgb, m, alpha=0.0), rgb)


@pytest.mark.parametrize("height, width", [(30, 50), (50, 30), (1, 1), (7, 300)])
def test_saved_overlays_keep_the_photo_size(tmp_path, height, width):
    rgb = photo(height, width)
    overlay = white_overlay(rgb, saliency(height, width))
    path = save_png(overlay, tmp_path / "sub" / "overlay.png")
    with Image.open(path) as image:
        assert image.size == (width, height)
        np.testing.assert_array_equal(np.asarray(image), overlay)  # PNG is lossless


def test_concept_grid_and_heatmap_are_written_with_the_photo_aspect(tmp_path, monkeypatch):
    import matplotlib

    def switch_backend(*args, **kwargs):  # a notebook's backend must be left alone
        raise AssertionError(f"matplotlib.use{args} called")

    monkeypatch.setattr(matplotlib, "use", switch_backend)
    open_figures = _open_figures()
    rgb = photo(30, 60)
    maps = np.stack([saliency(30, 60, seed) for seed in range(3)])
    grid = concept_grid(rgb, maps, ["dog.n.01", "cat.n.01", "car.n.01"], tmp_path / "grid.png",
                        columns=2)
    heat = save_heatmap(rgb, maps[0], tmp_path / "heat.png", title="dog.n.01")
    with Image.open(grid) as image:
        width, height = image.size
        # 2 x 2 panels of a 2:1 photo (plus title rows): wider than tall.
        assert image.format == "PNG" and width > height > width / 2
    with Image.open(heat) as image:
        assert image.format == "PNG" and image.size[0] > image.size[1]
    assert _open_figures() == open_figures  # no pyplot figure left open


def _open_figures() -> list[int]:
    pyplot = sys.modules.get("matplotlib.pyplot")
    return [] if pyplot is None else pyplot.get_fignums()


def test_a_strip_of_a_photo_gets_a_bounded_grid(tmp_path):
    path = concept_grid(np.zeros((20000, 50, 3), np.uint8), np.zeros((1, 20000, 50)), ["x"],
                        tmp_path / "strip.png")
    with Image.open(path) as image:
        assert max(image.size) < 3000


@pytest.mark.parametrize("call, message", [
    (lambda: white_overlay(photo(), saliency(), gamma=0), "gamma must be positive, found 0"),
    (lambda: white_overlay(photo(), saliency(), gamma=float("nan")), "gamma must be positive"),
    (lambda: white_overlay(photo(), saliency(224, 224)),
     r"map must be \[H, W\] = \[30, 50\] like the photo, found \[224, 224\]; use map_to_image"),
    (lambda: white_overlay(photo().astype(float), saliency()), r"photo must be uint8 \[H, W, 3\].*found float64"),
    (lambda: white_overlay(photo()[..., :1], saliency()), r"found uint8 \[30, 50, 1\]"),
    (lambda: white_overlay(photo(), np.full((30, 50), np.nan)), "finite values, found 1500 NaN and 0 inf"),
    (lambda: heatmap_overlay(photo(), saliency(), alpha=1.5), r"alpha must be in \[0, 1\], found 1.5"),
    (lambda: heatmap_overlay(photo(), saliency(), colormap="nope"), "colour map name.*found 'nope'"),
    (lambda: save_png(np.zeros((4, 4, 3)), "never.png"), r"uint8 \[H, W, 3\] or \[H, W\], found float64"),
    (lambda: concept_grid(photo(), saliency()[None], ["a", "b"], "never.png"),
     r"maps \[K, H, W\] with K titles, found \[1, 30, 50\] and 2 titles"),
    (lambda: concept_grid(photo(), saliency()[None], ["a"], "never.png", columns=0),
     "columns must be a positive integer, found 0"),
])
def test_bad_arguments_name_what_was_expected(call, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=message):
        call()
    assert not (tmp_path / "never.png").exists()
