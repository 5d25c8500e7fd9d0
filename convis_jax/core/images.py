"""Reading images as uint8 RGB arrays [H, W, 3].

`load_image` / `load_images` turn a path, a PIL image or an array into a
uint8 RGB array; the model's own preprocessing of such arrays
(`convis_jax.models.preprocessing`) and the square crop of Algorithm 1
(`convis_jax.core.windows`) start from them, so the maps drawn later sit on
exactly the pixels the model saw.

Decoding rules, chosen to agree with transformers wherever transformers is
right:

* Files get their EXIF orientation applied (as `transformers.image_utils.
  load_image` does). PIL images and arrays are taken as they are, as
  transformers' image processor takes them.
* Transparency (an alpha band, or a palette / tRNS transparency entry) is
  composited onto white, exactly as transformers' `convert_to_rgb` does: with
  Pillow's `alpha_composite` for PIL images, with
  `round(a * rgb + (1 - a) * 255)` for RGBA arrays.
* 16-bit greyscale (Pillow modes `I;16*`, and `I` with values in
  [0, 65535]) keeps the high byte, `value >> 8`: the same rule Pillow uses
  when it decodes 16-bit RGB and RGBA PNGs. Here we deliberately differ from
  transformers, whose `convert("RGB")` clips every value above 255 to white.
* CMYK, palette, 1-bit and other modes go through Pillow's `convert("RGB")`.
* Animated files give their first frame.
* Float arrays must lie in [0, 1] and become `round(x * 255)`, the exact
  inverse of `uint8 / 255` (transformers truncates instead, and would then
  rescale a second time).
* Integer arrays of any integer dtype are accepted when every value lies in
  [0, 255]. Boolean, complex, object and string arrays are refused: whether
  True means 1 or 255 is a guess we do not make.

Pillow decodes lazily, so truncated files are decoded here, at once, and fail
with `InputError`. If the caller has set Pillow's global
`ImageFile.LOAD_TRUNCATED_IMAGES = True`, Pillow fills the missing rows with
grey instead, and that choice is honoured.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from convis_jax.errors import InputError

# The image files a folder of photos is read for (any case).
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

ImageSource = Union[str, os.PathLike, Image.Image, np.ndarray]

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


# ---------------------------------------------------------------- loading


def load_image(source: ImageSource) -> np.ndarray:
    """Reads one image as an RGB array.

    Args:
        source: a path (str or os.PathLike) to an image file; a PIL image; or
            an array [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] (RGBA), either
            integer with values in [0, 255] or float with values in [0, 1].
            Anything with `__array__` (a JAX or CPU torch array) counts as an
            array.

    Returns:
        uint8 array [H, W, 3] in [0, 255], RGB, a fresh copy.

    Raises:
        InputError: the file is missing, empty, not an image, truncated or
            damaged; or the array has an unsupported dtype, shape, NaN or
            inf, or values out of range. The message names the file or array.
    """
    return _load(source, _describe(source))


def load_images(sources: ImageSource | list[ImageSource] | tuple[ImageSource, ...]) -> list[np.ndarray]:
    """Reads a batch of images as RGB arrays.

    Args:
        sources: one source as `load_image` takes it; a list or tuple of such
            sources, mixed kinds and sizes allowed; or an array
            [N, H, W, C] (C in 1, 3, 4) holding N images.

    Returns:
        list of N uint8 arrays [H_i, W_i, 3] in [0, 255].

    Raises:
        InputError: the batch is empty, or an image is unreadable (the message
            says which, by position).
    """
    return [load_source(entry) for entry in image_sources(sources)]


def image_sources(sources: ImageSource | list[ImageSource] | tuple[ImageSource, ...]
                  ) -> list[tuple[str, Any]]:
    """The images of a batch, not yet decoded: (name for messages, source) per image.

    Lets a caller decode a long list of files a batch at a time
    (`load_source`), with the messages `load_images` would give.

    Args:
        sources: anything `load_images` accepts.

    Returns:
        N pairs (name, source); names say the position ("images[3] (...)") when there
        are several.

    Raises:
        InputError: the batch is empty.
    """
    if isinstance(sources, (list, tuple)):
        items = list(sources)
    elif _is_array(sources) and np.ndim(sources) == 4:
        items = list(np.asarray(sources))
    else:
        return [(_describe(sources), sources)]
    if not items:
        raise InputError("expected at least one image, found an empty batch")
    return [(f"images[{i}] ({_describe(item)})", item) for i, item in enumerate(items)]


def load_source(entry: tuple[str, Any]) -> np.ndarray:
    """Decodes one `image_sources` entry: uint8 [H, W, 3] (errors as `load_image`'s)."""
    name, source = entry
    return _load(source, name)


def _load(source: Any, name: str) -> np.ndarray:
    if isinstance(source, (str, os.PathLike)):
        return _read_file(Path(source))
    if isinstance(source, Image.Image):
        try:
            source.load()
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise InputError(f"{name}: Pillow could not decode the image ({error})") from None
        return _pil_to_rgb(source, name)
    if _is_array(source):
        return _array_to_rgb(np.asarray(source), name)
    raise InputError(
        f"{name}: expected a path, a PIL image or an array "
        f"(for several images, call load_images), found {type(source).__name__}"
    )


def _is_array(source: Any) -> bool:
    return isinstance(source, np.ndarray) or (
        hasattr(source, "__array__") and not isinstance(source, (str, bytes, list, tuple, Image.Image))
    )


def _describe(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return f"image file {str(source)!r}"
    if isinstance(source, Image.Image):
        return f"PIL image (mode {source.mode}, {source.width}x{source.height})"
    if _is_array(source):
        array = np.asarray(source)
        return f"array of shape {array.shape} and dtype {array.dtype}"
    return f"object of type {type(source).__name__}"


def _read_file(path: Path) -> np.ndarray:
    name = f"image file {str(path)!r}"
    with _opened(path, name) as image:
        # Pillow decodes lazily; decode now so that a truncated file fails
        # here, with its name, and not later inside a resize.
        image.load()
        upright = ImageOps.exif_transpose(image)
    return _pil_to_rgb(upright, name)


def check_image_file(path: str | os.PathLike) -> None:
    """Opens an image file's header as `load_image` does, without decoding it.

    Raises:
        InputError: the file is missing, a folder, empty, unreadable, not an image
            Pillow recognises, or too large to decode safely (a decompression bomb),
            with `load_image`'s one-line messages.
    """
    path = Path(path)
    with _opened(path, f"image file {str(path)!r}"):
        pass


@contextlib.contextmanager
def _opened(path: Path, name: str):
    """The image at `path`, open in Pillow; every failure an `InputError` naming `name`."""
    if not path.exists():
        raise InputError(f"{name} does not exist")
    if path.is_dir():
        raise InputError(f"{name} is a directory, expected an image file")
    if path.stat().st_size == 0:
        raise InputError(f"{name} is empty (0 bytes)")
    try:
        with Image.open(path) as image:
            yield image
    except UnidentifiedImageError:
        with open(path, "rb") as file:
            head = file.read(16)
        raise InputError(
            f"{name} is not an image Pillow can read, or is cut off inside its header (it starts with {head!r})"
        ) from None
    except Image.DecompressionBombError as error:
        raise InputError(f"{name} is too large to decode safely: {error}") from None
    except PermissionError:
        raise InputError(f"{name} cannot be read: permission denied") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise InputError(f"{name} is truncated or damaged: Pillow says {error!s}") from None


def _pil_to_rgb(image: Image.Image, name: str) -> np.ndarray:
    if image.width == 0 or image.height == 0:
        raise InputError(f"{name} has no pixels (size {image.width}x{image.height})")
    if image.mode in _SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_rgb(image, name)
    if image.mode == "F":
        return _array_to_rgb(np.asarray(image), name)
    # transformers' convert_to_rgb, verbatim in effect: anything with
    # transparency is composited onto white, the rest converted by Pillow.
    has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
    try:
        if has_alpha:
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            rgb = Image.alpha_composite(white, rgba).convert("RGB")
        else:
            rgb = image.convert("RGB")
    except ValueError as error:
        raise InputError(f"{name}: Pillow cannot convert mode {image.mode} to RGB ({error})") from None
    return np.array(rgb, dtype=np.uint8)


def _sixteen_bit_to_rgb(image: Image.Image, name: str) -> np.ndarray:
    values = np.asarray(image).astype(np.int64)
    low, high = int(values.min()), int(values.max())
    if low < 0 or high > 65535:
        raise InputError(
            f"{name}: expected 16-bit samples in [0, 65535] for Pillow mode {image.mode}, "
            f"found values in [{low}, {high}]"
        )
    grey = (values >> 8).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    transparent = image.info.get("transparency")
    if isinstance(transparent, int):
        # A tRNS grey level marks fully transparent pixels: white on white.
        rgb[values == transparent] = 255
    return rgb


def _array_to_rgb(array: np.ndarray, name: str) -> np.ndarray:
    dtype = array.dtype
    is_float = np.issubdtype(dtype, np.floating)
    if dtype == np.bool_ or not (is_float or np.issubdtype(dtype, np.integer)):
        raise InputError(
            f"{name}: expected an integer array in [0, 255] or a float array in [0, 1], found dtype {dtype}"
        )
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        hint = "; for a batch of images call load_images" if array.ndim == 4 else ""
        raise InputError(f"{name}: expected shape [H, W] or [H, W, C], found {array.ndim} dimensions{hint}")
    if array.shape[-1] not in (1, 3, 4):
        hint = " (channels first? move the channel axis last)" if array.shape[0] in (1, 3, 4) else ""
        raise InputError(f"{name}: expected 1, 3 or 4 channels on the last axis, found {array.shape[-1]}{hint}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(f"{name}: the image has no pixels (height {array.shape[0]}, width {array.shape[1]})")
    if is_float:
        finite = np.isfinite(array)
        if not finite.all():
            n_nan, n_inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
            raise InputError(f"{name}: expected finite values, found {n_nan} NaN and {n_inf} inf")
        values = array.astype(np.float64)
        white = 1.0
    else:
        values = array
        white = 255
    low, high = values.min(), values.max()
    if low < 0 or high > white:
        if is_float:
            hint = " (for data in [0, 255], pass it as uint8 or divide by 255)" if high <= 255 else ""
        else:
            hint = " (16-bit data? keep the high byte, array >> 8)" if high <= 65535 and low >= 0 else ""
        raise InputError(f"{name}: expected values in [0, {white}], found values in [{low}, {high}]{hint}")
    if not is_float:
        values = values.astype(np.uint8)

    if values.shape[-1] == 1:
        rgb = np.repeat(values, 3, axis=-1)
    elif values.shape[-1] == 4:
        # transformers' convert_to_rgb for arrays, same expression, same rounding.
        alpha = values[..., 3:4] / white
        rgb = alpha * values[..., :3] + (1 - alpha) * white
        if not is_float:
            rgb = np.round(rgb).astype(np.uint8)
    else:
        rgb = values
    if is_float:
        rgb = np.round(rgb * 255)
    return np.array(rgb, dtype=np.uint8)


def list_images(source: str | Path) -> list[tuple[str, Path]]:
    """The images of a folder (recursive) or of a list file, as sorted (id, path) pairs.

    Args:
        source: a folder, whose image files (suffixes `IMAGE_SUFFIXES`, any case, no
            hidden entries) are taken with their "/"-separated paths relative to it as
            ids; or a text file with one image path a line (blank lines and lines
            starting with "#" skipped; relative paths are relative to the file's
            folder), each line being the image's id.

    Returns:
        (id, path) pairs sorted by id, ids unique.

    Raises:
        InputError: no such folder or file, no images, or an id listed twice.
    """
    source = Path(source)
    if source.is_dir():
        found = [(p.relative_to(source).as_posix(), p) for p in source.rglob("*")
                 if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                 and not any(part.startswith(".") for part in p.relative_to(source).parts)]
    elif source.is_file():
        lines = [line.strip() for line in source.read_text(encoding="utf-8").splitlines()]
        found = [(line, source.parent / line) for line in lines
                 if line and not line.startswith("#")]
        ids = [image_id for image_id, _ in found]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise InputError(f"expected every image once in {str(source)!r}, found "
                             f"{twice[:3]} listed more than once")
    else:
        raise InputError(f"expected a folder of images or a list file, found no such path "
                         f"{str(source)!r}")
    if not found:
        raise InputError(f"expected images ({', '.join(IMAGE_SUFFIXES)}) in {str(source)!r}, "
                         f"found none")
    return sorted(found)
