"""The Flax CLIP: a ViT image tower and a causal text tower with projections.

Submodules are named after the Hugging Face PyTorch keys (`vision_model.
encoder.layers_3.self_attn.q_proj` <-> `vision_model.encoder.layers.3.
self_attn.q_proj`), so that `pytorch_names.py` converts checkpoints with a
short table of rules. Every module works on ONE example (no batch axis);
`vmap` adds the batch in one place (`encode_images`, `encode_texts` below).

`dtype` is the dtype of the parameters and of the operands of every matrix
and attention product; products return float32, and layer norms, softmax,
activations and the residual stream are float32 in either precision
(`precision.py` says why).
"""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import flax.linen as nn
import jax
import jax.numpy as jnp

from convis_jax.models import precision
from convis_jax.models.config import (
    ClipConfig,
    TextConfig,
    TowerConfig,
    VisionConfig,
)


def _activation(name: str):
    if name == "quick_gelu":
        return lambda x: x * jax.nn.sigmoid(1.702 * x)
    if name == "gelu_pytorch_tanh":  # SigLIP: PyTorch's GELU(approximate="tanh")
        return partial(jax.nn.gelu, approximate=True)
    return partial(jax.nn.gelu, approximate=False)  # transformers' "gelu" is the exact erf form


def dense(features: int, dtype, **kwargs) -> nn.Dense:
    """A Dense layer whose product takes `dtype` operands and returns float32 (plus the bias)."""
    return nn.Dense(features, dtype=dtype, param_dtype=dtype, dot_general=precision.dot_general,
                    **kwargs)


class Attention(nn.Module):
    """Multi-head self-attention; `mask` is additive, [L, L] or None."""

    config: TowerConfig
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        width = self.config.hidden_size
        self.q_proj = dense(width, self.dtype)
        self.k_proj = dense(width, self.dtype)
        self.v_proj = dense(width, self.dtype)
        self.out_proj = dense(width, self.dtype)

    def __call__(self, x, mask=None, queries: int | None = None):
        """x [L, D] -> [L, D]; with `queries`, only the first `queries` rows attend
        (their outputs alone, [queries, D]; keys and values still come from all L)."""
        heads, head_dim = self.config.num_attention_heads, self.config.head_dim
        split = lambda t: t.reshape(t.shape[0], heads, head_dim)
        q = split(self.q_proj(x[:queries])) * head_dim ** -0.5
        k, v = split(self.k_proj(x)), split(self.v_proj(x))
        logits = precision.einsum("qhd,khd->hqk", q, k, self.dtype)
        if mask is not None:
            logits = logits + mask[:queries]
        weights = jax.nn.softmax(logits, axis=-1)
        out = precision.einsum("hqk,khd->qhd", weights, v, self.dtype).reshape(q.shape[0], -1)
        return self.out_proj(out)


class Mlp(nn.Module):
    config: TowerConfig
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.fc1 = dense(self.config.intermediate_size, self.dtype)
        self.fc2 = dense(self.config.hidden_size, self.dtype)

    def __call__(self, x):
        return self.fc2(_activation(self.config.hidden_act)(self.fc1(x)))


def layer_norm(config: TowerConfig, dtype) -> nn.LayerNorm:
    """A LayerNorm with `dtype` parameters that computes and returns float32."""
    return nn.LayerNorm(epsilon=config.layer_norm_eps, dtype=jnp.float32, param_dtype=dtype)


class EncoderLayer(nn.Module):
    """Pre-norm transformer block."""

    config: TowerConfig
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.layer_norm1 = layer_norm(self.config, self.dtype)
        self.self_attn = Attention(self.config, self.dtype)
        self.layer_norm2 = layer_norm(self.config, self.dtype)
        self.mlp = Mlp(self.config, self.dtype)

    def __call__(self, x, mask=None, queries: int | None = None):
        """x [L, D] -> [L, D], or only the first `queries` tokens' outputs [queries, D]."""
        x = x[:queries] + self.self_attn(self.layer_norm1(x), mask, queries)
        return x + self.mlp(self.layer_norm2(x))


class LayerStack(nn.Module):
    config: TowerConfig
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.layers = [EncoderLayer(self.config, self.dtype)
                       for _ in range(self.config.num_hidden_layers)]

    def __call__(self, x, mask=None, start: int = 0, stop: int | None = None):
        """Runs layers [start, stop) on x [L, D]."""
        for layer in self.layers[start:stop]:
            x = layer(x, mask)
        return x

    def first_token(self, x, start: int = 0):
        """The first token's output [D] of layers [start, end) on x [L, D].

        The last layer computes that token alone (keys and values still from
        every token): the same numbers as `self(x, start=start)[0]`, with
        about 1/L of the last layer's work.
        """
        if start >= len(self.layers):
            return x[0]
        x = self(x, start=start, stop=len(self.layers) - 1)
        return self.layers[-1](x, queries=1)[0]


