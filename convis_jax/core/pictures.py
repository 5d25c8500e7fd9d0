"""Pictures of maps: the paper's white-blend overlay, heat-map overlays, concept grids.

Every function takes the photo as uint8 [H, W, 3] and a map already on the
photo's pixels (float [H, W] in [0, 1]; `windows.map_to_image` puts a
224 x 224 map there), so overlays keep the photo's size and aspect ratio.
matplotlib is imported only by the functions that need it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from convis_jax.errors import InputError


def _check(photo: np.ndarray, saliency: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    photo = np.asarray(photo)
    saliency = np.asarray(saliency, np.float32)
    if photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8:
        raise InputError(f"photo must be uint8 [H, W, 3], found {photo.dtype} {list(photo.shape)}")
    if saliency.shape != photo.shape[:2]:
        raise InputError(f"map must be [H, W] = {list(photo.shape[:2])} like the photo, found "
                         f"{list(saliency.shape)}; use map_to_image to put a 224 map on the photo")
    if not np.all(np.isfinite(saliency)):
        raise InputError("map holds NaN or inf values")
    return photo, np.clip(saliency, 0.0, 1.0)


def white_overlay(photo: np.ndarray, saliency: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """The paper's overlay: blend each pixel towards white by 1 - map**gamma.

    Where the concept is (map 1) the photo shows unchanged; where it is not
    (map 0) the pixel turns white. A larger gamma keeps only the strongest
    regions.

    Args:
        photo: uint8 [H, W, 3].
        saliency: float [H, W] in [0, 1].
        gamma: exponent applied to the map, > 0.

    Returns:
        uint8 [H, W, 3].
    """
    if not gamma > 0:
        raise InputError(f"gamma must be positive, found {gamma}")
    photo, saliency = _check(photo, saliency)
    weight = (saliency ** gamma)[..., None]
    return np.rint(photo * weight + 255.0 * (1.0 - weight)).astype(np.uint8)


def heatmap_overlay(photo: np.ndarray, saliency: np.ndarray, *, alpha: float = 0.5,
                    colormap: str = "turbo") -> np.ndarray:
    """The map in a matplotlib colour map, alpha-blended over the photo: uint8 [H, W, 3]."""
    from matplotlib import colormaps

    photo, saliency = _check(photo, saliency)
    colours = colormaps[colormap](saliency)[..., :3] * 255.0
    return np.rint((1 - alpha) * photo + alpha * colours).astype(np.uint8)


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Writes uint8 [H, W, 3] as a PNG; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(image, np.uint8)).save(path)
    return path


def save_heatmap(photo: np.ndarray, saliency: np.ndarray, path: str | Path, *, title: str = "",
                 alpha: float = 0.5, colormap: str = "turbo") -> Path:
    """A heat-map overlay with a colour bar, as a PNG figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    photo, saliency = _check(photo, saliency)
    height, width = saliency.shape
    fig, ax = plt.subplots(figsize=(5 * width / max(height, width) + 1, 5 * height / max(height, width)))
    ax.imshow(heatmap_overlay(photo, saliency, alpha=alpha, colormap=colormap))
    mappable = plt.cm.ScalarMappable(cmap=colormap, norm=plt.Normalize(0, 1))
    fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    return _save_figure(fig, path)


def concept_grid(photo: np.ndarray, maps: np.ndarray, titles: list[str], path: str | Path, *,
                 gamma: float = 1.0, columns: int = 4) -> Path:
    """One photo's maps for many concepts, white-blend overlays in a titled grid (PNG).

    Args:
        photo: uint8 [H, W, 3].
        maps: float [K, H, W] in [0, 1].
        titles: K titles (synset names).
        path: the PNG to write.
        gamma: the overlay exponent.
        columns: panels per row.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maps = np.asarray(maps)
    if maps.ndim != 3 or len(titles) != len(maps):
        raise InputError(f"expected maps [K, H, W] with K titles, found {list(maps.shape)} and "
                         f"{len(titles)} titles")
    count = len(maps) + 1
    columns = min(columns, count)
    rows = -(-count // columns)
    height, width = photo.shape[:2]
    panel = 3.0
    fig, axes = plt.subplots(rows, columns, squeeze=False,
                             figsize=(panel * columns, panel * rows * height / width + 0.4 * rows))
    panels = [(photo, "image")] + [(white_overlay(photo, m, gamma), t) for m, t in zip(maps, titles)]
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (image, title) in zip(axes.ravel(), panels):
        ax.imshow(image)
        ax.set_title(title, fontsize=9)
    return _save_figure(fig, path)


def _save_figure(fig, path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
