"""Pictures of maps: the paper's white-blend overlay, heat-map overlays, concept grids.

Every function takes the photo as uint8 [H, W, 3] and a map already on the
photo's pixels (float [H, W] in [0, 1]; `windows.map_to_image` puts a
224 x 224 map there), so overlays keep the photo's size and aspect ratio.
matplotlib is imported only by the functions that need it, and pyplot never
(figures are bare `Figure`s, so a notebook's backend is left alone).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from convis_jax.core.batches import positive_int
from convis_jax.core.cache import atomic_write_bytes
from convis_jax.errors import InputError


def _check_photo(photo: np.ndarray) -> np.ndarray:
    photo = np.asarray(photo)
    if photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8 or 0 in photo.shape:
        raise InputError(f"photo must be uint8 [H, W, 3] with H, W >= 1, found {photo.dtype} "
                         f"{list(photo.shape)}")
    return photo


def _check(photo: np.ndarray, saliency: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    photo = _check_photo(photo)
    saliency = np.asarray(saliency, np.float32)
    if saliency.shape != photo.shape[:2]:
        raise InputError(f"map must be [H, W] = {list(photo.shape[:2])} like the photo, found "
                         f"{list(saliency.shape)}; use map_to_image to put a 224 map on the photo")
    if not np.all(np.isfinite(saliency)):
        raise InputError(f"map must hold finite values, found {np.isnan(saliency).sum()} NaN and "
                         f"{np.isinf(saliency).sum()} inf")
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
    """The map in a matplotlib colour map, alpha-blended over the photo.

    Args:
        photo: uint8 [H, W, 3].
        saliency: float [H, W] in [0, 1].
        alpha: weight of the colours, in [0, 1] (0 keeps the photo).
        colormap: a matplotlib colour map name.

    Returns:
        uint8 [H, W, 3].

    Raises:
        InputError: bad shapes, values, alpha or colour map name.
    """
    photo, saliency = _check(photo, saliency)
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in [0, 1], found {alpha}")
    colours = _colormap(colormap)(saliency)[..., :3] * 255.0
    return np.rint((1 - alpha) * photo + alpha * colours).astype(np.uint8)


def _colormap(name: str):
    from matplotlib import colormaps

    if name not in colormaps:
        raise InputError(f"colormap must be a matplotlib colour map name such as 'turbo', "
                         f"found {name!r}")
    return colormaps[name]


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Writes an image as a PNG at its own size; returns the path.

    Args:
        image: uint8 [H, W, 3] (or [H, W] grey). Other dtypes are refused rather
            than cast, since casting float pictures in [0, 1] would give black.
        path: the file to write (parent folders are created).

    Raises:
        InputError: the image is not uint8 [H, W, 3] or [H, W].
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise InputError(f"image must be uint8 [H, W, 3] or [H, W], found {image.dtype} "
                         f"{list(image.shape)}")
    path = Path(path)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())  # an interrupted run leaves no half a PNG
    return path


def save_heatmap(photo: np.ndarray, saliency: np.ndarray, path: str | Path, *, title: str = "",
                 alpha: float = 0.5, colormap: str = "turbo") -> Path:
    """A heat-map overlay with a colour bar, as a PNG figure with the photo's aspect ratio.

    Args:
        photo: uint8 [H, W, 3].
        saliency: float [H, W] in [0, 1].
        path: the PNG to write.
        title: the figure title.
        alpha, colormap: as in `heatmap_overlay`.

    Returns:
        The path written.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    overlay = heatmap_overlay(photo, saliency, alpha=alpha, colormap=colormap)
    height, width = overlay.shape[:2]
    fig = Figure(figsize=(5 * width / max(height, width) + 1, 5 * height / max(height, width)))
    ax = fig.subplots()
    ax.imshow(overlay)
    fig.colorbar(ScalarMappable(Normalize(0, 1), _colormap(colormap)), ax=ax, fraction=0.046,
                 pad=0.04)
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
        columns: panels per row, >= 1.

    Returns:
        The path written.

    Raises:
        InputError: maps and titles disagree, maps do not match the photo, or columns < 1.
    """
    maps = np.asarray(maps)
    if maps.ndim != 3 or len(titles) != len(maps):
        raise InputError(f"expected maps [K, H, W] with K titles, found {list(maps.shape)} and "
                         f"{len(titles)} titles")
    columns = positive_int(columns, "columns")
    from matplotlib.figure import Figure

    # Every overlay first: a bad map fails before a figure is made.
    panels = [(_check_photo(photo), "image")] + [(white_overlay(photo, m, gamma), t)
                                                 for m, t in zip(maps, titles)]
    count = len(maps) + 1
    columns = min(columns, count)
    rows = -(-count // columns)
    height, width = photo.shape[:2]
    panel = 3.0
    # Panels follow the photo's aspect ratio, within 1:4 and 4:1 so that a strip of a
    # photo does not ask for a figure of a hundred thousand pixels.
    aspect = min(max(height / width, 0.25), 4.0)
    fig = Figure(figsize=(panel * columns, panel * rows * aspect + 0.4 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (image, title) in zip(axes.ravel(), panels):
        ax.imshow(image)
        ax.set_title(title, fontsize=9)
    return _save_figure(fig, path)


def _save_figure(fig, path) -> Path:
    # A bare Figure renders with Agg by itself: no pyplot, so a user's backend and
    # open figures are left alone.
    path = Path(path)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=100, format=path.suffix.lstrip(".").lower() or "png")
    atomic_write_bytes(path, buffer.getvalue())
    return path