class PatchEmbedding(nn.Module):
    """The patch embedding (a conv whose kernel and stride are the patch) as one product.

    The parameters keep `nn.Conv`'s names, layout and initialiser (`kernel`
    [p, p, C, D], `bias` [D]). A product of the flattened patches: XLA's CPU
    convolution took 2x (float32) and 4x (bfloat16) the time of this product
    (docs/guides/precision.md).
    """

    features: int
    patch_size: int
    use_bias: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, pixels_hwc):
        """pixels_hwc [S, S, C] -> float32 [g * g, D], the patches in row-major grid order."""
        p, channels = self.patch_size, pixels_hwc.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (p, p, channels, self.features), self.dtype)
        g = pixels_hwc.shape[0] // p
        patches = (pixels_hwc[:g * p, :g * p].reshape(g, p, g, p, channels)
                   .transpose(0, 2, 1, 3, 4).reshape(g * g, p * p * channels))
        out = precision.matmul(patches, kernel.reshape(p * p * channels, self.features),
                               self.dtype)
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,), self.dtype)
            out = out + bias.astype(jnp.float32)
        return out


class VisionEmbeddings(nn.Module):
    config: VisionConfig
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        c = self.config
        self.class_embedding = self.param("class_embedding", nn.initializers.normal(0.02),
                                          (c.hidden_size,), self.dtype)
        self.patch_embedding = PatchEmbedding(c.hidden_size, c.patch_size, use_bias=False,
                                              dtype=self.dtype)
        self.position_embedding = nn.Embed(c.num_patches + 1, c.hidden_size,
                                           dtype=self.dtype, param_dtype=self.dtype)

    def __call__(self, pixels_hwc):
        """pixels_hwc [S, S, 3] -> float32 tokens [1 + patches, D]."""
        tokens = jnp.concatenate([self.class_embedding[None].astype(jnp.float32),
                                  self.patch_embedding(pixels_hwc)])
        return tokens + self.position_embedding.embedding.astype(jnp.float32)


class VisionTransformer(nn.Module):
    config: VisionConfig
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.embeddings = VisionEmbeddings(self.config, self.dtype)
        self.pre_layrnorm = layer_norm(self.config, self.dtype)  # sic: the PyTorch key
        self.encoder = LayerStack(self.config, self.dtype)
        self.post_layernorm = layer_norm(self.config, self.dtype)

    def tokens(self, pixels_hwc, layer: int):
        """Hidden state after `layer` encoder layers (transformers' hidden_states[layer])."""
        return self.encoder(self.pre_layrnorm(self.embeddings(pixels_hwc)), stop=layer)

    def pooled_from_tokens(self, tokens, layer: int):
        """Continues from hidden_states[layer] to the pooled (class token) output."""
        return self.post_layernorm(self.encoder.first_token(tokens, start=layer))


class TextTransformer(nn.Module):
    config: TextConfig
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        c = self.config
        self.embeddings = TextEmbeddings(c, self.dtype)
        self.encoder = LayerStack(c, self.dtype)
        self.final_layer_norm = layer_norm(c, self.dtype)

    def __call__(self, input_ids):
        length = input_ids.shape[0]
        causal = jnp.where(jnp.tril(jnp.ones((length, length), bool)), 0.0, -jnp.inf)
        hidden = self.final_layer_norm(self.encoder(self.embeddings(input_ids), causal))
        return hidden[eos_position(input_ids, self.config.eos_token_id)]


def eos_position(input_ids, eos_token_id: int):
    """Where transformers pools the text: the first EOS token.

    Configs written before transformers PR #24773 carry eos_token_id == 2;
    for them transformers keeps the old rule, the position of the largest id
    (CLIP's EOS has the largest id of its vocabulary). Both return the first
    occurrence, which matters when padding reuses the EOS token.
    """
    if eos_token_id == 2:
        return jnp.argmax(input_ids)
    return jnp.argmax(input_ids == eos_token_id)


class TextEmbeddings(nn.Module):
    config: TextConfig
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        c = self.config
        self.token_embedding = nn.Embed(c.vocab_size, c.hidden_size, dtype=self.dtype,
                                        param_dtype=self.dtype)
        self.position_embedding = nn.Embed(c.max_position_embeddings, c.hidden_size,
                                           dtype=self.dtype, param_dtype=self.dtype)

    def __call__(self, input_ids):
        """input_ids [L] -> float32 [L, D] (the rows are looked up, then converted)."""
        positions = self.position_embedding.embedding[: input_ids.shape[0]].astype(jnp.float32)
        return self.token_embedding(input_ids).astype(jnp.float32) + positions


