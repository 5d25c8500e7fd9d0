"""`Encoder`: the two things ConVis needs from a vision-language model, and nothing else.

* `embed_images(params, pixel_values) -> [B, d]`: unit image embeddings of
  preprocessed images [B, 3, S, S], a pure function of its arguments that JAX
  can trace, `vmap`, `jit` and differentiate (the occlusion sweeps and the
  gradient maps are to call only this);
* `embed_texts(texts) -> [T, d]`: unit text embeddings on the host, computed
  in any framework (or read from a file);

plus the input size and the normalisation of the pixels, and for the
probability scores the logit scale (and SigLIP's logit bias).

Every loaded model gives one (`ClipModel.encoder`, `SiglipModel.encoder`); a
Flax module written elsewhere is wrapped in a few lines:

    module = MyVisionTower(...)                      # one image [3, S, S] -> [d]
    def embed(params, pixel_values):                 # [B, 3, S, S] -> [B, d]
        v = jax.vmap(lambda x: module.apply({"params": params}, x))(pixel_values)
        return v / jnp.linalg.norm(v, axis=-1, keepdims=True)
    encoder = Encoder(embed_images=embed, params=params, image_size=224,
                      image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5),
                      embed_texts=lambda texts: my_text_embeddings(texts))

The occlusion sweeps (`occlusion.py`) and the pixel gradient maps
(`gradients.py`) call only `embed_images`. Token maps (`kind="tokens"`) also
need the vision transformer's tokens: an encoder that has them says so with
`image_tokens` (`ImageTokens`; the Flax CLIP and SigLIP provide it, an
outside module may leave it None and then has no token maps).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convis_jax.errors import InputError


@dataclass(frozen=True)
class FlaxImageEmbedder:
    """`embed_images` of a Flax model of this package: a hashable (module function, config) pair.

    Being a frozen dataclass of hashable fields, two embedders of the same model
    compare equal, so it can be a static argument of `jax.jit` without retracing.

    Attributes:
        encode: a module-level function (params, config, pixel_values [B, 3, S, S],
            normalize) -> [B, d] (`clip.encode_images`, `siglip.encode_images`).
        config: the model's frozen config.
    """

    encode: Callable
    config: Any

    def __call__(self, params, pixel_values):
        """pixel_values [B, 3, S, S] float -> unit embeddings [B, d] float32."""
        return self.encode(params, self.config, pixel_values, True)


@dataclass(frozen=True)
class WithConfig:
    """fn(params, config, *args) with the config bound: hashable, a static jit argument."""

    fn: Callable
    config: Any

    def __call__(self, params, *args):
        return self.fn(params, self.config, *args)


@dataclass(frozen=True)
class ImageTokens:
    """The optional access to a vision transformer's tokens that token maps need.

    Hashable (its functions hashable too, e.g. `WithConfig` or module-level
    functions): the gradient kernels take it as a static argument.

    Attributes:
        tokens: (params, pixel_values [3, S, S]) and a layer L -> the hidden state
            after L blocks, [prefix_tokens + grid_size**2, D] (one image).
        features: (params, tokens [prefix_tokens + grid_size**2, D], L) -> the
            image feature [d] that continues from there (not normalised).
        prefix_tokens: tokens before the patches (CLIP's class token: 1; SigLIP: 0).
        grid_size: g, patches per side, row-major after the prefix.
        max_layer: the last layer whose tokens give a useful map (see
            `gradients.concept_gradient_maps`): CLIP's class-token pooling gives
            num_hidden_layers - 2, SigLIP's attention pooling over every token
            num_hidden_layers - 1 (its output passes the post-LayerNorm only).
    """

    tokens: Callable
    features: Callable
    prefix_tokens: int
    grid_size: int
    max_layer: int


@dataclass(frozen=True)
class Encoder:
    """What ConVis needs from a model: traceable unit image embeddings and host text embeddings.

    Attributes:
        embed_images: (params, pixel_values [B, 3, S, S] float, normalised with
            image_mean / image_std) -> unit embeddings [B, d] float32; pure and
            traceable (jit, vmap, grad).
        params: the PyTree `embed_images` takes.
        image_size: S, the square input size in pixels.
        image_mean: three per-channel means (R, G, B) of pixels in [0, 1].
        image_std: three per-channel standard deviations, > 0.
        embed_texts: texts (list of str) -> unit embeddings [T, d] float32 NumPy.
        embedding_dim: d.
        logit_scale: the multiplier of cosine similarities in the model's logits
            (exp of the learnt parameter), > 0.
        logit_bias: None for a softmax model (CLIP); SigLIP's bias b, whose
            match probability is sigmoid(logit_scale * cos + b).
        name: where it came from, for messages and logs.
        fingerprint: a hash of the weights (cache keys of concept banks); None: no caching.
        image_tokens: the tokens for token maps (`ImageTokens`), or None: no token maps.
    """

    embed_images: Callable
    params: Any = field(repr=False)
    image_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    embed_texts: Callable = field(repr=False)
    embedding_dim: int
    logit_scale: float = 100.0
    logit_bias: float | None = None
    name: str = "custom encoder"
    fingerprint: str | None = None
    image_tokens: ImageTokens | None = None

    def __post_init__(self):
        if not isinstance(self.image_size, (int, np.integer)) or self.image_size < 1:
            raise InputError(f"image_size must be a positive int, found {self.image_size!r}")
        for key in ("image_mean", "image_std"):
            values = tuple(float(v) for v in getattr(self, key))
            if len(values) != 3 or not all(math.isfinite(v) for v in values):
                raise InputError(f"{key} must be 3 finite numbers (R, G, B), found {values}")
            object.__setattr__(self, key, values)
        if min(self.image_std) <= 0:
            raise InputError(f"image_std must be > 0, found {self.image_std}")
        if not (isinstance(self.embedding_dim, (int, np.integer)) and self.embedding_dim >= 1):
            raise InputError(f"embedding_dim must be a positive int, found {self.embedding_dim!r}")
        if not (math.isfinite(self.logit_scale) and self.logit_scale > 0):
            raise InputError(f"logit_scale must be finite and > 0, found {self.logit_scale!r}")

