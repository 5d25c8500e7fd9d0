"""Tests of convis_jax.evaluation.localisation against hand-made cases and plain loops."""

import functools

import numpy as np
import pytest

from convis_jax.errors import InputError
from convis_jax.evaluation import localisation
from tests.evaluation.reference import boxes_of_labels, flood_fill_labels, pixel_iou


def reference_hits(saliency, gt, thresholds, ious, all_components):
    """Per-threshold hits of the "convis" protocol from flood fill, one threshold at a time.

    The ConVis authors' rules: mask {saliency >= t}, 4-connected components,
    the largest by pixel count (or all), its box from the first to the last
    row and column (x1 = last column, y1 = last row), IoU by counting pixels
    on a doubled grid (the box's continuous area), hit when IoU > d.
    """
    out = np.zeros((len(ious), len(thresholds)), dtype=bool)
    for j, t in enumerate(thresholds):
        labels = flood_fill_labels(saliency >= t)
        boxes = boxes_of_labels(labels)
        if len(boxes) == 0:
            continue
        if not all_components:
            areas = [np.count_nonzero(labels == k + 1) for k in range(len(boxes))]
            boxes = boxes[[int(np.argmax(areas))]]
        boxes = boxes - np.array([0, 0, 1, 1])  # last row / column, not one past it
        best = max(pixel_iou(p, g) for p in boxes for g in gt)
        for i, d in enumerate(ious):
            out[i, j] = best > d
    return out


def box_map(shape, box, inside=1.0, outside=0.0):
    m = np.full(shape, outside)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = inside
    return m


GT = (8, 8, 20, 20)  # 144 of the 32 x 32 = 1,024 pixels


def test_perfect_map_scores_one_and_inverted_zero():
    perfect = box_map((32, 32), GT)
    inverted = 1.0 - perfect
    gt = np.array([GT])
    for fn in (localisation.max_box_acc, functools.partial(localisation.max_box_acc_v2, protocol="convis")):
        assert fn([perfect], gt).value == 1.0
        # The inverted map's only component is the frame around the box:
        # its bounding box is the whole image, IoU 121 / 1024 < 0.3. (Under
        # wsolevaluation's V2 the hole's own contour would hit.)
        assert fn([inverted], gt).value == 0.0
        assert fn(np.stack([perfect, inverted]), gt[[0, 0]]).value == 0.5


def test_max_box_acc_curve_and_best_threshold():
    # Box at 0.5, background at 0.2 ("convis": mask {map >= t}): t <= 0.2
    # keeps the whole image (miss), 0.2 < t <= 0.5 the box (hit), t > 0.5
    # nothing (miss).
    m = box_map((32, 32), GT, inside=0.5, outside=0.2)
    result = localisation.max_box_acc([m], np.array([GT]))
    thresholds = np.asarray(localisation.CAM_THRESHOLDS)
    hit = (thresholds > 0.2) & (thresholds <= 0.5)
    np.testing.assert_array_equal(result.curve, hit.astype(float))
    assert result.best_threshold == thresholds[21]
    assert result.value == 1.0
    assert result.iou_threshold == 0.5
    assert result.protocol == "convis"
    assert result.thresholds.shape == (100,)
    # The grid is the references' np.arange(0, 1, 0.01), drift included.
    np.testing.assert_array_equal(thresholds, np.arange(0, 1, 0.01))


def test_iou_exactly_at_threshold_is_a_miss_for_convis():
    # Predicted box (0, 0, 9, 9) (last row and column), area 81; ground
    # truth twice as tall: IoU exactly 0.5. The ConVis script wants IoU > 0.5.
    m = box_map((32, 32), (0, 0, 10, 10))
    gt = np.array([[0, 0, 9, 18]])
    assert localisation.max_box_acc([m], gt).value == 0.0
    v2 = localisation.max_box_acc_v2([m], gt, protocol="convis")
    assert [r.value for r in v2.per_iou] == [1.0, 0.0, 0.0]
    assert v2.value == pytest.approx(1 / 3)
    assert v2.protocol == "convis"


def test_several_ground_truth_boxes_hit_when_any_matches():
    m = box_map((32, 32), GT)
    gts = [np.array([[0, 0, 4, 4], list(GT)]), np.array([[0, 0, 4, 4]])]
    result = localisation.max_box_acc([m, m], gts)
    assert result.value == 0.5


def test_v2_uses_all_components():
    # A large blob away from the object and a small blob exactly on it: the
    # largest component misses, but one of all components hits.
    m = box_map((40, 40), (0, 20, 40, 40))
    m[2:8, 2:8] = 1.0
    gt = np.array([[2, 2, 7, 7]])  # the blob's box from first to last row and column
    assert localisation.max_box_acc([m], gt).value == 0.0
    assert localisation.max_box_acc_v2([m], gt, protocol="convis").value == 1.0


