"""Ground-truth boxes: validation, Algorithm 1's crop and resize, the references' own box numbers.

`convis_jax.core.windows.prepare_image` cuts the centred square out of a
photo (`square_crop_box`) and resizes it to size x size; every map lives on
that square. Localisation metrics compare maps with ground-truth boxes, so
the boxes must make the same journey.

A **box** is (x0, y0, x1, y1) in pixel coordinates of the map, x along the
width and y along the height, with x1 and y1 **exclusive**: the box covers
the pixels x0 <= x < x1, y0 <= y < y1, and its area is (x1 - x0) (y1 - y0).
A box with x1 <= x0 or y1 <= y0 is empty. Coordinates may be fractional
(ground-truth boxes moved by a resize are). CUB's (x, y, width, height) is
converted by the dataset reader (`convis_jax.evaluation.datasets`). Pixel
(x, y) covers [x, x + 1) x [y, y + 1), so resizing a square of side s to side S
multiplies every coordinate by S / s: pixel edges go to pixel edges, the
alignment of Pillow's resize and of `map_to_image` (pixel centres at i + 0.5).

The two box protocols (`convis_jax.evaluation.protocols`) read boxes
their own way, with integer truncation at fixed steps; `convis_square_boxes`
and `wsolevaluation_boxes` compute the very numbers each reference compares
against, so that a protocol's result equals its reference's.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from convis_jax.core.windows import square_crop_box
from convis_jax.errors import InputError


def boxes_to_square(
    boxes: np.ndarray, original_size: tuple[int, int], size: int = 224
) -> np.ndarray:
    """Moves boxes from a photo onto its prepared size x size square.

    The centre crop cuts away the ends of the photo's long side; the part of
    a box that lies there was never seen by the model, so it is clipped away.
    A box that lies wholly in the cut-away part becomes empty (zero area:
    x1 <= x0 or y1 <= y0), which no prediction can match.

    Args:
        boxes: float [K, 4] boxes (x0, y0, x1, y1) in the photo's pixels,
            exclusive ends, finite.
        original_size: (H0, W0) of the photo, positive ints.
        size: side S of the prepared square, positive.

    Returns:
        float64 [K, 4] boxes in the square's pixels, every coordinate in [0, S].

    Raises:
        InputError: boxes are not a finite [K, 4] array, or a size is not a
            positive integer.
    """
    corner, scale = _crop_transform(original_size, size)
    return np.clip((as_boxes(boxes) - corner) * scale, 0.0, float(size))


def boxes_from_square(
    boxes: np.ndarray, original_size: tuple[int, int], size: int = 224
) -> np.ndarray:
    """Moves boxes from the prepared size x size square back onto the photo.

    The inverse of `boxes_to_square` for boxes inside the centre crop (e.g.
    predicted boxes): scales by side / S and shifts by the crop's corner.

    Args:
        boxes: float [K, 4] boxes (x0, y0, x1, y1) in the square's pixels,
            exclusive ends, finite.
        original_size: (H0, W0) of the photo, positive ints.
        size: side S of the prepared square, positive.

    Returns:
        float64 [K, 4] boxes in the photo's pixels, inside the centre crop
        when the input lies inside [0, S].

    Raises:
        InputError: as for `boxes_to_square`.
    """
    corner, scale = _crop_transform(original_size, size)
    return as_boxes(boxes) / scale + corner


def _crop_transform(original_size: tuple[int, int], size: int) -> tuple[np.ndarray, float]:
    """The crop's corner as a box offset (left, top, left, top), and S / side."""
    crop = square_crop_box(*original_size)
    corner = np.array([crop.left, crop.top, crop.left, crop.top], dtype=np.float64)
    return corner, _positive(size) / crop.side


