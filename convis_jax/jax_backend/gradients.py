"""Gradient concept maps for many concepts per backward sweep (METHOD.md section 4).

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

Everything below works on one image and is vmapped over images in one place
(`_maps_jit`); `concept_gradient_maps` is the entry point.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from convis_jax.errors import InputError
from convis_jax.jax_backend import clip
from convis_jax.jax_backend.config import ClipConfig

SCORES = ("cosine", "subtree_cosine", "probability", "subtree_probability")
KINDS = ("gradient", "grad_x_input", "smoothgrad", "tokens")
REDUCTIONS = ("absmax", "l2", None)
STRATEGIES = ("auto", "vmap", "jacobian")
SUBTREE_SCORES = ("subtree_cosine", "subtree_probability")


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
    """How many times the jitted map kernel has been traced (for re-tracing tests)."""

    count: int = 0


# A diagnostic, not a cache: `_maps_jit` increments it each time JAX traces it,
# so tests can prove that concept counts within one chunk bucket reuse a trace.
TRACES = TraceCounter()


@dataclass(frozen=True)
class _Plan:
    """The static choices of one kernel call (jit's static argument)."""

    config: ClipConfig
    score: str
    kind: str
    reduce: str | None
    route: str  # "vmap" or "jacobian", already resolved from "auto"
    chunk: int
    layer: int
    samples: int


# ----------------------------------------------------------------------------- scores


def concept_scores(score: str, v, bank, concept_index, subtree: SubtreeIndex | None,
                   logit_scale):
    """Scores of K concepts for one unit image embedding.

    Args:
        score: one of `SCORES`.
        v: [d] float, the unit image embedding.
        bank: [T, d] float, unit text embeddings of the whole vocabulary.
        concept_index: [K] int in [0, T), the concepts to score (rows of `bank`).
        subtree: the vocabulary's subtrees (needed by the subtree scores, else may be None).
        logit_scale: scalar > 0, the softmax's inverse temperature (exp of CLIP's learnt
            logit_scale parameter).

    Returns:
        [K] float32: cosine z(v, c) in [-1, 1]; subtree_cosine, the max of z over
        subtree(c); probability p(c | v), the softmax of logit_scale * z over the whole
        bank, in [0, 1]; subtree_probability, the mass of p over subtree(c), in [0, 1].
    """
    z = bank.astype(jnp.float32) @ v.astype(jnp.float32)
    if score == "cosine":
        return z[concept_index]
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
                     logit_scale):
    """u_c = d score_c / dv for K concepts, in closed form (arguments as `concept_scores`).

    With t_s the bank rows, p = softmax(logit_scale * bank @ v) and t_bar = sum_s p_s t_s:
    cosine: t_c; subtree_cosine: t_s* with s* the argmax of z over subtree(c) (the first
    one on ties, a valid subgradient); probability: logit_scale * p_c (t_c - t_bar);
    subtree_probability: logit_scale * (sum_{s in subtree(c)} p_s t_s - P_c t_bar).

    Returns:
        [K, d] float32.
    """
    bank = bank.astype(jnp.float32)
    if score == "cosine":
        return bank[concept_index]
    z = bank @ v.astype(jnp.float32)
    num = bank.shape[0]
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


# ----------------------------------------------------------------------------- one image


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


def _forward(params, plan: _Plan, xs):
    """One forward over the n inputs of one image, as a linear map of cotangents.

    Args:
        xs: [n, 3, S, S] float, the image (n = 1) or its noisy copies.

    Returns:
        (v [n, d] unit embeddings, project) where project(u [n, d]) -> L(J^T u) [n, F...]:
        [n, 3, S, S] for the pixel kinds, [n, patches] for tokens.
    """
    config = plan.config
    if plan.kind == "tokens":
        tokens = jax.vmap(clip.image_tokens, in_axes=(None, None, 0, None))(
            params, config, xs, plan.layer)  # [n, 1 + patches, D]
        embed = lambda t: clip.normalise(jax.vmap(
            clip.image_features_from_tokens, in_axes=(None, None, 0, None))(
                params, config, t, plan.layer))
        v, pullback = jax.vjp(embed, tokens)
        # Gradient x activation summed over the width; the class token is no patch.
        linear = lambda g: jnp.sum(g.astype(jnp.float32) * tokens.astype(jnp.float32), -1)[:, 1:]
    else:
        embed = lambda x: clip.normalise(jax.vmap(clip.image_features, in_axes=(None, None, 0))(
            params, config, x))
        v, pullback = jax.vjp(embed, xs)
        if plan.kind == "grad_x_input":
            linear = lambda g: g * xs
        else:
            linear = lambda g: g
    return v, lambda u: linear(pullback(u)[0]).astype(jnp.float32)


