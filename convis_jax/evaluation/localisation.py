"""Weakly supervised localisation: MaxBoxAcc and MaxBoxAccV2 of saliency maps against boxes.

A **saliency map** is a float array [H, W] in [0, 1]; high values mean "the
concept is here" (ConVis maps are min-max normalised). Boxes follow
`convis_jax.evaluation.boxes`. Each metric takes `protocol=`, the rules of
one reference implementation (`convis_jax.evaluation.protocols`,
docs/protocols.md).
"""

import dataclasses
from typing import Iterable, Sequence

import numpy as np

from convis_jax.errors import InputError
from convis_jax.evaluation.boxes import as_boxes, maps_with_truth, per_image_boxes
from convis_jax.evaluation.protocols import (
    BOX_PROTOCOLS,
    check_protocol,
    convis_best_iou,
    wsolevaluation_best_iou,
)

# The binarisation thresholds t in {0, 0.01, ..., 0.99} (docs/method.md, section 5),
# as both reference scripts make them: np.arange(0, 1, 0.01), ten of whose
# doubles lie above the decimals (0.35000000000000003, 0.5700000000000001).
# The drift matters: wsolevaluation cuts at int(t * max), and int(0.57 * 100)
# is 56 while arange's 0.5700000000000001 gives 57.
CAM_THRESHOLDS = tuple(np.arange(0, 1, 0.01).tolist())

# IoU thresholds of MaxBoxAccV2 (Choe et al. 2020).
V2_IOU_THRESHOLDS = (0.3, 0.5, 0.7)



@dataclasses.dataclass(frozen=True)
class MaxBoxAccResult:
    """MaxBoxAcc at one IoU threshold.

    Attributes:
      value: the best hit rate over the binarisation thresholds, in [0, 1].
      best_threshold: the binarisation threshold that reaches it (the
        smallest one when several do).
      curve: float array [T], the hit rate at every threshold.
      thresholds: float array [T], the binarisation thresholds.
      iou_threshold: the IoU a predicted box must exceed ("convis") or reach
        ("wsolevaluation") to count as a hit.
      protocol: the protocol that made the hits, one of `BOX_PROTOCOLS`.
    """

    value: float
    best_threshold: float
    curve: np.ndarray
    thresholds: np.ndarray
    iou_threshold: float
    protocol: str


@dataclasses.dataclass(frozen=True)
class MaxBoxAccV2Result:
    """MaxBoxAccV2: MaxBoxAcc averaged over several IoU thresholds.

    Attributes:
      value: the mean of `per_iou[i].value`, in [0, 1].
      per_iou: one `MaxBoxAccResult` per IoU threshold, each with its own
        best binarisation threshold (Choe et al. pick it per IoU threshold).
      protocol: the protocol that made the hits, one of `BOX_PROTOCOLS`.
    """

    value: float
    per_iou: tuple[MaxBoxAccResult, ...]
    protocol: str