class CLIP(nn.Module):
    """Both towers, their projections and the logit scale (one example at a time)."""

    config: ClipConfig
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        c = self.config
        self.vision_model = VisionTransformer(c.vision, self.dtype)
        self.text_model = TextTransformer(c.text, self.dtype)
        self.visual_projection = dense(c.projection_dim, self.dtype, use_bias=False)
        self.text_projection = dense(c.projection_dim, self.dtype, use_bias=False)
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(
            c.logit_scale_init_value), (), self.dtype)

    def __call__(self, pixel_values, input_ids):
        """Both projected features; used to create the parameter tree."""
        return self.image_features(pixel_values), self.text_features(input_ids), self.logit_scale

    def image_features(self, pixel_values):
        """pixel_values [3, S, S] (transformers' layout) -> projected feature [d], not normalised."""
        layer = self.config.vision.num_hidden_layers
        return self.image_features_from_tokens(self.image_tokens(pixel_values, layer), layer)

    def image_tokens(self, pixel_values, layer: int):
        """pixel_values [3, S, S] -> token activations [1 + patches, D] after `layer` layers."""
        return self.vision_model.tokens(jnp.transpose(pixel_values, (1, 2, 0)), layer)

    def image_features_from_tokens(self, tokens, layer: int):
        """Token activations after `layer` layers -> projected image feature [d]."""
        return self.visual_projection(self.vision_model.pooled_from_tokens(tokens, layer))

    def text_features(self, input_ids):
        """input_ids [L] int -> projected text feature [d], not normalised."""
        return self.text_projection(self.text_model(input_ids))


def normalise(x, axis: int = -1):
    """x / ||x|| along `axis` (in float32)."""
    x = x.astype(jnp.float32)
    return x / jnp.linalg.norm(x, axis=axis, keepdims=True)


def tower_functions(module: type[nn.Module]) -> SimpleNamespace:
    """The functions of a two-tower Flax module class (`CLIP`, `siglip.SIGLIP`) on a
    parameter tree, whose dtype is the compute dtype:

    * `image_features(params, config, pixel_values [3, S, S])` -> unnormalised feature [d];
    * `image_tokens(params, config, pixel_values, layer)` -> token activations after
      `layer` vision layers;
    * `image_features_from_tokens(params, config, tokens, layer)` -> feature [d] from them;
    * `text_features(params, config, input_ids [L])` -> unnormalised feature [d];
    * `encode_images(params, config, pixel_values [N, 3, S, S], normalize=True)` and
      `encode_texts(params, config, input_ids [N, L], normalize=True)` -> float32 [N, d],
      unit vectors by default.
    """
    def apply(config, params, method: str, *args):
        dtype = jax.tree_util.tree_leaves(params)[0].dtype
        return module(config, dtype).apply({"params": params}, *args, method=method)

    def image_features(params, config, pixel_values):
        return apply(config, params, "image_features", pixel_values)

    def image_tokens(params, config, pixel_values, layer: int):
        return apply(config, params, "image_tokens", pixel_values, layer)

    def image_features_from_tokens(params, config, tokens, layer: int):
        return apply(config, params, "image_features_from_tokens", tokens, layer)

    def text_features(params, config, input_ids):
        return apply(config, params, "text_features", input_ids)

    def encode(features):
        def batched(params, config, inputs, normalize: bool = True):
            out = jax.vmap(features, in_axes=(None, None, 0))(params, config, inputs)
            return normalise(out) if normalize else out.astype(jnp.float32)
        return batched

    return SimpleNamespace(image_features=image_features, image_tokens=image_tokens,
                           image_features_from_tokens=image_features_from_tokens,
                           text_features=text_features, encode_images=encode(image_features),
                           encode_texts=encode(text_features))


_FUNCTIONS = tower_functions(CLIP)
image_features = _FUNCTIONS.image_features
image_tokens = _FUNCTIONS.image_tokens
image_features_from_tokens = _FUNCTIONS.image_features_from_tokens
text_features = _FUNCTIONS.text_features
encode_images = _FUNCTIONS.encode_images
encode_texts = _FUNCTIONS.encode_texts


def parameter_shapes(config: ClipConfig, dtype=jnp.float32):
    """The parameter tree's shapes and dtypes (jax.ShapeDtypeStruct leaves), without allocating."""
    model = CLIP(config, dtype)
    pixels = jax.ShapeDtypeStruct((3, config.vision.image_size, config.vision.image_size), dtype)
    ids = jax.ShapeDtypeStruct((config.text.max_position_embeddings,), jnp.int32)
    variables = jax.eval_shape(model.init, jax.random.key(0), pixels, ids)
    return variables["params"]


def init_params(config: ClipConfig, seed: int = 0, dtype=jnp.float32):
    """Random parameters (for training the small bundled model)."""
    model = CLIP(config, dtype)
    c = config
    pixels = jnp.zeros((3, c.vision.image_size, c.vision.image_size), dtype)
    ids = jnp.zeros((c.text.max_position_embeddings,), jnp.int32)
    return model.init(jax.random.key(seed), pixels, ids)["params"]
