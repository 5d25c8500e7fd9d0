"""The reference protocols: the names `protocol=` takes, and the box rules of the two references.

Where the field's reference code fixes details the papers leave open, a
metric's `protocol=` reproduces that code's rules exactly: MaxBoxAcc
"convis" (the ConVis authors' `wsol_evaluation.py`) or "wsolevaluation"
(Choe et al.'s `BoxEvaluator`), pointing game "torchray", deletion/insertion
"rise". docs/protocols.md tabulates the rules. This module holds the box
protocols' per-threshold step (`localisation.localisation_hits` calls it);
the pointing and perturbation rules are branches of their metrics.

NumPy only, except "wsolevaluation", which uses OpenCV's contours as its
reference does (the `wsol` extra). Connected components are **4-connected**
(pixels that share an edge).
"""

import dataclasses
from typing import Sequence

import numpy as np

from convis_jax.errors import InputError
from convis_jax.evaluation.boxes import box_iou

#: The box protocols of `max_box_acc`, `max_box_acc_v2` and `localisation_hits`.
BOX_PROTOCOLS = ("convis", "wsolevaluation")

#: The rules of `pointing_game`.
POINTING_PROTOCOLS = ("torchray", "expected")

#: The rules of `deletion_auc` and `insertion_auc`.
PERTURBATION_PROTOCOLS = ("uniform", "rise")


def check_protocol(protocol, allowed: Sequence[str]) -> None:
    if protocol not in allowed:
        raise InputError(
            f"protocol: expected one of {', '.join(map(repr, allowed))}, found {protocol!r}"
        )


# ---------------------------------------------------------------------------
# Connected components


@dataclasses.dataclass(frozen=True)
class Components:
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



def connected_components(masks: np.ndarray) -> Components:
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
      The components of all K masks (`Components`).
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
    return Components(
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


def largest_per_slice(slice_index: np.ndarray, area: np.ndarray) -> np.ndarray:
    """Index of the largest component of every slice (first of ties)."""
    if area.size == 0:
        return np.zeros(0, dtype=np.int64)
    # Sort by slice, then area descending, then raster order; keep the first
    # component of each slice.
    order = np.lexsort((np.arange(area.size), -area, slice_index))
    first = np.ones(order.size, dtype=bool)
    first[1:] = slice_index[order[1:]] != slice_index[order[:-1]]
    return order[first]


# ---------------------------------------------------------------------------
# The box rules of each reference


def convis_best_iou(saliency, gt, thresholds, all_components) -> np.ndarray:
    """Best IoU at every threshold under the "convis" rules; -1 where nothing is predicted.

    Args:
      saliency: float64 [H, W] in [0, 1]; gt: float64 [K, 4] ground-truth boxes;
      thresholds: float64 [T]; all_components: every component's box, not the largest's.

    Returns:
      float64 [T].
    """
    # Thresholds between the same two distinct map values give the same
    # mask: label each distinct mask once (quantised maps, such as ConVis'
    # 16-pixel cells, have few). With `level` = number of distinct values
    # < t, {saliency >= t} = {saliency >= values[level]}.
    values = np.unique(saliency)
    level = np.searchsorted(values, thresholds, side="left")
    levels, which = np.unique(level, return_inverse=True)
    masks = saliency[None] >= values[np.minimum(levels, values.size - 1)][:, None, None]
    masks[levels == values.size] = False  # t above the maximum: nothing is kept

    comps = connected_components(masks)
    if all_components:
        keep = np.arange(comps.area.size)
    else:
        keep = largest_per_slice(comps.slice_index, comps.area)
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


def wsolevaluation_best_iou(saliency, gt, thresholds, all_components) -> np.ndarray:
    """Best IoU at every threshold under wsolevaluation's rules (always >= 0).

    Args: as for `convis_best_iou`, the boxes read with inclusive ends.

    Returns:
      float64 [T].

    Raises:
      InputError: for negative boxes or boxes with x1 < x0 or y1 < y0;
        ImportError naming the extra when OpenCV is missing.
    """
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
