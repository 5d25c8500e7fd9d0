"""Export of maps in the layout and at the size Choe et al.'s wsolevaluation scores."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from convis_jax.core.windows import (
    SQUARE,  # wsolevaluation scores maps on it (_RESIZE_LENGTH)
)
from convis_jax.errors import InputError

# ---------------------------------------------------------------------------
# wsolevaluation export


def wsolevaluation_path(out_dir: str | Path, image_id: str) -> Path:
    """Where wsolevaluation looks for an image's score map: `<out_dir>/<image_id>.npy`.

    wsolevaluation saves and loads `os.path.join(scoremap_root, image_id +
    '.npy')`, with image ids such as "001.Black_footed_Albatross/x.jpg", so
    the file keeps the image's extension: ".../x.jpg.npy".

    Args:
        out_dir: the score-map root.
        image_id: a relative path with "/" separators.

    Returns:
        The file's path.

    Raises:
        InputError: for an empty or absolute id, or one that climbs out of
            `out_dir` with "..".
    """
    rel = PurePosixPath(image_id)
    if not image_id or rel.is_absolute() or ".." in rel.parts:
        raise InputError(
            f"image_id: expected a relative path inside the output folder, found {image_id!r}"
        )
    return Path(out_dir).joinpath(*rel.parts[:-1], rel.name + ".npy")


def wsolevaluation_map(map_on_photo: np.ndarray, size: int = SQUARE) -> np.ndarray:
    """A map on its photo as wsolevaluation scores it: size x size, min-max normalised.

    wsolevaluation resizes every photo to 224 x 224 without cropping
    (torchvision's `Resize((224, 224))`: Pillow's bilinear resize, which
    widens its filter when shrinking) and compares maps of that size with
    boxes resized the same way. The map goes through the same resize (Pillow,
    mode "F"), then its `normalize_scoremap`: (m - min) / (max - min), so
    the minimum is exactly 0 and the maximum exactly 1. A constant map (e.g.
    all zeros) becomes all zeros, as there; `BoxEvaluator` then finds no
    contour at any threshold and predicts the box (0, 0, 0, 0).

    Args:
        map_on_photo: float [H0, W0], finite (e.g. `map_to_image` of a
            square map: zero where the centre crop cut the photo).
        size: side of the output (wsolevaluation: 224).

    Returns:
        float32 [size, size] in [0, 1].

    Raises:
        InputError: for a map that is not 2-D, non-empty and finite.
    """
    arr = np.asarray(map_on_photo, dtype=np.float32)
    if arr.ndim != 2 or arr.size == 0 or not np.isfinite(arr).all():
        raise InputError(f"expected a finite 2-D map [H, W], found shape {arr.shape}")
    resized = Image.fromarray(arr).resize((size, size), Image.BILINEAR)
    square = np.asarray(resized, dtype=np.float64)
    low, high = square.min(), square.max()
    if high == low:
        return np.zeros((size, size), np.float32)
    return ((square - low) / (high - low)).astype(np.float32)


def export_wsolevaluation(
    out_dir: str | Path, image_ids: Sequence[str], maps_on_photo: Iterable[np.ndarray]
) -> list[Path]:
    """Writes score maps that wsolevaluation's `evaluation.py` reads and scores as they are.

    One float32 `.npy` per image at `wsolevaluation_path(out_dir, image_id)`
    (folders created) holding `wsolevaluation_map` of the map on its photo:
    224 x 224 whatever the photo's size (its loader stacks a batch of maps,
    so they must share a size, and `BoxEvaluator` compares them with boxes
    resized to 224 x 224), values in [0, 1] with minimum 0 and maximum
    exactly 1 (all zeros for a constant map). Its loader turns them into
    float64 (`t2n`) before `check_scoremap_validity`. Files are written
    atomically: a crash never leaves half a map.

    Args:
        out_dir: the score-map root (`--scoremap_root`).
        image_ids: N relative image paths, e.g. CUB's "<class>/<file>.jpg".
        maps_on_photo: N float arrays [H_n, W_n], finite, each at its photo's
            size (`convis_jax.core.windows.map_to_image` puts a square map
            back on its photo).

    Returns:
        The N files written.

    Raises:
        InputError: for a count mismatch, a bad id, or a map that is not 2-D
            and finite.
    """
    image_ids = list(image_ids)
    maps = list(maps_on_photo)
    if len(image_ids) != len(maps):
        raise InputError(
            f"expected one map per image id, found {len(maps)} maps for {len(image_ids)} ids"
        )
    written = []
    for image_id, saliency in zip(image_ids, maps):
        target = wsolevaluation_path(out_dir, image_id)
        try:
            square = wsolevaluation_map(saliency)
        except InputError as err:
            raise InputError(f"{image_id}: {err}") from None
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        with temporary.open("wb") as f:
            np.save(f, square)
        os.replace(temporary, target)
        written.append(target)
    return written
