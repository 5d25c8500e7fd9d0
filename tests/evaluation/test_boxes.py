"""Tests of convis_jax.evaluation.boxes: hand computations on odd sizes, and the pixels themselves."""

from fractions import Fraction

import numpy as np
import pytest

from convis_jax.core.windows import prepare_image
from convis_jax.errors import InputError
from convis_jax.evaluation.boxes import box_iou, boxes_from_square, boxes_to_square
from tests.evaluation.reference import pixel_iou


def test_wide_photo_by_hand():
    # 101 x 150: the square is 101 wide, the excess 49 is odd, so the left
    # side loses 24 columns and the right side 25.
    got = boxes_to_square([[30, 10, 100, 60]], (101, 150), 224)
    want = [Fraction(6 * 224, 101), Fraction(10 * 224, 101),
            Fraction(76 * 224, 101), Fraction(60 * 224, 101)]
    np.testing.assert_allclose(got[0], [float(f) for f in want], rtol=0, atol=1e-12)


def test_tall_photo_by_hand_with_clipping():
    # 151 x 100: top = 51 // 2 = 25; scale 224 / 100.
    got = boxes_to_square(
        [[10, 20, 90, 140],  # sticks out above and below the crop
         [10.5, 30, 20.25, 40],  # inside, fractional
         [10, 0, 50, 20]],  # wholly above the crop
        (151, 100),
        224,
    )
    np.testing.assert_allclose(got[0], [22.4, 0.0, 201.6, 224.0], atol=1e-12)
    np.testing.assert_allclose(got[1], [23.52, 11.2, 45.36, 33.6], atol=1e-12)
    x0, y0, x1, y1 = got[2]
    assert y1 <= y0  # empty: nothing of it is on the square
    assert (x0, x1) == pytest.approx((22.4, 112.0))


def test_round_trip_inside_the_crop():
    rng = np.random.default_rng(3)
    for size in [(97, 211), (300, 123), (64, 64)]:
        side = min(size)
        top, left = (size[0] - side) // 2, (size[1] - side) // 2
        lo = rng.uniform(0, side / 2, (5, 2)) + [left, top]
        boxes = np.concatenate([lo, lo + rng.uniform(1, side / 2, (5, 2))], axis=1)
        square = boxes_to_square(boxes, size, 224)
        assert square.min() >= 0 and square.max() <= 224
        np.testing.assert_allclose(boxes_from_square(square, size, 224), boxes, atol=1e-9)


def test_boxes_follow_the_pixels_of_prepare_image():
    """A white rectangle on black, prepared like Algorithm 1, lands where the box does."""
    height, width = 137, 203  # excess 66: left = 33
    photo = np.zeros((height, width, 3), np.uint8)
    x0, y0, x1, y1 = 60, 30, 140, 101
    photo[y0:y1, x0:x1] = 255
    square = prepare_image(photo, 224)[..., 0]
    rows = np.nonzero(square.mean(axis=1) > 0.5 * square.mean(axis=1).max())[0]
    cols = np.nonzero(square.mean(axis=0) > 0.5 * square.mean(axis=0).max())[0]
    seen = [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
    moved = boxes_to_square([[x0, y0, x1, y1]], (height, width), 224)[0]
    # Half-intensity edges of the resampled rectangle, within a pixel.
    np.testing.assert_allclose(seen, moved, atol=1.0)


def test_bad_arguments():
    with pytest.raises(InputError, match=r"\[K, 4\]"):
        boxes_to_square([1, 2, 3, 4], (10, 10))
    with pytest.raises(InputError, match="finite"):
        boxes_to_square([[0, 0, np.nan, 1]], (10, 10))
    with pytest.raises(InputError, match="size"):
        boxes_to_square([[0, 0, 1, 1]], (10, 10), 0)
    with pytest.raises(InputError, match="height"):
        boxes_from_square([[0, 0, 1, 1]], (0, 10))


# ---------------------------------------------------------------------------
# box_iou



@pytest.mark.parametrize(
    "a, b, expected",
    [
        ((0, 0, 4, 4), (0, 0, 4, 4), 1.0),  # identical
        ((0, 0, 2, 2), (2, 0, 4, 2), 0.0),  # touching along an edge
        ((0, 0, 2, 2), (2, 2, 4, 4), 0.0),  # touching at a corner
        ((0, 0, 4, 4), (1, 1, 3, 3), 4 / 16),  # nested
        ((0, 0, 2, 2), (1, 1, 3, 3), 1 / 7),  # partial overlap
        ((0, 0, 0, 0), (0, 0, 0, 0), 0.0),  # empty with itself
        ((1, 1, 1, 5), (0, 0, 4, 4), 0.0),  # zero width
        ((3, 3, 1, 1), (0, 0, 4, 4), 0.0),  # inverted corners: empty
        ((0.5, 0, 2.5, 1), (1.5, 0, 3.5, 1), 1 / 3),  # fractional
    ],
)
def test_box_iou_edge_cases(a, b, expected):
    iou = box_iou(np.array([a]), np.array([b]))
    assert iou.shape == (1, 1)
    assert not np.isnan(iou).any()
    assert iou[0, 0] == pytest.approx(expected, abs=1e-12)
    assert box_iou(np.array([b]), np.array([a]))[0, 0] == pytest.approx(expected, abs=1e-12)


def test_box_iou_matches_pixel_counting():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 20, size=(13, 4))
    b = rng.integers(0, 20, size=(9, 4))
    iou = box_iou(a, b)
    assert iou.shape == (13, 9)
    expected = np.array([[pixel_iou(p, q) for q in b] for p in a])
    np.testing.assert_allclose(iou, expected, atol=1e-12)
    assert (expected > 0).any()  # the random boxes do overlap somewhere


@pytest.mark.parametrize("bad", [np.zeros(4), np.zeros((2, 3)), np.array([[0, 0, np.nan, 1]])])
def test_box_iou_rejects_malformed(bad):
    with pytest.raises(InputError):
        box_iou(bad, np.zeros((1, 4)))
