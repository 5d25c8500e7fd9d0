"""Ground-truth boxes through Algorithm 1's centre crop and resize, and back.

`convis_jax.core.windows.prepare_image` cuts the centred square out of a
photo (`square_crop_box`) and resizes it to size x size; every map lives on
that square. Localisation metrics compare maps with ground-truth boxes, so
the boxes must make the same journey.

Boxes follow `convis_jax.evaluation.metrics`: (x0, y0, x1, y1) in pixels, x along
the width, x1 and y1 exclusive, fractional coordinates allowed. Pixel (x, y)
covers [x, x + 1) x [y, y + 1), so resizing a square of side s to side S
multiplies every coordinate by S / s: pixel edges go to pixel edges, the
alignment of Pillow's resize and of `map_to_image` (pixel centres at i + 0.5).
"""

from __future__ import annotations

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
    return np.clip((_as_boxes(boxes) - corner) * scale, 0.0, float(size))


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
    return _as_boxes(boxes) / scale + corner


def _crop_transform(original_size: tuple[int, int], size: int) -> tuple[np.ndarray, float]:
    """The crop's corner as a box offset (left, top, left, top), and S / side."""
    crop = square_crop_box(*original_size)
    corner = np.array([crop.left, crop.top, crop.left, crop.top], dtype=np.float64)
    return corner, _positive(size) / crop.side


def _as_boxes(boxes) -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise InputError(
            f"boxes: expected shape [K, 4] as (x0, y0, x1, y1), found shape {arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise InputError("boxes: expected finite coordinates, found NaN or inf")
    return arr


def _positive(size) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
        raise InputError(f"size: expected a positive integer, found {size!r}")
    return int(size)
