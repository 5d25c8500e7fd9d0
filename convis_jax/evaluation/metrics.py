"""Evaluation metrics for saliency maps: localisation, faithfulness, OOD.

NumPy only. Every metric states its definition and source in its docstring;
where a published protocol leaves a detail open, the choice made here is
written down next to it.

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
* Connected components are **4-connected** (pixels that share an edge).
"""

import dataclasses
import math
from typing import Callable, Iterable, Sequence

import numpy as np

from convis_jax.errors import InputError

# The paper's binarisation thresholds t in {0, 0.01, ..., 0.99} (METHOD
# section 5). Written as i / 100 rather than np.arange(0, 1, 0.01) so each
# value is the double nearest to the decimal (arange drifts: 0.07000000000000001).
CAM_THRESHOLDS = tuple(i / 100 for i in range(100))

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
    a = _as_boxes(a, "a")
    b = _as_boxes(b, "b")
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


def _as_boxes(boxes, name: str) -> np.ndarray:
    """Checks and converts a [K, 4] box array to float64."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise InputError(
            f"{name}: expected boxes of shape [K, 4] as (x0, y0, x1, y1), "
            f"found shape {arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise InputError(f"{name}: expected finite box coordinates, found NaN or inf")
    return arr


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


@dataclasses.dataclass(frozen=True)
class MaxBoxAccResult:
    """MaxBoxAcc at one IoU threshold.

    Attributes:
      value: the best hit rate over the binarisation thresholds, in [0, 1].
      best_threshold: the binarisation threshold that reaches it (the
        smallest one when several do).
      curve: float array [T], the hit rate at every threshold.
      thresholds: float array [T], the binarisation thresholds.
      iou_threshold: the IoU a predicted box must exceed (MaxBoxAcc) or reach
        (MaxBoxAccV2) to count as a hit.
    """

    value: float
    best_threshold: float
    curve: np.ndarray
    thresholds: np.ndarray
    iou_threshold: float


@dataclasses.dataclass(frozen=True)
class MaxBoxAccV2Result:
    """MaxBoxAccV2: MaxBoxAcc averaged over several IoU thresholds.

    Attributes:
      value: the mean of `per_iou[i].value`, in [0, 1].
      per_iou: one `MaxBoxAccResult` per IoU threshold, each with its own
        best binarisation threshold (Choe et al. pick it per IoU threshold).
    """

    value: float
    per_iou: tuple[MaxBoxAccResult, ...]


def localisation_hits(
    saliency: np.ndarray,
    boxes: np.ndarray,
    *,
    thresholds: Sequence[float] = CAM_THRESHOLDS,
    iou_thresholds: Sequence[float] = (0.5,),
    all_components: bool = False,
    strict: bool = True,
) -> np.ndarray:
    """Whether one map localises its object, at every threshold pair.

    The per-image step of MaxBoxAcc and MaxBoxAccV2; exposed so that a long
    evaluation can store it per image and resume. For every binarisation
    threshold t the mask is {saliency > t} (strictly above, as the
    thresholding in Choe et al.'s wsolevaluation code; no uint8 quantisation
    here). Predicted boxes are the bounding box of the largest 4-connected
    component (`all_components=False`, MaxBoxAcc) or the boxes of all
    components (`all_components=True`, MaxBoxAccV2). The image is a hit at
    (IoU threshold d, t) when any predicted box matches any ground-truth box
    with IoU > d (`strict=True`) or IoU >= d (`strict=False`). A threshold
    that leaves no foreground predicts nothing: a miss.

    Args:
      saliency: float array [H, W], values in [0, 1].
      boxes: ground-truth boxes of this image, [K, 4] as (x0, y0, x1, y1)
        with exclusive ends, in the map's pixel coordinates; K >= 1.
      thresholds: the T binarisation thresholds.
      iou_thresholds: the I IoU thresholds, each in [0, 1].
      all_components: use the boxes of all components, not only the largest.
      strict: compare IoU with ">" rather than ">=".

    Returns:
      bool array [I, T].

    Raises:
      InputError: for a map that is not 2-D, finite and within [0, 1], or
        boxes that are not a non-empty [K, 4] array.
    """
    saliency = _as_unit_map(saliency)
    gt = _as_boxes(boxes, "boxes")
    if gt.shape[0] == 0:
        raise InputError("boxes: expected at least one ground-truth box, found none")
    thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    iou_thresholds = np.asarray(iou_thresholds, dtype=np.float64).reshape(-1)

    # Thresholds between the same two distinct map values give the same
    # mask: label each distinct mask once (quantised maps, such as ConVis'
    # 16-pixel cells, have few). With `level` = number of distinct values
    # <= t, {saliency > t} = {saliency >= values[level]}.
    values = np.unique(saliency)
    level = np.searchsorted(values, thresholds, side="right")
    levels, which = np.unique(level, return_inverse=True)
    masks = saliency[None] >= values[np.minimum(levels, values.size - 1)][:, None, None]
    masks[levels == values.size] = False  # t >= max: nothing is above

    comps = _components(masks)
    if all_components:
        keep = np.arange(comps.area.size)
    else:
        keep = _largest_per_slice(comps.slice_index, comps.area)
    best_iou = np.full(levels.size, -1.0)  # -1: no box at this level, never a hit
    if keep.size:
        iou = box_iou(comps.boxes[keep], gt).max(axis=1)
        np.maximum.at(best_iou, comps.slice_index[keep], iou)
    best_iou = best_iou[which]  # back from distinct masks to thresholds
    if strict:
        hits = best_iou[None, :] > iou_thresholds[:, None]
    else:
        hits = best_iou[None, :] >= iou_thresholds[:, None]
    return hits & (best_iou[None, :] >= 0)


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
    thresholds: Sequence[float] = CAM_THRESHOLDS,
    iou_threshold: float = 0.5,
) -> MaxBoxAccResult:
    """MaxBoxAcc from per-image hits (the output of `localisation_hits`).

    Args:
      hits: bool array [N, T], whether image n is a hit at threshold t; N >= 1.
      thresholds: the T binarisation thresholds the hits were computed at.
      iou_threshold: the IoU threshold they were computed with (recorded).

    Returns:
      `MaxBoxAccResult`: the curve is the mean of `hits` over images.

    Raises:
      InputError: when `hits` is not [N, T] with N >= 1 and T thresholds.
    """
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
    )


def max_box_acc(
    maps: Iterable[np.ndarray],
    boxes: np.ndarray | Sequence[np.ndarray],
    *,
    thresholds: Sequence[float] = CAM_THRESHOLDS,
    iou_threshold: float = 0.5,
) -> MaxBoxAccResult:
    """MaxBoxAcc, the weakly-supervised localisation accuracy of the paper.

    Protocol of Giulivi and Boracchi (2024), section 5 of METHOD.md, which
    follows the CAM-style evaluation of Choe et al., "Evaluating weakly
    supervised object localization methods right", CVPR 2020: for every
    threshold t in {0, 0.01, ..., 0.99} binarise each map ({map > t}), keep
    the largest 4-connected component, take its bounding box; an image is a
    hit when that box has IoU > 0.5 with its ground-truth box. MaxBoxAcc is
    the best hit rate over t (the same t for all images).

    When an image has several ground-truth boxes it is a hit when the
    predicted box matches any of them (as wsolevaluation does). Empty masks
    (t at or above the map's maximum) are misses.

    Args:
      maps: N saliency maps, each a float array [H_n, W_n] in [0, 1] (an
        array [N, H, W] works: it iterates over maps).
      boxes: ground truth in each map's pixel coordinates, (x0, y0, x1, y1)
        with exclusive ends: either an array [N, 4] (one box per image) or a
        sequence of N arrays [K_n, 4].
      thresholds: binarisation thresholds, default {0, 0.01, ..., 0.99}.
      iou_threshold: a hit needs IoU strictly above it.

    Returns:
      `MaxBoxAccResult` with the value, best threshold and hit-rate curve.

    Raises:
      InputError: for malformed maps or boxes, or a count mismatch.
    """
    hits = _stack_hits(
        maps,
        boxes,
        thresholds=thresholds,
        iou_thresholds=(iou_threshold,),
        all_components=False,
        strict=True,
    )
    return max_box_acc_from_hits(hits[:, 0], thresholds=thresholds, iou_threshold=iou_threshold)


def max_box_acc_v2(
    maps: Iterable[np.ndarray],
    boxes: np.ndarray | Sequence[np.ndarray],
    *,
    thresholds: Sequence[float] = CAM_THRESHOLDS,
    iou_thresholds: Sequence[float] = V2_IOU_THRESHOLDS,
) -> MaxBoxAccV2Result:
    """MaxBoxAccV2 of Choe et al., CVPR 2020 (and their wsolevaluation code).

    Two changes from MaxBoxAcc: (1) the boxes of *all* 4-connected
    components of the binarised map are candidates, and an image is a hit
    when any of them matches any ground-truth box; (2) the accuracy is
    computed at IoU thresholds d in {0.3, 0.5, 0.7}, each with its own best
    binarisation threshold, and averaged:
    MaxBoxAccV2 = mean over d of max over t of BoxAcc(t, d). As in Choe et
    al., a hit needs IoU >= d. Binarisation is {map > t}, like MaxBoxAcc.

    Note: wsolevaluation finds components with OpenCV contours (8-connected
    outlines) on a uint8-quantised map; this follows METHOD.md and uses
    4-connected pixel components on the float map.

    Args:
      maps: N saliency maps, each a float array [H_n, W_n] in [0, 1].
      boxes: ground truth as for `max_box_acc`.
      thresholds: binarisation thresholds, default {0, 0.01, ..., 0.99}.
      iou_thresholds: the IoU thresholds averaged over.

    Returns:
      `MaxBoxAccV2Result`: the mean and the per-IoU results.

    Raises:
      InputError: for malformed maps or boxes, or a count mismatch.
    """
    hits = _stack_hits(
        maps,
        boxes,
        thresholds=thresholds,
        iou_thresholds=iou_thresholds,
        all_components=True,
        strict=False,
    )
    per_iou = tuple(
        max_box_acc_from_hits(hits[:, i], thresholds=thresholds, iou_threshold=d)
        for i, d in enumerate(iou_thresholds)
    )
    return MaxBoxAccV2Result(value=float(np.mean([r.value for r in per_iou])), per_iou=per_iou)


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


@dataclasses.dataclass(frozen=True)
class PointingGameResult:
    """Pointing-game accuracy.

    Attributes:
      value: mean of `hits`, in [0, 1].
      hits: float array [N], per image; 1 or 0 when the maximum is unique,
        the fraction of tied maximal pixels that hit otherwise.
    """

    value: float
    hits: np.ndarray


def pointing_game(
    maps: Iterable[np.ndarray],
    masks_or_boxes: np.ndarray | Sequence[np.ndarray],
    *,
    tolerance: float = 15,
) -> PointingGameResult:
    """Pointing game of Zhang et al., "Top-down neural attention by
    excitation backprop", ECCV 2016 / IJCV 2018.

    An image is a hit when the pixel where its map is largest lies within
    `tolerance` pixels (Euclidean distance between pixel centres) of the
    ground-truth region. Ties: when several pixels share the maximum, the
    image scores the fraction of them that hit, i.e. the expected hit of a
    pointer that picks one of them uniformly at random. This matters for
    ConVis maps, which are constant on 16 x 16 cells; a constant map scores
    the (dilated) region's share of the image, chance level.

    Args:
      maps: N saliency maps, float arrays [H_n, W_n], any finite values.
      masks_or_boxes: per image, either a boolean mask [H_n, W_n] of the
        ground-truth region, or boxes [K, 4] (x0, y0, x1, y1), exclusive
        ends, whose union is the region. An array [N, 4] means one box per
        image.
      tolerance: distance in pixels, >= 0 (15 in Zhang et al.).

    Returns:
      `PointingGameResult` with the mean and the per-image hits.

    Raises:
      InputError: for malformed maps, regions or tolerance.
    """
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
        peak = saliency == saliency.max()
        near = _dilate(mask, tolerance)
        hits.append(np.count_nonzero(peak & near) / np.count_nonzero(peak))
    hits = np.asarray(hits, dtype=np.float64)
    return PointingGameResult(value=float(hits.mean()), hits=hits)


def _region_mask(region, shape: tuple[int, int], name: str) -> np.ndarray:
    """A ground-truth region as a boolean mask of the map's shape."""
    arr = np.asarray(region)
    if arr.dtype == np.bool_:
        if arr.shape != shape:
            raise InputError(f"{name}: expected a mask of the map's shape {shape}, found {arr.shape}")
        return arr
    boxes = _as_boxes(arr, name)
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


@dataclasses.dataclass(frozen=True)
class PerturbationCurve:
    """A deletion or insertion curve and its area.

    Attributes:
      auc: trapezoid area under `scores` over `fractions`.
      fractions: float array [S + 1], share of pixels deleted (or inserted),
        from 0 to 1.
      scores: float array [S + 1], the model's score at each step.
    """

    auc: float
    fractions: np.ndarray
    scores: np.ndarray


def deletion_auc(
    image: np.ndarray,
    saliency: np.ndarray,
    score_fn: Callable[[np.ndarray], np.ndarray],
    *,
    steps: int = 100,
    baseline: float | np.ndarray = 0.0,
    batch_size: int = 32,
) -> PerturbationCurve:
    """Deletion metric of Petsiuk et al., "RISE: Randomized input sampling
    for explanation of black-box models", BMVC 2018.

    Pixels are replaced by `baseline` in order of decreasing saliency, and
    the model's score is recorded after every 1/`steps` of the pixels; the
    area under that curve over the fraction of pixels removed is the metric
    (lower is better: a faithful map removes what the model needs first).
    Saliency ties are removed in raster order. RISE deletes to black (0).

    Args:
      image: float array [H, W, C], in whatever range `score_fn` expects.
      saliency: float array [H, W], any finite values, high = important.
      score_fn: maps a batch of images, float32 [B, H, W, C], to their
        scores [B] (the model's score for the concept being explained).
      steps: number of deletion steps S >= 1; the curve has S + 1 points,
        the k-th after round(k H W / S) pixels.
      baseline: value of deleted pixels: a number, or an array that
        broadcasts to [H, W, C] (e.g. a blurred copy of the image).
      batch_size: images per `score_fn` call.

    Returns:
      `PerturbationCurve`.

    Raises:
      InputError: for mismatched shapes, bad steps or batch size, or a
        `score_fn` that does not return one finite score per image.
    """
    return _perturbation_curve(
        image, saliency, score_fn, steps=steps, baseline=baseline, batch_size=batch_size, insert=False
    )


def insertion_auc(
    image: np.ndarray,
    saliency: np.ndarray,
    score_fn: Callable[[np.ndarray], np.ndarray],
    *,
    steps: int = 100,
    baseline: float | np.ndarray = 0.0,
    batch_size: int = 32,
) -> PerturbationCurve:
    """Insertion metric of Petsiuk et al., "RISE", BMVC 2018.

    Starts from `baseline` and puts the image's pixels back in order of
    decreasing saliency, recording the model's score after every 1/`steps`
    of the pixels; the area under that curve over the fraction of pixels
    inserted is the metric (higher is better). Saliency ties are inserted in
    raster order. RISE starts from a blurred copy of the image: pass one as
    `baseline`; the default is black (0).

    Args:
      image: float array [H, W, C], in whatever range `score_fn` expects.
      saliency: float array [H, W], any finite values, high = important.
      score_fn: maps a batch of images, float32 [B, H, W, C], to scores [B].
      steps: number of insertion steps S >= 1; the curve has S + 1 points.
      baseline: the starting image: a number, or an array that broadcasts
        to [H, W, C].
      batch_size: images per `score_fn` call.

    Returns:
      `PerturbationCurve`.

    Raises:
      InputError: as for `deletion_auc`.
    """
    return _perturbation_curve(
        image, saliency, score_fn, steps=steps, baseline=baseline, batch_size=batch_size, insert=True
    )


def _perturbation_curve(image, saliency, score_fn, *, steps, baseline, batch_size, insert):
    image = np.asarray(image, dtype=np.float32)
    saliency = np.asarray(saliency, dtype=np.float64)
    if image.ndim != 3:
        raise InputError(f"image: expected [H, W, C], found shape {image.shape}")
    if saliency.shape != image.shape[:2]:
        raise InputError(
            f"saliency: expected the image's height and width {image.shape[:2]}, "
            f"found shape {saliency.shape}"
        )
    if not np.isfinite(saliency).all():
        raise InputError("saliency: expected finite values, found NaN or inf")
    if not (isinstance(steps, int) and steps >= 1):
        raise InputError(f"steps: expected an integer >= 1, found {steps!r}")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise InputError(f"batch_size: expected an integer >= 1, found {batch_size!r}")
    try:
        filler = np.broadcast_to(np.asarray(baseline, dtype=np.float32), image.shape)
    except ValueError:
        raise InputError(
            f"baseline: expected a number or an array that broadcasts to {image.shape}, "
            f"found shape {np.shape(baseline)}"
        ) from None

    h, w = saliency.shape
    n = h * w
    order = np.argsort(-saliency.reshape(-1), kind="stable")  # stable: ties in raster order
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    rank = rank.reshape(h, w)
    counts = np.rint(np.arange(steps + 1) * (n / steps)).astype(np.int64)
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
    fractions = counts / n
    auc = float(np.sum((scores[1:] + scores[:-1]) * 0.5 * np.diff(fractions)))
    return PerturbationCurve(auc=auc, fractions=fractions, scores=scores)


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
