"""The `protocol=` rules (convis_jax.evaluation.protocols) of the metrics against their references.

Two kinds of checks:

* small hand-worked cases, one per rule of each protocol, whose expected
  answer is derived in the test from the reference's definition, so that a
  change of rule fails a test;
* re-statements of the reference code's logic (wsolevaluation's
  `BoxEvaluator` on OpenCV, the ConVis authors' `wsol_evaluation.py` on
  scikit-image, TorchRay's `PointingGame.evaluate` on torch, RISE's
  `CausalMetric` and `gkern`) run against our implementation on synthetic
  maps: smooth, box-shaped, 16-pixel cells, few levels, constant, rings and
  diagonal touches. Hits must agree exactly, threshold by threshold.
"""

import os

import cv2  # the wsol extra, in the test extra too: the references need it
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import measure as skimage_measure

from convis_jax import evaluation
from convis_jax.core.windows import map_to_image
from convis_jax.errors import InputError
from convis_jax.evaluation import boxes as box_rules
from convis_jax.evaluation import localisation, perturbation, pointing

THRESHOLDS = np.arange(0, 1, 0.01)  # both reference scripts' grid


def box_map(shape, box, inside=1.0, outside=0.0):
    """A map that is `inside` on the pixels x0 <= x < x1, y0 <= y < y1."""
    m = np.full(shape, outside, dtype=np.float64)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = inside
    return m


def hits_at(saliency, gt, t, protocol, **kwargs):
    """Hit (bool) at the single binarisation threshold t."""
    return bool(localisation.localisation_hits(saliency, np.array([gt]), protocol=protocol,
                                          thresholds=[t], **kwargs)[0, 0])


# ---------------------------------------------------------------------------
# Re-statements of the references


def wsolevaluation_reference(maps, gts, thresholds, iou_percent, multi_contour):
    """Choe et al.'s BoxEvaluator.accumulate / compute, restated on OpenCV.

    Per map: scoremap_image = uint8(map * 255) [H, W, 1]; at each threshold
    cv2.threshold(thresh=int(t * max), THRESH_BINARY), findContours(RETR_TREE,
    CHAIN_APPROX_SIMPLE); no contour -> [[0, 0, 0, 0]]; else the contour of
    largest contourArea (Python max: the first) or all of them; each box is
    boundingRect (x, y, x + w, y + h) with x1 <= W - 1, y1 <= H - 1. IoU with
    +1 on both ends (calculate_multiple_iou), max over ground truth, max over
    the threshold's boxes, correct where >= d / 100. Returns the correct
    counts [len(iou_percent), T].
    """
    counts = np.zeros((len(iou_percent), len(thresholds)))
    for scoremap, gt in zip(maps, gts):
        height, width = scoremap.shape
        image = np.expand_dims((scoremap * 255).astype(np.uint8), 2)
        per_threshold = []
        for t in thresholds:
            _, binary = cv2.threshold(src=image, thresh=int(t * np.max(image)), maxval=255,
                                      type=cv2.THRESH_BINARY)
            contours = cv2.findContours(image=binary, mode=cv2.RETR_TREE,
                                        method=cv2.CHAIN_APPROX_SIMPLE)[0]
            if len(contours) == 0:
                per_threshold.append(np.asarray([[0, 0, 0, 0]]))
                continue
            if not multi_contour:
                contours = [max(contours, key=cv2.contourArea)]
            found = []
            for contour in contours:
                x, y, w, h = cv2.boundingRect(contour)
                found.append([x, y, min(x + w, width - 1), min(y + h, height - 1)])
            per_threshold.append(np.asarray(found))
        gt = np.asarray(gt)
        best = []
        for predicted in per_threshold:
            ious = []
            for a in predicted:
                for b in gt:
                    inter = (max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
                             * max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1))
                    denominator = ((a[2] - a[0] + 1) * (a[3] - a[1] + 1)
                                   + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter)
                    ious.append(inter / denominator if denominator > 0 else 0.0)
            best.append(max(ious))
        for i, d in enumerate(iou_percent):
            counts[i] += np.asarray(best) >= d / 100
    return counts


