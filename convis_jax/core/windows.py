"""Where the occlusion windows are cut: image preparation, padding, window grid.

Algorithm 1 of ConVis (docs/method.md, section 3) centre-crops and resizes the photo
to a square, pads it, and slides square windows of a few sizes over the
padded image on a stride lattice. This module holds that geometry:

* `prepare_image`, `square_crop_box`, `map_to_image`: photo -> model square
  and a map on that square -> back onto the photo, so overlays line up.
* `window_grid`: which windows exist, and the cells (blocks of pixels on
  which every map is constant) that they tile.
* `pad_images`, `crop_windows`: the pixels of the windows (plain NumPy; the
  JAX backend has its own batched version of the cropping).

Coordinates: window origins are in pixels of the PADDED image; cell edges and
crop boxes are in pixels of the unpadded image. Arrays are [..., y, x].

The authors' reference code blurs each window's edge by half a pixel before
cropping; that touches only the outermost pixel row and is left out here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from convis_jax.core.batches import positive_int
from convis_jax.errors import InputError

# Algorithm 1's defaults (docs/method.md, section 3): the model square, the window
# sides and the lattice step, in pixels.
SQUARE = 224
WINDOW_SIZES = (128, 64)
STRIDE = 16
PADDING_MODES = ("noise", "constant")


def padding_mode(mode) -> str:
    """The padding mode, checked: "noise" (the paper's uniform noise) or "constant" (black)."""
    if mode not in PADDING_MODES:
        raise InputError(f"padding must be 'noise' or 'constant', found {mode!r} (the padding "
                         f"mode: uniform noise or black)")
    return mode


@dataclass(frozen=True, eq=False)
class WindowGrid:
    """The occlusion windows of one image size, and the cells they tile.

    Build it with `window_grid`, which checks the arguments and derives every
    field. Two grids are equal (and hash alike) when their defining
    arguments are equal, so a grid can be a static argument of `jax.jit`.

    Attributes:
        image_size: (H, W) of the unpadded image, in pixels.
        window_sizes: side of each window size, in pixels, in the order the
            per-size arrays use everywhere.
        stride: step of the origin lattice, in pixels.
        padding: pixels of padding on every side of the image.
        cell: side of a cell in pixels, gcd(stride, window sizes, padding).
            Every window edge falls on a cell edge, so every map made from
            window scores is constant on cells.
        origins: for each window size, (origins_y, origins_x): 1-D int64
            arrays of window origins in padded pixel coordinates, increasing.
            That size's windows are their outer product, row-major
            [ny, nx]. Read-only.
        cell_edges: (edges_y, edges_x): int64 arrays of cell boundaries in
            unpadded pixel coordinates, from 0 to H (resp. W); the last cell
            is partial when H (resp. W) is not a multiple of `cell`.
            Read-only.
    """

    image_size: tuple[int, int]
    window_sizes: tuple[int, ...]
    stride: int
    padding: int
    cell: int
    origins: tuple[tuple[np.ndarray, np.ndarray], ...]
    cell_edges: tuple[np.ndarray, np.ndarray]

    def _key(self) -> tuple:
        # Everything else is derived from these four.
        return (self.image_size, self.window_sizes, self.stride, self.padding)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WindowGrid):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @property
    def lattice_shapes(self) -> tuple[tuple[int, int], ...]:
        """(ny, nx) of the window lattice of each window size."""
        return tuple((len(oy), len(ox)) for oy, ox in self.origins)

    @property
    def n_windows(self) -> int:
        """Number of windows over all sizes."""
        return sum(ny * nx for ny, nx in self.lattice_shapes)

    @property
    def cells_shape(self) -> tuple[int, int]:
        """(cy, cx): number of cells along y and x."""
        return (len(self.cell_edges[0]) - 1, len(self.cell_edges[1]) - 1)

    @property
    def padded_size(self) -> tuple[int, int]:
        """(H + 2 padding, W + 2 padding)."""
        height, width = self.image_size
        return (height + 2 * self.padding, width + 2 * self.padding)


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _axis_origins(length: int, window: int, stride: int, padding: int) -> np.ndarray:
    """Lattice origins along one axis of windows inside the padded image that
    overlap the unpadded image [padding, padding + length)."""
    lattice = np.arange(0, length + 2 * padding - window + 1, stride, dtype=np.int64)
    overlaps = (lattice < padding + length) & (lattice + window > padding)
    return lattice[overlaps]