def as_boxes(boxes, name: str = "boxes") -> np.ndarray:
    """Checks and converts a box array: the one box validation of the package.

    Args:
        boxes: [K, 4] boxes (x0, y0, x1, y1), any real coordinates, K >= 0.
        name: how the error names the argument.

    Returns:
        float64 [K, 4].

    Raises:
        InputError: when `boxes` is not a finite [K, 4] array.
    """
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise InputError(
            f"{name}: expected boxes of shape [K, 4] as (x0, y0, x1, y1), "
            f"found shape {arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise InputError(f"{name}: expected finite box coordinates, found NaN or inf")
    return arr


def convis_square_boxes(
    boxes: np.ndarray, original_size: tuple[int, int], size: int = 224
) -> np.ndarray:
    """Boxes on the prepared square as the ConVis authors' `wsol_evaluation.py` computes them.

    Their `correct_bbox` works on CUB's (x, y, w, h): it shifts x (y) by
    floor(excess / 2) of the photo's long side (the crop of
    `square_crop_box`), shortens w (h) by what the shift pushed below 0,
    clamps x (y) to >= 0 and w (h) to <= side - x (side - y), then truncates
    each of the four numbers to an integer after scaling by size / side:
    int(v * size / side). The result is given back as (x, y, x + w, y + h),
    the form their IoU reads. A box wholly cut away by the crop gets a
    negative width or height (empty: IoU 0 with everything).

    Args:
        boxes: float [K, 4] boxes (x0, y0, x1, y1) in the photo's pixels,
            exclusive ends (CUB's x, y, x + w, y + h).
        original_size: (H0, W0) of the photo.
        size: side S of the square (224 in their script).

    Returns:
        float64 [K, 4] integer-valued boxes (x0, y0, x1, y1) on the square.

    Raises:
        InputError: as for `boxes_to_square`.
    """
    arr = as_boxes(boxes)
    crop = square_crop_box(*original_size)
    side = crop.side
    ratio = _positive(size) / side
    out = np.empty_like(arr)
    for k, (x0, y0, x1, y1) in enumerate(arr):
        xywh = []
        for start, extent, offset in ((x0, x1 - x0, crop.left), (y0, y1 - y0, crop.top)):
            start = start - offset
            if start < 0:
                extent = extent + start
            start = max(0.0, start)
            extent = min(side - start, extent)
            xywh.append((start, extent))
        (x, w), (y, h) = xywh
        x, y, w, h = (int(v * ratio) for v in (x, y, w, h))
        out[k] = (x, y, x + w, y + h)
    return out


def wsolevaluation_boxes(
    boxes: np.ndarray, original_size: tuple[int, int], size: int = 224
) -> np.ndarray:
    """The boxes wsolevaluation's `BoxEvaluator` compares with a map of a photo.

    Its metadata lists integer (x0, y0, x1, y1) per box in the photo's
    pixels; `resize_bbox` scales them to the size x size map the whole photo
    is resized to (no crop): int(x * size / W0), int(y * size / H0). The
    numbers are then read with *inclusive* ends by its IoU (see
    `localisation.localisation_hits`, protocol "wsolevaluation").

    Args:
        boxes: float [K, 4] boxes (x0, y0, x1, y1) in the photo's pixels (the
            metadata's numbers; fractional values are truncated to integers
            first, as the metadata holds integers), non-negative.
        original_size: (H0, W0) of the photo.
        size: side of the resized map (224 in wsolevaluation).

    Returns:
        float64 [K, 4] integer-valued boxes on the size x size map.

    Raises:
        InputError: for malformed boxes, negative coordinates, or a bad size.
    """
    arr = as_boxes(boxes)
    if (arr < 0).any():
        raise InputError("boxes: expected non-negative coordinates (wsolevaluation rejects "
                         f"others), found {arr[(arr < 0).any(axis=1)][0].tolist()}")
    height, width = (_positive(v) for v in original_size)
    side = float(_positive(size))
    out = np.empty_like(arr)
    for k, (x0, y0, x1, y1) in enumerate(arr):
        x0, y0, x1, y1 = (float(int(v)) for v in (x0, y0, x1, y1))
        out[k] = (int(x0 * side / width), int(y0 * side / height),
                  int(x1 * side / width), int(y1 * side / height))
    return out


def _positive(size) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
        raise InputError(f"size: expected a positive integer, found {size!r}")
    return int(size)


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


def per_image_boxes(boxes: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per-image ground-truth boxes: an [N, 4] array or N arrays [K_i, 4]."""
    if isinstance(boxes, np.ndarray) and boxes.ndim == 2:
        return [row[None] for row in boxes]
    return [np.asarray(b, dtype=np.float64) for b in boxes]


def maps_with_truth(maps: Iterable[np.ndarray], truth: list, what: str):
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