def _finish(plan: _Plan, raw):
    """Raw linear maps of one concept chunk [C, F...] -> final maps [C, S, S] or [C, 3, S, S]."""
    s = plan.config.vision.image_size
    if plan.kind == "tokens":
        g = plan.config.vision.grid_size
        grid = jax.nn.relu(raw).reshape(raw.shape[0], g, g)
        # Half-pixel centres with edge clamping: PyTorch's bilinear, align_corners=False.
        return jax.image.resize(grid, (raw.shape[0], s, s), "bilinear")
    if plan.reduce == "absmax":
        return jnp.max(jnp.abs(raw), axis=1)
    if plan.reduce == "l2":
        return jnp.sqrt(jnp.sum(raw * raw, axis=1))
    return raw


def _image_maps(params, plan: _Plan, xs, bank, concept_index, subtree, logit_scale):
    """Maps of K concepts (K a multiple of plan.chunk) for one image.

    Args:
        xs: [n, 3, S, S] float, the image (n = 1) or its SmoothGrad copies.
        (the rest as `concept_scores`)

    Returns:
        [K, S, S] or [K, 3, S, S] float32; for n > 1 the raw maps are averaged over
        the n inputs before the finish (SmoothGrad).
    """
    v, project = _forward(params, plan, xs)
    n, d = v.shape
    # Sequential over the n inputs: the subtree-probability cotangents hold an [M, d] array.
    cot = jax.lax.map(lambda vi: score_cotangents(plan.score, vi, bank, concept_index, subtree,
                                                  logit_scale), v)  # [n, K, d]
    chunks = jnp.transpose(cot, (1, 0, 2)).reshape(-1, plan.chunk, n, d)  # [K/C, C, n, d]

    if plan.route == "vmap":
        def chunk_maps(u):  # u [C, n, d]
            return _finish(plan, jnp.mean(jax.vmap(project)(u), axis=1))
    else:
        basis = jnp.broadcast_to(jnp.eye(d, dtype=v.dtype)[:, None, :], (d, n, d))
        rows = jax.lax.map(project, basis, batch_size=plan.chunk)  # [d, n, F...]: J^T e_k
        feature_shape = rows.shape[2:]
        # [(n, d), F]: the n inputs' Jacobians side by side, so that the average over
        # the inputs is part of the one matrix product.
        stacked = jnp.transpose(rows, (1, 0) + tuple(range(2, rows.ndim))).reshape(n * d, -1)

        def chunk_maps(u):  # u [C, n, d]
            raw = u.reshape(u.shape[0], n * d) @ stacked / n
            return _finish(plan, raw.reshape((u.shape[0],) + feature_shape))

    maps = jax.lax.map(chunk_maps, chunks)  # [K/C, C, ...]
    return maps.reshape((-1,) + maps.shape[2:])


@partial(jax.jit, static_argnames=("plan",))
def _maps_jit(params, pixel_values, bank, concept_index, subtree, logit_scale, key, sigma,
              plan: _Plan):
    TRACES.count += 1  # runs only while tracing
    if plan.kind == "smoothgrad":
        xs = smoothgrad_inputs(key, pixel_values, plan.samples, sigma)
    else:
        xs = pixel_values.astype(jnp.float32)[:, None]
    per_image = lambda x: _image_maps(params, plan, x, bank, concept_index, subtree,
                                      logit_scale)
    return jax.vmap(per_image)(xs)


# ----------------------------------------------------------------------------- entry point


