"""A corpus of bad and odd image inputs, each with its expected outcome.

Every entry is made on the fly under tmp_path and either fails with one clear
line of `InputError` (matched by a pattern, naming the file or array), or
loads with the documented behaviour (checked against arithmetic done here).
"""

from __future__ import annotations

import dataclasses
import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convis_jax.core.images import load_image, load_images
from convis_jax.errors import InputError
from convis_jax.models.preprocessing import PreprocessConfig, preprocess

RNG_SEED = 0


def noise(height: int, width: int, channels: int = 3) -> np.ndarray:
    shape = (height, width) if channels == 1 else (height, width, channels)
    return np.random.default_rng(RNG_SEED).integers(0, 256, shape, dtype=np.uint8)


def encoded(pixels: np.ndarray, kind: str, mode: str | None = None, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, kind, **options)
    return buffer.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a size and holds no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def corrupted(data: bytes) -> bytes:
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    return bytes(flipped)


def unloaded_truncated_pil() -> Image.Image:
    data = encoded(noise(64, 64), "PNG")
    return Image.open(io.BytesIO(data[: len(data) // 2]))  # Pillow has not decoded it yet


def animated_gif(path: Path) -> Path:
    frames = [Image.new("RGB", (6, 3), colour) for colour in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    return path


@dataclasses.dataclass(frozen=True)
class Odd:
    """One corpus entry.

    Attributes:
        name: what the input is.
        make: builds the input (a path under the folder given, or an object).
        error: regex the InputError message must match; None when the input
            is accepted.
        expected: for accepted inputs, the RGB array `load_image` must return.
        call: the function the input goes to.
    """

    name: str
    make: Callable[[Path], object]
    error: str | None = None
    expected: Callable[[], np.ndarray] | None = None
    call: Callable[[object], object] = load_image


def preprocess_pair(sources) -> np.ndarray:
    return preprocess(sources, PreprocessConfig(do_center_crop=False))


PNG = encoded(noise(64, 64), "PNG")
JPEG = encoded(noise(64, 64), "JPEG")
SIXTEEN = np.array([[0, 255, 256, 32767, 32768, 65535]], np.uint16)
CMYK = np.array([[[10, 200, 30, 40], [0, 0, 0, 0], [100, 50, 25, 128]]], np.uint8).repeat(8, 0).repeat(8, 1)

CORPUS = [
    # ---- files that cannot be read
    Odd("missing file", lambda d: d / "nope.png", error=r"nope\.png' does not exist"),
    Odd("directory", lambda d: d, error="is a directory"),
    Odd("empty file", lambda d: write(d / "empty.jpg", b""), error=r"empty\.jpg' is empty \(0 bytes\)"),
    Odd("text file named .jpg", lambda d: write(d / "notes.jpg", b"hello, this is text\n"),
        error=r"notes\.jpg' is not an image Pillow can read.*b'hello, this is "),
    Odd("truncated PNG", lambda d: write(d / "half.png", PNG[: len(PNG) // 2]),
        error=r"half\.png' is truncated or damaged"),
    Odd("truncated JPEG", lambda d: write(d / "half.jpg", JPEG[: len(JPEG) // 2]),
        error=r"half\.jpg' is truncated or damaged"),
    Odd("JPEG missing only its end marker", lambda d: write(d / "noeoi.jpg", JPEG[:-2]), error="truncated or damaged"),
    Odd("PNG cut inside its header", lambda d: write(d / "head.png", PNG[:30]),
        error=r"head\.png' .*cut off inside its header"),
    Odd("PNG with a flipped byte", lambda d: write(d / "flip.png", corrupted(PNG)),
        error=r"flip\.png' is truncated or damaged"),
    Odd("PNG declaring 10^10 pixels", lambda d: write(d / "bomb.png", png_header_only(100_000, 100_000)),
        error=r"bomb\.png' is too large to decode safely"),
    Odd("PIL image of a truncated file, not yet decoded", lambda d: unloaded_truncated_pil(),
        error=r"PIL image \(mode RGB, 64x64\): Pillow could not decode"),
    # ---- odd files that load (documented behaviour)
    Odd("PNG missing only IEND: every pixel is there", lambda d: write(d / "noiend.png", PNG[:-12]),
        expected=lambda: noise(64, 64)),
    Odd("1x1 PNG", lambda d: write(d / "one.png", encoded(np.array([[[1, 2, 3]]], np.uint8), "PNG")),
        expected=lambda: np.array([[[1, 2, 3]]], np.uint8)),
    Odd("20000x50 PNG", lambda d: write(d / "tall.png", encoded(noise(20000, 50), "PNG")),
        expected=lambda: noise(20000, 50)),
    Odd("16-bit greyscale PNG: high byte", lambda d: write(d / "g16.png", encoded(SIXTEEN, "PNG")),
        expected=lambda: np.repeat(np.array([[0, 0, 1, 127, 128, 255]], np.uint8)[..., None], 3, -1)),
    Odd("CMYK JPEG: Pillow's CMYK conversion",
        lambda d: write(d / "cmyk.jpg", encoded(CMYK, "JPEG", "CMYK", quality=100)),
        expected=lambda: np.round((255 - CMYK[..., :3].astype(float)) * (255 - CMYK[..., 3:].astype(float)) / 255)),
    Odd("animated GIF: first frame", lambda d: animated_gif(d / "anim.gif"),
        expected=lambda: np.full((3, 6, 3), [250, 0, 0], np.uint8)),
    Odd("1-bit image: 0 and 255", lambda d: Image.fromarray(np.array([[True, False]])),
        expected=lambda: np.array([[[255] * 3, [0] * 3]], np.uint8)),
    Odd("float 'F' image in [0, 1]", lambda d: Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32)),
        expected=lambda: np.repeat(np.array([[0, 128, 255]], np.uint8)[..., None], 3, -1)),
    Odd("32-bit 'I' image with 16-bit values", lambda d: Image.fromarray(np.array([[512, 65535]], np.int32)),
        expected=lambda: np.array([[[2] * 3, [255] * 3]], np.uint8)),
    Odd("uint16 array with values in [0, 255]", lambda d: np.array([[0, 200]], np.uint16),
        expected=lambda: np.array([[[0] * 3, [200] * 3]], np.uint8)),
    # ---- arrays that are refused
    Odd("float array with NaN", lambda d: np.array([[0.1, np.nan], [0.2, 0.3]]),
        error="expected finite values, found 1 NaN and 0 inf"),
    Odd("float array with inf", lambda d: np.array([[0.1, -np.inf, np.inf]]), error="found 0 NaN and 2 inf"),
    Odd("complex array", lambda d: np.zeros((4, 4, 3), np.complex64), error="found dtype complex64"),
    Odd("object array", lambda d: np.array([[None, 1]], dtype=object), error="found dtype object"),
    Odd("bool array (1 or 255? we do not guess)", lambda d: np.ones((4, 4), bool), error="found dtype bool"),
    Odd("string array", lambda d: np.array([["a", "b"]]), error="found dtype <U1"),
    Odd("float array in [0, 255]", lambda d: np.full((4, 4, 3), 200.0),
        error=r"expected values in \[0, 1.0\], found values in \[200.0, 200.0\] \(for data in \[0, 255\], pass"),
    Odd("negative float array", lambda d: np.full((4, 4), -0.5), error=r"found values in \[-0.5, -0.5\]"),
    Odd("uint16 array of 16-bit data", lambda d: np.array([[0, 60000]], np.uint16), error=r"\[0, 255\].*16-bit data\?"),
    Odd("negative integer array", lambda d: np.array([[-1, 3]]), error=r"found values in \[-1, 3\]"),
    Odd("float 'F' image outside [0, 1]", lambda d: Image.fromarray(np.array([[0.0, 7.0]], np.float32)),
        error=r"PIL image \(mode F, 2x1\): expected values in \[0, 1.0\]"),
    Odd("'I' image with negative values", lambda d: Image.fromarray(np.array([[-5, 9]], np.int32)),
        error=r"16-bit samples in \[0, 65535\].*found values in \[-5, 9\]"),
    Odd("1-D array", lambda d: np.zeros(12, np.uint8), error="expected shape .* found 1 dimensions"),
    Odd("4-D array given to load_image", lambda d: np.zeros((2, 4, 4, 3), np.uint8), error="call load_images"),
    Odd("5 channels", lambda d: np.zeros((8, 8, 5), np.uint8), error="1, 3 or 4 channels on the last axis, found 5$"),
    Odd("2 channels", lambda d: np.zeros((8, 8, 2), np.uint8), error="found 2$"),
    Odd("channels first", lambda d: np.zeros((3, 32, 32), np.uint8), error="found 32 .channels first"),
    Odd("zero height", lambda d: np.zeros((0, 5, 3), np.uint8), error="no pixels"),
    Odd("None", lambda d: None, error="expected a path, a PIL image or an array.*found NoneType"),
    Odd("bytes", lambda d: PNG, error="found bytes"),
    Odd("a dict", lambda d: {"image": 1}, error="found dict"),
    # ---- batches
    Odd("empty list", lambda d: [], error="empty batch", call=load_images),
    Odd("empty NHWC array", lambda d: np.zeros((0, 4, 4, 3), np.uint8), error="empty batch", call=load_images),
    Odd("bad item names its position", lambda d: [np.zeros((4, 4), np.uint8), np.full((4, 4), np.nan)],
        error=r"^images\[1\] \(array of shape \(4, 4\) and dtype float64\): expected finite", call=load_images),
    Odd("list of numbers in a batch", lambda d: [[1, 2], [3, 4]], error=r"images\[0\] .*found list", call=load_images),
    Odd("1x20000: the resize would be 224 x 4.48 million", lambda d: np.zeros((1, 20000, 3), np.uint8),
        error=r"224x4480000 .*less extreme aspect ratio", call=preprocess),
    Odd("no fixed output size and different shapes",
        lambda d: [np.zeros((10, 20, 3), np.uint8), np.zeros((10, 10, 3), np.uint8)],
        error=r"same size, found sizes \[\(224, 224\), \(224, 448\)\]", call=preprocess_pair),
]


@pytest.mark.parametrize("odd", CORPUS, ids=[odd.name for odd in CORPUS])
def test_corpus(odd, tmp_path):
    source = odd.make(tmp_path)
    if odd.error is not None:
        with pytest.raises(InputError, match=odd.error) as caught:
            odd.call(source)
        message = str(caught.value)
        assert "\n" not in message, message
        if isinstance(source, Path):
            assert str(source) in message
        return
    rgb = odd.call(source)
    expected = odd.expected()
    assert rgb.dtype == np.uint8 and rgb.shape == expected.shape
    tolerance = 4 if "JPEG" in odd.name else 0  # JPEG stays lossy at quality 100
    assert np.max(np.abs(rgb.astype(int) - expected)) <= tolerance


def test_every_accepted_odd_file_preprocesses(tmp_path):
    accepted = [odd.make(tmp_path) for odd in CORPUS if odd.error is None]
    pixel_values = preprocess(accepted)
    assert pixel_values.shape == (len(accepted), 3, 224, 224)
    assert np.isfinite(pixel_values).all()


def test_corpus_covers_the_issue_list():
    names = " ".join(odd.name for odd in CORPUS)
    for item in ("empty file", "text file named .jpg", "truncated PNG", "truncated JPEG", "1x1", "20000x50",
                 "16-bit", "CMYK JPEG", "animated GIF", "NaN", "inf", "complex", "channels first", "1-D array",
                 "empty list"):
        assert item in names, item
