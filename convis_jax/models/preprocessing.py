"""CLIP's preprocessing as a Hugging Face folder's preprocessor config describes it.

`preprocess` turns RGB arrays (`convis_jax.core.images.load_images`) into
transformers' `pixel_values` layout [N, 3, H, W], bit-equal to transformers'
`CLIPImageProcessorPil` (what `CLIPImageProcessor` falls back to without
torchvision) for the same `PreprocessConfig`, which `PreprocessConfig.from_folder`
reads from a checkpoint folder. It lives beside the loading code because it
parses the checkpoint's files; it needs NumPy and Pillow only.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from convis_jax.core.images import ImageSource, load_images
from convis_jax.errors import InputError, ModelLoadError

# transformers' OPENAI_CLIP_MEAN / OPENAI_CLIP_STD, the statistics CLIP was
# trained with.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# transformers' CLIPImageProcessor defaults, used for every key a
# preprocessor_config.json leaves out (so that we agree with transformers).
_CLIP_IMAGE_SIZE = 224
_BICUBIC = 3

# A shortest-edge resize of an extreme aspect ratio (1 x 20000 to 224 x
# 4.5 million) would allocate gigabytes before the centre crop throws almost
# all of it away; refuse beyond this many pixels (about 400 MB of uint8 RGB).
_MAX_RESIZED_PIXELS = 2**27

# Files transformers 5 reads the image-processor settings from, in priority
# order: a nested "image_processor" entry of processor_config.json wins.
_PROCESSOR_FILE = "processor_config.json"
_PREPROCESSOR_FILE = "preprocessor_config.json"


# ---------------------------------------------------------- configuration


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """How images become CLIP's pixel_values, as in a `preprocessor_config.json`.

    Attributes:
        do_resize: resize before cropping.
        shortest_edge: resize so that the shorter side has this many pixels,
            keeping the aspect ratio (the longer side is truncated to an
            integer, as transformers does). Exactly one of `shortest_edge`
            and `resize_size` is set.
        resize_size: (height, width) to resize to, ignoring the aspect ratio.
        resample: Pillow resampling filter (0 nearest, 1 Lanczos, 2 bilinear,
            3 bicubic, 4 box, 5 Hamming).
        do_center_crop: cut the centre `crop_size` after resizing (padding
            with black when the image is smaller, as transformers does).
        crop_size: (height, width) of the centre crop.
        do_rescale: multiply the uint8 values by `rescale_factor`.
        rescale_factor: usually 1 / 255.
        do_normalize: subtract `image_mean` and divide by `image_std`, per
            channel.
        image_mean: three per-channel means (R, G, B).
        image_std: three per-channel standard deviations, all > 0.
        do_convert_rgb: recorded for completeness; `load_image` always
            yields RGB, which is what transformers produces when it is True
            and what it keeps for RGB inputs when it is False.
    """

    do_resize: bool = True
    shortest_edge: int | None = _CLIP_IMAGE_SIZE
    resize_size: tuple[int, int] | None = None
    resample: int = _BICUBIC
    do_center_crop: bool = True
    crop_size: tuple[int, int] = (_CLIP_IMAGE_SIZE, _CLIP_IMAGE_SIZE)
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD
    do_convert_rgb: bool = True

    def __post_init__(self):
        # Accept lists for the tuple fields (as json gives them); store tuples
        # so that the frozen config stays hashable.
        for field in ("resize_size", "crop_size", "image_mean", "image_std"):
            value = getattr(self, field)
            if isinstance(value, list):
                object.__setattr__(self, field, tuple(value))
        if (self.shortest_edge is None) == (self.resize_size is None):
            raise InputError(
                "expected exactly one of shortest_edge and resize_size, "
                f"found shortest_edge={self.shortest_edge} and resize_size={self.resize_size}"
            )
        if self.shortest_edge is not None and not _is_positive_int(self.shortest_edge):
            raise InputError(f"expected shortest_edge to be a positive int, found {self.shortest_edge!r}")
        for field in ("resize_size", "crop_size"):
            value = getattr(self, field)
            if value is not None and not (
                isinstance(value, tuple) and len(value) == 2 and all(_is_positive_int(v) for v in value)
            ):
                raise InputError(f"expected {field} to be (height, width), two positive ints, found {value!r}")
        if self.resample not in range(6):
            raise InputError(f"expected resample to be a Pillow filter number 0..5, found {self.resample!r}")
        for field in ("image_mean", "image_std"):
            values = getattr(self, field)
            if len(values) != 3 or not all(math.isfinite(v) for v in values):
                raise InputError(f"expected {field} to hold 3 finite numbers (R, G, B), found {values!r}")
        if min(self.image_std) <= 0:
            raise InputError(f"expected image_std > 0, found {self.image_std!r}")
        if not math.isfinite(self.rescale_factor):
            raise InputError(f"expected a finite rescale_factor, found {self.rescale_factor!r}")

    @classmethod
    def clip_defaults(cls, image_size: int = _CLIP_IMAGE_SIZE) -> PreprocessConfig:
        """CLIP's preprocessing for a model of `image_size` pixels square.

        Args:
            image_size: the vision tower's input size (224 for ViT-B/32, 336
                for ViT-L/14-336).

        Returns:
            bicubic shortest-edge resize and centre crop to `image_size`,
            rescale by 1/255, normalisation by CLIP's mean and std.
        """
        return cls(shortest_edge=image_size, crop_size=(image_size, image_size))

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any]) -> PreprocessConfig:
        """Reads the settings of a Hugging Face image-processor json.

        Keys the json leaves out (or sets to null) take the defaults of
        transformers' `CLIPImageProcessor` (224 px), so that the result
        equals what transformers builds from the same json. Unknown keys are
        ignored.

        Args:
            settings: the parsed json. `size` may be an int (the shortest
                edge, or a square with `"default_to_square": true`), a
                [height, width] list, {"shortest_edge": n} or
                {"height": h, "width": w}; `crop_size` an int, a list or
                {"height": h, "width": w}; `image_mean`/`image_std` three
                numbers or one.

        Returns:
            the config.

        Raises:
            InputError: a value has an unsupported form; the message names
                the key and what was found.
        """
        def get(key, default):
            value = settings.get(key)
            return default if value is None else value

        size = get("size", {"shortest_edge": _CLIP_IMAGE_SIZE})
        shortest_edge, resize_size = _parse_size(size, square_int=bool(get("default_to_square", False)))
        if get("use_square_size", False) and shortest_edge is not None:
            # transformers keeps this KOSMOS-2 switch for backward compatibility.
            shortest_edge, resize_size = None, (shortest_edge, shortest_edge)
        crop = get("crop_size", {"height": _CLIP_IMAGE_SIZE, "width": _CLIP_IMAGE_SIZE})
        _, crop_size = _parse_size(crop, square_int=True)
        if crop_size is None:
            raise InputError(f"expected crop_size as an int, [height, width] or height/width keys, found {crop!r}")
        return cls(
            do_resize=bool(get("do_resize", True)),
            shortest_edge=shortest_edge,
            resize_size=resize_size,
            resample=_parse_int("resample", get("resample", _BICUBIC)),
            do_center_crop=bool(get("do_center_crop", True)),
            crop_size=crop_size,
            do_rescale=bool(get("do_rescale", True)),
            rescale_factor=float(get("rescale_factor", 1 / 255)),
            do_normalize=bool(get("do_normalize", True)),
            image_mean=_parse_channels("image_mean", get("image_mean", CLIP_MEAN)),
            image_std=_parse_channels("image_std", get("image_std", CLIP_STD)),
            do_convert_rgb=bool(get("do_convert_rgb", True)),
        )

    @classmethod
    def from_pretrained_dir(cls, path: str | os.PathLike, *, image_size: int | None = None,
                            defaults: Mapping[str, Any] | None = None) -> PreprocessConfig:
        """Reads the preprocessing of a checkpoint folder, as transformers would.

        Looks for a nested "image_processor" entry in `processor_config.json`
        first, then `preprocessor_config.json` (transformers 5's order). A
        folder with neither gets `clip_defaults(image_size)`.

        Args:
            path: the checkpoint folder.
            image_size: the model's input size, for the fallback; when None,
                read from `config.json` (`vision_config.image_size`).
            defaults: settings of the model family's own image processor (e.g.
                SigLIP's: a square resize, no crop, mean and std 0.5) for the keys
                the json leaves out or sets to null, and for a folder without json;
                None: CLIP's (`from_dict`, `clip_defaults`).

        Returns:
            the config.

        Raises:
            ModelLoadError: a json file is unreadable or holds an unsupported
                value, or the fallback needs an image size and neither
                `image_size` nor `config.json` gives one.
        """
        folder = Path(path)
        settings, source = None, None
        processor_file = folder / _PROCESSOR_FILE
        if processor_file.is_file():
            nested = _read_json(processor_file).get("image_processor")
            if isinstance(nested, Mapping):
                settings, source = nested, processor_file
        preprocessor_file = folder / _PREPROCESSOR_FILE
        if settings is None and preprocessor_file.is_file():
            settings, source = _read_json(preprocessor_file), preprocessor_file
        if defaults is not None:
            present = {} if settings is None else {k: v for k, v in settings.items() if v is not None}
            settings, source = {**defaults, **present}, source or "the model family's defaults"
        if settings is not None:
            try:
                return cls.from_dict(settings)
            except InputError as error:
                raise ModelLoadError(f"{source}: {error}") from None

        if image_size is None:
            image_size = _image_size_from_model_config(folder)
        return cls.clip_defaults(image_size)

    @property
    def output_size(self) -> tuple[int, int] | None:
        """(height, width) of every preprocessed image, or None when it varies."""
        if self.do_center_crop:
            return self.crop_size
        if self.do_resize and self.resize_size is not None:
            return self.resize_size
        return None


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0


def _parse_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise InputError(f"expected {key} to be an integer, found {value!r}")
    return int(value)


def _parse_size(size: Any, *, square_int: bool) -> tuple[int | None, tuple[int, int] | None]:
    """(shortest_edge, (height, width)), one of them None, from a json size."""
    if isinstance(size, (int, float)) and not isinstance(size, bool):
        edge = _parse_int("size", size)
        return (None, (edge, edge)) if square_int else (edge, None)
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return None, (_parse_int("size", size[0]), _parse_int("size", size[1]))
    if isinstance(size, Mapping):
        keys = {k for k, v in size.items() if v is not None}
        if keys == {"shortest_edge"}:
            return _parse_int("shortest_edge", size["shortest_edge"]), None
        if keys == {"height", "width"}:
            return None, (_parse_int("height", size["height"]), _parse_int("width", size["width"]))
    raise InputError(
        "expected a size as an int, [height, width], {'shortest_edge': n} or {'height': h, 'width': w}, "
        f"found {size!r}"
    )


def _parse_channels(key: str, value: Any) -> tuple[float, float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),) * 3
    if isinstance(value, (list, tuple)) and len(value) == 3:
        try:
            return tuple(float(v) for v in value)
        except (TypeError, ValueError):
            pass
    raise InputError(f"expected {key} to be 3 numbers (R, G, B) or one number, found {value!r}")


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as file:
            settings = json.load(file)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"{path}: expected a readable json file, found an error: {error}") from None
    if not isinstance(settings, dict):
        raise ModelLoadError(f"{path}: expected a json object, found {type(settings).__name__}")
    return settings


def _image_size_from_model_config(folder: Path) -> int:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(
            f"{folder}: expected {_PREPROCESSOR_FILE} or config.json to tell the image size, found neither"
        )
    vision = _read_json(config_file).get("vision_config")
    size = vision.get("image_size", _CLIP_IMAGE_SIZE) if isinstance(vision, Mapping) else None
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ModelLoadError(f"{config_file}: expected vision_config.image_size to be a positive int, found {size!r}")
    return size


# ----------------------------------------------------------- preprocessing


def preprocess(
    images: ImageSource | list[ImageSource] | tuple[ImageSource, ...],
    config: PreprocessConfig | None = None,
) -> np.ndarray:
    """Turns images into CLIP's pixel_values, equal to transformers'.

    Each image is decoded by `load_images`, then resized with Pillow in uint8
    (shortest edge, the longer edge truncated to an integer), centre-cropped
    (offsets rounded down; black padding when the image is smaller than the
    crop), rescaled in float64 and cast to float32, and normalised in float32:
    the steps and dtypes of transformers' `CLIPImageProcessorPil`.

    Args:
        images: anything `load_images` accepts.
        config: the preprocessing; None means `PreprocessConfig.clip_defaults()`
            (224 px).

    Returns:
        float32 array [N, 3, H, W] with (H, W) = `config.output_size`; about
        [-1.8, 2.2] per channel with CLIP's statistics.

    Raises:
        InputError: an image is unreadable (see `load_images`); its aspect
            ratio is so extreme that the resized image would exceed 2**27
            pixels; or the config has no fixed output size and the images come
            out in different sizes.
    """
    config = PreprocessConfig.clip_defaults() if config is None else config
    rgb_images = load_images(images)
    processed = [_preprocess_one(rgb, config, i) for i, rgb in enumerate(rgb_images)]
    shapes = {p.shape for p in processed}
    if len(shapes) > 1:
        raise InputError(
            "expected every image to come out the same size, found sizes "
            f"{sorted(s[:2] for s in shapes)}; this config neither crops nor resizes to a fixed size"
        )
    # The one NHWC -> NCHW conversion, at the boundary, into transformers' layout.
    return np.ascontiguousarray(np.stack(processed).transpose(0, 3, 1, 2))


def _preprocess_one(rgb: np.ndarray, config: PreprocessConfig, index: int) -> np.ndarray:
    """One uint8 image [H, W, 3] -> float32 [h, w, 3], transformers' steps in order."""
    image = rgb
    if config.do_resize:
        height, width = _resized_shape(image.shape[:2], config)
        if height * width > _MAX_RESIZED_PIXELS:
            raise InputError(
                f"images[{index}]: resizing the {image.shape[0]}x{image.shape[1]} image would make it "
                f"{height}x{width} (over {_MAX_RESIZED_PIXELS} pixels); crop it to a less extreme aspect ratio first"
            )
        resized = Image.fromarray(image).resize((width, height), resample=config.resample)
        image = np.asarray(resized)
    if config.do_center_crop:
        image = _center_crop(image, config.crop_size)
    if config.do_rescale:
        image = (image.astype(np.float64) * config.rescale_factor).astype(np.float32)
    else:
        image = image.astype(np.float32)
    if config.do_normalize:
        mean = np.array(config.image_mean, dtype=np.float32)
        std = np.array(config.image_std, dtype=np.float32)
        image = (image - mean) / std
    return image


def _resized_shape(shape: tuple[int, int], config: PreprocessConfig) -> tuple[int, int]:
    """(height, width) after resizing; transformers' get_resize_output_image_size."""
    if config.resize_size is not None:
        return config.resize_size
    height, width = shape
    short, long = (width, height) if width <= height else (height, width)
    # Same expression, same float rounding, as transformers: (S * long) / short, truncated.
    new_short, new_long = config.shortest_edge, int(config.shortest_edge * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


def _center_crop(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre crop of [H, W, C] to `size`, zero-padded where the image is smaller.

    Offsets are transformers' center_crop: crop start (H - h) // 2, padding
    start ceil((h - H) / 2).
    """
    height, width = image.shape[:2]
    crop_height, crop_width = size
    top = (height - crop_height) // 2
    left = (width - crop_width) // 2
    if top >= 0 and left >= 0:
        return image[top : top + crop_height, left : left + crop_width]

    padded_height, padded_width = max(crop_height, height), max(crop_width, width)
    top_pad = math.ceil((padded_height - height) / 2)
    left_pad = math.ceil((padded_width - width) / 2)
    padded = np.zeros((padded_height, padded_width) + image.shape[2:], dtype=image.dtype)
    padded[top_pad : top_pad + height, left_pad : left_pad + width] = image
    top, left = top + top_pad, left + left_pad
    rows = slice(max(0, top), min(padded_height, top + crop_height))
    columns = slice(max(0, left), min(padded_width, left + crop_width))
    return padded[rows, columns]
