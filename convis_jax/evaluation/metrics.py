"""Evaluation metrics for saliency maps: localisation, faithfulness, OOD.

NumPy only, except the "wsolevaluation" box protocol, which uses OpenCV's
contours as its reference does (the `wsol` extra). Every metric states its
definition and source in its docstring. Where the field's reference code
fixes details the papers leave open, a `protocol=` argument reproduces that
code's rules exactly: MaxBoxAcc "convis" (the ConVis authors'
`wsol_evaluation.py`) or "wsolevaluation" (Choe et al.'s `BoxEvaluator`),
pointing game "torchray", deletion/insertion "rise". docs/protocols.md
tabulates the rules.

Conventions used throughout:

* A **saliency map** is a float array [H, W]; high values mean "the concept
  is here". The localisation metrics expect values in [0, 1] (ConVis maps
  are min-max normalised, section 3 of METHOD.md).
* A **box** is (x0, y0, x1, y1) in pixel coordinates of the map, x along the
  width and y along the height, with x1 and y1 **exclusive**: the box covers
  the pixels x0 <= x < x1, y0 <= y < y1, and its area is (x1 - x0) (y1 - y0).
  A box with x1 <= x0 or y1 <= y0 is empty. Coordinates may be fractional
  (ground-truth boxes moved by a resize are). CUB's (x, y, width, height) is
  converted by the dataset reader (`convis_jax.evaluation.datasets`).
  The box protocols read boxes their references' way (`localisation_hits`).
* Connected components are **4-connected** (pixels that share an edge).
"""

import dataclasses
import math
from typing import Callable, Iterable, Sequence

import numpy as np

from convis_jax.errors import InputError
from convis_jax.evaluation.boxes import as_boxes

# The binarisation thresholds t in {0, 0.01, ..., 0.99} (METHOD section 5),
# as both reference scripts make them: np.arange(0, 1, 0.01), ten of whose
# doubles lie above the decimals (0.35000000000000003, 0.5700000000000001).
# The drift matters: wsolevaluation cuts at int(t * max), and int(0.57 * 100)
# is 56 while arange's 0.5700000000000001 gives 57.
CAM_THRESHOLDS = tuple(np.arange(0, 1, 0.01).tolist())

# IoU thresholds of MaxBoxAccV2 (Choe et al. 2020).
V2_IOU_THRESHOLDS = (0.3, 0.5, 0.7)


