"""The `Encoder` contract: built from loaded models and from a Flax module written elsewhere."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convis_jax.errors import InputError
from convis_jax.models.encoder import Encoder
from convis_jax.models.loading import load_clip


class OutsideTower(nn.Module):
    """A vision tower written outside convis_jax: one image [3, S, S] -> [d]."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(8, (4, 4), strides=(4, 4))(jnp.transpose(x, (1, 2, 0)))
        return nn.Dense(6)(jnp.tanh(x).mean(axis=(0, 1)))


def outside_encoder():
    """The few lines of encoder.py's docstring example."""
    module = OutsideTower()
    params = module.init(jax.random.key(0), jnp.zeros((3, 16, 16)))["params"]

    def embed(params, pixel_values):
        v = jax.vmap(lambda x: module.apply({"params": params}, x))(pixel_values)
        return v / jnp.linalg.norm(v, axis=-1, keepdims=True)

    table = np.random.default_rng(1).normal(size=(5, 6)).astype(np.float32)
    table /= np.linalg.norm(table, axis=1, keepdims=True)
    words = ["dog", "cat", "car", "tree", "bird"]
    return module, Encoder(embed_images=embed, params=params, image_size=16,
                           image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5),
                           embed_texts=lambda texts: table[[words.index(t) for t in texts]],
                           embedding_dim=6)


def test_an_outside_flax_module_behind_the_contract():
    module, encoder = outside_encoder()
    pixel_values = np.random.default_rng(2).normal(size=(3, 3, 16, 16)).astype(np.float32)
    v = jax.jit(encoder.embed_images)(encoder.params, pixel_values)
    # Against the module applied image by image, normalised in NumPy.
    loop = np.stack([np.asarray(module.apply({"params": encoder.params}, x)) for x in pixel_values])
    np.testing.assert_allclose(v, loop / np.linalg.norm(loop, axis=1, keepdims=True), atol=1e-6)
    cotangent = jax.grad(lambda x: encoder.embed_images(encoder.params, x)[:, 0].sum())(pixel_values)
    assert cotangent.shape == pixel_values.shape and np.abs(cotangent).max() > 0
    assert encoder.embed_texts(["car", "dog"]).shape == (2, 6)


@pytest.mark.parametrize("change, match", [
    (dict(image_std=(0.5, 0.0, 0.5)), "image_std must be > 0"),
    (dict(image_mean=(0.5, 0.5)), "image_mean must be 3 finite numbers"),
    (dict(image_size=0), "image_size must be a positive int"),
    (dict(logit_scale=float("nan")), "logit_scale must be finite"),
])
def test_bad_fields_are_input_errors(change, match):
    _, encoder = outside_encoder()
    fields = dict(embed_images=encoder.embed_images, params=encoder.params, image_size=16,
                  image_mean=(0.5,) * 3, image_std=(0.5,) * 3, embed_texts=encoder.embed_texts,
                  embedding_dim=6)
    with pytest.raises(InputError, match=match):
        Encoder(**{**fields, **change})


def test_clip_encoder_equals_the_model_and_is_a_stable_static_argument(tiny_checkpoint):
    model = load_clip(tiny_checkpoint[0])
    encoder = model.encoder
    pixel_values = np.random.default_rng(3).normal(size=(2, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(encoder.embed_images(encoder.params, pixel_values),
                               model.embed_pixel_values(pixel_values), atol=1e-6)
    assert encoder.logit_bias is None and encoder.logit_scale == model.logit_scale
    assert encoder.image_mean == model.preprocess_config.image_mean
    # Two encoders of one model have equal, equally hashed embed_images: jit's static
    # argument cache reuses the compiled kernel.
    assert model.encoder.embed_images == encoder.embed_images
    assert hash(model.encoder.embed_images) == hash(encoder.embed_images)