def window_grid(
    image_size: tuple[int, int],
    window_sizes: tuple[int, ...] = WINDOW_SIZES,
    stride: int = STRIDE,
    padding: int | None = None,
) -> WindowGrid:
    """The windows of Algorithm 1 for one image size.

    Windows are squares whose origins lie on a lattice of step `stride`
    starting at pixel 0 of the padded image. A window is kept when it lies
    fully inside the padded image and overlaps the unpadded image: windows
    wholly in the padding would only add to pixels that are cut away. With
    the paper's setting (224 x 224, sizes (128, 64), stride 16, padding 128)
    that keeps 21 x 21 + 17 x 17 = 730 of the 2 x 30 x 30 lattice windows,
    and no kept window is truncated by the padded border. `padding=0` keeps
    windows inside the image, as the authors' web app did.

    Args:
        image_size: (H, W) of the unpadded image, positive ints.
        window_sizes: window sides in pixels, positive and distinct.
        stride: lattice step in pixels, positive.
        padding: pixels added on every side; defaults to max(window_sizes).

    Returns:
        The `WindowGrid`.

    Raises:
        InputError: a size, stride or padding is not a positive integer
            (padding may be 0), window sizes repeat, a window is larger than
            the image both ways (it would hold more padding than image
            wherever it lay) or than the padded image, or no window of some
            size overlaps the image.
    """
    try:
        height, width = image_size
    except (TypeError, ValueError):
        raise InputError(f"image_size must be (height, width), found {image_size!r}") from None
    height = positive_int(height, "image height")
    width = positive_int(width, "image width")
    sizes = tuple(positive_int(size, "window size") for size in window_sizes)
    if not sizes:
        raise InputError("window_sizes must name at least one window size, found none")
    if len(set(sizes)) != len(sizes):
        raise InputError(f"window_sizes must be distinct, found {sizes}")
    stride = positive_int(stride, "stride")
    if padding is None:
        padding = max(sizes)
    if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
        raise InputError(f"padding must be a non-negative integer, found {padding!r}")
    padding = int(padding)

    padded = (height + 2 * padding, width + 2 * padding)
    origins = []
    for size in sizes:
        if size > max(height, width):  # it would hold more padding than image wherever it lay
            raise InputError(
                f"window size {size} is larger than the {height} x {width} image; expected "
                f"window sizes up to {max(height, width)}")
        if size > min(padded):
            raise InputError(
                f"window size {size} does not fit in the padded image "
                f"{padded[0]} x {padded[1]} ({height} x {width} padded by {padding})"
            )
        origins_y = _axis_origins(height, size, stride, padding)
        origins_x = _axis_origins(width, size, stride, padding)
        if len(origins_y) == 0 or len(origins_x) == 0:
            raise InputError(
                f"no window of size {size} on a stride-{stride} lattice overlaps the "
                f"{height} x {width} image padded by {padding}; use a smaller stride"
            )
        origins.append((_read_only(origins_y), _read_only(origins_x)))

    cell = math.gcd(stride, padding, *sizes)
    cell_edges = tuple(
        _read_only(np.append(np.arange(0, length, cell, dtype=np.int64), length))
        for length in (height, width)
    )
    return WindowGrid(
        image_size=(height, width),
        window_sizes=sizes,
        stride=stride,
        padding=padding,
        cell=cell,
        origins=tuple(origins),
        cell_edges=cell_edges,
    )


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise InputError(f"images must be [N, H, W, 3], found shape {images.shape}")
    if not np.issubdtype(images.dtype, np.floating):
        raise InputError(f"images must be floating point in [0, 255], found dtype {images.dtype}")
    if not np.all(np.isfinite(images)):
        raise InputError("images must be finite, found NaN or inf")
    if images.size and (images.min() < 0 or images.max() > 255):
        raise InputError(
            f"images must lie in [0, 255], found [{images.min()}, {images.max()}]"
        )
    return images