# ---------------------------------------------------------------------------
# Boxes


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in `a` with every box in `b`.

    Boxes are (x0, y0, x1, y1) with x1, y1 exclusive (module docstring), so
    boxes that only touch along an edge share no pixel and have IoU 0. An
    empty box (x1 <= x0 or y1 <= y0, e.g. (0, 0, 0, 0)) has IoU 0 with
    everything, itself included; the result never holds NaN.

    Args:
      a: boxes, shape [N, 4], finite, any real coordinates.
      b: boxes, shape [M, 4], finite.

    Returns:
      IoU, float64 array [N, M] with values in [0, 1].

    Raises:
      InputError: when an argument is not a finite [K, 4] array.
    """
    a = as_boxes(a, "a")
    b = as_boxes(b, "b")
    ax0, ay0, ax1, ay1 = (a[:, i, None] for i in range(4))
    bx0, by0, bx1, by1 = (b[None, :, i] for i in range(4))
    inter_w = np.clip(np.minimum(ax1, bx1) - np.maximum(ax0, bx0), 0.0, None)
    inter_h = np.clip(np.minimum(ay1, by1) - np.maximum(ay0, by0), 0.0, None)
    inter = inter_w * inter_h
    area_a = np.clip(ax1 - ax0, 0.0, None) * np.clip(ay1 - ay0, 0.0, None)
    area_b = np.clip(bx1 - bx0, 0.0, None) * np.clip(by1 - by0, 0.0, None)
    union = area_a + area_b - inter
    out = np.zeros(union.shape, dtype=np.float64)
    np.divide(inter, union, out=out, where=union > 0)
    return out


# ---------------------------------------------------------------------------
# Connected components


@dataclasses.dataclass(frozen=True)
class _Components:
    """The 4-connected components of a stack of binary masks.

    One entry per component, components ordered by the raster position
    (slice, row, column) of their first pixel.

    Attributes:
      slice_index: int array [C], which mask of the stack holds the component.
      area: int array [C], its number of pixels.
      boxes: int array [C, 4], its bounding box (x0, y0, x1, y1), exclusive ends.
      run_component: int array [R], the component of every horizontal run
        of foreground pixels (runs in raster order).
      runs: int array [R, 3], every run as (global row, x0, x1), exclusive x1;
        the global row of slice k, row y is k * H + y.
    """

    slice_index: np.ndarray
    area: np.ndarray
    boxes: np.ndarray
    run_component: np.ndarray
    runs: np.ndarray


def _components(masks: np.ndarray) -> _Components:
    """Labels the 4-connected components of every mask in a stack at once.

    Works on horizontal runs of foreground pixels rather than on pixels: a
    run is one node, two runs in neighbouring rows of the same mask are
    joined when their column ranges overlap. Components are then found by a
    vectorised union-find (hook every root onto the smallest neighbouring
    root, then jump pointers until every tree is a star; repeat), which needs
    a handful of rounds even for long snakes. Cost is a few passes over the
    pixels plus work proportional to the number of runs.

    Args:
      masks: bool array [K, H, W].

    Returns:
      The components of all K masks (`_Components`).
    """
    k, h, w = masks.shape
    rows = masks.reshape(k * h, w)
    # A run starts where a foreground pixel has background (or the border)
    # on its left and ends where it has background on its right.
    starts = rows.copy()
    starts[:, 1:] &= ~rows[:, :-1]
    ends = rows.copy()
    ends[:, :-1] &= ~rows[:, 1:]
    # Flat indices (global row * w + column) sort in raster order.
    run_key = np.flatnonzero(starts)
    run_row, run_x0 = np.divmod(run_key, w)
    run_x1 = np.flatnonzero(ends) % w + 1  # same raster order: one end per start
    n_runs = run_key.size

    # Vertical neighbours: pixel (g, x) and (g - 1, x) both foreground, not
    # across the boundary between two masks of the stack. One edge per
    # maximal horizontal stretch of such pixels: two overlapping runs
    # overlap in a single stretch, so this lists every joined pair once.
    both = rows[1:] & rows[:-1]
    both[h - 1 :: h] = False  # row g = j*h (first row of mask j) has no row above in its mask
    stretch = both.copy()
    stretch[:, 1:] &= ~both[:, :-1]
    key_low = np.flatnonzero(stretch) + w  # flat index of the lower pixel in `rows`
    key_up = key_low - w
    run_low = np.searchsorted(run_key, key_low, side="right") - 1
    run_up = np.searchsorted(run_key, key_up, side="right") - 1

    root = _union_find(n_runs, run_up, run_low)

    # Roots are the smallest run index of each component, i.e. its first
    # run in raster order, so np.unique keeps components in raster order.
    roots, run_component = np.unique(root, return_inverse=True)
    n_comp = roots.size
    length = (run_x1 - run_x0).astype(np.int64)
    area = np.bincount(run_component, weights=length, minlength=n_comp).astype(np.int64)
    local_row = run_row % h
    x0 = np.full(n_comp, w, dtype=np.int64)
    x1 = np.zeros(n_comp, dtype=np.int64)
    y1 = np.zeros(n_comp, dtype=np.int64)
    np.minimum.at(x0, run_component, run_x0)
    np.maximum.at(x1, run_component, run_x1)
    np.maximum.at(y1, run_component, local_row + 1)
    # The root run is the component's first run, hence on its top row.
    y0 = local_row[roots]
    boxes = np.stack([x0, y0, x1, y1], axis=1)
    return _Components(
        slice_index=run_row[roots] // h,
        area=area,
        boxes=boxes,
        run_component=run_component,
        runs=np.stack([run_row, run_x0, run_x1], axis=1),
    )


def _union_find(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root (smallest member) of every node of an undirected graph.

    Args:
      n: number of nodes.
      a, b: int arrays [E], the edges (a[i], b[i]).

    Returns:
      int array [n], for each node the smallest node index of its component.
    """
    parent = np.arange(n)
    while a.size:
        pa = parent[a]
        pb = parent[b]
        open_ = pa != pb
        # An edge whose ends share a root stays that way: drop it.
        a, b, pa, pb = a[open_], b[open_], pa[open_], pb[open_]
        if not a.size:
            break
        # Every tree is a star here, so pa and pb are roots; hooking a root
        # onto a strictly smaller index can never form a cycle.
        np.minimum.at(parent, np.maximum(pa, pb), np.minimum(pa, pb))
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
    return parent


def _as_mask(mask, name: str = "mask") -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise InputError(f"{name}: expected a 2-D mask [H, W], found shape {arr.shape}")
    if arr.dtype != np.bool_:
        raise InputError(f"{name}: expected a boolean mask, found dtype {arr.dtype}")
    return arr