def convis_reference(maps, gts_xywh, thresholds):
    """The ConVis authors' wsol_evaluation.py, restated on scikit-image.

    bbox_from_map: map[map < t] = 0; map[map >= t] = 1; getLargestCC:
    label(connectivity=1), labels == argmax(bincount(labels)[1:]) + 1;
    np_bbox2 -> rmin, rmax, cmin, cmax; box (cmin, rmin, cmax - cmin,
    rmax - rmin) as (x, y, w, h) (224 maps: int((v + 0.5) * 1) = v).
    bb_intersection_over_union on (x, y, x + w, y + h); correct when > 0.5.
    Their script asserts on an empty mask; here that counts as IoU 0.
    Returns the correct counts [T].
    """

    def iou(box_a, box_b):
        xa = [box_a[0], box_a[1], box_a[0] + box_a[2], box_a[1] + box_a[3]]
        xb = [box_b[0], box_b[1], box_b[0] + box_b[2], box_b[1] + box_b[3]]
        inter = abs(max(min(xa[2], xb[2]) - max(xa[0], xb[0]), 0)
                    * max(min(xa[3], xb[3]) - max(xa[1], xb[1]), 0))
        if inter == 0:
            return 0
        area_a = abs((xa[2] - xa[0]) * (xa[3] - xa[1]))
        area_b = abs((xb[2] - xb[0]) * (xb[3] - xb[1]))
        return inter / float(area_a + area_b - inter)

    counts = np.zeros(len(thresholds))
    for j, t in enumerate(thresholds):
        for saliency, gt in zip(maps, gts_xywh):
            binary = np.copy(saliency)
            binary[binary < t] = 0
            binary[binary >= t] = 1
            labels = skimage_measure.label(binary, connectivity=1)
            if labels.max() == 0:
                continue
            largest = labels == np.argmax(np.bincount(labels.flat)[1:]) + 1
            rows = np.where(np.any(largest, axis=1))[0]
            cols = np.where(np.any(largest, axis=0))[0]
            rmin, rmax, cmin, cmax = rows[0], rows[-1], cols[0], cols[-1]
            counts[j] += iou(gt, (cmin, rmin, cmax - cmin, rmax - rmin)) > 0.5
    return counts


