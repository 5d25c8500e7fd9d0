"""The Flax SigLIP: a ViT without class token pooled by attention, a text tower pooled at its last token.

Submodules are named after the Hugging Face PyTorch `SiglipModel` keys, so
that `pytorch_names.py` converts checkpoints with the same short table of
rules as CLIP. The transformer blocks are CLIP's (`clip.LayerStack`: the same
names and the same pre-norm block); what differs:

* the patch embedding has a bias and there is no class token; the position
  embeddings cover the patches only;
* the image embedding is the attention-pooling ("MAP") head over the
  post-layernormed tokens: one learnt probe attends to every token through a
  `torch.nn.MultiheadAttention` (whose fused `in_proj_weight` [3D, D] and
  `in_proj_bias` [3D] are kept as they are stored), then a residual MLP;
* the text tower is bidirectional (no causal mask), pools the LAST position
  (which is padding for short texts: SigLIP was trained on texts padded to
  the maximum length, see `SiglipModel.tokenize`) and maps it through a
  linear `head`;
* `logit_scale` and `logit_bias` [1]: p(match) = sigmoid(exp(scale) * cos + bias).

Every module works on ONE example; `vmap` adds the batch (`encode_images`,
`encode_texts`). Precision as in CLIP: products take `dtype` operands and
return float32, everything else is float32 (`precision.py`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from convis_jax.models import precision
from convis_jax.models.clip import (
    LayerStack,
    Mlp,
    PatchEmbedding,
    TextEmbeddings,
    dense,
    layer_norm,
    tower_functions,
)
from convis_jax.models.config import (
    SiglipConfig,
    SiglipTextConfig,
    SiglipVisionConfig,
)


class SiglipVisionEmbeddings(nn.Module):
    config: SiglipVisionConfig
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        c = self.config
        self.patch_embedding = PatchEmbedding(c.hidden_size, c.patch_size, use_bias=True,
                                              dtype=self.dtype)
        self.position_embedding = nn.Embed(c.num_patches, c.hidden_size, dtype=self.dtype,
                                           param_dtype=self.dtype)

    def __call__(self, pixels_hwc):
        """pixels_hwc [S, S, 3] -> float32 patch tokens [patches, D] in row-major grid order."""
        return (self.patch_embedding(pixels_hwc)
                + self.position_embedding.embedding.astype(jnp.float32))


class MultiheadAttention(nn.Module):
    """`torch.nn.MultiheadAttention` (no mask, no dropout), with its parameter names and layout.

    `in_proj_weight` [3D, D] stacks the query, key and value weights in
    PyTorch's [out, in] layout; `out_proj` is an ordinary Dense.
    """

    hidden_size: int
    num_heads: int
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        d = self.hidden_size
        self.in_proj_weight = self.param("in_proj_weight", nn.initializers.xavier_uniform(),
                                         (3 * d, d), self.dtype)
        self.in_proj_bias = self.param("in_proj_bias", nn.initializers.zeros, (3 * d,),
                                       self.dtype)
        self.out_proj = dense(d, self.dtype)

    def __call__(self, query, x):
        """query [Lq, D] attends to x [L, D] -> [Lq, D]."""
        d, heads = self.hidden_size, self.num_heads
        w, b = self.in_proj_weight, self.in_proj_bias.astype(jnp.float32)
        project = lambda t, part: precision.matmul(t, w[part].T, self.dtype) + b[part]
        q = project(query, slice(0, d))
        k = project(x, slice(d, 2 * d))
        v = project(x, slice(2 * d, 3 * d))
        split = lambda t: t.reshape(t.shape[0], heads, d // heads)
        q, k, v = split(q) * (d // heads) ** -0.5, split(k), split(v)
        logits = precision.einsum("qhd,khd->hqk", q, k, self.dtype)
        weights = jax.nn.softmax(logits, axis=-1)
        out = precision.einsum("hqk,khd->qhd", weights, v, self.dtype).reshape(query.shape[0], d)
        return self.out_proj(out)


class MultiheadAttentionPoolingHead(nn.Module):
    """The MAP head: a learnt probe attends to the tokens, then a residual MLP."""

    config: SiglipVisionConfig
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        c = self.config
        self.probe = self.param("probe", nn.initializers.normal(1.0), (1, 1, c.hidden_size),
                                self.dtype)
        self.attention = MultiheadAttention(c.hidden_size, c.num_attention_heads, self.dtype)
        self.layernorm = layer_norm(c, self.dtype)
        self.mlp = Mlp(c, self.dtype)

    def __call__(self, tokens):
        """tokens [L, D] -> pooled [D]."""
        hidden = self.attention(self.probe[0].astype(jnp.float32), tokens)  # [1, D]
        hidden = hidden + self.mlp(self.layernorm(hidden))
        return hidden[0]


class SiglipVisionTransformer(nn.Module):
    config: SiglipVisionConfig
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.embeddings = SiglipVisionEmbeddings(self.config, self.dtype)
        self.encoder = LayerStack(self.config, self.dtype)
        self.post_layernorm = layer_norm(self.config, self.dtype)
        self.head = MultiheadAttentionPoolingHead(self.config, self.dtype)

    def tokens(self, pixels_hwc, layer: int):
        """Hidden state after `layer` encoder layers (transformers' hidden_states[layer])."""
        return self.encoder(self.embeddings(pixels_hwc), stop=layer)

    def pooled_from_tokens(self, tokens, layer: int):
        """Continues from hidden_states[layer] to the pooled output [D] of the head."""
        return self.head(self.post_layernorm(self.encoder(tokens, start=layer)))


class SiglipTextTransformer(nn.Module):
    config: SiglipTextConfig
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        c = self.config
        self.embeddings = TextEmbeddings(c, self.dtype)
        self.encoder = LayerStack(c, self.dtype)
        self.final_layer_norm = layer_norm(c, self.dtype)
        self.head = dense(c.projection_size, self.dtype)

    def __call__(self, input_ids):
        """input_ids [L] -> the head of the last position [projection_size] (no mask: as trained)."""
        hidden = self.final_layer_norm(self.encoder(self.embeddings(input_ids)))
        return self.head(hidden[-1])


class SIGLIP(nn.Module):
    """Both towers, the logit scale and bias (one example at a time)."""

    config: SiglipConfig
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.vision_model = SiglipVisionTransformer(self.config.vision, self.dtype)
        self.text_model = SiglipTextTransformer(self.config.text, self.dtype)
        # SigLIP's initial values (log 10 and -10); shape [1] as in the PyTorch checkpoints.
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(2.302585),
                                      (1,), self.dtype)
        self.logit_bias = self.param("logit_bias", nn.initializers.constant(-10.0), (1,),
                                     self.dtype)

    def __call__(self, pixel_values, input_ids):
        """Both features; used to create the parameter tree."""
        return (self.image_features(pixel_values), self.text_features(input_ids),
                self.logit_scale, self.logit_bias)

    def image_features(self, pixel_values):
        """pixel_values [3, S, S] (transformers' layout) -> pooled image feature [d], not normalised."""
        layer = self.config.vision.num_hidden_layers
        return self.image_features_from_tokens(self.image_tokens(pixel_values, layer), layer)

    def image_tokens(self, pixel_values, layer: int):
        """pixel_values [3, S, S] -> patch token activations [patches, D] after `layer` layers.

        Unlike CLIP's there is no class token: every row is a patch.
        """
        return self.vision_model.tokens(jnp.transpose(pixel_values, (1, 2, 0)), layer)

    def image_features_from_tokens(self, tokens, layer: int):
        """Token activations after `layer` layers -> pooled image feature [d]."""
        return self.vision_model.pooled_from_tokens(tokens, layer)

    def text_features(self, input_ids):
        """input_ids [L] int (padded to the maximum length) -> text feature [d], not normalised."""
        return self.text_model(input_ids)