def label_components(mask: np.ndarray) -> np.ndarray:
    """Labels the 4-connected components of a binary mask.

    Args:
      mask: bool array [H, W].

    Returns:
      int64 array [H, W]: 0 on background, 1..C on the C components,
      numbered in raster order of their first pixel (row by row, left to
      right), the same numbering as a raster-order flood fill.

    Raises:
      InputError: when `mask` is not a 2-D boolean array.
    """
    mask = _as_mask(mask)
    h, w = mask.shape
    comps = _components(mask[None])
    row, x0, x1 = comps.runs.T
    # Paint every run with its component number via a difference array.
    diff = np.zeros(h * w + 1, dtype=np.int64)
    value = comps.run_component + 1
    np.add.at(diff, row * w + x0, value)
    np.add.at(diff, row * w + x1, -value)
    labels = np.cumsum(diff[:-1])
    return labels.reshape(h, w)


def component_boxes(mask: np.ndarray) -> np.ndarray:
    """Bounding boxes of all 4-connected components of a binary mask.

    Args:
      mask: bool array [H, W].

    Returns:
      int64 array [C, 4] of boxes (x0, y0, x1, y1), exclusive ends, one per
      component in raster order of the component's first pixel; [0, 4] for
      an empty mask.

    Raises:
      InputError: when `mask` is not a 2-D boolean array.
    """
    return _components(_as_mask(mask)[None]).boxes


def largest_component_box(mask: np.ndarray) -> np.ndarray:
    """Bounding box of the largest 4-connected component of a binary mask.

    "Largest" counts pixels; among components of equal size the first in
    raster order wins.

    Args:
      mask: bool array [H, W].

    Returns:
      int64 array [4], (x0, y0, x1, y1) with exclusive ends; the empty box
      (0, 0, 0, 0) when the mask has no foreground pixel.

    Raises:
      InputError: when `mask` is not a 2-D boolean array.
    """
    comps = _components(_as_mask(mask)[None])
    if comps.area.size == 0:
        return np.zeros(4, dtype=np.int64)
    return comps.boxes[int(np.argmax(comps.area))]  # argmax: first of ties


# ---------------------------------------------------------------------------
# Weakly supervised localisation: MaxBoxAcc and MaxBoxAccV2

#: The box protocols of `max_box_acc`, `max_box_acc_v2` and `localisation_hits`.
BOX_PROTOCOLS = ("convis", "wsolevaluation")


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
    _check_protocol(protocol, BOX_PROTOCOLS)
    saliency = _as_unit_map(saliency)
    gt = as_boxes(boxes, "boxes")
    if gt.shape[0] == 0:
        raise InputError("boxes: expected at least one ground-truth box, found none")
    thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    iou_thresholds = np.asarray(iou_thresholds, dtype=np.float64).reshape(-1)
    if protocol == "convis":
        best_iou = _convis_best_iou(saliency, gt, thresholds, all_components)
        hits = best_iou[None, :] > iou_thresholds[:, None]
    else:
        best_iou = _wsolevaluation_best_iou(saliency, gt, thresholds, all_components)
        hits = best_iou[None, :] >= iou_thresholds[:, None]
    return hits & (best_iou[None, :] >= 0)


def _convis_best_iou(saliency, gt, thresholds, all_components) -> np.ndarray:
    """Best IoU at every threshold under the "convis" rules; -1 where nothing is predicted."""
    # Thresholds between the same two distinct map values give the same
    # mask: label each distinct mask once (quantised maps, such as ConVis'
    # 16-pixel cells, have few). With `level` = number of distinct values
    # < t, {saliency >= t} = {saliency >= values[level]}.
    values = np.unique(saliency)
    level = np.searchsorted(values, thresholds, side="left")
    levels, which = np.unique(level, return_inverse=True)
    masks = saliency[None] >= values[np.minimum(levels, values.size - 1)][:, None, None]
    masks[levels == values.size] = False  # t above the maximum: nothing is kept

    comps = _components(masks)
    if all_components:
        keep = np.arange(comps.area.size)
    else:
        keep = _largest_per_slice(comps.slice_index, comps.area)
    best_iou = np.full(levels.size, -1.0)  # -1: no box at this level, never a hit
    if keep.size:
        # The script's box ends at the last row and column, not one past them.
        predicted = comps.boxes[keep] - np.array([0, 0, 1, 1])
        iou = box_iou(predicted, gt).max(axis=1)
        np.maximum.at(best_iou, comps.slice_index[keep], iou)
    return best_iou[which]  # back from distinct masks to thresholds