def torchray_reference(saliency, mask, tolerance):
    """TorchRay's PointingGame.evaluate with the point at the first maximum."""
    flat = int(np.argmax(saliency))
    point = (flat % saliency.shape[1], flat // saliency.shape[1])  # (u, v) = (x, y)
    mask = torch.from_numpy(mask)
    v, u = torch.meshgrid(
        (torch.arange(mask.shape[0], dtype=torch.float32) - point[1]) ** 2,
        (torch.arange(mask.shape[1], dtype=torch.float32) - point[0]) ** 2,
        indexing="ij",
    )
    accept = (v + u) < tolerance**2
    return float((mask & accept).view(-1).any())


# ---------------------------------------------------------------------------
# Synthetic maps


def synthetic_maps(rng, size=48):
    """Maps of every family the issue names, each in [0, 1], with their names."""
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(2):
        cy, cx = rng.uniform(8, size - 8, size=2)
        smooth = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / rng.uniform(20, 120))
        smooth += 0.2 * rng.random((size, size))
        out.append(("smooth", smooth))
        x0, y0 = rng.integers(0, size // 2, size=2)
        x1, y1 = x0 + rng.integers(4, size // 2, size=2)
        out.append(("box", box_map((size, size), (x0, y0, x1, y1), inside=1.0,
                                   outside=rng.uniform(0, 0.6))))
        out.append(("cells", np.kron(rng.random((size // 16, size // 16)), np.ones((16, 16)))))
        levels = rng.integers(0, 4, size=(size // 4, size // 4)) / 3
        out.append(("levels", levels.repeat(4, 0).repeat(4, 1)))
        radius = np.hypot(yy - rng.uniform(16, 32), xx - rng.uniform(16, 32))
        out.append(("ring", ((radius > 6) & (radius < 6 + rng.integers(1, 5))).astype(float)
                    * rng.uniform(0.5, 1.0) + 0.1 * rng.random((size, size))))
        diagonal = np.zeros((size, size))
        for k in range(0, size - 6, 6):
            diagonal[k:k + 3, k:k + 3] = 1.0  # squares that touch only at corners
            diagonal[k + 3:k + 6, k + 3:k + 6] = 0.7
        out.append(("diagonal", diagonal))
        checker = ((yy // 2 + xx // 2) % 2).astype(float)  # diagonal touches everywhere
        out.append(("checker", checker * rng.uniform(0.3, 1.0)))
    out.append(("constant zero", np.zeros((size, size))))
    out.append(("constant half", np.full((size, size), 0.5)))
    out.append(("constant one", np.ones((size, size))))
    named = []
    for name, m in out:
        m = np.asarray(m, dtype=np.float64)
        if m.max() > 1:
            m = m / m.max()
        named.append((name, m))
    return named


def random_boxes(rng, count, size=48):
    """Integer boxes (x0, y0, x1, y1) with x0 <= x1, y0 <= y1, inside the map."""
    out = []
    for _ in range(count):
        xs = np.sort(rng.integers(0, size, size=2))
        ys = np.sort(rng.integers(0, size, size=2))
        out.append([xs[0], ys[0], xs[1], ys[1]])
    return np.array(out, dtype=np.int64)


def near_boxes(saliency, rng, t):
    """A box near the largest component at threshold t, so that hits occur."""
    labels = skimage_measure.label(saliency >= t, connectivity=2)
    if labels.max() == 0:
        return random_boxes(rng, 1, saliency.shape[0])
    largest = labels == np.argmax(np.bincount(labels.flat)[1:]) + 1
    ys, xs = np.nonzero(largest)
    box = np.array([xs.min(), ys.min(), xs.max(), ys.max()]) + rng.integers(-1, 2, size=4)
    box = np.clip(box, 0, saliency.shape[0] - 1)
    return np.array([[min(box[0], box[2]), min(box[1], box[3]),
                      max(box[0], box[2]), max(box[1], box[3])]])


@pytest.fixture(scope="module")
def synthetic():
    rng = np.random.default_rng(21)
    maps, gts = [], []
    for name, m in synthetic_maps(rng):
        maps.append(m)
        if rng.random() < 0.5:
            gts.append(near_boxes(m, rng, rng.choice([0.2, 0.5, 0.8])))
        else:
            gts.append(np.concatenate([random_boxes(rng, 1), near_boxes(m, rng, 0.5)]))
    return maps, gts


# ---------------------------------------------------------------------------
# wsolevaluation: exact agreement with BoxEvaluator


def test_wsolevaluation_max_box_acc_equals_box_evaluator(synthetic):
    maps, gts = synthetic
    expected = wsolevaluation_reference(maps, gts, THRESHOLDS, [50], multi_contour=False)[0]
    result = localisation.max_box_acc(maps, gts, protocol="wsolevaluation")
    assert result.protocol == "wsolevaluation"
    np.testing.assert_array_equal(result.curve, expected / len(maps))
    assert result.value * 100 == pytest.approx(expected.max() * 100.0 / len(maps), abs=1e-12)
    assert 0 < result.value < 1  # the maps exercise hits and misses


def test_wsolevaluation_max_box_acc_v2_equals_box_evaluator(synthetic):
    maps, gts = synthetic
    expected = wsolevaluation_reference(maps, gts, THRESHOLDS, [30, 50, 70], multi_contour=True)
    result = localisation.max_box_acc_v2(maps, gts)
    assert result.protocol == "wsolevaluation"
    for row, per_iou in zip(expected, result.per_iou):
        np.testing.assert_array_equal(per_iou.curve, row / len(maps))
        assert per_iou.protocol == "wsolevaluation"
    assert result.value == pytest.approx(np.mean(expected.max(axis=1)) / len(maps), abs=1e-12)


def test_wsolevaluation_hand_worked_rules():
    # 1. uint8 first: 0.003 * 255 = 0.77 -> 0, so at t = 0 (cut int(0 * 255) = 0)
    #    the background drops out and only the box is left: a hit. Under
    #    "convis", t = 0 keeps every pixel (>= 0): the whole image, a miss.
    m = box_map((32, 32), (8, 8, 20, 20), outside=0.003)
    assert hits_at(m, (8, 8, 19, 19), 0.0, "wsolevaluation")
    assert not hits_at(m, (8, 8, 20, 20), 0.0, "convis")

    # 2. Thresholds relative to the maximum: box 0.5 (uint8 127), background
    #    0.2 (uint8 51). t = 0.6 cuts at int(0.6 * 127) = 76: the box stays, a
    #    hit; "convis" keeps {m >= 0.6}, nothing: a miss.
    m = box_map((32, 32), (8, 8, 20, 20), inside=0.5, outside=0.2)
    assert hits_at(m, (8, 8, 19, 19), 0.6, "wsolevaluation")
    assert not hits_at(m, (8, 8, 20, 20), 0.6, "convis")
    #    Strictly above the cut: t = 0.405 cuts at int(0.405 * 127) = 51, the
    #    background's own value, so the background drops out (51 > 51 is false):
    #    a hit; t = 0.40 cuts at 50 and keeps it (the whole image): a miss.
    assert hits_at(m, (8, 8, 19, 19), 0.405, "wsolevaluation")
    assert not hits_at(m, (8, 8, 19, 19), 0.40, "wsolevaluation")

    #    The grid's doubles matter: box uint8 100, background 57. np.arange's
    #    0.5700000000000001 cuts at int(57.00000000000001) = 57 (background out:
    #    a hit); the decimal 0.57 would cut at int(56.99999999999999) = 56 (a miss).
    m = box_map((32, 32), (8, 8, 20, 20), inside=100.5 / 255, outside=57.5 / 255)
    assert localisation.CAM_THRESHOLDS[57] == THRESHOLDS[57] > 0.57
    assert hits_at(m, (8, 8, 19, 19), localisation.CAM_THRESHOLDS[57], "wsolevaluation")
    assert not hits_at(m, (8, 8, 19, 19), 0.57, "wsolevaluation")

    # 3. 8-connected contours: two 3 x 3 squares touching at a corner are one
    #    contour, bounding rect (0, 0, 6, 6) -> clipped to (0, 0, 5, 5) on a
    #    6 x 6 map: IoU 1 with the inclusive box (0, 0, 5, 5). "convis" sees two
    #    4-connected squares; the first, (0, 0, 2, 2) inclusive, has IoU
    #    4 / 36 with the exclusive box (0, 0, 6, 6).
    m = np.zeros((6, 6))
    m[0:3, 0:3] = 1.0
    m[3:6, 3:6] = 1.0
    assert hits_at(m, (0, 0, 5, 5), 0.5, "wsolevaluation")
    assert not hits_at(m, (0, 0, 6, 6), 0.5, "convis")

    # 4. Largest by contourArea: a one-pixel-wide line of 15 pixels has area 0,
    #    a 3 x 3 blob area (3 - 1)(3 - 1) = 4, so the blob is the box:
    #    boundingRect (10, 10, 3, 3) -> (10, 10, 13, 13); against (10, 10, 12, 12)
    #    inclusive IoU = 9 / 16 >= 0.5. "convis" counts pixels: the line (15 > 9).
    m = np.zeros((20, 20))
    m[0, 0:15] = 1.0
    m[10:13, 10:13] = 1.0
    assert hits_at(m, (10, 10, 12, 12), 0.5, "wsolevaluation")
    assert not hits_at(m, (10, 10, 13, 13), 0.5, "convis")

    # 5. Inclusive IoU, clipping to W - 1 and >=: a full 10 x 10 map gives the
    #    rect (0, 0, 10, 10) -> (0, 0, 9, 9), 100 pixels inclusive; the box
    #    (0, 0, 4, 9) covers 5 x 10 = 50 of them: IoU exactly 0.5, a hit.
    m = np.ones((10, 10))
    assert hits_at(m, (0, 0, 4, 9), 0.5, "wsolevaluation")
    assert not hits_at(m, (0, 0, 4, 8), 0.5, "wsolevaluation")  # 45 / 100

    # 6. No contour gives the box (0, 0, 0, 0), one inclusive pixel: IoU 1 with
    #    a ground-truth box (0, 0, 0, 0). An all-zero map has no contour at any t.
    assert hits_at(np.zeros((8, 8)), (0, 0, 0, 0), 0.5, "wsolevaluation")

    # 7. V2's hole contours: the inverted box map has an outer contour (the
    #    whole image) and a hole contour along the foreground pixels around the
    #    hole, x and y from 7 to 20: rect (7, 7, 14, 14) -> (7, 7, 21, 21),
    #    225 pixels; the hole (8, 8, 19, 19) inclusive has 144: IoU 0.64.
    inverted = 1.0 - box_map((32, 32), (8, 8, 20, 20))
    v2 = localisation.localisation_hits(inverted, np.array([[8, 8, 19, 19]]), protocol="wsolevaluation",
                                   thresholds=[0.5], iou_thresholds=(0.3, 0.5, 0.7),
                                   all_components=True)
    np.testing.assert_array_equal(v2[:, 0], [144 / 225 >= 0.3, 144 / 225 >= 0.5, 144 / 225 >= 0.7])
    assert not hits_at(inverted, (8, 8, 19, 19), 0.5, "wsolevaluation")  # V1: the outer contour


def test_wsolevaluation_boxes_read_as_box_evaluator_reads_them():
    # resize_bbox: int(v * 224 / W) for x, int(v * 224 / H) for y, on the
    # metadata's integer numbers. A 500 x 335 (W x H) photo, box (60, 27, 385, 331):
    # 60 * 224 / 500 = 26.88 -> 26; 27 * 224 / 335 = 18.05 -> 18;
    # 385 * 224 / 500 = 172.48 -> 172; 331 * 224 / 335 = 221.3 -> 221.
    got = box_rules.wsolevaluation_boxes(np.array([[60, 27, 385, 331]]), (335, 500))
    np.testing.assert_array_equal(got, [[26, 18, 172, 221]])
    # Fractional numbers are truncated to the metadata's integers first.
    got = box_rules.wsolevaluation_boxes(np.array([[60.9, 27.2, 385.7, 331.0]]), (335, 500))
    np.testing.assert_array_equal(got, [[26, 18, 172, 221]])
    with pytest.raises(InputError, match="non-negative"):
        box_rules.wsolevaluation_boxes(np.array([[-1, 0, 4, 4]]), (10, 10))
    with pytest.raises(InputError, match="x0 <= x1"):
        localisation.max_box_acc([np.ones((8, 8))], np.array([[4, 0, 2, 4]]), protocol="wsolevaluation")


def test_missing_opencv_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_cv2(name, *args, **kwargs):
        if name == "cv2":
            raise ImportError("No module named 'cv2'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cv2)
    with pytest.raises(ImportError, match=r"convis_jax\[wsol\]"):
        localisation.max_box_acc([np.ones((8, 8))], np.array([[0, 0, 4, 4]]), protocol="wsolevaluation")
    # The default protocol needs no OpenCV.
    assert localisation.max_box_acc([np.ones((8, 8))], np.array([[0, 0, 8, 8]])).value == 1.0


# ---------------------------------------------------------------------------
# convis: exact agreement with the authors' wsol_evaluation.py


def test_convis_max_box_acc_equals_the_authors_script(synthetic):
    maps, gts = synthetic
    # Their ground truth is one (x, y, w, h) box per image; ours (x, y, x + w, y + h).
    first = [g[:1] for g in gts]
    xywh = [(g[0, 0], g[0, 1], g[0, 2] - g[0, 0], g[0, 3] - g[0, 1]) for g in first]
    expected = convis_reference(maps, xywh, THRESHOLDS)
    result = localisation.max_box_acc(maps, first)
    assert result.protocol == "convis"
    np.testing.assert_array_equal(result.curve, expected / len(maps))
    assert 0 < result.value < 1


def test_convis_hand_worked_rules():
    # 1. {map >= t}: a box of value 0.5 is kept at t = 0.5 (a "> t" rule drops it).
    #    Predicted (8, 8, 19, 19) against (8, 8, 20, 20): IoU 121 / 144 > 0.5.
    m = box_map((32, 32), (8, 8, 20, 20), inside=0.5)
    assert hits_at(m, (8, 8, 20, 20), 0.5, "convis")
    assert not hits_at(m, (8, 8, 20, 20), 0.51, "convis")  # nothing left

    # 2. The box ends at the last row and column: a 10 x 10 blob gives
    #    (0, 0, 9, 9), area 81. Against (0, 0, 9, 18), area 162: IoU = 81 / 162
    #    = 0.5 exactly, a miss (> 0.5 needed); against (0, 0, 10, 10): 0.81.
    m = box_map((32, 32), (0, 0, 10, 10))
    assert not hits_at(m, (0, 0, 9, 18), 0.5, "convis")
    assert hits_at(m, (0, 0, 10, 10), 0.5, "convis")

    # 3. A one-pixel-wide component has width cmax - cmin = 0: IoU 0 even
    #    against its own pixels.
    m = np.zeros((16, 16))
    m[4, 2:12] = 1.0
    assert not hits_at(m, (2, 4, 12, 5), 0.5, "convis")

    # 4. Largest by pixel count, first in raster order among equals: two
    #    4 x 4 blobs, the one starting higher wins even though it starts further right.
    m = np.zeros((20, 20))
    m[1:5, 12:16] = 1.0
    m[10:14, 0:4] = 1.0
    assert hits_at(m, (12, 1, 15, 4), 0.5, "convis")
    assert not hits_at(m, (0, 10, 3, 13), 0.5, "convis")

    # 5. An empty mask predicts nothing: a miss (their script would assert).
    assert not hits_at(np.full((8, 8), 0.2), (0, 0, 8, 8), 0.5, "convis")


def test_convis_square_boxes_follow_correct_bbox():
    # correct_bbox on a 300 x 200 (W x H) photo: crop_x = 100, shift 50;
    # side 200, ratio 224 / 200 = 1.12.
    # Box (x, y, w, h) = (30, 20, 100, 60): x = 30 - 50 = -20 -> w = 100 - 20 = 80,
    # x = 0; w = min(200 - 0, 80) = 80; y = 20, h = 60. Scaled and truncated:
    # (0, int(22.4) = 22, int(89.6) = 89, int(67.2) = 67) -> (0, 22, 89, 89).
    photo_box = np.array([[30, 20, 130, 80]])
    np.testing.assert_array_equal(box_rules.convis_square_boxes(photo_box, (200, 300)),
                                  [[0, 22, 89, 89]])
    # A box wholly in the cut-away strip: w = 40 + (10 - 50) = 0 -> empty.
    np.testing.assert_array_equal(box_rules.convis_square_boxes(np.array([[10, 0, 50, 10]]),
                                                                (200, 300))[:, 2], [0])


# ---------------------------------------------------------------------------
# Pointing game: TorchRay


def test_torchray_pointing_equals_torchray(synthetic):
    maps, gts = synthetic
    rng = np.random.default_rng(5)
    for tolerance in (0, 1, 3, 15):
        masks = []
        for m, g in zip(maps, gts):
            mask = np.zeros(m.shape, dtype=bool)
            x0, y0, x1, y1 = g[0]
            mask[y0:y1, x0:x1] = True
            if rng.random() < 0.3:
                mask[:] = False
                mask[rng.integers(0, m.shape[0]), rng.integers(0, m.shape[1])] = True
            masks.append(mask)
        result = pointing.pointing_game(maps, masks, tolerance=tolerance)
        assert result.protocol == "torchray"
        expected = [torchray_reference(m, k, tolerance) for m, k in zip(maps, masks)]
        np.testing.assert_array_equal(result.hits, expected)


def test_torchray_hand_worked_rules():
    # 1. The first maximum in raster order: two tied peaks, (2, 1) then (7, 8)
    #    (x, y); the region is around the second only: TorchRay misses,
    #    "expected" scores 1/2.
    m = np.zeros((10, 10))
    m[1, 2] = m[8, 7] = 1.0
    region = np.array([[7, 8, 8, 9]])
    assert pointing.pointing_game([m], region, tolerance=0.5).value == 0.0
    assert pointing.pointing_game([m], region, tolerance=0.5, protocol="expected").value == 0.5
    # 2. Squared distance < tolerance**2: the peak exactly 15 pixels from the
    #    region (15**2 = 225, not < 225) misses; "expected" (<=) hits.
    m = np.zeros((40, 40))
    m[5, 5] = 1.0
    region = np.array([[20, 5, 21, 6]])  # pixel (20, 5): distance 15
    assert pointing.pointing_game([m], region, tolerance=15).value == 0.0
    assert pointing.pointing_game([m], region, tolerance=16).value == 1.0
    assert pointing.pointing_game([m], region, tolerance=15, protocol="expected").value == 1.0
    # 3. Tolerance 0 never hits, even on the region itself (d^2 = 0 is not < 0).
    assert pointing.pointing_game([m], np.array([[5, 5, 6, 6]]), tolerance=0).value == 0.0
    with pytest.raises(InputError, match="protocol"):
        pointing.pointing_game([m], region, protocol="zhang")


# ---------------------------------------------------------------------------
# Deletion and insertion: RISE


def rise_reference_scores(image, saliency, score_fn, step, finish):
    """CausalMetric.single_run: n_steps = ceil(HW / step), salient_order =
    flip(argsort(explanation)); after scoring step i, pixels
    salient_order[step * i: step * (i + 1)] take the substrate's values."""
    h, w, c = image.shape
    n = h * w
    n_steps = (n + step - 1) // step
    start = image.copy().reshape(n, c)
    finish = np.broadcast_to(finish, image.shape).reshape(n, c)
    order = np.flip(np.argsort(saliency.reshape(-1, n), axis=1), axis=-1)[0]
    scores = np.empty(n_steps + 1)
    for i in range(n_steps + 1):
        scores[i] = score_fn(start.reshape(1, h, w, c))[0]
        if i < n_steps:
            coords = order[step * i: step * (i + 1)]
            start[coords] = finish[coords]
    return scores, (scores.sum() - scores[0] / 2 - scores[-1] / 2) / (scores.shape[0] - 1)


def test_rise_curves_equal_causal_metric():
    rng = np.random.default_rng(8)
    image = rng.normal(size=(7, 9, 3)).astype(np.float32)  # a normalised image
    weights = rng.random((7, 9, 3))

    def score(batch):
        return (batch * weights).sum(axis=(1, 2, 3))

    for saliency in (rng.random((7, 9)), np.kron(rng.integers(0, 3, (7, 3)), np.ones((1, 3)))):
        for step in (1, 10, 63, 100):
            deletion = perturbation.deletion_auc(image, saliency, score, protocol="rise",
                                            pixels_per_step=step, batch_size=4)
            scores, auc = rise_reference_scores(image, saliency, score, step, 0.0)
            np.testing.assert_allclose(deletion.scores, scores, rtol=1e-12)
            assert deletion.auc == pytest.approx(auc, rel=1e-12)
            assert deletion.protocol == "rise"
            blurred = perturbation.rise_blur(image)
            insertion = perturbation.insertion_auc(image, saliency, score, protocol="rise",
                                              pixels_per_step=step)
            scores, auc = rise_reference_scores(blurred, saliency, score, step, image)
            np.testing.assert_allclose(insertion.scores, scores, rtol=1e-12)
            assert insertion.auc == pytest.approx(auc, rel=1e-12)


def test_rise_hand_worked_rules():
    # 25 pixels at 10 per step: ceil(25 / 10) = 3 steps, the last one 5 pixels;
    # RISE's x axis is step / 3. Score = number of original (value 1) pixels.
    image = np.ones((5, 5, 1), np.float32)
    saliency = np.arange(25, dtype=np.float64).reshape(5, 5)  # no ties: decreasing order

    def count(batch):
        return batch.sum(axis=(1, 2, 3))

    result = perturbation.deletion_auc(image, saliency, count, protocol="rise", pixels_per_step=10)
    np.testing.assert_array_equal(result.scores, [25, 15, 5, 0])
    np.testing.assert_allclose(result.fractions, [0, 1 / 3, 2 / 3, 1])
    # RISE's auc: (sum - first / 2 - last / 2) / steps = (45 - 12.5 - 0) / 3.
    assert result.auc == pytest.approx(32.5 / 3)
    # The most salient pixels go first: after one step the last 10 in raster
    # order (values 24..15) are gone.
    seen = []
    perturbation.deletion_auc(image, saliency, lambda b: seen.append(b.copy()) or count(b),
                         protocol="rise", pixels_per_step=10)
    np.testing.assert_array_equal(seen[0][1, ..., 0].reshape(-1), (np.arange(25) < 15))
    # The deletion substrate is 0 in the image's own space (RISE zeroes the
    # normalised tensor); the uniform protocol keeps its own steps.
    uniform = perturbation.deletion_auc(image, saliency, count, steps=5)
    assert uniform.scores.tolist() == [25, 20, 15, 10, 5, 0]
    with pytest.raises(InputError, match="pixels_per_step"):
        perturbation.deletion_auc(image, saliency, count, pixels_per_step=10)
    with pytest.raises(InputError, match="steps"):
        perturbation.deletion_auc(image, saliency, count, protocol="rise", steps=10)


def test_rise_blur_equals_gkern_conv2d():
    from scipy.ndimage import gaussian_filter

    # gkern(11, 5): gaussian_filter of an 11 x 11 impulse, one kernel per
    # channel on the diagonal of a [3, 3, 11, 11] weight; conv2d with padding 5.
    impulse = np.zeros((11, 11))
    impulse[5, 5] = 1
    k = gaussian_filter(impulse, 5)
    kern = np.zeros((3, 3, 11, 11))
    for c in range(3):
        kern[c, c] = k
    kern = torch.from_numpy(kern.astype("float32"))
    rng = np.random.default_rng(2)
    image = rng.normal(size=(20, 17, 3)).astype(np.float32)
    tensor = torch.from_numpy(image.transpose(2, 0, 1)[None].copy())
    expected = torch.nn.functional.conv2d(tensor, kern, padding=11 // 2)[0].numpy()
    expected = expected.transpose(1, 2, 0)
    np.testing.assert_allclose(perturbation.rise_blur(image), expected, atol=1e-5)


# ---------------------------------------------------------------------------
# The export, read the way wsolevaluation reads it


def test_export_of_mixed_sizes_stacks_and_scores_as_box_evaluator(tmp_path):
    from torch.utils.data import default_collate

    rng = np.random.default_rng(11)
    sizes = [(120, 90), (75, 131), (224, 224), (50, 300)]
    ids = [f"00{k}.Class/img_{k}.jpg" for k in range(len(sizes))]
    # ConVis-like maps on the square (16-pixel cells), put back on their photos.
    on_photo = [map_to_image(np.kron(rng.random((14, 14)), np.ones((16, 16))), s) for s in sizes]
    photo_boxes = [np.array([[w // 4, h // 4, 3 * w // 4, 3 * h // 4]]) for h, w in sizes]
    written = evaluation.export_wsolevaluation(tmp_path, ids, on_photo)
    assert [p.name for p in written] == [f"img_{k}.jpg.npy" for k in range(len(sizes))]

    # CamDataset: np.load(os.path.join(scoremap_path, image_id + '.npy'));
    # the DataLoader's default collate stacks the batch (maps of mixed sizes
    # would fail here), t2n makes float64.
    loaded = [np.load(os.path.join(tmp_path, i + ".npy")) for i in ids]
    batch = default_collate([torch.from_numpy(a) for a in loaded])
    cams = batch.detach().cpu().numpy().astype(np.float64)
    assert cams.shape == (len(sizes), 224, 224)
    for cam, photo in zip(cams, on_photo):
        assert cam.max() == 1.0 and cam.min() == 0.0
        # torchvision's Resize((224, 224)) on a PIL image is Pillow's bilinear
        # resize; then normalize_scoremap's min-max.
        resized = np.asarray(Image.fromarray(photo.astype(np.float32)).resize((224, 224),
                                                                              Image.BILINEAR),
                             dtype=np.float64)
        resized = (resized - resized.min()) / (resized.max() - resized.min())
        np.testing.assert_array_equal(cam, resized.astype(np.float32))

    # resize_bbox to 224 (image sizes are (w, h) in its metadata), then BoxEvaluator.
    gts = [box_rules.wsolevaluation_boxes(b, s) for b, s in zip(photo_boxes, sizes)]
    expected = wsolevaluation_reference(list(cams), gts, THRESHOLDS, [50], multi_contour=False)[0]
    ours = localisation.max_box_acc(list(cams), gts, protocol="wsolevaluation")
    np.testing.assert_array_equal(ours.curve, expected / len(sizes))


def test_export_of_a_constant_map_is_zeros(tmp_path):
    (path,) = evaluation.export_wsolevaluation(tmp_path, ["a/b.png"], [np.full((30, 40), 0.3)])
    saved = np.load(path)
    assert saved.shape == (224, 224) and saved.dtype == np.float32 and not saved.any()