def test_localisation_hits_match_plain_loop():
    rng = np.random.default_rng(3)
    thresholds = np.round(np.arange(0, 1, 0.05), 2)
    any_hit = np.zeros(2, dtype=bool)
    for _ in range(8):
        # Values on a coarse grid so that thresholds tie with map values.
        coarse = rng.integers(0, 11, size=(4, 4)) / 10
        saliency = np.kron(coarse, np.ones((4, 4)))
        # One random box, and one near a component of the map at a random
        # threshold (jittered by a pixel or two), so that hits occur.
        xs = np.sort(rng.integers(0, 17, size=2))
        ys = np.sort(rng.integers(0, 17, size=2))
        near = boxes_of_labels(flood_fill_labels(saliency >= rng.choice(thresholds[:10])))
        near = np.clip(near[rng.integers(0, len(near))] + rng.integers(-2, 3, size=4), 0, 16)
        gt = np.array([[xs[0], ys[0], xs[1], ys[1]], near])
        for all_components, ious in ((False, (0.5,)), (True, (0.3, 0.5, 0.7))):
            got = localisation.localisation_hits(
                saliency,
                gt,
                thresholds=thresholds,
                iou_thresholds=ious,
                all_components=all_components,
            )
            expected = reference_hits(saliency, gt, thresholds, ious, all_components)
            np.testing.assert_array_equal(got, expected)
            any_hit[int(all_components)] |= got.any()
    assert any_hit.all()


def test_localisation_hits_on_a_random_smooth_map_match_plain_loop():
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:24, :24]
    saliency = np.exp(-((yy - 9) ** 2 + (xx - 14) ** 2) / 40.0) + 0.3 * rng.random((24, 24))
    saliency = (saliency - saliency.min()) / (saliency.max() - saliency.min())
    gt = np.array([[8, 3, 20, 16]])
    thresholds = localisation.CAM_THRESHOLDS[::3]
    for all_components, ious in ((False, (0.5,)), (True, (0.3, 0.5, 0.7))):
        got = localisation.localisation_hits(
            saliency, gt, thresholds=thresholds, iou_thresholds=ious, all_components=all_components
        )
        expected = reference_hits(saliency, gt, thresholds, ious, all_components)
        np.testing.assert_array_equal(got, expected)
        assert got.any() and not got.all()  # a curve with both hits and misses


def test_max_box_acc_v2_is_mean_of_per_iou_maxima():
    rng = np.random.default_rng(5)
    maps = [np.kron(rng.random((4, 4)), np.ones((5, 5))) for _ in range(8)]
    maps = [(m - m.min()) / (m.max() - m.min()) for m in maps]
    gts = [np.array([[0, 0, 10, 10]]) + 5 * rng.integers(0, 3) for _ in range(8)]
    thresholds = localisation.CAM_THRESHOLDS[::4]
    result = localisation.max_box_acc_v2(maps, gts, thresholds=thresholds, protocol="convis")
    hits = np.stack(
        [reference_hits(m, g, thresholds, (0.3, 0.5, 0.7), True) for m, g in zip(maps, gts)]
    )
    curves = hits.mean(axis=0)
    np.testing.assert_allclose([r.curve for r in result.per_iou], curves)
    assert result.value == pytest.approx(curves.max(axis=1).mean())
    for r, curve in zip(result.per_iou, curves):
        assert r.best_threshold == thresholds[int(np.argmax(curve))]


def test_max_box_acc_streams_maps_of_different_sizes():
    maps = (box_map(shape, (2, 2, 6, 6)) for shape in ((8, 8), (10, 12), (9, 7)))
    result = localisation.max_box_acc(maps, np.array([[2, 2, 6, 6], [2, 2, 6, 6], [0, 0, 1, 1]]))
    assert result.value == pytest.approx(2 / 3)
    with pytest.raises(InputError, match="found 1 maps and 2 box entries"):
        localisation.max_box_acc(iter([box_map((8, 8), (2, 2, 6, 6))]), np.zeros((2, 4)))


def test_max_box_acc_rejects_bad_input():
    good = box_map((8, 8), (0, 0, 4, 4))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        localisation.max_box_acc([good * 2], np.array([[0, 0, 4, 4]]))
    with pytest.raises(InputError, match="one ground-truth entry per map"):
        localisation.max_box_acc([good, good], np.array([[0, 0, 4, 4]]))
    with pytest.raises(InputError, match="at least one ground-truth box"):
        localisation.max_box_acc([good], [np.zeros((0, 4))])
    with pytest.raises(InputError, match="at least one map"):
        localisation.max_box_acc([], np.zeros((0, 4)))