_FUNCTIONS = tower_functions(SIGLIP)
image_features = _FUNCTIONS.image_features
image_tokens = _FUNCTIONS.image_tokens  # [patches, D]: no class token
image_features_from_tokens = _FUNCTIONS.image_features_from_tokens
text_features = _FUNCTIONS.text_features
encode_images = _FUNCTIONS.encode_images
encode_texts = _FUNCTIONS.encode_texts


def parameter_shapes(config: SiglipConfig, dtype=jnp.float32):
    """The parameter tree's shapes and dtypes (jax.ShapeDtypeStruct leaves), without allocating."""
    pixels = jax.ShapeDtypeStruct((3, config.vision.image_size, config.vision.image_size), dtype)
    ids = jax.ShapeDtypeStruct((config.text.max_position_embeddings,), jnp.int32)
    return jax.eval_shape(SIGLIP(config, dtype).init, jax.random.key(0), pixels, ids)["params"]


def init_params(config: SiglipConfig, seed: int = 0, dtype=jnp.float32):
    """Random parameters."""
    c = config
    pixels = jnp.zeros((3, c.vision.image_size, c.vision.image_size), dtype)
    ids = jnp.zeros((c.text.max_position_embeddings,), jnp.int32)
    return SIGLIP(config, dtype).init(jax.random.key(seed), pixels, ids)["params"]
