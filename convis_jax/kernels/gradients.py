"""Gradient concept maps for many concepts per backward sweep (docs/method.md, section 4).

Every score here is a function of the unit image embedding v = normalise(E_I(x)),
so the gradient of concept c's score with respect to the input is J^T u_c, where
J [d, ...] is the Jacobian of v and u_c = d score_c / dv is a d-vector (t_c for
the cosine; for the other scores it depends on v). Hence one forward pass with
`jax.vjp`, the cotangents u_c computed from its output v, and then either

* `vmap`: the pullback vmapped over the K cotangents, in fixed-size chunks (cost
  grows with K, best when K < d), or
* `jacobian`: the d basis vectors pulled back once (the rows of J), after which
  every concept's map is one matrix product with u_c (cost nearly flat in K,
  best when K >= d).

Map kinds and the linear map L applied to a pullback (L commutes with the
Jacobian route's linear combination, so both routes apply it in the same place):
`gradient` (L = identity), `grad_x_input` (L = times the input), `smoothgrad`
(the gradient averaged over noisy copies of the input) and `tokens` (the
pullback is taken at the tokens of a vision layer; L = times the activation,
summed over the width). A nonlinear finish (channel reduction; for tokens ReLU
and bilinear upsampling) follows per concept.

Kernels (each jitted once per shape): `_forward` runs the model over all images
(and SmoothGrad copies; the per-example model is vmapped over them there and
nowhere else) and keeps its `jax.vjp`; `_vmap_chunk` or `_jacobian` +
`_jacobian_chunk` turn one fixed-size chunk of concepts into maps.
`_maps_one_device` pads K to whole chunks and loops over them, so that no K
traces anything again once one K has been traced.

The model is an `Encoder`: the pixel kinds call only its `embed_images`; token
maps need its `image_tokens` (the Flax CLIP and SigLIP have them).

`concept_gradient_maps`, the entry point, runs that on one device, or splits
the images over every local device (`sharding.shard_rows`: every device runs
the unchanged kernels on its block of images, in one compiled program; each
image's maps depend on that image alone, so the result is the single-device
one). SmoothGrad, whose noise is drawn over the whole batch, stays on one device.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from convis_jax.core.batches import pad_to_multiple, positive_int
from convis_jax.errors import InputError
from convis_jax.kernels import sharding
from convis_jax.models.clip import normalise
from convis_jax.models.encoder import Encoder, ImageTokens

SCORES = ("cosine", "subtree_cosine", "probability", "subtree_probability")
KINDS = ("gradient", "grad_x_input", "smoothgrad", "tokens")
REDUCTIONS = ("absmax", "l2", None)
STRATEGIES = ("auto", "vmap", "jacobian")
SUBTREE_SCORES = ("subtree_cosine", "subtree_probability")
# The largest default chunk: concepts (or basis vectors of the Jacobian) per
# vectorised pullback.
MAX_CHUNK = 32


class SubtreeIndex(NamedTuple):
    """The vocabulary's subtrees in CSR form (as `ConceptVocabulary` provides them).

    The members of concept i's subtree (itself included) are
    `members[offsets[i]:offsets[i + 1]]`, and `segment_ids[j]` is the concept
    whose subtree slot j belongs to (so it is sorted).

    Attributes:
        offsets: [T + 1] int, non-decreasing, offsets[0] = 0, offsets[T] = M.
        members: [M] int in [0, T), bank rows.
        segment_ids: [M] int32 in [0, T), sorted.
    """

    offsets: jax.Array
    members: jax.Array
    segment_ids: jax.Array


@dataclass
class TraceCounter:
    """How many times the jitted kernels have been traced (for re-tracing tests)."""

    count: int = 0


# A diagnostic, not a cache: every kernel increments it each time JAX traces it,
# so tests can prove that different concept counts reuse the traced kernels.
TRACES = TraceCounter()


# ----------------------------------------------------------------------------- scores


def concept_scores(score: str, v, bank, concept_index, subtree: SubtreeIndex | None,
                   logit_scale, logit_bias=None):
    """Scores of K concepts for one unit image embedding.

    Args:
        score: one of `SCORES`.
        v: [d] float, the unit image embedding.
        bank: [T, d] float, unit text embeddings of the whole vocabulary.
        concept_index: [K] int in [0, T), the concepts to score (rows of `bank`).
        subtree: the vocabulary's subtrees (needed by the subtree scores, else may be None).
        logit_scale: scalar > 0, the softmax's inverse temperature (exp of CLIP's learnt
            logit_scale parameter).
        logit_bias: None for a softmax model (CLIP); a scalar b for a sigmoid model
            (SigLIP), whose probabilities are per concept (see Returns).

    Returns:
        [K] float32: cosine z(v, c) in [-1, 1]; subtree_cosine, the max of z over
        subtree(c); probability p(c | v), the softmax of logit_scale * z over the whole
        bank, in [0, 1]; subtree_probability, the mass of p over subtree(c), in [0, 1].
        With a logit_bias (SigLIP): probability p_c = sigmoid(logit_scale * z_c + b),
        each concept's own match probability as SigLIP was trained, and
        subtree_probability the probability that some member s of subtree(c) matches,
        1 - prod_s (1 - p_s) (matches taken as independent), both in [0, 1].
    """
    z = bank.astype(jnp.float32) @ v.astype(jnp.float32)
    if score == "cosine":
        return z[concept_index]
    if logit_bias is not None and score in ("probability", "subtree_probability"):
        logits = logit_scale * z + logit_bias
        if score == "probability":
            return jax.nn.sigmoid(logits)[concept_index]
        # log(1 - p_s) = -softplus(logit_s): stable where p_s is near 1.
        log_none = jax.ops.segment_sum(-jax.nn.softplus(logits[subtree.members]),
                                       subtree.segment_ids, bank.shape[0],
                                       indices_are_sorted=True)
        return -jnp.expm1(log_none)[concept_index]
    if score == "probability":
        return jax.nn.softmax(logit_scale * z)[concept_index]
    num = bank.shape[0]
    if score == "subtree_cosine":
        best = jax.ops.segment_max(z[subtree.members], subtree.segment_ids, num,
                                   indices_are_sorted=True)
        return best[concept_index]
    p = jax.nn.softmax(logit_scale * z)
    mass = jax.ops.segment_sum(p[subtree.members], subtree.segment_ids, num,
                               indices_are_sorted=True)
    return mass[concept_index]


def score_cotangents(score: str, v, bank, concept_index, subtree: SubtreeIndex | None,
                     logit_scale, logit_bias=None):
    """u_c = d score_c / dv for K concepts, in closed form (arguments as `concept_scores`).

    With t_s the bank rows, p = softmax(logit_scale * bank @ v) and t_bar = sum_s p_s t_s:
    cosine: t_c; subtree_cosine: t_s* with s* the argmax of z over subtree(c) (the first
    one on ties, a valid subgradient); probability: logit_scale * p_c (t_c - t_bar);
    subtree_probability: logit_scale * (sum_{s in subtree(c)} p_s t_s - P_c t_bar).
    With a logit_bias (sigmoid p_s = sigmoid(logit_scale * z_s + b)): probability:
    logit_scale * p_c (1 - p_c) t_c; subtree_probability (P_c = 1 - prod (1 - p_s)):
    logit_scale * (1 - P_c) * sum_{s in subtree(c)} p_s t_s.

    Returns:
        [K, d] float32.
    """
    bank = bank.astype(jnp.float32)
    if score == "cosine":
        return bank[concept_index]
    z = bank @ v.astype(jnp.float32)
    num = bank.shape[0]
    if logit_bias is not None and score in ("probability", "subtree_probability"):
        logits = logit_scale * z + logit_bias
        p = jax.nn.sigmoid(logits)
        if score == "probability":
            return (logit_scale * p * (1 - p))[concept_index, None] * bank[concept_index]
        weighted = jax.ops.segment_sum(p[subtree.members, None] * bank[subtree.members],
                                       subtree.segment_ids, num, indices_are_sorted=True)
        log_none = jax.ops.segment_sum(-jax.nn.softplus(logits[subtree.members]),
                                       subtree.segment_ids, num, indices_are_sorted=True)
        return logit_scale * jnp.exp(log_none)[concept_index, None] * weighted[concept_index]
    if score == "subtree_cosine":
        zm = z[subtree.members]
        best = jax.ops.segment_max(zm, subtree.segment_ids, num, indices_are_sorted=True)
        slots = jnp.arange(zm.shape[0])
        is_best = zm == best[subtree.segment_ids]
        first = jax.ops.segment_min(jnp.where(is_best, slots, zm.shape[0]), subtree.segment_ids,
                                    num, indices_are_sorted=True)
        return bank[subtree.members[first[concept_index]]]
    p = jax.nn.softmax(logit_scale * z)
    t_bar = p @ bank
    if score == "probability":
        return logit_scale * p[concept_index, None] * (bank[concept_index] - t_bar)
    # [M, d] intermediate: M (total subtree size) is ~10 T for WordNet vocabularies.
    weighted = jax.ops.segment_sum(p[subtree.members, None] * bank[subtree.members],
                                   subtree.segment_ids, num, indices_are_sorted=True)
    mass = jax.ops.segment_sum(p[subtree.members], subtree.segment_ids, num,
                               indices_are_sorted=True)
    return logit_scale * (weighted[concept_index] - mass[concept_index, None] * t_bar)


# ----------------------------------------------------------------------------- kernels


def smoothgrad_inputs(key, pixel_values, samples: int, sigma):
    """The noisy copies that SmoothGrad averages over.

    Args:
        key: a jax.random key; image i uses the i-th key of `jax.random.split(key, N)`.
        pixel_values: [N, 3, S, S] float (transformers' layout).
        samples: n >= 1 noisy copies per image.
        sigma: noise standard deviation as a fraction of each image's value range
            (max - min of its pixel_values), e.g. 0.15.

    Returns:
        [N, n, 3, S, S] float32: pixel_values + sigma * range * standard normal noise.
    """
    def one(k, x):
        x = x.astype(jnp.float32)
        scale = sigma * (jnp.max(x) - jnp.min(x))
        return x + scale * jax.random.normal(k, (samples,) + x.shape, jnp.float32)

    return jax.vmap(one)(jax.random.split(key, pixel_values.shape[0]), pixel_values)


class Forward(NamedTuple):
    """One forward pass of N images (n inputs each), kept for pulling cotangents back.

    Attributes:
        v: [N, n, d] float32, the unit image embeddings (n > 1: SmoothGrad's noisy copies).
        pullback: `jax.vjp`'s function: cotangents [N, n, d] -> (J^T u,), with J^T u
            [N, n, 3, S, S] (pixel kinds) or [N, n, prefix + patches, D] (tokens).
        activation: what the map multiplies the pullback with: the inputs [N, n, 3, S, S]
            for grad_x_input, the tokens [N, n, prefix + patches, D] for tokens, else None.
    """

    v: jax.Array
    pullback: object
    activation: jax.Array | None


@dataclass(frozen=True)
class _Model:
    """What the kernels take of an `Encoder` (hashable: a static jit argument)."""

    embed: object  # Encoder.embed_images
    tokens: ImageTokens | None
    image_size: int
    embedding_dim: int

    @classmethod
    def of(cls, encoder: Encoder) -> "_Model":
        return cls(encoder.embed_images, encoder.image_tokens, int(encoder.image_size),
                   int(encoder.embedding_dim))


@partial(jax.jit, static_argnames=("model", "kind", "layer", "samples"))
def _forward(params, pixel_values, key, sigma, *, model: _Model, kind, layer, samples):
    """The one forward pass: pixel_values [N, 3, S, S] -> `Forward` over [N, n] inputs."""
    TRACES.count += 1  # runs only while tracing
    if kind == "smoothgrad":
        xs = smoothgrad_inputs(key, pixel_values, samples, sigma)
    else:
        xs = pixel_values.astype(jnp.float32)[:, None]
    if kind == "tokens":
        # Images and their copies are independent: vmap the per-example tokens over both.
        batched = lambda f: jax.vmap(jax.vmap(f))
        hooks = model.tokens
        tokens = batched(lambda x: hooks.tokens(params, x, layer))(xs)
        embed = batched(lambda t: normalise(hooks.features(params, t, layer)))
        v, pullback = jax.vjp(embed, tokens)
        return Forward(v, pullback, tokens)

    def embed(x):  # [N, n, 3, S, S] -> [N, n, d]: the encoder's batch is N * n
        v = model.embed(params, x.reshape((-1,) + x.shape[2:]))
        return v.astype(jnp.float32).reshape(x.shape[:2] + v.shape[-1:])

    v, pullback = jax.vjp(embed, xs)
    return Forward(v, pullback, xs if kind == "grad_x_input" else None)


def _project(forward: Forward, u, kind: str, prefix: int):
    """L(J^T u) for cotangents u [N, n, d]: [N, n, 3, S, S] (pixel kinds) or [N, n, patches]."""
    grad = forward.pullback(u)[0].astype(jnp.float32)
    if kind == "grad_x_input":
        return grad * forward.activation
    if kind == "tokens":
        # Gradient x activation summed over the width; prefix tokens (a class token) are no patches.
        return jnp.sum(grad * forward.activation.astype(jnp.float32), -1)[..., prefix:]
    return grad


def _prefix(model: _Model, kind: str) -> int:
    return model.tokens.prefix_tokens if kind == "tokens" else 0


def _feature_shape(model: _Model, kind: str) -> tuple:
    s = model.image_size
    return (model.tokens.grid_size ** 2,) if kind == "tokens" else (3, s, s)


def _finish(model: _Model, kind: str, reduce, raw):
    """Raw maps [N, C, F...] (linear in the cotangents) -> [N, C, S, S] or [N, C, 3, S, S]."""
    if kind == "tokens":
        n, c, g, s = raw.shape[0], raw.shape[1], model.tokens.grid_size, model.image_size
        grid = jax.nn.relu(raw).reshape(n * c, g, g)
        # Half-pixel centres with edge clamping: PyTorch's bilinear, align_corners=False.
        return jax.image.resize(grid, (n * c, s, s), "bilinear").reshape(n, c, s, s)
    if reduce == "absmax":
        return jnp.max(jnp.abs(raw), axis=2)
    if reduce == "l2":
        return jnp.sqrt(jnp.sum(raw * raw, axis=2))
    return raw


def _chunk_cotangents(score, v, bank, concept_index, subtree, logit_scale, logit_bias):
    """Cotangents [N, n, C, d] of C concepts at every embedding v [N, n, d]."""
    # Sequential over the embeddings: the subtree-probability cotangents hold an [M, d] array.
    u = jax.lax.map(lambda vi: score_cotangents(score, vi, bank, concept_index, subtree,
                                                logit_scale, logit_bias),
                    v.reshape(-1, v.shape[-1]))
    return u.reshape(v.shape[:2] + u.shape[1:])


_CHUNK_STATICS = ("model", "score", "kind", "reduce")


@partial(jax.jit, static_argnames=_CHUNK_STATICS)
def _vmap_chunk(forward, bank, concept_index, subtree, logit_scale, logit_bias, *,
                model: _Model, score, kind, reduce):
    """Maps [N, C, ...] of C concepts: the pullback vmapped over their cotangents."""
    TRACES.count += 1
    u = _chunk_cotangents(score, forward.v, bank, concept_index, subtree, logit_scale,
                          logit_bias)
    prefix = _prefix(model, kind)
    raw = jax.vmap(lambda uc: _project(forward, uc, kind, prefix), in_axes=2, out_axes=1)(u)
    return _finish(model, kind, reduce, jnp.mean(raw, axis=2))  # SmoothGrad: mean over n


@partial(jax.jit, static_argnames=("kind", "chunk", "prefix"))
def _jacobian(forward, *, kind, chunk, prefix):
    """L(J^T e_k) for the d basis vectors: [N, n * d, F] float32 (F = flattened map size)."""
    TRACES.count += 1
    n_images, n, d = forward.v.shape
    rows = jax.lax.map(lambda e: _project(forward, jnp.broadcast_to(e, (n_images, n, d)), kind,
                                          prefix),
                       jnp.eye(d, dtype=jnp.float32), batch_size=chunk)  # [d, N, n, F...]
    # The n inputs' Jacobians side by side, so that SmoothGrad's mean over them is part
    # of the one matrix product per concept chunk.
    rows = rows.reshape(d, n_images, n, -1)
    return jnp.transpose(rows, (1, 2, 0, 3)).reshape(n_images, n * d, -1)


@partial(jax.jit, static_argnames=_CHUNK_STATICS)
def _jacobian_chunk(rows, v, bank, concept_index, subtree, logit_scale, logit_bias, *,
                    model: _Model, score, kind, reduce):
    """Maps [N, C, ...] of C concepts: their cotangents times the embedding Jacobian."""
    TRACES.count += 1
    u = _chunk_cotangents(score, v, bank, concept_index, subtree, logit_scale, logit_bias)
    n_images, n, c, d = u.shape
    u = jnp.transpose(u, (0, 2, 1, 3)).reshape(n_images, c, n * d)
    raw = jnp.einsum("ick,ikf->icf", u, rows) / n
    return _finish(model, kind, reduce, raw.reshape((n_images, c) + _feature_shape(model, kind)))


# ----------------------------------------------------------------------------- entry point


def concept_gradient_maps(encoder: Encoder, pixel_values, bank, concept_index,
                          subtree: SubtreeIndex | tuple | None, *, params=None,
                          score: str = "cosine", kind: str = "gradient",
                          reduce: str | None = "absmax", strategy: str = "auto",
                          chunk: int | None = None, layer: int | None = None,
                          smoothgrad_samples: int = 16, smoothgrad_sigma: float = 0.15,
                          key=None, devices=None):
    """Gradient maps of K concept scores for N images from one forward pass.

    One forward pass (`jax.vjp`) over all images, then concepts in chunks of `chunk`
    (K padded up to a multiple of it): every K reuses the kernels compiled for the
    first one (see `TRACES`). Memory: the forward's residuals for N * n inputs, and one
    chunk's pullback at a time, which vectorises chunk * N * n backward passes.

    Args:
        encoder: the model (`Encoder`, e.g. `ClipModel.encoder`): the pixel kinds call its
            `embed_images`, token maps its `image_tokens`; the probability scores use its
            `logit_scale` and, for a sigmoid model such as SigLIP, its `logit_bias`.
        pixel_values: [N, 3, S, S] float, preprocessed images (transformers' layout,
            normalised with the encoder's mean and std, S = encoder.image_size).
        bank: [T, d] float, unit text embeddings of the whole vocabulary
            (d = encoder.embedding_dim).
        concept_index: [K] int in [0, T), K >= 1: the concepts to map (rows of `bank`).
        subtree: the vocabulary's subtree CSR (`SubtreeIndex` or a tuple (offsets
            [T + 1], members [M], segment_ids [M])); required by the subtree scores.
        params: the parameter tree to use instead of `encoder.params` (e.g. the same
            tree already replicated over the devices), or None.
        score: one of `SCORES` (see `concept_scores`): "probability" is CLIP's softmax over
            the bank, or for an encoder with a logit_bias (SigLIP) the concept's own
            sigmoid(logit_scale * cos + logit_bias); "subtree_probability" the softmax mass
            of the subtree, or with a logit_bias 1 - prod (1 - sigmoid) over the subtree.
        kind: "gradient" (d score / d pixel_values), "grad_x_input" (that times
            pixel_values), "smoothgrad" (the gradient averaged over
            `smoothgrad_samples` noisy copies, then reduced) or "tokens" (gradient x
            activation of the patch tokens after `layer` vision layers, summed over the
            width, ReLU, bilinearly upsampled from the patch grid to S x S; needs an
            encoder with `image_tokens`).
        reduce: channel reduction of the pixel kinds: "absmax" (max of |.| over the 3
            channels), "l2" (Euclidean norm over them) or None (keep them). Token maps
            have no channel axis, so `reduce` does not apply to them.
        strategy: "vmap" (pull back the K cotangents), "jacobian" (pull back the d basis
            vectors, then one matrix product per concept chunk) or "auto" (jacobian when
            K >= d). The jacobian route holds the Jacobian, d * n * 3 * S * S floats per
            image (n = smoothgrad_samples for SmoothGrad, else 1).
        chunk: concepts (and basis vectors of the Jacobian) per vectorised pullback,
            >= 1. Default: `MAX_CHUNK` for the jacobian route; for the vmap route the
            next power of two >= K, at most `MAX_CHUNK`, so that a small K pays for
            little padding and a few buckets serve every K.
        layer: for "tokens", the vision layer whose output is used (transformers'
            hidden_states[layer]), 0 <= layer <= encoder.image_tokens.max_layer, the
            default. For CLIP that is num_hidden_layers - 2: the patch tokens of
            hidden_states[L] do not reach the pooled class token at all, and those of
            hidden_states[L - 1] reach it only through the last layer's first LayerNorm,
            whose scale invariance makes gradient x activation summed over the width
            vanish (up to the LayerNorm epsilon): both maps would be numerical noise.
            SigLIP's head pools every token, so there it is num_hidden_layers - 1 (only
            hidden_states[L] passes nothing but the post-LayerNorm).
        smoothgrad_samples: n >= 1 noisy copies per image (SmoothGrad only).
        smoothgrad_sigma: noise standard deviation relative to each image's value
            range (SmoothGrad only), >= 0.
        key: a jax.random key, required by SmoothGrad (`smoothgrad_inputs` draws the
            noise from it); no other randomness is used.
        devices: the devices to use: one runs the kernels there; several split the
            images over them (the batch padded with copies of its last image to a
            multiple of the device count; pass at least as many images as devices), except
            for SmoothGrad, whose noise is drawn over the whole batch and which runs on
            the first. None means all of this process's local devices. Arrays already
            placed elsewhere stay there.

    Returns:
        float32 [N, K, S, S], or [N, K, 3, S, S] for the pixel kinds with reduce=None.
        Token maps are >= 0; absmax and l2 maps are >= 0; raw maps are signed. Split
        over the devices along N when N is a multiple of their count.

    Raises:
        InputError: an unknown option, arrays whose shapes or values do not fit, or token
            maps of an encoder without `image_tokens`.
    """
    model = _Model.of(encoder)
    params = encoder.params if params is None else params
    logit_scale = jnp.asarray(encoder.logit_scale, jnp.float32)
    logit_bias = None if encoder.logit_bias is None else jnp.asarray(encoder.logit_bias,
                                                                     jnp.float32)
    options = dict(score=score, kind=kind, reduce=reduce, strategy=strategy, chunk=chunk,
                   layer=layer, smoothgrad_samples=smoothgrad_samples,
                   smoothgrad_sigma=smoothgrad_sigma)
    mesh = sharding.local_mesh(devices)
    if mesh.size == 1 or kind == "smoothgrad":
        with jax.default_device(mesh.devices.flat[0]):
            return _maps_one_device(model, params, pixel_values, bank, concept_index, subtree,
                                    logit_scale, logit_bias, key=key, **options)
    pixel_values = np.asarray(pixel_values)
    if pixel_values.ndim != 4 or pixel_values.shape[0] == 0:
        raise InputError(f"expected pixel_values [N, 3, S, S] with N >= 1, found shape "
                         f"{list(pixel_values.shape)}")
    padded, n = pad_to_multiple(pixel_values, mesh.size)
    if subtree is not None:
        subtree = tuple(sharding.StaticArray(np.asarray(a)) for a in subtree)
    maps = _maps_on_mesh(params, sharding.place_rows(padded, mesh), jnp.asarray(bank),
                         logit_scale, logit_bias, model=model,
                         concepts=sharding.StaticArray(np.asarray(concept_index)),
                         subtree=subtree, options=tuple(sorted(options.items())), mesh=mesh)
    return maps[:n] if n < len(padded) else maps


@partial(jax.jit, static_argnames=("model", "concepts", "subtree", "options", "mesh"))
def _maps_on_mesh(params, pixel_values, bank, logit_scale, logit_bias, *, model: _Model,
                  concepts, subtree, options, mesh):
    """One SPMD program: each device runs `_maps_one_device` on its block of images.

    concepts and subtree are `StaticArray`s so that the kernel's argument checks see
    concrete values; `ensure_compile_time_eval` runs those checks (which read array
    values) while tracing, and only the work on images is staged. The kernel uses no
    collectives, so shard_map's replication checks have nothing to verify.
    """
    subtree = None if subtree is None else tuple(a.array for a in subtree)

    def block(params, pixels, bank, logit_scale, logit_bias):
        with jax.ensure_compile_time_eval():
            return _maps_one_device(model, params, pixels, bank, concepts.array, subtree,
                                    logit_scale, logit_bias, **dict(options))

    return sharding.shard_rows(block, mesh, (False, True, False, False, False),
                               check_vma=False)(params, pixel_values, bank, logit_scale,
                                                logit_bias)


def _maps_one_device(model: _Model, params, pixel_values, bank, concept_index, subtree,
                     logit_scale, logit_bias, *, score, kind, reduce, strategy, chunk, layer,
                     smoothgrad_samples, smoothgrad_sigma, key=None):
    """`concept_gradient_maps` on the current device (arguments and result as there)."""
    s, d = model.image_size, model.embedding_dim
    _check_choice("score", score, SCORES)
    _check_choice("kind", kind, KINDS)
    _check_choice("reduce", reduce, REDUCTIONS)
    _check_choice("strategy", strategy, STRATEGIES)
    if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (3, s, s) \
            or pixel_values.shape[0] == 0:
        raise InputError(f"expected pixel_values of shape [N, 3, {s}, {s}] with N >= 1, found "
                         f"{list(pixel_values.shape)}")
    if bank.ndim != 2 or bank.shape[1] != d or bank.shape[0] == 0:
        raise InputError(f"expected a concept bank of shape [T, {d}] with T >= 1, found "
                         f"{list(bank.shape)}")
    concept_index = _check_concepts(concept_index, bank.shape[0])
    if chunk is not None:
        chunk = positive_int(chunk, "chunk")
    if score in SUBTREE_SCORES:
        subtree = _check_subtree(subtree, bank.shape[0])
    else:
        subtree = None  # unused: keep it out of the kernel's arguments
    if kind == "tokens":
        if model.tokens is None:
            raise InputError("token maps need an encoder with image_tokens (the Flax CLIP and "
                             "SigLIP have them); this encoder gives only embed_images: use a "
                             "pixel kind (gradient, grad_x_input, smoothgrad)")
        top = model.tokens.max_layer
        layer = top if layer is None else layer
        if not 0 <= layer <= top:
            raise InputError(
                f"token maps need 0 <= layer <= {top}: later patch tokens reach the pooled "
                f"output not at all or only through a LayerNorm, which makes gradient x "
                f"activation vanish; found layer {layer}")
    samples = int(smoothgrad_samples) if kind == "smoothgrad" else 1
    if kind == "smoothgrad":
        if samples < 1 or smoothgrad_sigma < 0:
            raise InputError(f"smoothgrad needs samples >= 1 and sigma >= 0, found "
                             f"{smoothgrad_samples} and {smoothgrad_sigma}")
        if key is None:
            raise InputError("smoothgrad needs a jax.random key (key=jax.random.key(seed))")
    else:
        key = None
    k = int(concept_index.shape[0])
    route = strategy if strategy != "auto" else ("jacobian" if k >= d else "vmap")
    if chunk is None:
        # The Jacobian route's cost is the d pullbacks whatever K: padding K costs
        # next to nothing there, so one bucket serves every K.
        chunk = MAX_CHUNK if route == "jacobian" else min(1 << (k - 1).bit_length(), MAX_CHUNK)
    chunk = int(chunk)
    padded = -(-k // chunk) * chunk
    # Pad with concept 0 (a valid row) to whole chunks; the padded maps are cut away below.
    index = jnp.zeros(padded, jnp.int32).at[:k].set(jnp.asarray(concept_index, jnp.int32))
    bank = jnp.asarray(bank)
    forward = _forward(params, jnp.asarray(pixel_values), key,
                       jnp.asarray(smoothgrad_sigma, jnp.float32), model=model, kind=kind,
                       layer=int(layer) if kind == "tokens" else 0, samples=samples)
    statics = dict(model=model, score=score, kind=kind,
                   reduce=None if kind == "tokens" else reduce)
    if route == "jacobian":
        rows = _jacobian(forward, kind=kind, chunk=chunk, prefix=_prefix(model, kind))
        run = lambda part: _jacobian_chunk(rows, forward.v, bank, part, subtree, logit_scale,
                                           logit_bias, **statics)
    else:
        run = lambda part: _vmap_chunk(forward, bank, part, subtree, logit_scale, logit_bias,
                                       **statics)
    # A Python loop over same-shaped chunks: every K reuses the kernels traced for the
    # first one, and only one chunk's pullbacks are in memory at a time.
    maps = [run(index[start:start + chunk]) for start in range(0, padded, chunk)]
    return jnp.concatenate(maps, axis=1)[:, :k]


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise InputError(f"{name} must be one of {list(choices)}, found {value!r}")


def _check_concepts(concept_index, num: int):
    index = np.asarray(concept_index)
    if index.ndim != 1 or index.shape[0] == 0 or not np.issubdtype(index.dtype, np.integer):
        raise InputError(f"expected concept_index as a non-empty 1-D integer array, found "
                         f"shape {list(index.shape)} of {index.dtype}")
    if index.min() < 0 or index.max() >= num:
        raise InputError(f"concept_index must lie in [0, {num}) (the bank's rows), found "
                         f"values in [{index.min()}, {index.max()}]")
    return index


def _check_subtree(subtree, num: int) -> SubtreeIndex:
    if subtree is None:
        raise InputError("the subtree scores need the vocabulary's subtree index "
                         "(offsets, members, segment_ids), found None")
    offsets, members, segment_ids = (jnp.asarray(a) for a in subtree)
    if offsets.shape != (num + 1,) or members.ndim != 1 \
            or segment_ids.shape != members.shape or int(offsets[-1]) != members.shape[0]:
        raise InputError(f"expected a subtree index with offsets [{num + 1}] and members, "
                         f"segment_ids [offsets[-1]], found {list(offsets.shape)}, "
                         f"{list(members.shape)}, {list(segment_ids.shape)}")
    return SubtreeIndex(offsets.astype(jnp.int32), members.astype(jnp.int32),
                        segment_ids.astype(jnp.int32))