def pad_images(
    images: np.ndarray, padding: int, mode: str = "noise", seed: int | Sequence[int] = 0
) -> np.ndarray:
    """Pad a batch of images on every side (Algorithm 1, step 2).

    Args:
        images: float [N, H, W, 3], RGB values in [0, 255].
        padding: pixels added on every side, >= 0.
        mode: "noise" fills the padding with uniform noise in [0, 255) drawn
            from `np.random.default_rng(seed)`, as the paper does;
            "constant" fills it with 0 (black), for deterministic comparisons.
        seed: seed of the noise, an int or a sequence of ints (anything
            `np.random.default_rng` accepts); ignored for "constant". The noise is one
            draw of shape [N, H + 2P, W + 2P, 3] in C order, so the same seed
            gives the same padding, another seed changes only the padding,
            and image n's padding does not depend on how many images follow.

    Returns:
        float32 [N, H + 2 padding, W + 2 padding, 3]; the images sit unchanged
        at [:, padding:padding + H, padding:padding + W].

    Raises:
        InputError: images are not float [N, H, W, 3] in [0, 255], padding
            is negative, or mode is unknown.
    """
    images = _check_images(images)
    if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
        raise InputError(f"padding must be a non-negative integer, found {padding!r}")
    count, height, width, _ = images.shape
    shape = (count, height + 2 * padding, width + 2 * padding, 3)
    if mode == "noise":
        padded = np.random.default_rng(seed).uniform(0.0, 255.0, size=shape).astype(np.float32)
    elif padding_mode(mode) == "constant":
        padded = np.zeros(shape, np.float32)
    padded[:, padding : padding + height, padding : padding + width] = images
    return padded


def pad_squares(photos: Sequence[np.ndarray], numbers: Sequence[int], padding: int,
                mode: str = "noise", seed: int = 0, size: int = SQUARE) -> np.ndarray:
    """Algorithm 1 steps 1-2 for photos numbered in a collection.

    Each photo is centre-cropped and resized (`prepare_image`), then padded
    (`pad_images`) with noise drawn from (seed, its number), so that an image's
    padding does not depend on how images are batched or shared out.

    Args:
        photos: N uint8 [H, W, 3] photos.
        numbers: N ints >= 0, each photo's number in its collection.
        padding: pixels added on every side.
        mode: "noise" or "constant" (`pad_images`).
        seed: seed of the noise.
        size: side of the square.

    Returns:
        float32 [N, size + 2 padding, size + 2 padding, 3] in [0, 255].
    """
    return np.concatenate([pad_images(prepare_image(photo, size)[None], padding, mode,
                                      seed=[seed, int(number)])
                           for photo, number in zip(photos, numbers)])


def crop_windows(padded: np.ndarray, grid: WindowGrid, size_index: int) -> np.ndarray:
    """Cut out every window of one size (plain NumPy, for references).

    Args:
        padded: [N, Hp, Wp, C] padded images, (Hp, Wp) == grid.padded_size.
        grid: the window grid.
        size_index: which of grid.window_sizes.

    Returns:
        [N, ny, nx, w, w, C] copies of the windows, w = that window size,
        (ny, nx) = grid.lattice_shapes[size_index], same dtype as `padded`.

    Raises:
        InputError: `padded` does not match the grid, or size_index is out
            of range.
    """
    padded = np.asarray(padded)
    if padded.ndim != 4 or padded.shape[1:3] != grid.padded_size:
        raise InputError(
            f"padded images must be [N, {grid.padded_size[0]}, {grid.padded_size[1]}, C], "
            f"found shape {padded.shape}"
        )
    if not 0 <= size_index < len(grid.window_sizes):
        raise InputError(
            f"size_index must be in [0, {len(grid.window_sizes)}), found {size_index}"
        )
    size = grid.window_sizes[size_index]
    origins_y, origins_x = grid.origins[size_index]
    # [N, Hp - w + 1, Wp - w + 1, C, w, w], a view. The origins are a run of
    # the stride lattice, so slicing (not fancy indexing) picks them and the
    # only copy is the final one, which is many times faster.
    views = np.lib.stride_tricks.sliding_window_view(padded, (size, size), axis=(1, 2))
    step = grid.stride
    windows = views[
        :,
        origins_y[0] : origins_y[-1] + 1 : step,
        origins_x[0] : origins_x[-1] + 1 : step,
    ]
    return np.ascontiguousarray(np.moveaxis(windows, 3, -1))


