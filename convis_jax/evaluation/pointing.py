"""The pointing game of saliency maps against ground-truth regions (masks or boxes)."""

import dataclasses
import math
from typing import Iterable, Sequence

import numpy as np

from convis_jax.errors import InputError
from convis_jax.evaluation.boxes import as_boxes, maps_with_truth, per_image_boxes
from convis_jax.evaluation.protocols import POINTING_PROTOCOLS, check_protocol


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
    check_protocol(protocol, POINTING_PROTOCOLS)
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
        raise InputError(f"tolerance: expected a finite number >= 0, found {tolerance!r}")
    regions = (
        per_image_boxes(masks_or_boxes)
        if isinstance(masks_or_boxes, np.ndarray) and masks_or_boxes.ndim == 2
        else list(masks_or_boxes)
    )
    hits = []
    for i, (saliency, region) in enumerate(maps_with_truth(maps, regions, "regions")):
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
