"""Export of maps in the layout of Choe et al.'s wsolevaluation."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

import numpy as np

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


def export_wsolevaluation(
    out_dir: str | Path, image_ids: Sequence[str], maps_on_photo: Iterable[np.ndarray]
) -> list[Path]:
    """Writes score maps in the layout of Choe et al.'s wsolevaluation code.

    One float32 `.npy` per image at `wsolevaluation_path(out_dir, image_id)`
    (folders created), holding the map at the photo's own size, values in
    [0, 1]. `convis_jax.core.windows.map_to_image` puts a 224 map back on its
    photo (zero where the centre crop cut the photo). Note: wsolevaluation's
    BoxEvaluator compares maps with boxes of the photo resized to 224 x 224
    (no crop), so resize these maps to 224 x 224 before feeding it. Files are
    written atomically: a crash never leaves half a map.

    Args:
        out_dir: the score-map root.
        image_ids: N relative image paths, e.g. CUB's "<class>/<file>.jpg".
        maps_on_photo: N float arrays [H_n, W_n], finite, in [0, 1] (rounding
            overshoot up to 1e-6 is clipped).

    Returns:
        The N files written.

    Raises:
        InputError: for a count mismatch, a bad id, or a map that is not 2-D,
            finite and within [0, 1].
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
        arr = np.asarray(saliency, dtype=np.float32)
        if arr.ndim != 2 or arr.size == 0 or not np.isfinite(arr).all():
            raise InputError(
                f"{image_id}: expected a finite 2-D map [H, W], found shape {arr.shape}"
            )
        if arr.min() < -1e-6 or arr.max() > 1 + 1e-6:
            raise InputError(
                f"{image_id}: expected a map in [0, 1], found [{arr.min():g}, {arr.max():g}]"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        with temporary.open("wb") as f:
            np.save(f, np.clip(arr, 0.0, 1.0))
        os.replace(temporary, target)
        written.append(target)
    return written