def localisation_hits(
    saliency: np.ndarray,
    boxes: np.ndarray,
    *,
    protocol: str = "convis",
    thresholds: Sequence[float] = CAM_THRESHOLDS,
    iou_thresholds: Sequence[float] = (0.5,),
    all_components: bool = False,
) -> np.ndarray:
    """Whether one map localises its object, at every threshold pair.

    The per-image step of MaxBoxAcc and MaxBoxAccV2; exposed so that a long
    evaluation can store it per image and resume. The image is a hit at
    (IoU threshold d, binarisation threshold t) when a predicted box matches
    a ground-truth box; with several of either, the best pair counts.

    protocol="convis", the ConVis authors' `wsol_evaluation.py`
    (`bbox_from_map`, `getLargestCC`, `np_bbox2`, `bb_intersection_over_union`):

    * mask = {saliency >= t} (their `map[map < t] = 0; map[map >= t] = 1`);
    * components are 4-connected (`skimage.measure.label(connectivity=1)`);
      the largest by pixel count is kept, the first in raster order of
      their first pixel among equals (`np.argmax` of the label counts);
    * its box is (cmin, rmin, cmax, rmax) with the *inclusive* last row and
      column, read as (x0, y0, x1, y1) by a continuous IoU: a component of
      w x h pixels gives a box of area (w - 1)(h - 1), a one-pixel-wide
      component area 0 (`np_bbox2`, then width cmax - cmin);
    * IoU is `box_iou` (areas (x1 - x0)(y1 - y0)), a hit needs IoU > d;
    * `all_components=True` (MaxBoxAccV2, "convis-style", not in their
      script) takes every 4-connected component's box.
    A threshold that leaves no pixel is a miss (their script asserts there).
    The script's rescale `int((v + 0.5) * 224 / H)` is the identity on the
    224 x 224 maps it scores; here boxes are on the map's own pixels.

    protocol="wsolevaluation", Choe et al.'s `BoxEvaluator`
    (`compute_bboxes_from_scoremaps`, `calculate_multiple_iou`):

    * the map becomes uint8 first, u = trunc(255 saliency) (values below
      1/255 become 0), and mask = {u > int(t * max(u))}: thresholds are
      relative to the map's maximum, compared strictly (`cv2.threshold`,
      THRESH_BINARY);
    * candidates are OpenCV contours (`cv2.findContours`, RETR_TREE,
      CHAIN_APPROX_SIMPLE: 8-connected outer borders *and* hole borders);
      MaxBoxAcc keeps the first contour of largest `cv2.contourArea` (the
      polygon's area: a one-pixel-wide line has area 0), MaxBoxAccV2
      (`all_components=True`, `multi_contour_eval`) keeps them all;
    * a box is `cv2.boundingRect` (x, y, w, h) read as (x, y, x + w, y + h)
      and clipped to x1 <= W - 1, y1 <= H - 1; no contour gives the box
      (0, 0, 0, 0);
    * IoU counts both ends as inclusive, area (x1 - x0 + 1)(y1 - y0 + 1), of
      ground-truth boxes given as `BoxEvaluator` holds them
      (`convis_jax.evaluation.boxes.wsolevaluation_boxes`), and a hit needs
      IoU >= d.
    This protocol needs OpenCV: `pip install 'convis_jax[wsol]'`.

    Args:
      saliency: float array [H, W], values in [0, 1].
      boxes: ground-truth boxes of this image, [K, 4] as (x0, y0, x1, y1), in
        the map's pixel coordinates, read as the protocol reads them (see
        above); K >= 1.
      protocol: "convis" or "wsolevaluation".
      thresholds: the T binarisation thresholds (both references use
        `np.arange(0, 1, 0.01)`, `CAM_THRESHOLDS`).
      iou_thresholds: the I IoU thresholds, each in [0, 1].
      all_components: every candidate box rather than the largest one.

    Returns:
      bool array [I, T].

    Raises:
      InputError: for a map that is not 2-D, finite and within [0, 1], boxes
        that are not a non-empty [K, 4] array (for "wsolevaluation": also
        non-negative with x0 <= x1, y0 <= y1, as it requires), or an unknown
        protocol; ImportError naming the extra when OpenCV is missing.
    """
    check_protocol(protocol, BOX_PROTOCOLS)
    saliency = _as_unit_map(saliency)
    gt = as_boxes(boxes, "boxes")
    if gt.shape[0] == 0:
        raise InputError("boxes: expected at least one ground-truth box, found none")
    thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    iou_thresholds = np.asarray(iou_thresholds, dtype=np.float64).reshape(-1)
    if protocol == "convis":
        best_iou = convis_best_iou(saliency, gt, thresholds, all_components)
        hits = best_iou[None, :] > iou_thresholds[:, None]
    else:
        best_iou = wsolevaluation_best_iou(saliency, gt, thresholds, all_components)
        hits = best_iou[None, :] >= iou_thresholds[:, None]
    return hits & (best_iou[None, :] >= 0)


