"""Loaded models (CLIP, OpenCLIP as CLIP, SigLIP): parameters, config, tokenizer and
preprocessing behind NumPy methods, and the `Encoder` each gives."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from convis_jax.core.batches import pad_to_multiple
from convis_jax.errors import InputError
from convis_jax.models import clip, siglip
from convis_jax.models.config import ClipConfig, SiglipConfig
from convis_jax.models.encoder import (
    Encoder,
    FlaxImageEmbedder,
    ImageTokens,
    WithConfig,
)
from convis_jax.models.tokenizer import (
    TokenBatch,
    open_clip_clean,
    tokenize,
    tokenize_max_length,
)


def _architecture(config):
    """The module of functions (`clip` or `siglip`) that runs a model of this config."""
    return siglip if isinstance(config, SiglipConfig) else clip


@partial(jax.jit, static_argnames=("config", "normalize"))
def _encode_images(params, pixel_values, config, normalize):
    return _architecture(config).encode_images(params, config, pixel_values, normalize)


@partial(jax.jit, static_argnames=("config", "normalize"))
def _encode_texts(params, input_ids, config, normalize):
    return _architecture(config).encode_texts(params, config, input_ids, normalize)


def in_chunks(fn, inputs: np.ndarray, chunk: int) -> np.ndarray:
    """Applies `fn` to fixed-size chunks of `inputs` (the last one padded), so shapes stay static."""
    outputs = []
    for start in range(0, len(inputs), chunk):
        part, n = pad_to_multiple(inputs[start:start + chunk], chunk)
        outputs.append(np.asarray(fn(part))[:n])
    return np.concatenate(outputs)


@dataclass(frozen=True)
class LoadedModel:
    """What `ClipModel` and `SiglipModel` share: the loaded weights behind NumPy methods.

    Attributes:
        config: the architecture (`ClipConfig` or `SiglipConfig`).
        params: the Flax parameter tree (PyTorch-named, see `pytorch_names`).
        tokenizer: a transformers tokenizer.
        preprocess_config: the image preprocessing (`convis_jax.models.preprocessing.PreprocessConfig`).
        name: where it was loaded from.
        fingerprint: a hash of the weights, for cache keys.
        vocabulary_path: the vocabulary file shipped with the checkpoint, if any.
        family: the layout it was loaded from: "clip" (Hugging Face CLIPModel),
            "open_clip" (OpenCLIP's hub layout) or "siglip" (Hugging Face SiglipModel).
        tokenizer_fingerprint: a hash of the tokenizer files, for concept-bank cache keys.
        precision: the dtype and why it was chosen (`precision.Precision`), e.g.
            "bfloat16 (auto: cpu with avx512_bf16)"; shown in the repr.
    """

    config: ClipConfig | SiglipConfig
    params: dict = field(repr=False)
    tokenizer: object = field(repr=False)
    preprocess_config: object
    name: str
    fingerprint: str
    vocabulary_path: Path | None = None
    family: str = "clip"
    tokenizer_fingerprint: str = ""
    precision: str = ""

    @property
    def dtype(self):
        """The parameters' dtype: the operands of every product (`precision.py`)."""
        return jax.tree_util.tree_leaves(self.params)[0].dtype

    @property
    def embedding_dim(self) -> int:
        return self.config.projection_dim

    @property
    def image_size(self) -> int:
        return self.config.vision.image_size

    @property
    def logit_scale(self) -> float:
        """exp of the learnt logit scale (the softmax temperature's inverse)."""
        return float(np.exp(np.asarray(self.params["logit_scale"], np.float32)).reshape(()))

    @property
    def logit_bias(self) -> float | None:
        """None: CLIP's probabilities are a softmax over the texts."""
        return None

    @property
    def encoder(self) -> Encoder:
        """This model behind the `Encoder` contract (unit embeddings; see `encoder.py`)."""
        pre = self.preprocess_config
        architecture, vision = _architecture(self.config), self.config.vision
        siglip_like = architecture is siglip
        tokens = ImageTokens(
            tokens=WithConfig(architecture.image_tokens, self.config),
            features=WithConfig(architecture.image_features_from_tokens, self.config),
            prefix_tokens=0 if siglip_like else 1, grid_size=vision.grid_size,
            # CLIP pools the class token, which the last block's patch tokens do not
            # reach; SigLIP's head attends to every token of the last block.
            max_layer=max(vision.num_hidden_layers - (1 if siglip_like else 2), 0))
        return Encoder(embed_images=FlaxImageEmbedder(architecture.encode_images, self.config),
                       params=self.params, image_size=self.image_size,
                       image_mean=pre.image_mean, image_std=pre.image_std,
                       embed_texts=self.embed_texts, embedding_dim=self.embedding_dim,
                       logit_scale=self.logit_scale, logit_bias=self.logit_bias,
                       name=self.name, fingerprint=self.fingerprint, image_tokens=tokens)

    def preprocess(self, images) -> np.ndarray:
        """Images (paths, PIL images, arrays, lists of mixed sizes) -> pixel_values [N, 3, S, S]."""
        from convis_jax.core.images import load_images
        from convis_jax.models.preprocessing import preprocess

        return preprocess(load_images(images), self.preprocess_config)

    def embed_images(self, images, *, normalize: bool = True, batch_size: int = 32) -> np.ndarray:
        """Image embeddings [N, d] float32 (unit vectors unless normalize=False)."""
        return self.embed_pixel_values(self.preprocess(images), normalize=normalize,
                                       batch_size=batch_size)

    def embed_pixel_values(self, pixel_values, *, normalize: bool = True,
                           batch_size: int = 32) -> np.ndarray:
        """Embeddings [N, d] of already preprocessed pixel_values [N, 3, S, S] float."""
        pixel_values = np.asarray(pixel_values, np.float32)
        s = self.image_size
        if pixel_values.ndim != 4 or pixel_values.shape[1:] != (3, s, s) or not len(pixel_values):
            raise InputError(f"expected pixel_values of shape [N, 3, {s}, {s}] with N >= 1, "
                             f"found {list(pixel_values.shape)}")
        # float32 pixels in every precision: the patch embedding casts them (precision.py).
        fn = lambda x: _encode_images(self.params, x, self.config, normalize)
        return in_chunks(fn, pixel_values, min(batch_size, len(pixel_values)))

    def tokenize(self, texts) -> TokenBatch:
        """Token ids of `texts`, truncated to the context length with a warning."""
        t = self.config.text
        # OpenCLIP cleans texts as OpenAI's tokenizer did, which CLIPTokenizer does not fully.
        clean = open_clip_clean if self.family == "open_clip" else None
        return tokenize(self.tokenizer, texts, t.max_position_embeddings,
                        self.tokenizer.eos_token_id, self.tokenizer.pad_token_id, clean=clean)

    def embed_texts(self, texts, *, normalize: bool = True, batch_size: int = 64) -> np.ndarray:
        """Text embeddings [N, d] float32 (unit vectors unless normalize=False)."""
        ids = self.tokenize(texts).input_ids
        fn = lambda x: self.encode_token_ids(x, normalize=normalize)
        return in_chunks(fn, ids, min(batch_size, len(ids)))

    def encode_token_ids(self, input_ids, *, normalize: bool = True) -> np.ndarray:
        """Embeddings [N, d] of token ids [N, L] (one jitted call; no chunking)."""
        return np.asarray(_encode_texts(self.params, jnp.asarray(input_ids, jnp.int32),
                                        self.config, normalize))


@dataclass(frozen=True)
class ClipModel(LoadedModel):
    """A CLIP loaded by `load_clip` or `load_model`: a Hugging Face CLIPModel
    (family "clip") or an OpenCLIP ViT-CLIP (family "open_clip"), the same network."""

    config: ClipConfig


@dataclass(frozen=True)
class SiglipModel(LoadedModel):
    """A SigLIP (or fixed-resolution SigLIP 2) loaded by `load_model`.

    The same NumPy methods as `ClipModel`; what differs: texts are padded to the
    maximum length (as SigLIP was trained: the text tower pools the last
    position), and a match probability is sigmoid(logit_scale * cos + logit_bias)
    per text rather than a softmax over texts.

    Attributes:
        config: the architecture (`SiglipConfig`).
        tokenizer: the folder's own tokenizer (transformers' AutoTokenizer).
        family: "siglip".
    """

    config: SiglipConfig
    family: str = "siglip"

    @property
    def logit_bias(self) -> float:
        """The learnt logit bias b of sigmoid(logit_scale * cos + b)."""
        return float(np.asarray(self.params["logit_bias"], np.float32).reshape(()))

    def tokenize(self, texts) -> TokenBatch:
        """Token ids [N, L] of `texts`, every row padded (or truncated) to L = the context length."""
        return tokenize_max_length(self.tokenizer, texts, self.config.text.max_position_embeddings)
