"""The loaded CLIP: parameters, config, tokenizer and preprocessing behind NumPy methods."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from convis_jax.core.batches import pad_to_multiple
from convis_jax.errors import InputError
from convis_jax.jax_backend import clip
from convis_jax.jax_backend.config import ClipConfig
from convis_jax.jax_backend.tokenizer import TokenBatch, tokenize


@partial(jax.jit, static_argnames=("config", "normalize"))
def _encode_images(params, pixel_values, config, normalize):
    return clip.encode_images(params, config, pixel_values, normalize)


@partial(jax.jit, static_argnames=("config", "normalize"))
def _encode_texts(params, input_ids, config, normalize):
    return clip.encode_texts(params, config, input_ids, normalize)


def in_chunks(fn, inputs: np.ndarray, chunk: int) -> np.ndarray:
    """Applies `fn` to fixed-size chunks of `inputs` (the last one padded), so shapes stay static."""
    outputs = []
    for start in range(0, len(inputs), chunk):
        part, n = pad_to_multiple(inputs[start:start + chunk], chunk)
        outputs.append(np.asarray(fn(part))[:n])
    return np.concatenate(outputs)


@dataclass(frozen=True)
class ClipModel:
    """A CLIP loaded by `load_clip`.

    Attributes:
        config: the architecture.
        params: the Flax parameter tree (PyTorch-named, see `pytorch_names`).
        tokenizer: transformers' CLIPTokenizer.
        preprocess_config: the image preprocessing (`convis_jax.jax_backend.preprocessing.PreprocessConfig`).
        name: where it was loaded from.
        fingerprint: a hash of the weights, for cache keys.
        vocabulary_path: the vocabulary file shipped with the checkpoint, if any.
    """

    config: ClipConfig
    params: dict = field(repr=False)
    tokenizer: object = field(repr=False)
    preprocess_config: object
    name: str
    fingerprint: str
    vocabulary_path: Path | None = None

    @property
    def dtype(self):
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
        return float(np.exp(np.asarray(self.params["logit_scale"], np.float32)))

    def preprocess(self, images) -> np.ndarray:
        """Images (paths, PIL images, arrays, lists of mixed sizes) -> pixel_values [N, 3, S, S]."""
        from convis_jax.core.images import load_images
        from convis_jax.jax_backend.preprocessing import preprocess

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
        fn = lambda x: _encode_images(self.params, x.astype(self.dtype), self.config, normalize)
        return in_chunks(fn, pixel_values, min(batch_size, len(pixel_values)))

    def tokenize(self, texts) -> TokenBatch:
        """Token ids of `texts`, truncated to the context length with a warning."""
        t = self.config.text
        return tokenize(self.tokenizer, texts, t.max_position_embeddings,
                        self.tokenizer.eos_token_id, self.tokenizer.pad_token_id)

    def embed_texts(self, texts, *, normalize: bool = True, batch_size: int = 64) -> np.ndarray:
        """Text embeddings [N, d] float32 (unit vectors unless normalize=False)."""
        ids = self.tokenize(texts).input_ids
        fn = lambda x: self.encode_token_ids(x, normalize=normalize)
        return in_chunks(fn, ids, min(batch_size, len(ids)))

    def encode_token_ids(self, input_ids, *, normalize: bool = True) -> np.ndarray:
        """Embeddings [N, d] of token ids [N, L] (one jitted call; no chunking)."""
        return np.asarray(_encode_texts(self.params, jnp.asarray(input_ids, jnp.int32),
                                        self.config, normalize))