def concept_gradient_maps(params, config: ClipConfig, pixel_values, bank, concept_index,
                          subtree: SubtreeIndex | tuple | None, logit_scale, *,
                          score: str = "cosine", kind: str = "gradient",
                          reduce: str | None = "absmax", strategy: str = "auto",
                          chunk: int = 32, layer: int | None = None,
                          smoothgrad_samples: int = 16, smoothgrad_sigma: float = 0.15,
                          key=None):
    """Gradient maps of K concept scores for N images, one forward pass per image.

    Concepts are processed in chunks of `chunk`; K is padded up to a multiple of it,
    so every K in one bucket reuses one compiled kernel (see `TRACES`).

    Args:
        params: the Flax CLIP parameter tree (float32 or bfloat16).
        config: its architecture.
        pixel_values: [N, 3, S, S] float, preprocessed images (transformers' layout,
            CLIP-normalised, S = config.vision.image_size).
        bank: [T, d] float, unit text embeddings of the whole vocabulary
            (d = config.projection_dim).
        concept_index: [K] int in [0, T), K >= 1: the concepts to map (rows of `bank`).
        subtree: the vocabulary's subtree CSR (`SubtreeIndex` or a tuple (offsets
            [T + 1], members [M], segment_ids [M])); required by the subtree scores.
        logit_scale: scalar > 0, the softmax's inverse temperature (exp of CLIP's learnt
            parameter, e.g. `ClipModel.logit_scale`); used by the probability scores.
        score: one of `SCORES` (see `concept_scores`).
        kind: "gradient" (d score / d pixel_values), "grad_x_input" (that times
            pixel_values), "smoothgrad" (the gradient averaged over
            `smoothgrad_samples` noisy copies, then reduced) or "tokens" (gradient x
            activation of the patch tokens after `layer` vision layers, summed over the
            width, ReLU, bilinearly upsampled from the patch grid to S x S).
        reduce: channel reduction of the pixel kinds: "absmax" (max of |.| over the 3
            channels), "l2" (Euclidean norm over them) or None (keep them). Token maps
            have no channel axis, so `reduce` does not apply to them.
        strategy: "vmap" (pull back the K cotangents), "jacobian" (pull back the d basis
            vectors, then one matrix product per concept chunk) or "auto" (jacobian when
            K >= d). The jacobian route holds the Jacobian, d * n * 3 * S * S floats per
            image (n = smoothgrad_samples for SmoothGrad, else 1).
        chunk: concepts (and basis vectors) per vectorised pullback, >= 1.
        layer: for "tokens", the vision layer whose output is used (transformers'
            hidden_states[layer]), 0 <= layer <= num_hidden_layers - 2; default
            num_hidden_layers - 2. The patch tokens of hidden_states[L] do not reach the
            pooled class token at all, and those of hidden_states[L - 1] reach it only
            through the last layer's first LayerNorm, whose scale invariance makes
            gradient x activation summed over the width vanish (up to the LayerNorm
            epsilon): both maps would be numerical noise.
        smoothgrad_samples: n >= 1 noisy copies per image (SmoothGrad only).
        smoothgrad_sigma: noise standard deviation relative to each image's value
            range (SmoothGrad only), >= 0.
        key: a jax.random key, required by SmoothGrad (`smoothgrad_inputs` draws the
            noise from it); no other randomness is used.

    Returns:
        float32 [N, K, S, S], or [N, K, 3, S, S] for the pixel kinds with reduce=None.
        Token maps are >= 0; absmax and l2 maps are >= 0; raw maps are signed.

    Raises:
        InputError: an unknown option, or arrays whose shapes or values do not fit.
    """
    vision = config.vision
    s, d = vision.image_size, config.projection_dim
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
    if not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise InputError(f"chunk must be an integer >= 1, found {chunk!r}")
    if score in SUBTREE_SCORES:
        subtree = _check_subtree(subtree, bank.shape[0])
    else:
        subtree = None  # unused: keep it out of the kernel's arguments
    if layer is None:
        layer = max(vision.num_hidden_layers - 2, 0)
    if kind == "tokens" and not 0 <= layer <= vision.num_hidden_layers - 2:
        raise InputError(
            f"token maps need 0 <= layer <= {vision.num_hidden_layers - 2} (num_hidden_layers "
            f"- 2): later patch tokens reach the pooled output not at all or only through a "
            f"LayerNorm, which makes gradient x activation vanish; found layer {layer}")
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
    padded = -(-k // chunk) * chunk
    # Pad with concept 0 (a valid row); the padded maps are cut away below.
    index = jnp.zeros(padded, jnp.int32).at[:k].set(jnp.asarray(concept_index, jnp.int32))
    plan = _Plan(config=config, score=score, kind=kind, reduce=reduce if kind != "tokens"
                 else None, route=route, chunk=int(chunk), layer=int(layer) if kind == "tokens"
                 else 0, samples=samples)
    maps = _maps_jit(params, jnp.asarray(pixel_values), jnp.asarray(bank), index, subtree,
                     jnp.asarray(logit_scale, jnp.float32), key,
                     jnp.asarray(smoothgrad_sigma, jnp.float32), plan=plan)
    return maps[:, :k]


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
