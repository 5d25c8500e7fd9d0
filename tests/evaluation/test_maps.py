"""Tests of convis_jax.evaluation.maps: maps on the unit square and per-image seeds."""

import zlib

import numpy as np
import pytest

from convis_jax import evaluation
from convis_jax.errors import InputError


def test_unit_square_maps():
    maps = np.zeros((3, 32, 32))
    maps[0, 8:16, 4:12] = 5.0  # a block
    maps[1] = np.arange(32)[None, :] - 100.0  # a ramp, all negative
    out = evaluation.unit_square_maps(maps)
    assert out.shape == (3, 224, 224) and out.dtype == np.float32
    assert out[0].min() == 0.0 and out[0].max() == 1.0
    assert out[0, 84, 56] == 1.0 and out[0, 200, 200] == 0.0  # the block's middle, far away
    np.testing.assert_allclose(out[1, 0, 3::7], np.linspace(0, 1, 32), atol=1e-6)
    assert not out[2].any()  # constant: no location, all zeros
    with pytest.raises(InputError, match="square"):
        evaluation.unit_square_maps(np.zeros((1, 4, 5)))


def test_image_seed():
    seeds = [evaluation.image_seed(0, f"img_{i}.jpg") for i in range(50)]
    assert len(set(seeds)) == 50
    assert evaluation.image_seed(0, "img_3.jpg") == seeds[3]
    assert evaluation.image_seed(1, "img_3.jpg") != seeds[3]
    want = np.random.SeedSequence([0, zlib.crc32(b"img_3.jpg")]).generate_state(1)[0]
    assert seeds[3] == want
    with pytest.raises(InputError, match="seed"):
        evaluation.image_seed(-1, "x")
