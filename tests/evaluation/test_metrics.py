"""Tests of convis_jax.evaluation.metrics against hand-made cases and plain loops."""

import functools
import math
import sys

import numpy as np
import pytest

from convis_jax.errors import InputError
from convis_jax.evaluation import metrics

# ---------------------------------------------------------------------------
# Independent references: plain loops over pixels.


def flood_fill_labels(mask):
    """Raster-order recursive flood fill, 4-connectivity."""
    h, w = mask.shape
    labels = np.zeros((h, w), dtype=np.int64)

    def fill(y, x, label):
        if y < 0 or y >= h or x < 0 or x >= w or not mask[y, x] or labels[y, x]:
            return
        labels[y, x] = label
        fill(y + 1, x, label)
        fill(y - 1, x, label)
        fill(y, x + 1, label)
        fill(y, x - 1, label)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * h * w + 100))
    try:
        count = 0
        for y in range(h):
            for x in range(w):
                if mask[y, x] and not labels[y, x]:
                    count += 1
                    fill(y, x, count)
    finally:
        sys.setrecursionlimit(limit)
    return labels


def boxes_of_labels(labels):
    boxes = []
    for label in range(1, labels.max() + 1):
        ys, xs = np.nonzero(labels == label)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return np.array(boxes, dtype=np.int64).reshape(-1, 4)


def pixel_iou(a, b, size=64):
    """IoU of two integer boxes by counting pixels (exclusive ends)."""
    ma = np.zeros((size, size), dtype=bool)
    mb = np.zeros((size, size), dtype=bool)
    ma[a[1] : a[3], a[0] : a[2]] = True
    mb[b[1] : b[3], b[0] : b[2]] = True
    union = np.count_nonzero(ma | mb)
    return np.count_nonzero(ma & mb) / union if union else 0.0


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
    iou = metrics.box_iou(np.array([a]), np.array([b]))
    assert iou.shape == (1, 1)
    assert not np.isnan(iou).any()
    assert iou[0, 0] == pytest.approx(expected, abs=1e-12)
    assert metrics.box_iou(np.array([b]), np.array([a]))[0, 0] == pytest.approx(expected, abs=1e-12)


def test_box_iou_matches_pixel_counting():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 20, size=(13, 4))
    b = rng.integers(0, 20, size=(9, 4))
    iou = metrics.box_iou(a, b)
    assert iou.shape == (13, 9)
    expected = np.array([[pixel_iou(p, q) for q in b] for p in a])
    np.testing.assert_allclose(iou, expected, atol=1e-12)
    assert (expected > 0).any()  # the random boxes do overlap somewhere


@pytest.mark.parametrize("bad", [np.zeros(4), np.zeros((2, 3)), np.array([[0, 0, np.nan, 1]])])
def test_box_iou_rejects_malformed(bad):
    with pytest.raises(InputError):
        metrics.box_iou(bad, np.zeros((1, 4)))


# ---------------------------------------------------------------------------
# Connected components


def spiral_mask(n):
    """A one-pixel-wide spiral: one long component that snakes inwards."""
    mask = np.zeros((n, n), dtype=bool)
    top, left, bottom, right = 0, 0, n - 1, n - 1
    while top <= bottom and left <= right:
        mask[top, left : right + 1] = True
        mask[top : bottom + 1, right] = True
        mask[bottom, left : right + 1] = True
        if top + 2 <= bottom:
            mask[top + 2 : bottom + 1, left] = True
            mask[top + 2, left : left + 2] = True
        top, left, bottom, right = top + 2, left + 2, bottom - 2, right - 2
    return mask


def test_labels_match_flood_fill_on_random_masks():
    rng = np.random.default_rng(1)
    shapes = [(1, 1), (1, 17), (17, 1), (9, 13), (24, 24), (31, 20)]
    for shape in shapes:
        for density in (0.0, 0.3, 0.5, 0.6, 0.8, 1.0):
            mask = rng.random(shape) < density
            expected = flood_fill_labels(mask)
            np.testing.assert_array_equal(metrics.label_components(mask), expected)
            np.testing.assert_array_equal(metrics.component_boxes(mask), boxes_of_labels(expected))


