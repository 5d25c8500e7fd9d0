"""Image loading and CLIP preprocessing, checked against transformers and by hand.

The reference for `preprocess` is transformers' `CLIPImageProcessorPil` (what
`CLIPImageProcessor` is without torchvision), built from the same
`preprocessor_config.json`, on real photographs from scikit-image in many
sizes and file modes. The reference for decoding is arithmetic done here:
the CMYK formula, alpha compositing, the high byte of 16-bit samples.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from convis_jax.core.images import load_image, load_images
from convis_jax.errors import ModelLoadError
from convis_jax.models.preprocessing import (
    CLIP_MEAN,
    CLIP_STD,
    PreprocessConfig,
    preprocess,
)

skimage_data = pytest.importorskip("skimage.data")

EXIF_ORIENTATION = 0x0112


@dataclasses.dataclass(frozen=True)
class Case:
    """One image: what we are given, and what transformers is given for it."""

    name: str
    source: object  # path, PIL image or array, as a user would pass it
    reference: object  # PIL image or uint8 array, as transformers takes it


def _save(image: Image.Image, path: Path, **options) -> Path:
    image.save(path, **options)
    return path


def _save_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _with_orientation(image: Image.Image, orientation: int) -> Image.Exif:
    exif = image.getexif()
    exif[EXIF_ORIENTATION] = orientation
    return exif


def _file_case(name: str, path: Path) -> Case:
    # transformers' own load_image applies the EXIF orientation too; its image
    # processor then composites transparency and converts to RGB itself.
    return Case(name, path, ImageOps.exif_transpose(Image.open(path)))


def png16(samples: np.ndarray) -> bytes:
    """A 16-bit PNG of uint16 [H, W, C] (C in 1, 3, 4), written by hand.

    Pillow cannot write 16-bit RGB, so the few chunks are assembled here.
    """
    height, width, channels = samples.shape
    colour_type = {1: 0, 3: 2, 4: 6}[channels]
    rows = b"".join(b"\x00" + samples[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> list[Case]:
    """27 images: photographs in many sizes, modes, containers and input kinds."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    astronaut, coffee, chelsea = skimage_data.astronaut(), skimage_data.coffee(), skimage_data.chelsea()
    rocket, camera, coins = skimage_data.rocket(), skimage_data.camera(), skimage_data.coins()
    moon, page, logo = skimage_data.moon(), skimage_data.page(), skimage_data.logo()
    hubble, ihc = skimage_data.hubble_deep_field(), skimage_data.immunohistochemistry()

    out = [
        _file_case("astronaut png 512x512", _save(Image.fromarray(astronaut), folder / "astronaut.png")),
        _file_case("coffee jpeg 400x600", _save(Image.fromarray(coffee), folder / "coffee.jpg", quality=90)),
        Case("chelsea uint8 array 300x451", chelsea, chelsea),
        Case("rocket PIL image 427x640", Image.fromarray(rocket), Image.fromarray(rocket)),
        _file_case("camera greyscale png", _save(Image.fromarray(camera), folder / "camera.png")),
        Case("coins greyscale array [H, W]", coins, Image.fromarray(coins)),
        Case("coins greyscale array [H, W, 1]", coins[..., None], Image.fromarray(coins)),
        _file_case("hubble png 333x500", _save(Image.fromarray(hubble[:333, :500]), folder / "hubble.png")),
        _file_case("tall odd 301x97", _save(Image.fromarray(astronaut[:301, 200:297]), folder / "tall.png")),
        _file_case("wide odd 37x451", _save(Image.fromarray(chelsea[100:137]), folder / "wide.png")),
        _file_case("1x1 png", _save(Image.fromarray(astronaut[100:101, 100:101]), folder / "one.png")),
        Case("7x5 array, smaller than the crop", coffee[:7, :5].copy(), coffee[:7, :5].copy()),
        _file_case("224x224 exactly", _save(Image.fromarray(ihc[:224, :224]), folder / "exact.png")),
        _file_case("224x300, short edge exactly 224", _save(Image.fromarray(ihc[:224, :300]), folder / "short.png")),
    ]

    tall = np.tile(rocket[:, :50], (47, 1, 1))[:20000] ^ rng.integers(0, 8, (20000, 50, 3), dtype=np.uint8)
    out.append(_file_case("20000x50 png", _save(Image.fromarray(tall), folder / "very_tall.png")))

    out.append(_file_case("logo png with real alpha", _save(Image.fromarray(logo), folder / "logo.png")))
    alpha = np.linspace(0, 255, astronaut.shape[1]).astype(np.uint8)[None, :, None]
    rgba = np.concatenate([astronaut, np.broadcast_to(alpha, astronaut.shape[:2] + (1,))], axis=-1)
    out.append(Case("RGBA array with an alpha ramp", rgba, rgba))
    la = Image.fromarray(np.stack([camera, camera[::-1].T], axis=-1), "LA")
    out.append(_file_case("LA png", _save(la, folder / "la.png")))

    palette = Image.fromarray(coffee).quantize(64)
    out.append(_file_case("palette png", _save(palette, folder / "palette.png")))
    out.append(_file_case("palette png with a transparent index",
                          _save(palette, folder / "palette_t.png", transparency=3)))
    out.append(_file_case("RGB png with a tRNS colour",
                          _save(Image.fromarray(chelsea), folder / "trns.png",
                                transparency=tuple(chelsea[0, 0].tolist()))))

    moon16 = moon.astype(np.uint16) * 257 + rng.integers(0, 257, moon.shape, dtype=np.uint16)
    path16 = _save(Image.fromarray(moon16), folder / "moon16.png")
    # transformers' convert("RGB") clips 16-bit samples (see the test below);
    # give it the image we mean: the high byte of each sample.
    out.append(Case("16-bit greyscale png", path16, Image.fromarray((moon16 // 256).astype(np.uint8))))
    rgb16 = png16(hubble[:200, :260].astype(np.uint16) * 257)
    out.append(_file_case("16-bit RGB png", _save_bytes(folder / "rgb16.png", rgb16)))

    upright = Image.fromarray(rocket)
    out.append(_file_case("jpeg with EXIF orientation 6",
                          _save(upright, folder / "exif6.jpg", exif=_with_orientation(upright, 6))))
    out.append(_file_case("jpeg with EXIF orientation 8",
                          _save(Image.fromarray(chelsea), folder / "exif8.jpg", exif=_with_orientation(upright, 8))))
    out.append(_file_case("CMYK jpeg", _save(Image.fromarray(ihc).convert("CMYK"), folder / "cmyk.jpg", quality=95)))

    frames = [Image.fromarray(x).quantize(32) for x in (coffee, coffee[::-1], coffee[:, ::-1])]
    animated = _save(frames[0], folder / "anim.gif", save_all=True, append_images=frames[1:])
    out.append(_file_case("animated gif", animated))
    out.append(_file_case("1-bit png", _save(Image.fromarray(page > 128), folder / "bits.png")))

    floats = chelsea[50:250, 100:400] / 255.0
    out.append(Case("float array in [0, 1]", floats, np.round(floats * 255).astype(np.uint8)))
    return out


# preprocessor_config.json contents: transformers' own default, the old int
# form at 336, a 64 px model, and odd ones that take the padding path, an
# exact non-square resize without crop, and a crop without resize.
CONFIGS = {
    "default": None,  # written by CLIPImageProcessorPil().save_pretrained
    "old form 336": {"size": 336, "crop_size": 336, "do_center_crop": True, "do_normalize": True, "do_resize": True,
                     "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": list(CLIP_MEAN),
                     "image_std": list(CLIP_STD), "resample": 3},
    "64 px": {"size": {"shortest_edge": 64}, "crop_size": {"height": 64, "width": 64}},
    "crop larger than resize": {"size": {"shortest_edge": 50}, "crop_size": {"height": 64, "width": 56},
                                "resample": 2, "image_mean": [0.5, 0.5, 0.5], "image_std": 0.25},
    "height-width resize, no crop": {"size": {"height": 40, "width": 70}, "do_center_crop": False,
                                     "do_normalize": False, "resample": 1},
    "crop only": {"do_resize": False, "crop_size": 32, "do_rescale": False},
}


@pytest.fixture(scope="module", params=list(CONFIGS))
def config_dir(request, tmp_path_factory) -> Path:
    from transformers import CLIPImageProcessorPil

    folder = tmp_path_factory.mktemp("config")
    settings = CONFIGS[request.param]
    if settings is None:
        CLIPImageProcessorPil().save_pretrained(folder)
    else:
        (folder / "preprocessor_config.json").write_text(json.dumps(settings))
    return folder


def test_preprocess_equals_transformers(cases, config_dir):
    from transformers import CLIPImageProcessorPil

    processor = CLIPImageProcessorPil.from_pretrained(config_dir)
    config = PreprocessConfig.from_pretrained_dir(config_dir)
    ours = preprocess([case.source for case in cases], config)
    assert ours.dtype == np.float32
    assert ours.shape == (len(cases), 3) + config.output_size

    worst, worst_name = 0.0, None
    for case, mine in zip(cases, ours):
        theirs = processor(images=case.reference, return_tensors="np")["pixel_values"][0]
        assert theirs.shape == mine.shape, case.name
        difference = float(np.max(np.abs(theirs.astype(np.float64) - mine)))
        if difference >= worst:
            worst, worst_name = difference, case.name
    assert worst == 0.0, f"max abs difference to transformers {worst:.3g}, worst on {worst_name}"


def test_enough_cases_of_distinct_kinds(cases):
    assert len(cases) >= 20
    assert len({case.name for case in cases}) == len(cases)


def test_transformers_clips_16_bit_samples_so_we_do_not_follow_it(tmp_path):
    from transformers.image_transforms import convert_to_rgb

    samples = np.array([[0, 255, 256, 32768, 65535]], dtype=np.uint16)
    path = _save(Image.fromarray(samples), tmp_path / "grey16.png")
    theirs = convert_to_rgb(Image.open(path), return_numpy=True)[..., 0]
    assert theirs.tolist() == [[0, 255, 255, 255, 255]]  # clipped, not scaled
    assert load_image(path)[..., 0].tolist() == [[0, 0, 1, 128, 255]]


# ------------------------------------------------------------- decoding


def test_greyscale_repeats_into_three_equal_channels(tmp_path):
    grey = skimage_data.camera()[:40, :30]
    for source in (grey, grey[..., None], _save(Image.fromarray(grey), tmp_path / "grey.png")):
        rgb = load_image(source)
        assert rgb.dtype == np.uint8 and rgb.shape == (40, 30, 3)
        assert all((rgb[..., c] == grey).all() for c in range(3))


def test_rgba_file_is_composited_on_white(tmp_path):
    rgb = skimage_data.astronaut()[:32, :48]
    alpha = np.tile(np.array([0, 1, 64, 128, 200, 255], np.uint8), 8)[None, :, None].repeat(32, 0)
    path = _save(Image.fromarray(np.concatenate([rgb, alpha], -1)), tmp_path / "rgba.png")
    a = alpha / 255.0
    expected = a * rgb + (1 - a) * 255
    loaded = load_image(path).astype(np.float64)
    # Pillow's alpha_composite rounds in fixed point: one grey level at most.
    assert np.max(np.abs(loaded - expected)) <= 1.0
    assert (loaded[:, alpha[0, :, 0] == 0] == 255).all()
    assert (loaded[:, alpha[0, :, 0] == 255] == rgb[:, alpha[0, :, 0] == 255]).all()


def test_rgba_array_follows_transformers_formula_exactly():
    pixel = np.array([[[0, 100, 255, 0], [0, 100, 255, 255], [0, 100, 255, 128], [10, 20, 30, 64]]], np.uint8)
    # By hand: round(a * c + (1 - a) * 255) with a = alpha / 255.
    expected = [[[255, 255, 255], [0, 100, 255], [127, 177, 255], [194, 196, 199]]]
    assert load_image(pixel).tolist() == expected


def test_float_rgba_array_is_composited_before_rounding():
    pixel = np.array([[[0.0, 0.5, 1.0, 0.5]]])
    # 0.5 * c + 0.5 * 1.0 -> [0.5, 0.75, 1.0] -> * 255 -> [127.5, 191.25, 255]
    assert load_image(pixel).tolist() == [[[128, 191, 255]]]


def test_palette_transparency_becomes_white(tmp_path):
    indices = np.array([[0, 1, 2, 1]], np.uint8)
    image = Image.fromarray(indices, "P")
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    path = _save(image, tmp_path / "p.png", transparency=1)
    assert load_image(path).tolist() == [[[255, 0, 0], [255, 255, 255], [0, 0, 255], [255, 255, 255]]]


def test_sixteen_bit_keeps_the_high_byte_like_pillows_rgb_decoding(tmp_path):
    rng = np.random.default_rng(1)
    samples = rng.integers(0, 65536, (9, 11), dtype=np.uint16)
    samples[0, :4] = [0, 255, 256, 65535]
    grey = load_image(_save(Image.fromarray(samples), tmp_path / "grey16.png"))
    assert (grey == (samples // 256)[..., None]).all()
    # Pillow decodes 16-bit RGB PNGs to the high byte; greyscale agrees with it.
    colour_path = _save_bytes(tmp_path / "rgb16.png", png16(np.repeat(samples[..., None], 3, -1)))
    assert (load_image(colour_path) == grey).all()


def test_sixteen_bit_transparent_level_becomes_white(tmp_path):
    samples = np.array([[0, 1000, 40000]], np.uint16)
    path = _save(Image.fromarray(samples), tmp_path / "t16.png", transparency=1000)
    assert load_image(path)[..., 0].tolist() == [[0, 255, 156]]


def test_cmyk_jpeg_follows_the_cmyk_formula(tmp_path):
    cmyk = np.zeros((16, 16, 4), np.uint8)
    cmyk[:8, :8] = [10, 200, 30, 40]
    cmyk[:8, 8:] = [0, 0, 0, 0]
    cmyk[8:, :8] = [100, 50, 25, 128]
    cmyk[8:, 8:] = [0, 255, 0, 0]
    path = _save(Image.fromarray(cmyk, "CMYK"), tmp_path / "cmyk.jpg", quality=100)
    c = cmyk.astype(np.float64)
    expected = (255 - c[..., :3]) * (255 - c[..., 3:]) / 255
    # JPEG is lossy even at quality 100; the colours must still be right.
    assert np.max(np.abs(load_image(path) - expected)) <= 4


def test_exif_orientation_is_applied_to_files_only(tmp_path):
    stored = skimage_data.chelsea()[:60, :90]
    image = Image.fromarray(stored)
    for orientation, turns in ((6, -1), (8, 1), (3, 2)):
        path = _save(image, tmp_path / f"o{orientation}.png", exif=_with_orientation(image, orientation))
        assert (load_image(path) == np.rot90(stored, turns)).all(), orientation
        # A PIL image is taken as it is, as transformers' processor takes it.
        assert (load_image(Image.open(path)) == stored).all()


def test_animated_gif_gives_the_first_frame(tmp_path):
    colours = [(200, 0, 0), (0, 200, 0), (0, 0, 200)]
    frames = [Image.new("RGB", (5, 4), colour) for colour in colours]
    path = _save(frames[0], tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert Image.open(path).n_frames == 3
    assert (load_image(path) == colours[0]).all()


def test_float_arrays_round_and_invert_uint8_exactly():
    every_level = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert (load_image(every_level / 255.0)[..., 0] == every_level).all()
    assert (load_image((every_level / 255.0).astype(np.float32))[..., 0] == every_level).all()
    assert load_image(np.array([[0.5 / 255, 1.5 / 255, 0.499 / 255]]))[..., 0].tolist() == [[0, 2, 0]]


def test_integer_arrays_of_any_dtype_in_range_are_accepted():
    values = np.array([[0, 17, 255]])
    for dtype in (np.int64, np.int16, np.uint16, np.int32):
        assert load_image(values.astype(dtype))[..., 1].tolist() == [[0, 17, 255]]


def test_load_images_accepts_single_mixed_and_nhwc(tmp_path):
    astronaut = skimage_data.astronaut()
    path = _save(Image.fromarray(astronaut[:20, :30]), tmp_path / "a.png")
    batch = load_images([path, Image.fromarray(astronaut[:5, :6]), astronaut[:7, :9] / 255.0, astronaut[:3, :4, 0]])
    assert [b.shape for b in batch] == [(20, 30, 3), (5, 6, 3), (7, 9, 3), (3, 4, 3)]
    assert (batch[0] == astronaut[:20, :30]).all()
    assert len(load_images(path)) == 1
    nhwc = np.stack([astronaut[:8, :8], astronaut[8:16, :8], astronaut[:8, 8:16]])
    split = load_images(nhwc)
    assert len(split) == 3 and all((s == n).all() for s, n in zip(split, nhwc))
    assert len(load_images((path, path))) == 2


# -------------------------------------------------- preprocessing by hand


def test_center_crop_offsets_round_down():
    image = np.arange(7 * 6, dtype=np.uint8).reshape(7, 6)
    config = PreprocessConfig(do_resize=False, crop_size=(4, 3), do_rescale=False, do_normalize=False)
    out = preprocess(image, config)[0, 0]
    # top = (7 - 4) // 2 = 1, left = (6 - 3) // 2 = 1
    assert out.tolist() == image[1:5, 1:4].tolist()


def test_center_crop_pads_small_images_with_black_at_ceil_offsets():
    image = np.full((1, 2), 9, np.uint8)
    config = PreprocessConfig(do_resize=False, crop_size=(4, 5), do_rescale=False, do_normalize=False)
    out = preprocess(image, config)[0, 0]
    # padding starts at ceil((4 - 1) / 2) = 2 rows, ceil((5 - 2) / 2) = 2 columns
    expected = np.zeros((4, 5))
    expected[2, 2:4] = 9
    assert out.tolist() == expected.tolist()


@pytest.mark.parametrize("height, width, expected", [(3, 7, (5, 11)), (7, 3, (11, 5)), (5, 5, (5, 5)), (4, 6, (5, 7))])
def test_shortest_edge_resize_truncates_the_long_edge(height, width, expected):
    # long edge = int(5 * long / short): 35/3 = 11.67 -> 11; 30/4 = 7.5 -> 7
    config = PreprocessConfig(shortest_edge=5, do_center_crop=False)
    assert preprocess(np.zeros((height, width, 3), np.uint8), config).shape == (1, 3) + expected


def test_rescale_and_normalize_values():
    config = PreprocessConfig(do_resize=False, crop_size=(1, 2))
    out = preprocess(np.array([[[0, 128, 255], [255, 255, 255]]], np.uint8), config)
    mean, std = np.array(CLIP_MEAN), np.array(CLIP_STD)
    expected = (np.array([[0, 128, 255], [255, 255, 255]]) / 255 - mean) / std
    assert np.max(np.abs(out[0].transpose(1, 2, 0)[0] - expected)) < 1e-6


def test_output_is_contiguous_float32_nchw():
    out = preprocess([np.zeros((30, 40, 3), np.uint8)] * 2, PreprocessConfig.clip_defaults(32))
    assert out.dtype == np.float32 and out.shape == (2, 3, 32, 32) and out.flags.c_contiguous


# ---------------------------------------------------------------- config


def test_config_forms_old_and_new():
    new = PreprocessConfig.from_dict({"size": {"shortest_edge": 336}, "crop_size": {"height": 336, "width": 336}})
    old = PreprocessConfig.from_dict({"size": 336, "crop_size": 336})
    assert new == old == PreprocessConfig.clip_defaults(336)
    listed = PreprocessConfig.from_dict({"size": [100, 80], "crop_size": [60, 50], "image_mean": 0.5})
    assert listed.shortest_edge is None and listed.resize_size == (100, 80)
    assert listed.crop_size == (60, 50) and listed.image_mean == (0.5, 0.5, 0.5)
    square = PreprocessConfig.from_dict({"size": 64, "default_to_square": True})
    assert square.resize_size == (64, 64)
    kosmos = PreprocessConfig.from_dict({"size": {"shortest_edge": 48}, "use_square_size": True})
    assert kosmos.resize_size == (48, 48)
    # Missing and null keys take transformers' CLIPImageProcessor defaults.
    assert PreprocessConfig.from_dict({"crop_size": None}) == PreprocessConfig.clip_defaults(224)
    assert PreprocessConfig.clip_defaults(224) == PreprocessConfig()
    assert hash(PreprocessConfig(crop_size=[224, 224])) == hash(PreprocessConfig())


def test_config_equals_what_transformers_reads(tmp_path):
    from transformers import CLIPImageProcessorPil

    for settings in CONFIGS.values():
        if settings is None:
            continue
        (tmp_path / "preprocessor_config.json").write_text(json.dumps(settings))
        theirs = CLIPImageProcessorPil.from_pretrained(tmp_path)
        ours = PreprocessConfig.from_pretrained_dir(tmp_path)
        assert ours.crop_size == (theirs.crop_size.height, theirs.crop_size.width)
        assert ours.shortest_edge == theirs.size.shortest_edge
        assert ours.resample == int(theirs.resample)
        assert ours.rescale_factor == theirs.rescale_factor
        assert (ours.do_resize, ours.do_center_crop, ours.do_rescale, ours.do_normalize) == (
            theirs.do_resize, theirs.do_center_crop, theirs.do_rescale, theirs.do_normalize)
        assert np.allclose(ours.image_mean, theirs.image_mean) and np.allclose(ours.image_std, theirs.image_std)


def test_processor_config_nested_entry_wins(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"size": 100, "crop_size": 100}))
    (tmp_path / "processor_config.json").write_text(json.dumps({"image_processor": {"size": 64, "crop_size": 64}}))
    assert PreprocessConfig.from_pretrained_dir(tmp_path) == PreprocessConfig.clip_defaults(64)


def test_missing_preprocessor_config_falls_back_to_clip_defaults(tmp_path):
    assert PreprocessConfig.from_pretrained_dir(tmp_path, image_size=96) == PreprocessConfig.clip_defaults(96)
    (tmp_path / "config.json").write_text(json.dumps({"vision_config": {"image_size": 336}}))
    assert PreprocessConfig.from_pretrained_dir(tmp_path) == PreprocessConfig.clip_defaults(336)
    (tmp_path / "config.json").write_text(json.dumps({"vision_config": {}}))
    assert PreprocessConfig.from_pretrained_dir(tmp_path) == PreprocessConfig.clip_defaults(224)


def test_bad_preprocessor_configs_name_the_file(tmp_path):
    with pytest.raises(ModelLoadError, match="preprocessor_config.json or config.json"):
        PreprocessConfig.from_pretrained_dir(tmp_path)
    path = tmp_path / "preprocessor_config.json"
    for text, what in [("{not json", "readable json"), ("[1, 2]", "json object"),
                       ('{"size": {"shortest_edge": 224, "longest_edge": 500}}', "size"),
                       ('{"crop_size": {"shortest_edge": 224}}', "crop_size"),
                       ('{"image_std": [0.5, 0.0, 0.5]}', "image_std > 0"),
                       ('{"image_mean": [0.5, 0.5]}', "image_mean"),
                       ('{"resample": 9}', "resample"), ('{"size": 0}', "shortest_edge")]:
        path.write_text(text)
        with pytest.raises(ModelLoadError, match=what) as caught:
            PreprocessConfig.from_pretrained_dir(tmp_path)
        assert str(path) in str(caught.value), text