def require_opencv():
    """OpenCV (`cv2`), which the "wsolevaluation" box protocol needs.

    Returns:
      The `cv2` module.

    Raises:
      ImportError: naming the extra that installs it, when it is missing.
    """
    try:
        import cv2
    except ImportError:
        raise ImportError(
            'protocol="wsolevaluation" needs OpenCV: pip install "convis_jax[wsol]" '
            "(opencv-python-headless)"
        ) from None
    return cv2


def _wsolevaluation_best_iou(saliency, gt, thresholds, all_components) -> np.ndarray:
    """Best IoU at every threshold under wsolevaluation's rules (always >= 0)."""
    if (gt < 0).any() or (gt[:, 2] < gt[:, 0]).any() or (gt[:, 3] < gt[:, 1]).any():
        raise InputError(
            "boxes: wsolevaluation expects non-negative boxes with x0 <= x1 and y0 <= y1, "
            f"found {gt.tolist()}"
        )
    cv2 = require_opencv()
    h, w = saliency.shape
    quantised = (saliency * 255).astype(np.uint8)
    top = int(quantised.max())
    cuts = np.array([int(t * top) for t in thresholds], dtype=np.int64)
    distinct, which = np.unique(cuts, return_inverse=True)
    best = np.empty(distinct.size)
    for i, cut in enumerate(distinct):
        binary = np.where(quantised > cut, np.uint8(255), np.uint8(0))
        contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
        if not contours:
            predicted = np.zeros((1, 4))
        else:
            if not all_components:
                areas = [cv2.contourArea(c) for c in contours]
                contours = [contours[int(np.argmax(areas))]]  # argmax: first of equals
            rects = np.array([cv2.boundingRect(c) for c in contours], dtype=np.float64)
            predicted = np.stack(
                [
                    rects[:, 0],
                    rects[:, 1],
                    np.minimum(rects[:, 0] + rects[:, 2], w - 1),
                    np.minimum(rects[:, 1] + rects[:, 3], h - 1),
                ],
                axis=1,
            )
        best[i] = _inclusive_iou(predicted, gt).max()
    return best[which]