def _as_unit_map(saliency, name: str = "saliency") -> np.ndarray:
    arr = np.asarray(saliency, dtype=np.float64)
    if arr.ndim != 2:
        raise InputError(f"{name}: expected a 2-D map [H, W], found shape {arr.shape}")
    if arr.size == 0:
        raise InputError(f"{name}: expected a non-empty map, found shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError(f"{name}: expected finite values, found NaN or inf")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > 1.0:
        raise InputError(
            f"{name}: expected values in [0, 1] (min-max normalise the map first), "
            f"found min {lo:g} and max {hi:g}"
        )
    return arr


def max_box_acc_from_hits(
    hits: np.ndarray,
    *,
    protocol: str,
    thresholds: Sequence[float] = CAM_THRESHOLDS,
    iou_threshold: float = 0.5,
) -> MaxBoxAccResult:
    """MaxBoxAcc from per-image hits (the output of `localisation_hits`).

    Args:
      hits: bool array [N, T], whether image n is a hit at threshold t; N >= 1.
      protocol: the protocol the hits were computed with (recorded).
      thresholds: the T binarisation thresholds the hits were computed at.
      iou_threshold: the IoU threshold they were computed with (recorded).

    Returns:
      `MaxBoxAccResult`: the curve is the mean of `hits` over images.

    Raises:
      InputError: when `hits` is not [N, T] with N >= 1 and T thresholds, or
        the protocol is unknown.
    """
    check_protocol(protocol, BOX_PROTOCOLS)
    hits = np.asarray(hits, dtype=bool)
    thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if hits.ndim != 2 or hits.shape[0] == 0 or hits.shape[1] != thresholds.size:
        raise InputError(
            f"hits: expected shape [N >= 1, {thresholds.size}] (images x thresholds), "
            f"found {hits.shape}"
        )
    curve = hits.mean(axis=0)
    best = int(np.argmax(curve))
    return MaxBoxAccResult(
        value=float(curve[best]),
        best_threshold=float(thresholds[best]),
        curve=curve,
        thresholds=thresholds,
        iou_threshold=float(iou_threshold),
        protocol=protocol,
    )


def max_box_acc(
    maps: Iterable[np.ndarray],
    boxes: np.ndarray | Sequence[np.ndarray],
    *,
    protocol: str = "convis",
    thresholds: Sequence[float] = CAM_THRESHOLDS,
    iou_threshold: float = 0.5,
) -> MaxBoxAccResult:
    """MaxBoxAcc: the best, over binarisation thresholds t, share of maps whose box hits.

    For every t each map is binarised, one box is predicted from it and
    compared with the image's ground truth; MaxBoxAcc is the best hit rate
    over t (the same t for all images). The rules of each step are those of
    the protocol's reference code, spelled out in `localisation_hits`:

    * "convis" (default, the paper's number: Giulivi and Boracchi's
      `wsol_evaluation.py`): {map >= t}, largest 4-connected component,
      its box with inclusive last row/column, continuous IoU > 0.5;
    * "wsolevaluation" (Choe et al., "Evaluating weakly supervised object
      localization methods right", CVPR 2020, `BoxEvaluator`): uint8 map,
      threshold relative to its maximum, largest OpenCV contour, inclusive
      IoU >= 0.5 against boxes as `BoxEvaluator` holds them. Needs OpenCV.

    With several ground-truth boxes an image is a hit when any matches.

    Args:
      maps: N saliency maps, each a float array [H_n, W_n] in [0, 1] (an
        array [N, H, W] works: it iterates over maps).
      boxes: ground truth in each map's pixel coordinates, (x0, y0, x1, y1):
        either an array [N, 4] (one box per image) or a sequence of N arrays
        [K_n, 4]. "convis" reads x1, y1 as exclusive ends (the script's
        x + w); "wsolevaluation" reads them as inclusive
        (`convis_jax.evaluation.boxes.wsolevaluation_boxes` gives its numbers).
      protocol: "convis" or "wsolevaluation".
      thresholds: binarisation thresholds, default `np.arange(0, 1, 0.01)`.
      iou_threshold: the IoU a hit must exceed (convis) or reach (wsolevaluation).

    Returns:
      `MaxBoxAccResult` with the value, best threshold, hit-rate curve and protocol.

    Raises:
      InputError: for malformed maps or boxes, a count mismatch or an
        unknown protocol; ImportError naming the extra when OpenCV is needed
        and missing.
    """
    hits = _stack_hits(
        maps,
        boxes,
        protocol=protocol,
        thresholds=thresholds,
        iou_thresholds=(iou_threshold,),
        all_components=False,
    )
    return max_box_acc_from_hits(
        hits[:, 0], protocol=protocol, thresholds=thresholds, iou_threshold=iou_threshold
    )


def max_box_acc_v2(
    maps: Iterable[np.ndarray],
    boxes: np.ndarray | Sequence[np.ndarray],
    *,
    protocol: str = "wsolevaluation",
    thresholds: Sequence[float] = CAM_THRESHOLDS,
    iou_thresholds: Sequence[float] = V2_IOU_THRESHOLDS,
) -> MaxBoxAccV2Result:
    """MaxBoxAccV2 of Choe et al., CVPR 2020 (and their wsolevaluation code).

    Two changes from MaxBoxAcc: (1) every candidate box of the binarised
    map counts, and an image is a hit when any of them matches any
    ground-truth box; (2) the accuracy is computed at IoU thresholds d in
    {0.3, 0.5, 0.7}, each with its own best binarisation threshold, and
    averaged: MaxBoxAccV2 = mean over d of max over t of BoxAcc(t, d).

    * "wsolevaluation" (default, the published definition): `BoxEvaluator`
      with `multi_contour_eval` and `multi_iou_eval`: the boxes of all
      OpenCV contours, outer and hole borders, IoU >= d (rules in
      `localisation_hits`). Needs OpenCV.
    * "convis": the boxes of all 4-connected components of {map >= t}
      under the "convis" box and IoU rules, IoU > d. Not a published number;
      it keeps the default localisation run free of OpenCV.

    Args:
      maps: N saliency maps, each a float array [H_n, W_n] in [0, 1].
      boxes: ground truth as for `max_box_acc`, read as the protocol reads it.
      protocol: "wsolevaluation" or "convis".
      thresholds: binarisation thresholds, default `np.arange(0, 1, 0.01)`.
      iou_thresholds: the IoU thresholds averaged over.

    Returns:
      `MaxBoxAccV2Result`: the mean, the per-IoU results and the protocol.

    Raises:
      InputError: for malformed maps or boxes, a count mismatch or an
        unknown protocol; ImportError naming the extra when OpenCV is needed
        and missing.
    """
    hits = _stack_hits(
        maps,
        boxes,
        protocol=protocol,
        thresholds=thresholds,
        iou_thresholds=iou_thresholds,
        all_components=True,
    )
    return max_box_acc_v2_from_hits(
        hits, protocol=protocol, thresholds=thresholds, iou_thresholds=iou_thresholds
    )


def max_box_acc_v2_from_hits(
    hits: np.ndarray,
    *,
    protocol: str,
    thresholds: Sequence[float] = CAM_THRESHOLDS,
    iou_thresholds: Sequence[float] = V2_IOU_THRESHOLDS,
) -> MaxBoxAccV2Result:
    """MaxBoxAccV2 from per-image hits (`localisation_hits` with all components).

    Args:
      hits: bool array [N, I, T] for N >= 1 images, I IoU thresholds and T
        binarisation thresholds.
      protocol: the protocol the hits were computed with (recorded).
      thresholds: the T binarisation thresholds.
      iou_thresholds: the I IoU thresholds.

    Returns:
      `MaxBoxAccV2Result`.

    Raises:
      InputError: when `hits` is not [N, I, T] or the protocol is unknown.
    """
    hits = np.asarray(hits, dtype=bool)
    iou_thresholds = tuple(float(d) for d in iou_thresholds)
    if hits.ndim != 3 or hits.shape[1] != len(iou_thresholds):
        raise InputError(
            f"hits: expected shape [N, {len(iou_thresholds)}, T] (images x IoU thresholds x "
            f"thresholds), found {hits.shape}"
        )
    per_iou = tuple(
        max_box_acc_from_hits(hits[:, i], protocol=protocol, thresholds=thresholds,
                              iou_threshold=d)
        for i, d in enumerate(iou_thresholds)
    )
    value = float(np.mean([r.value for r in per_iou]))
    return MaxBoxAccV2Result(value=value, per_iou=per_iou, protocol=protocol)


def _stack_hits(maps, boxes, **kwargs) -> np.ndarray:
    """`localisation_hits` of every image, bool [N, I, T]."""
    box_lists = per_image_boxes(boxes)
    hits = [localisation_hits(m, b, **kwargs) for m, b in maps_with_truth(maps, box_lists, "box entries")]
    return np.stack(hits)