def test_labels_of_a_spiral_and_a_comb():
    spiral = spiral_mask(29)
    labels = metrics.label_components(spiral)
    np.testing.assert_array_equal(labels, flood_fill_labels(spiral))
    # Teeth hanging from a bar at the bottom: each tooth starts as its own
    # run, and they join only at the last row.
    comb = np.zeros((10, 21), dtype=bool)
    comb[:, ::2] = True
    comb[-1] = True
    assert metrics.label_components(comb).max() == 1
    np.testing.assert_array_equal(metrics.component_boxes(comb), [[0, 0, 21, 10]])


def test_diagonal_pixels_are_separate_components():
    mask = np.eye(4, dtype=bool)
    np.testing.assert_array_equal(metrics.label_components(mask), np.diag([1, 2, 3, 4]))


def test_largest_component_box():
    rng = np.random.default_rng(2)
    for _ in range(30):
        mask = rng.random((15, 18)) < 0.55
        labels = flood_fill_labels(mask)
        areas = np.bincount(labels.ravel())[1:]
        expected = boxes_of_labels(labels)[int(np.argmax(areas))]  # first of ties
        np.testing.assert_array_equal(metrics.largest_component_box(mask), expected)
    empty = np.zeros((5, 5), dtype=bool)
    np.testing.assert_array_equal(metrics.largest_component_box(empty), [0, 0, 0, 0])
    assert metrics.component_boxes(empty).shape == (0, 4)
    # Two components of equal size: the first in raster order wins.
    tie = np.zeros((6, 6), dtype=bool)
    tie[4:6, 0:2] = True
    tie[0:2, 4:6] = True
    np.testing.assert_array_equal(metrics.largest_component_box(tie), [4, 0, 6, 2])


def test_components_reject_non_boolean_masks():
    with pytest.raises(InputError, match="boolean"):
        metrics.label_components(np.ones((3, 3)))
    with pytest.raises(InputError, match="2-D"):
        metrics.component_boxes(np.ones((2, 3, 3), dtype=bool))


# ---------------------------------------------------------------------------
# MaxBoxAcc and MaxBoxAccV2


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
    for fn in (metrics.max_box_acc, functools.partial(metrics.max_box_acc_v2, protocol="convis")):
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
    result = metrics.max_box_acc([m], np.array([GT]))
    thresholds = np.asarray(metrics.CAM_THRESHOLDS)
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
    assert metrics.max_box_acc([m], gt).value == 0.0
    v2 = metrics.max_box_acc_v2([m], gt, protocol="convis")
    assert [r.value for r in v2.per_iou] == [1.0, 0.0, 0.0]
    assert v2.value == pytest.approx(1 / 3)
    assert v2.protocol == "convis"


def test_several_ground_truth_boxes_hit_when_any_matches():
    m = box_map((32, 32), GT)
    gts = [np.array([[0, 0, 4, 4], list(GT)]), np.array([[0, 0, 4, 4]])]
    result = metrics.max_box_acc([m, m], gts)
    assert result.value == 0.5


