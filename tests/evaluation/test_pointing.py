"""Tests of convis_jax.evaluation.pointing against hand-made cases and brute-force distances."""

import numpy as np
import pytest

from convis_jax.errors import InputError
from convis_jax.evaluation import pointing


def test_pointing_game_perfect_and_inverted():
    yy, xx = np.mgrid[:100, :100]
    dist = np.hypot(yy - 49.5, xx - 49.5)
    perfect = 1.0 - dist / dist.max()
    inverted = 1.0 - perfect  # maximal at the four corners, > 15 px from the box
    gt = np.array([[40, 40, 60, 60]])
    assert pointing.pointing_game([perfect], gt).value == 1.0
    assert pointing.pointing_game([inverted], gt).value == 0.0
    result = pointing.pointing_game([perfect, inverted], np.array([[40, 40, 60, 60]] * 2))
    np.testing.assert_array_equal(result.hits, [1.0, 0.0])


def test_pointing_game_tolerance_matches_brute_force_distance():
    rng = np.random.default_rng(6)
    for tolerance in (0, 1, 1.5, 3, 7.2, 15):
        for _ in range(8):
            h, w = rng.integers(5, 30, size=2)
            mask = np.zeros((h, w), dtype=bool)
            mask[rng.integers(0, h, 3), rng.integers(0, w, 3)] = True
            saliency = rng.random((h, w))
            saliency[rng.integers(0, h), rng.integers(0, w)] = 2.0  # unique maximum
            py, px = np.unravel_index(np.argmax(saliency), saliency.shape)
            my, mx = np.nonzero(mask)
            squared = np.min((my - py) ** 2 + (mx - px) ** 2)
            # TorchRay: squared distance < tolerance**2; "expected": distance <= tolerance.
            torchray = pointing.pointing_game([saliency], [mask], tolerance=tolerance)
            assert torchray.value == float(squared < tolerance**2), (tolerance, h, w)
            expected = pointing.pointing_game([saliency], [mask], tolerance=tolerance,
                                             protocol="expected")
            assert expected.value == float(np.sqrt(squared) <= tolerance), (tolerance, h, w)
            assert (torchray.protocol, expected.protocol) == ("torchray", "expected")


def test_pointing_game_ties_score_the_hitting_fraction():
    rng = np.random.default_rng(7)
    for tolerance in (0, 2.5, 6):
        saliency = rng.integers(0, 3, size=(20, 25)).astype(float)  # many tied maxima
        mask = np.zeros((20, 25), dtype=bool)
        mask[5:9, 11:14] = True
        ys, xs = np.nonzero(saliency == saliency.max())
        my, mx = np.nonzero(mask)
        near = [np.min(np.hypot(my - y, mx - x)) <= tolerance for y, x in zip(ys, xs)]
        got = pointing.pointing_game([saliency], [mask], tolerance=tolerance, protocol="expected")
        assert got.value == pytest.approx(np.mean(near))
    # A constant map scores the region's share of the image (chance level).
    constant = pointing.pointing_game([np.zeros((10, 10))], np.array([[0, 0, 5, 4]]), tolerance=0,
                                     protocol="expected")
    assert constant.value == 0.2


def test_pointing_game_boxes_equal_their_mask():
    rng = np.random.default_rng(8)
    saliency = rng.random((30, 40))
    boxes = np.array([[3, 4, 10, 9], [20, 15, 33, 28]])
    mask = np.zeros((30, 40), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = True
    for tolerance in (0, 4, 15):
        a = pointing.pointing_game([saliency], [boxes], tolerance=tolerance).value
        b = pointing.pointing_game([saliency], [mask], tolerance=tolerance).value
        assert a == b


def test_pointing_game_rejects_bad_input():
    with pytest.raises(InputError, match="tolerance"):
        pointing.pointing_game([np.zeros((4, 4))], np.array([[0, 0, 1, 1]]), tolerance=-1)
    with pytest.raises(InputError, match="shape"):
        pointing.pointing_game([np.zeros((4, 4))], [np.zeros((3, 4), dtype=bool)])