def _inclusive_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes whose ends are inclusive (wsolevaluation's `calculate_multiple_iou`).

    Args:
      a: float [N, 4], b: float [M, 4], (x0, y0, x1, y1), last pixel included.

    Returns:
      float64 [N, M]; 0 where the union is not positive.
    """
    ax0, ay0, ax1, ay1 = (a[:, i, None] for i in range(4))
    bx0, by0, bx1, by1 = (b[None, :, i] for i in range(4))
    inter = np.maximum(0, np.minimum(ax1, bx1) - np.maximum(ax0, bx0) + 1) * np.maximum(
        0, np.minimum(ay1, by1) - np.maximum(ay0, by0) + 1
    )
    union = (ax1 - ax0 + 1) * (ay1 - ay0 + 1) + (bx1 - bx0 + 1) * (by1 - by0 + 1) - inter
    out = np.zeros(union.shape)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def _check_protocol(protocol, allowed: Sequence[str]) -> None:
    if protocol not in allowed:
        raise InputError(
            f"protocol: expected one of {', '.join(map(repr, allowed))}, found {protocol!r}"
        )


def _largest_per_slice(slice_index: np.ndarray, area: np.ndarray) -> np.ndarray:
    """Index of the largest component of every slice (first of ties)."""
    if area.size == 0:
        return np.zeros(0, dtype=np.int64)
    # Sort by slice, then area descending, then raster order; keep the first
    # component of each slice.
    order = np.lexsort((np.arange(area.size), -area, slice_index))
    first = np.ones(order.size, dtype=bool)
    first[1:] = slice_index[order[1:]] != slice_index[order[:-1]]
    return order[first]


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


def _box_lists(boxes: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per-image ground-truth boxes: an [N, 4] array or N arrays [K_i, 4]."""
    if isinstance(boxes, np.ndarray) and boxes.ndim == 2:
        return [row[None] for row in boxes]
    return [np.asarray(b, dtype=np.float64) for b in boxes]


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
    _check_protocol(protocol, BOX_PROTOCOLS)
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
    box_lists = _box_lists(boxes)
    hits = [localisation_hits(m, b, **kwargs) for m, b in _pairs(maps, box_lists, "box entries")]
    return np.stack(hits)


def _pairs(maps: Iterable[np.ndarray], truth: list, what: str):
    """Yields (map, ground truth) pairs; raises unless the counts agree."""
    count = 0
    for count, saliency in enumerate(maps, start=1):
        if count > len(truth):
            raise InputError(
                f"expected one ground-truth entry per map, found more maps than "
                f"the {len(truth)} {what}"
            )
        yield saliency, truth[count - 1]
    if count == 0:
        raise InputError("expected at least one map, found none")
    if count != len(truth):
        raise InputError(
            f"expected one ground-truth entry per map, found {count} maps and {len(truth)} {what}"
        )

# ---------------------------------------------------------------------------
# Pointing game


#: The rules of `pointing_game`.
POINTING_PROTOCOLS = ("torchray", "expected")


@dataclasses.dataclass(frozen=True)
class PointingGameResult:
    """Pointing-game accuracy.

    Attributes:
      value: mean of `hits`, in [0, 1].
      hits: float array [N], per image: 1 or 0 ("torchray"); under
        "expected", the fraction of tied maximal pixels that hit.
      protocol: "torchray" or "expected".
    """

    value: float
    hits: np.ndarray
    protocol: str


def pointing_game(
    maps: Iterable[np.ndarray],
    masks_or_boxes: np.ndarray | Sequence[np.ndarray],
    *,
    tolerance: float = 15,
    protocol: str = "torchray",
) -> PointingGameResult:
    """Pointing game of Zhang et al., "Top-down neural attention by
    excitation backprop", ECCV 2016 / IJCV 2018.

    An image is a hit when the pixel where its map is largest lies within
    `tolerance` pixels (Euclidean distance between pixel centres) of the
    ground-truth region. The protocols differ in ties and in the boundary:

    * "torchray" (default; TorchRay's `PointingGame.evaluate`, the code of
      the benchmark): the point is the *first* maximum in raster order
      (row by row, `argmax` of the flattened map), and it hits when some
      region pixel lies at squared distance `< tolerance**2` (strictly: a
      region pixel exactly `tolerance` away does not count, and tolerance
      0 never hits). TorchRay then averages per class; `value` here is the
      mean over the maps given.
    * "expected": every pixel that attains the maximum is a candidate, and
      the image scores the fraction of them within distance
      `<= tolerance`, the expected hit of a pointer that picks one of them
      uniformly at random. ConVis maps are constant on 16 x 16 cells, so
      ties are common; a constant map scores the (dilated) region's share
      of the image, chance level.

    Args:
      maps: N saliency maps, float arrays [H_n, W_n], any finite values.
      masks_or_boxes: per image, either a boolean mask [H_n, W_n] of the
        ground-truth region, or boxes [K, 4] (x0, y0, x1, y1), exclusive
        ends, whose union is the region. An array [N, 4] means one box per
        image.
      tolerance: distance in pixels, >= 0 (15 in Zhang et al. and TorchRay).
      protocol: "torchray" or "expected".

    Returns:
      `PointingGameResult` with the mean, the per-image hits and the protocol.

    Raises:
      InputError: for malformed maps, regions or tolerance, or an unknown protocol.
    """
    _check_protocol(protocol, POINTING_PROTOCOLS)
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
        raise InputError(f"tolerance: expected a finite number >= 0, found {tolerance!r}")
    regions = (
        _box_lists(masks_or_boxes)
        if isinstance(masks_or_boxes, np.ndarray) and masks_or_boxes.ndim == 2
        else list(masks_or_boxes)
    )
    hits = []
    for i, (saliency, region) in enumerate(_pairs(maps, regions, "regions")):
        saliency = np.asarray(saliency, dtype=np.float64)
        if saliency.ndim != 2 or saliency.size == 0 or not np.isfinite(saliency).all():
            raise InputError(
                f"maps[{i}]: expected a finite non-empty 2-D map, found shape {saliency.shape}"
            )
        mask = _region_mask(region, saliency.shape, f"masks_or_boxes[{i}]")
        if protocol == "torchray":
            y, x = np.unravel_index(int(np.argmax(saliency)), saliency.shape)
            rows, cols = np.nonzero(mask)
            near = ((rows - y) ** 2 + (cols - x) ** 2 < tolerance**2).any()
            hits.append(float(near))
        else:
            peak = saliency == saliency.max()
            near = _dilate(mask, tolerance)
            hits.append(np.count_nonzero(peak & near) / np.count_nonzero(peak))
    hits = np.asarray(hits, dtype=np.float64)
    return PointingGameResult(value=float(hits.mean()), hits=hits, protocol=protocol)


def _region_mask(region, shape: tuple[int, int], name: str) -> np.ndarray:
    """A ground-truth region as a boolean mask of the map's shape."""
    arr = np.asarray(region)
    if arr.dtype == np.bool_:
        if arr.shape != shape:
            raise InputError(f"{name}: expected a mask of the map's shape {shape}, found {arr.shape}")
        return arr
    boxes = as_boxes(arr, name)
    h, w = shape
    rows = np.arange(h)
    cols = np.arange(w)
    mask = np.zeros(shape, dtype=bool)
    for x0, y0, x1, y1 in boxes:
        # Pixel (x, y) is inside when x0 <= x < x1 and y0 <= y < y1.
        mask |= ((rows >= y0) & (rows < y1))[:, None] & ((cols >= x0) & (cols < x1))[None, :]
    return mask


def _dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    """Pixels within Euclidean distance `radius` of a True pixel of `mask`.

    A disc is a stack of horizontal segments, one per row offset dy, of half
    width floor(sqrt(r^2 - dy^2)); each segment dilation is a window sum of a
    row-wise prefix sum, so the cost is O(r H W) instead of O(r^2 H W).
    """
    h, w = mask.shape
    reach = min(int(math.floor(radius)), h - 1)  # farther rows are off the map
    prefix = np.zeros((h, w + 1), dtype=np.int64)
    np.cumsum(mask, axis=1, out=prefix[:, 1:])
    cols = np.arange(w)
    out = np.zeros_like(mask)
    for dy in range(-reach, reach + 1):
        half = math.isqrt(int(math.floor(radius * radius - dy * dy + 1e-9)))
        hi = np.minimum(cols + half + 1, w)
        lo = np.maximum(cols - half, 0)
        row_hit = (prefix[:, hi] - prefix[:, lo]) > 0
        # out[y] |= row_hit[y + dy]
        if dy >= 0:
            out[: h - dy] |= row_hit[dy:]
        else:
            out[-dy:] |= row_hit[: h + dy]
    return out


# ---------------------------------------------------------------------------
# Deletion and insertion


#: The rules of `deletion_auc` and `insertion_auc`.
PERTURBATION_PROTOCOLS = ("uniform", "rise")

#: RISE's pixels per step (its notebooks use 224 on 224 x 224 images).
RISE_PIXELS_PER_STEP = 224


@dataclasses.dataclass(frozen=True)
class PerturbationCurve:
    """A deletion or insertion curve and its area.

    Attributes:
      auc: area under `scores` over `fractions` (trapezoid rule).
      fractions: float array [S + 1], the curve's x axis from 0 to 1: the
        share of pixels changed ("uniform"), or step / S ("rise", whose last
        step may be shorter).
      scores: float array [S + 1], the model's score at each step.
      protocol: "uniform" or "rise".
    """

    auc: float
    fractions: np.ndarray
    scores: np.ndarray
    protocol: str


def deletion_auc(
    image: np.ndarray,
    saliency: np.ndarray,
    score_fn: Callable[[np.ndarray], np.ndarray],
    *,
    protocol: str = "uniform",
    steps: int | None = None,
    pixels_per_step: int | None = None,
    baseline: float | np.ndarray | None = None,
    batch_size: int = 32,
) -> PerturbationCurve:
    """Deletion metric of Petsiuk et al., "RISE: Randomized input sampling
    for explanation of black-box models", BMVC 2018.

    Pixels are replaced by `baseline` in order of decreasing saliency and
    the model's score is recorded after every step; the area under that
    curve over the share of pixels removed is the metric (lower is better:
    a faithful map removes what the model needs first).

    * "uniform" (default): `steps` steps (default 100), the k-th after
      round(k H W / S) pixels; tied saliencies are removed in raster order;
      the area is the trapezoid rule over the true shares; the default
      baseline is 0 (black for an image in [0, 1]).
    * "rise" (RISE's `CausalMetric`): `pixels_per_step` pixels per step
      (default 224), so ceil(H W / p) steps, the last one shorter; pixels in
      the order `np.flip(np.argsort(saliency.ravel()))`, NumPy's default
      sort on the map's own dtype, reversed, which is how RISE orders ties;
      the area is RISE's `auc`, (sum - first / 2 - last / 2) / S, i.e. the
      trapezoid rule over step / S. The default substrate is 0 *in the
      space `image` is given in*: RISE zeroes the normalised tensor, which
      is the mean colour, not black. Pass the image as the model's
      normalised input (`score_fn` taking it as is) to get RISE's
      substrate, or pass the mean colour as `baseline`.

    Args:
      image: float array [H, W, C], in whatever range `score_fn` expects.
      saliency: float array [H, W], any finite values, high = important.
      score_fn: maps a batch of images, float32 [B, H, W, C], to their
        scores [B] (the model's score for the concept being explained).
      protocol: "uniform" or "rise".
      steps: "uniform" only: number of steps S >= 1; the curve has S + 1 points.
      pixels_per_step: "rise" only: pixels changed per step, >= 1.
      baseline: value of deleted pixels: a number, or an array that
        broadcasts to [H, W, C] (e.g. a blurred copy of the image); None is 0.
      batch_size: images per `score_fn` call.

    Returns:
      `PerturbationCurve`.

    Raises:
      InputError: for mismatched shapes, bad steps or batch size, an option
        of the other protocol, an unknown protocol, or a `score_fn` that
        does not return one finite score per image.
    """
    return _perturbation_curve(
        image, saliency, score_fn, protocol=protocol, steps=steps,
        pixels_per_step=pixels_per_step, baseline=baseline, batch_size=batch_size, insert=False,
    )


def insertion_auc(
    image: np.ndarray,
    saliency: np.ndarray,
    score_fn: Callable[[np.ndarray], np.ndarray],
    *,
    protocol: str = "uniform",
    steps: int | None = None,
    pixels_per_step: int | None = None,
    baseline: float | np.ndarray | None = None,
    batch_size: int = 32,
) -> PerturbationCurve:
    """Insertion metric of Petsiuk et al., "RISE", BMVC 2018.

    Starts from `baseline` and puts the image's pixels back in order of
    decreasing saliency, recording the model's score after every step; the
    area under that curve is the metric (higher is better). Steps, order of
    ties and area follow the protocol as in `deletion_auc`. The default
    starting image: "uniform", 0 (black for an image in [0, 1]); "rise",
    RISE's blurred copy of the image, `rise_blur(image)` (an 11 x 11
    Gaussian of sigma 5, zero padding, applied in the space `image` is given
    in, RISE's normalised tensor when the image is given normalised).

    Args:
      image: float array [H, W, C], in whatever range `score_fn` expects.
      saliency: float array [H, W], any finite values, high = important.
      score_fn: maps a batch of images, float32 [B, H, W, C], to scores [B].
      protocol: "uniform" or "rise".
      steps: "uniform" only: number of steps S >= 1.
      pixels_per_step: "rise" only: pixels inserted per step, >= 1 (default 224).
      baseline: the starting image: a number, or an array that broadcasts
        to [H, W, C]; None is the protocol's default above.
      batch_size: images per `score_fn` call.

    Returns:
      `PerturbationCurve`.

    Raises:
      InputError: as for `deletion_auc`.
    """
    return _perturbation_curve(
        image, saliency, score_fn, protocol=protocol, steps=steps,
        pixels_per_step=pixels_per_step, baseline=baseline, batch_size=batch_size, insert=True,
    )


def rise_blur(image: np.ndarray, *, size: int = 11, sigma: float = 5.0) -> np.ndarray:
    """RISE's insertion substrate: every channel blurred by its `gkern` kernel.

    The kernel is `scipy.ndimage.gaussian_filter` of a size x size unit
    impulse at the centre (sigma 5, scipy's default reflecting border), and
    the blur a per-channel correlation with it, padded with zeros (RISE's
    `conv2d(x, kern, padding=size // 2)`).

    Args:
      image: float array [H, W, C].
      size: the kernel's odd side (RISE: 11).
      sigma: the Gaussian's standard deviation in pixels (RISE: 5).

    Returns:
      float32 [H, W, C].

    Raises:
      InputError: for an image that is not [H, W, C] or an even size.
    """
    from scipy import ndimage  # scipy comes with jax

    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 3:
        raise InputError(f"image: expected [H, W, C], found shape {image.shape}")
    if not (isinstance(size, int) and size >= 1 and size % 2 == 1):
        raise InputError(f"size: expected an odd integer >= 1, found {size!r}")
    impulse = np.zeros((size, size))
    impulse[size // 2, size // 2] = 1.0
    kernel = ndimage.gaussian_filter(impulse, sigma).astype(np.float32).astype(np.float64)
    out = np.stack(
        [ndimage.correlate(image[..., c], kernel, mode="constant", cval=0.0)
         for c in range(image.shape[-1])],
        axis=-1,
    )
    return out.astype(np.float32)


def _perturbation_curve(image, saliency, score_fn, *, protocol, steps, pixels_per_step,
                        baseline, batch_size, insert):
    _check_protocol(protocol, PERTURBATION_PROTOCOLS)
    image = np.asarray(image, dtype=np.float32)
    saliency = np.asarray(saliency)
    if image.ndim != 3:
        raise InputError(f"image: expected [H, W, C], found shape {image.shape}")
    if saliency.shape != image.shape[:2]:
        raise InputError(
            f"saliency: expected the image's height and width {image.shape[:2]}, "
            f"found shape {saliency.shape}"
        )
    if not np.issubdtype(saliency.dtype, np.number) or not np.isfinite(saliency).all():
        raise InputError("saliency: expected finite values, found NaN or inf")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise InputError(f"batch_size: expected an integer >= 1, found {batch_size!r}")
    h, w = saliency.shape
    n = h * w
    if protocol == "uniform":
        if pixels_per_step is not None:
            raise InputError('pixels_per_step: only for protocol="rise"; "uniform" takes steps')
        steps = 100 if steps is None else steps
        if not (isinstance(steps, int) and steps >= 1):
            raise InputError(f"steps: expected an integer >= 1, found {steps!r}")
        order = np.argsort(-saliency.reshape(-1).astype(np.float64), kind="stable")
        counts = np.rint(np.arange(steps + 1) * (n / steps)).astype(np.int64)
    else:
        if steps is not None:
            raise InputError('steps: only for protocol="uniform"; "rise" takes pixels_per_step')
        step = RISE_PIXELS_PER_STEP if pixels_per_step is None else pixels_per_step
        if not (isinstance(step, int) and step >= 1):
            raise InputError(f"pixels_per_step: expected an integer >= 1, found {step!r}")
        steps = (n + step - 1) // step
        order = np.flip(np.argsort(saliency.reshape(-1)))
        counts = np.minimum(np.arange(steps + 1) * step, n)
    if baseline is None:
        baseline = rise_blur(image) if (insert and protocol == "rise") else 0.0
    try:
        filler = np.broadcast_to(np.asarray(baseline, dtype=np.float32), image.shape)
    except ValueError:
        raise InputError(
            f"baseline: expected a number or an array that broadcasts to {image.shape}, "
            f"found shape {np.shape(baseline)}"
        ) from None

    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    rank = rank.reshape(h, w)
    first, second = (filler, image) if insert else (image, filler)

    scores = []
    for lo in range(0, steps + 1, batch_size):
        chunk = counts[lo : lo + batch_size]
        changed = rank[None] < chunk[:, None, None]  # [B, H, W]
        batch = np.where(changed[..., None], second[None], first[None])
        out = np.asarray(score_fn(batch), dtype=np.float64)
        if out.shape != (chunk.size,) or not np.isfinite(out).all():
            raise InputError(
                f"score_fn: expected {chunk.size} finite scores, shape ({chunk.size},), "
                f"found shape {out.shape}"
            )
        scores.append(out)
    scores = np.concatenate(scores)
    if protocol == "uniform":
        fractions = counts / n
        auc = float(np.sum((scores[1:] + scores[:-1]) * 0.5 * np.diff(fractions)))
    else:
        fractions = np.arange(steps + 1) / steps
        auc = float((scores.sum() - scores[0] / 2 - scores[-1] / 2) / steps)
    return PerturbationCurve(auc=auc, fractions=fractions, scores=scores, protocol=protocol)


# ---------------------------------------------------------------------------
# AUROC


def auroc(scores_id: np.ndarray, scores_ood: np.ndarray) -> float:
    """Area under the ROC curve for telling ID from OOD samples by score.

    AUROC = P(s_id > s_ood) + 1/2 P(s_id = s_ood) over all pairs, i.e. the
    Mann-Whitney U statistic over n_id n_ood, with ties counted 1/2 (the
    convention of the trapezoid ROC area, as in scikit-learn). Higher
    scores are meant to indicate in-distribution; 0.5 is chance. Computed
    from average ranks in O(n log n).

    Args:
      scores_id: float array [N_id], scores of in-distribution samples.
      scores_ood: float array [N_ood], scores of out-of-distribution samples.

    Returns:
      AUROC in [0, 1].

    Raises:
      InputError: when either array is empty, not 1-D, or not finite.
    """
    pos = np.asarray(scores_id, dtype=np.float64)
    neg = np.asarray(scores_ood, dtype=np.float64)
    for name, arr in (("scores_id", pos), ("scores_ood", neg)):
        if arr.ndim != 1 or arr.size == 0:
            raise InputError(f"{name}: expected a non-empty 1-D array, found shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise InputError(f"{name}: expected finite scores, found NaN or inf")
    both = np.concatenate([pos, neg])
    _, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
    # 1-based average rank of every distinct value: tied values share the
    # mean of the ranks they occupy.
    last = np.cumsum(counts)
    avg_rank = last - (counts - 1) / 2.0
    rank_sum = avg_rank[inverse[: pos.size]].sum()
    u = rank_sum - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))