@dataclass(frozen=True)
class SquareCrop:
    """The centred square that Algorithm 1 cuts out of a photo.

    Attributes:
        top: first row of the square in the photo.
        left: first column of the square in the photo.
        side: side of the square, min(H0, W0).
        original_size: (H0, W0) of the photo.
    """

    top: int
    left: int
    side: int
    original_size: tuple[int, int]


def square_crop_box(height: int, width: int) -> SquareCrop:
    """The centred square crop of a height x width photo.

    When the excess (long side - short side) is odd, the bottom or right side
    loses the extra pixel: top = (H0 - side) // 2.

    Args:
        height: H0, positive.
        width: W0, positive.

    Returns:
        The `SquareCrop`.

    Raises:
        InputError: a side is not a positive integer.
    """
    height = positive_int(height, "image height")
    width = positive_int(width, "image width")
    side = min(height, width)
    return SquareCrop(
        top=(height - side) // 2,
        left=(width - side) // 2,
        side=side,
        original_size=(height, width),
    )


def center_crop_square(image: np.ndarray) -> np.ndarray:
    """Cut the centred square out of an image (see `square_crop_box`).

    Args:
        image: [H0, W0, ...] any dtype.

    Returns:
        [side, side, ...] view of `image`, side = min(H0, W0).

    Raises:
        InputError: the image has fewer than two axes or an empty side.
    """
    image = np.asarray(image)
    if image.ndim < 2:
        raise InputError(f"image must be [H, W, ...], found shape {image.shape}")
    box = square_crop_box(*image.shape[:2])
    return image[box.top : box.top + box.side, box.left : box.left + box.side]


def prepare_image(image: np.ndarray, size: int = SQUARE) -> np.ndarray:
    """Algorithm 1, step 1: centre-crop a photo to a square, resize to size.

    Args:
        image: uint8 [H0, W0, 3] RGB photo.
        size: side of the result in pixels.

    Returns:
        float32 [size, size, 3] in [0, 255]: the centred square resized with
        Pillow's BICUBIC filter (which also antialiases when shrinking).

    Raises:
        InputError: the image is not uint8 [H0, W0, 3] or size is not positive.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise InputError(
            f"image must be uint8 [H, W, 3] RGB, found {image.dtype} with shape {image.shape}"
        )
    size = positive_int(size, "size")
    square = Image.fromarray(np.ascontiguousarray(center_crop_square(image)), mode="RGB")
    resized = square.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(resized, dtype=np.float32)


def _bilinear_matrix(source: int, target: int) -> np.ndarray:
    """[target, source] matrix of 1-D bilinear resampling with pixel centres
    at i + 0.5 (so edges line up), clamped at the borders."""
    position = (np.arange(target) + 0.5) * (source / target) - 0.5
    position = np.clip(position, 0.0, source - 1)
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, source - 1)
    weight_above = position - below
    matrix = np.zeros((target, source))
    rows = np.arange(target)
    np.add.at(matrix, (rows, below), 1.0 - weight_above)
    np.add.at(matrix, (rows, above), weight_above)
    return matrix


def map_to_image(map_hw: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """Put maps computed on the prepared square back onto the photo.

    Undoes `prepare_image`: each map is resized bilinearly (float, pixel
    centres aligned, no antialiasing) to the side of the centred square
    crop and placed where that crop came from. The parts of the photo that
    the crop cut away were never seen by the model: they are 0 there.

    Args:
        map_hw: float [..., S, S] maps on the prepared S x S image.
        original_size: (H0, W0) of the photo.

    Returns:
        float32 [..., H0, W0].

    Raises:
        InputError: the maps are not square in their last two axes.
    """
    maps = np.asarray(map_hw, dtype=np.float64)
    if maps.ndim < 2 or maps.shape[-1] != maps.shape[-2] or maps.shape[-1] == 0:
        raise InputError(f"maps must be [..., S, S], found shape {maps.shape}")
    box = square_crop_box(*original_size)
    resample = _bilinear_matrix(maps.shape[-1], box.side)
    square = resample @ maps @ resample.T
    out = np.zeros(maps.shape[:-2] + box.original_size, np.float32)
    out[..., box.top : box.top + box.side, box.left : box.left + box.side] = square
    return out