def test_v2_uses_all_components():
    # A large blob away from the object and a small blob exactly on it: the
    # largest component misses, but one of all components hits.
    m = box_map((40, 40), (0, 20, 40, 40))
    m[2:8, 2:8] = 1.0
    gt = np.array([[2, 2, 7, 7]])  # the blob's box from first to last row and column
    assert metrics.max_box_acc([m], gt).value == 0.0
    assert metrics.max_box_acc_v2([m], gt, protocol="convis").value == 1.0


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
            got = metrics.localisation_hits(
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
    thresholds = metrics.CAM_THRESHOLDS[::3]
    for all_components, ious in ((False, (0.5,)), (True, (0.3, 0.5, 0.7))):
        got = metrics.localisation_hits(
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
    thresholds = metrics.CAM_THRESHOLDS[::4]
    result = metrics.max_box_acc_v2(maps, gts, thresholds=thresholds, protocol="convis")
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
    result = metrics.max_box_acc(maps, np.array([[2, 2, 6, 6], [2, 2, 6, 6], [0, 0, 1, 1]]))
    assert result.value == pytest.approx(2 / 3)
    with pytest.raises(InputError, match="found 1 maps and 2 box entries"):
        metrics.max_box_acc(iter([box_map((8, 8), (2, 2, 6, 6))]), np.zeros((2, 4)))


def test_max_box_acc_rejects_bad_input():
    good = box_map((8, 8), (0, 0, 4, 4))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        metrics.max_box_acc([good * 2], np.array([[0, 0, 4, 4]]))
    with pytest.raises(InputError, match="one ground-truth entry per map"):
        metrics.max_box_acc([good, good], np.array([[0, 0, 4, 4]]))
    with pytest.raises(InputError, match="at least one ground-truth box"):
        metrics.max_box_acc([good], [np.zeros((0, 4))])
    with pytest.raises(InputError, match="at least one map"):
        metrics.max_box_acc([], np.zeros((0, 4)))


# ---------------------------------------------------------------------------
# Pointing game


def test_pointing_game_perfect_and_inverted():
    yy, xx = np.mgrid[:100, :100]
    dist = np.hypot(yy - 49.5, xx - 49.5)
    perfect = 1.0 - dist / dist.max()
    inverted = 1.0 - perfect  # maximal at the four corners, > 15 px from the box
    gt = np.array([[40, 40, 60, 60]])
    assert metrics.pointing_game([perfect], gt).value == 1.0
    assert metrics.pointing_game([inverted], gt).value == 0.0
    result = metrics.pointing_game([perfect, inverted], np.array([[40, 40, 60, 60]] * 2))
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
            torchray = metrics.pointing_game([saliency], [mask], tolerance=tolerance)
            assert torchray.value == float(squared < tolerance**2), (tolerance, h, w)
            expected = metrics.pointing_game([saliency], [mask], tolerance=tolerance,
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
        got = metrics.pointing_game([saliency], [mask], tolerance=tolerance, protocol="expected")
        assert got.value == pytest.approx(np.mean(near))
    # A constant map scores the region's share of the image (chance level).
    constant = metrics.pointing_game([np.zeros((10, 10))], np.array([[0, 0, 5, 4]]), tolerance=0,
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
        a = metrics.pointing_game([saliency], [boxes], tolerance=tolerance).value
        b = metrics.pointing_game([saliency], [mask], tolerance=tolerance).value
        assert a == b


def test_pointing_game_rejects_bad_input():
    with pytest.raises(InputError, match="tolerance"):
        metrics.pointing_game([np.zeros((4, 4))], np.array([[0, 0, 1, 1]]), tolerance=-1)
    with pytest.raises(InputError, match="shape"):
        metrics.pointing_game([np.zeros((4, 4))], [np.zeros((3, 4), dtype=bool)])


# ---------------------------------------------------------------------------
# Deletion and insertion


def region_mean_score(region):
    """score(batch) = mean of each image over `region` (all channels)."""

    def score(batch):
        assert batch.dtype == np.float32 and batch.ndim == 4
        return batch[:, region].mean(axis=(1, 2))

    return score


REGION = np.zeros((10, 10), dtype=bool)
REGION[2:6, 3:8] = True  # 20 of 100 pixels


@pytest.mark.parametrize("steps", [100, 10, 5])
def test_deletion_and_insertion_analytic(steps):
    image = np.ones((10, 10, 3))
    score = region_mean_score(REGION)
    good = REGION.astype(float)
    # Deleting the region first: the score falls linearly to 0 over the first
    # 20% of pixels, area 0.2 / 2. Inserting it first: area 1 - 0.1.
    deletion = metrics.deletion_auc(image, good, score, steps=steps)
    insertion = metrics.insertion_auc(image, good, score, steps=steps)
    assert deletion.auc == pytest.approx(0.1)
    assert insertion.auc == pytest.approx(0.9)
    # The inverted map touches the region only in the last 20%.
    assert metrics.deletion_auc(image, 1 - good, score, steps=steps).auc == pytest.approx(0.9)
    assert metrics.insertion_auc(image, 1 - good, score, steps=steps).auc == pytest.approx(0.1)
    np.testing.assert_allclose(deletion.fractions, np.linspace(0, 1, steps + 1))
    np.testing.assert_allclose(deletion.scores, np.clip(1 - deletion.fractions / 0.2, 0, 1))


def test_baseline_array_and_value():
    image = np.full((10, 10, 3), 2.0)
    score = region_mean_score(REGION)
    # Deleting to 0.5 instead of 0: the curve runs from 2 down to 0.5.
    result = metrics.deletion_auc(image, REGION.astype(float), score, steps=10, baseline=0.5)
    assert result.auc == pytest.approx(0.5 + 1.5 * 0.1)
    per_pixel = np.full((10, 10, 1), 0.5)
    same = metrics.deletion_auc(image, REGION.astype(float), score, steps=10, baseline=per_pixel)
    assert same.auc == pytest.approx(result.auc)
    with pytest.raises(InputError, match="baseline"):
        metrics.deletion_auc(image, REGION.astype(float), score, baseline=np.zeros((3, 3)))


def reference_curve(image, saliency, score_fn, steps, baseline, insert):
    """One perturbed image at a time, pixels ordered with a Python sort."""
    h, w, _ = image.shape
    n = h * w
    flat = saliency.reshape(-1)
    order = sorted(range(n), key=lambda i: (-flat[i], i))
    scores = []
    for k in range(steps + 1):
        count = int(round(k * n / steps))
        current = (np.full_like(image, baseline) if insert else image.copy()).reshape(n, -1)
        for i in order[:count]:
            current[i] = image.reshape(n, -1)[i] if insert else baseline
        scores.append(float(score_fn(current.reshape(1, h, w, -1).astype(np.float32))[0]))
    return np.array(scores)


def test_curves_match_plain_loop_and_do_not_depend_on_batching():
    rng = np.random.default_rng(9)
    image = rng.random((6, 7, 3))
    saliency = rng.integers(0, 4, size=(6, 7)).astype(float)  # ties: raster order
    weights = rng.random((6, 7, 3))

    def score(batch):
        return (batch * weights).sum(axis=(1, 2, 3))

    for insert, fn in ((False, metrics.deletion_auc), (True, metrics.insertion_auc)):
        expected = reference_curve(image, saliency, score, 9, 0.25, insert)
        calls = []

        def counted(batch):
            calls.append(batch.shape[0])
            return score(batch)

        for batch_size in (1, 4, 64):
            calls.clear()
            got = fn(image, saliency, counted, steps=9, baseline=0.25, batch_size=batch_size)
            np.testing.assert_allclose(got.scores, expected, rtol=1e-5)
            assert len(calls) == math.ceil(10 / batch_size)
            fractions = np.rint(np.arange(10) * 42 / 9) / 42
            expected_auc = np.sum((expected[1:] + expected[:-1]) / 2 * np.diff(fractions))
            assert got.auc == pytest.approx(expected_auc, rel=1e-5)


def test_score_fn_must_return_one_score_per_image():
    with pytest.raises(InputError, match="score_fn"):
        metrics.deletion_auc(np.ones((4, 4, 3)), np.ones((4, 4)), lambda b: b.mean(axis=(1, 2)))
    with pytest.raises(InputError, match="saliency"):
        metrics.insertion_auc(np.ones((4, 4, 3)), np.ones((4, 5)), lambda b: b.mean(axis=(1, 2, 3)))


# ---------------------------------------------------------------------------
# AUROC


def pairwise_auroc(pos, neg):
    total = 0.0
    for p in pos:
        for q in neg:
            total += 1.0 if p > q else 0.5 if p == q else 0.0
    return total / (len(pos) * len(neg))


def test_auroc_equals_pairwise_count_with_ties():
    rng = np.random.default_rng(10)
    for n_pos, n_neg, levels in ((1, 1, 2), (5, 9, 3), (40, 23, 6), (100, 80, 1000)):
        pos = rng.integers(0, levels, n_pos) + 0.3 * rng.integers(0, 2)
        neg = rng.integers(0, levels, n_neg)
        assert metrics.auroc(pos, neg) == pytest.approx(pairwise_auroc(pos, neg), abs=1e-12)


def test_auroc_extremes():
    assert metrics.auroc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert metrics.auroc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert metrics.auroc([1.0, 1.0], [1.0]) == 0.5
    with pytest.raises(InputError, match="scores_ood"):
        metrics.auroc([1.0], [])
    with pytest.raises(InputError, match="finite"):
        metrics.auroc([np.nan], [1.0])
