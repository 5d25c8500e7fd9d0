"""Gradient concept maps against PyTorch autograd, direct JAX autodiff and plain loops.

Compiling a kernel costs seconds on CPU, so the tests share kernel shapes on
purpose: raw gradients of N = 2 images for K <= 4 concepts with chunk 4.
"""

from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from convis_jax.errors import InputError
from convis_jax.kernels import gradients
from convis_jax.kernels.gradients import SCORES, SubtreeIndex, concept_gradient_maps
from convis_jax.models import clip
from convis_jax.models.loading import load_clip
from convis_jax.testing import TINY, VIT_B32_SHALLOW, make_clip_checkpoint

NUM_CONCEPTS = 60
# Inner nodes with subtrees of several concepts (not the root, whose subtree
# probability is 1 whatever the image, so that its gradient is zero).
CONCEPTS = [3, 1, 7]


def toy_vocabulary(num: int, seed: int = 0):
    """A random DAG rooted at 0 (some nodes have two parents) -> (SubtreeIndex, member lists)."""
    rng = np.random.default_rng(seed)
    children = defaultdict(set)
    for node in range(1, num):
        parents = {int(rng.integers(0, min(node, 12)))}
        if node > 12 and rng.random() < 0.3:
            parents.add(int(rng.integers(0, node)))
        for parent in parents:
            children[parent].add(node)

    def subtree(node):
        found, stack = {node}, [node]
        while stack:
            for child in children[stack.pop()]:
                if child not in found:
                    found.add(child)
                    stack.append(child)
        return sorted(found)

    lists = [subtree(node) for node in range(num)]
    offsets = np.concatenate([[0], np.cumsum([len(m) for m in lists])])
    index = SubtreeIndex(offsets=offsets.astype(np.int64),
                         members=np.concatenate(lists).astype(np.int64),
                         segment_ids=np.repeat(np.arange(num), [len(m) for m in lists]).astype(
                             np.int32))
    return index, lists


def unit_bank(num: int, dim: int, seed: int = 1) -> np.ndarray:
    bank = np.random.default_rng(seed).normal(size=(num, dim)).astype(np.float32)
    return bank / np.linalg.norm(bank, axis=1, keepdims=True)


SUBTREE, MEMBERS = toy_vocabulary(NUM_CONCEPTS)


def torch_score(score, v, bank, concept, scale):
    """The score of one concept for one unit embedding v [d], written directly in torch."""
    z = bank @ v
    members = torch.tensor(MEMBERS[concept])
    if score == "cosine":
        return z[concept]
    if score == "subtree_cosine":
        return z[members].max()
    p = torch.softmax(scale * z, dim=0)
    return p[concept] if score == "probability" else p[members].sum()


def torch_gradients(torch_model, pixel_values, bank, concepts, score):
    """d score / d pixel_values by PyTorch autograd through transformers' CLIPModel: [N, K, 3, S, S]."""
    scale = torch_model.logit_scale.detach().exp()
    bank = torch.from_numpy(bank)
    out = []
    for concept in concepts:
        x = torch.from_numpy(pixel_values).requires_grad_(True)
        features = torch_model.get_image_features(pixel_values=x)
        features = getattr(features, "pooler_output", features)
        v = features / features.norm(dim=-1, keepdim=True)
        # Images are independent, so the sum's gradient holds each image's own gradient.
        sum(torch_score(score, v[i], bank, concept, scale) for i in range(len(v))).backward()
        out.append(x.grad.numpy())
    return np.stack(out, axis=1)


def assert_close_per_concept(got, want, rtol):
    """max |got - want| <= rtol * max |want|, for every image and concept."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    axes = tuple(range(2, want.ndim))
    err = np.abs(got - want).max(axis=axes)
    scale = np.abs(want).max(axis=axes)
    assert np.all(scale > 0), "a reference map is all zeros: the comparison would prove nothing"
    assert np.all(err <= rtol * scale), f"relative errors {err / scale}"


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    path, torch_model = tiny_checkpoint
    return load_clip(path), torch_model


@pytest.fixture(scope="module")
def pixels():
    return np.random.default_rng(2).normal(size=(2, 3, 32, 32)).astype(np.float32)


def raw_maps(model, pixel_values, bank, concepts, score, **kwargs):
    kwargs = dict(dict(kind="gradient", reduce=None, strategy="vmap", chunk=4), **kwargs)
    return np.asarray(concept_gradient_maps(model.encoder, pixel_values, bank,
                                            np.asarray(concepts), SUBTREE,
                                            score=score, **kwargs))


@pytest.mark.parametrize("score", SCORES)
def test_scores_and_cotangents_match_their_definitions(score):
    bank = unit_bank(NUM_CONCEPTS, 16)
    v = unit_bank(1, 16, seed=5)[0]
    concepts = np.arange(NUM_CONCEPTS)
    scale = 20.0
    z = bank @ v
    p = np.exp(scale * z - (scale * z).max())
    p /= p.sum()
    want = {"cosine": z, "probability": p,
            "subtree_cosine": np.array([z[m].max() for m in MEMBERS]),
            "subtree_probability": np.array([p[m].sum() for m in MEMBERS])}[score]
    args = (jnp.asarray(bank), jnp.asarray(concepts), SUBTREE, scale)
    got = gradients.concept_scores(score, jnp.asarray(v), *args)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    # The closed-form cotangents are the scores' gradients (autodiff as the reference).
    autodiff = jax.jacrev(lambda u: gradients.concept_scores(score, u, *args))(jnp.asarray(v))
    closed = gradients.score_cotangents(score, jnp.asarray(v), *args)
    np.testing.assert_allclose(closed, autodiff, rtol=1e-5, atol=1e-6 * np.abs(autodiff).max())


@pytest.mark.parametrize("score", SCORES)
def test_gradients_match_pytorch_autograd(tiny, pixels, score):
    model, torch_model = tiny
    bank = unit_bank(NUM_CONCEPTS, model.embedding_dim)
    got = raw_maps(model, pixels, bank, CONCEPTS, score)
    want = torch_gradients(torch_model, pixels, bank, CONCEPTS, score)
    assert got.shape == (2, len(CONCEPTS), 3, 32, 32)
    assert_close_per_concept(got, want, 1e-5)


def test_gradients_match_pytorch_on_a_vit_b32_shaped_model(tmp_path):
    torch_model = make_clip_checkpoint(tmp_path, VIT_B32_SHALLOW, seed=3)
    model = load_clip(tmp_path)
    bank = unit_bank(NUM_CONCEPTS, model.embedding_dim)
    x = np.random.default_rng(4).normal(size=(1, 3, 224, 224)).astype(np.float32)
    concepts = [3, 1]
    got = raw_maps(model, x, bank, concepts, "subtree_probability", chunk=None)
    want = torch_gradients(torch_model, x, bank, concepts, "subtree_probability")
    assert_close_per_concept(got, want, 1e-5)


def test_routes_agree_with_a_per_concept_loop_and_trace_once(tiny, pixels):
    model, _ = tiny
    d = model.embedding_dim
    score = "subtree_probability"
    bank = unit_bank(NUM_CONCEPTS, d)
    # Not the root: its subtree probability is 1 for every image, its gradient only rounding.
    order = 1 + np.random.default_rng(6).permutation(NUM_CONCEPTS - 1)[:3 * d]

    # The reference: jax.grad of one concept's score, written from scratch, per concept.
    def score_of_pixels(x, concept):
        v = clip.normalise(clip.image_features(model.params, model.config, x))
        return gradients.concept_scores(score, v, jnp.asarray(bank), concept[None], SUBTREE,
                                        model.logit_scale)[0]

    grad = jax.jit(jax.vmap(jax.grad(score_of_pixels), in_axes=(0, None)))
    loop = np.stack([np.asarray(grad(jnp.asarray(pixels), jnp.asarray(c))) for c in order], 1)

    for strategy in ("vmap", "jacobian"):
        traces = []
        for k in (1, 7, d, 3 * d):
            got = raw_maps(model, pixels, bank, order[:k], score, strategy=strategy, chunk=d)
            assert_close_per_concept(got, loop[:, :k], 1e-5)
            traces.append(gradients.TRACES.count)
        # K = 1, 7 and d fill one chunk (d), 3d three: the kernels traced for K = 1 serve all.
        assert traces[1:] == traces[:1] * 3


def test_concept_counts_do_not_trace_again(tiny, pixels):
    model, _ = tiny
    bank = unit_bank(NUM_CONCEPTS, model.embedding_dim)

    def traces(k, strategy):
        before = gradients.TRACES.count
        # eval_shape traces exactly as a call does, without paying for the compilation.
        shape = jax.eval_shape(lambda: concept_gradient_maps(
            model.encoder, pixels, bank, np.arange(k), None,
            strategy=strategy, chunk=5))
        assert shape.shape == (2, k, 32, 32)
        return gradients.TRACES.count - before

    for strategy in ("vmap", "jacobian"):
        # The first call traces the chunk kernels (chunk 5 is used nowhere else) ...
        assert traces(2, strategy) >= 1
        # ... and no other K, in the same bucket of 5 or beyond, traces anything again.
        assert [traces(k, strategy) for k in (1, 3, 5, 6, 10, 23)] == [0] * 6


THREE_LAYERS = dict(TINY, vision=dict(TINY["vision"], num_hidden_layers=3))


@pytest.fixture(scope="module")
def three_layers(tmp_path_factory):
    path = tmp_path_factory.mktemp("three_layers")
    torch_model = make_clip_checkpoint(path, THREE_LAYERS, seed=7)
    return load_clip(path), torch_model


def torch_token_maps(torch_model, pixel_values, bank, concepts, layer):
    """Grad-CAM on transformers' hidden_states[layer] with forward/backward hooks.

    Returns:
        maps [N, K, S, S], and terms [N, K]: the largest sum over the width of
        |gradient x activation| of a patch, the size of what the maps' sums cancel.
    """
    store = {}

    def keep_activation(module, inputs, output):
        store["activation"] = output.detach()
        output.register_hook(lambda grad: store.__setitem__("gradient", grad))

    hook = torch_model.vision_model.encoder.layers[layer - 1].register_forward_hook(
        keep_activation)
    maps, terms = [], []
    try:
        for concept in concepts:
            features = torch_model.get_image_features(pixel_values=torch.from_numpy(pixel_values))
            features = getattr(features, "pooler_output", features)
            v = features / features.norm(dim=-1, keepdim=True)
            (v @ torch.from_numpy(bank[concept])).sum().backward()
            product = (store["gradient"] * store["activation"])[:, 1:]
            terms.append(product.abs().sum(-1).amax(-1).numpy())
            cam = product.sum(-1).relu()
            grid = int(round(cam.shape[1] ** 0.5))
            cam = cam.reshape(-1, 1, grid, grid)
            size = pixel_values.shape[-1]
            maps.append(torch.nn.functional.interpolate(cam, size=(size, size), mode="bilinear",
                                                        align_corners=False)[:, 0].numpy())
    finally:
        hook.remove()
    return np.stack(maps, axis=1), np.stack(terms, axis=1)


@pytest.mark.parametrize("strategy", ["vmap", "jacobian"])
def test_token_maps_match_pytorch_hooks(three_layers, pixels, strategy):
    model, torch_model = three_layers
    bank = unit_bank(NUM_CONCEPTS, model.embedding_dim)
    # Default layer: num_hidden_layers - 2 = 1, the output of encoder.layers[0].
    got = concept_gradient_maps(model.encoder, pixels, bank, np.asarray(CONCEPTS),
                                None, kind="tokens", strategy=strategy,
                                chunk=4)
    want, terms = torch_token_maps(torch_model, pixels, bank, CONCEPTS, layer=1)
    assert got.shape == (2, len(CONCEPTS), 32, 32)
    # The ReLU leaves maps with both zero and positive cells.
    assert (want == 0).any() and (want > 0).any()
    # Summing over the width cancels much of the products (float32 rounding grows with
    # what cancels), so errors are measured against the products' magnitude; the maps
    # themselves stay well above it (a vanishing map would compare rounding noise).
    assert np.all(want.max(axis=(2, 3)) > 1e-3 * terms)
    err = np.abs(np.asarray(got) - want).max(axis=(2, 3))
    assert np.all(err <= 1e-5 * terms), f"errors relative to the products {err / terms}"


def test_token_maps_refuse_layers_that_give_vanishing_maps(three_layers, pixels):
    model, _ = three_layers
    bank = unit_bank(NUM_CONCEPTS, model.embedding_dim)
    for layer in (2, 3, -1):
        with pytest.raises(InputError, match="layer"):
            concept_gradient_maps(model.encoder, pixels, bank, np.arange(2), None,
                                  kind="tokens", layer=layer)


def test_grad_x_input_is_the_gradient_times_the_input(tiny, pixels):
    model, _ = tiny
    bank = unit_bank(NUM_CONCEPTS, model.embedding_dim)
    gradient = raw_maps(model, pixels, bank, CONCEPTS, "cosine")
    got = raw_maps(model, pixels, bank, CONCEPTS, "cosine", kind="grad_x_input",
                   reduce="absmax")
    want = np.abs(gradient * pixels[:, None]).max(axis=2)
    assert got.shape == (2, len(CONCEPTS), 32, 32)
    assert_close_per_concept(got, want, 1e-6)


@pytest.mark.parametrize("strategy", ["vmap", "jacobian"])
def test_smoothgrad_is_the_mean_gradient_at_its_noise_draws(tiny, pixels, strategy):
    model, _ = tiny
    bank = unit_bank(NUM_CONCEPTS, model.embedding_dim)
    x, samples, sigma, key = pixels[:1], 2, 0.2, jax.random.key(11)
    run = lambda k: raw_maps(model, x, bank, CONCEPTS, "probability", kind="smoothgrad",
                             reduce="l2", strategy=strategy, smoothgrad_samples=samples,
                             smoothgrad_sigma=sigma, key=k)
    got = run(key)
    np.testing.assert_array_equal(run(key), got)
    assert np.abs(run(jax.random.key(12)) - got).max() > 1e-3 * np.abs(got).max()

    noisy = np.asarray(gradients.smoothgrad_inputs(key, jnp.asarray(x), samples, sigma))[0]
    noise = noisy - x[0]
    np.testing.assert_allclose(noise.std(), sigma * (x.max() - x.min()), rtol=0.05)
    plain = raw_maps(model, noisy, bank, CONCEPTS, "probability")  # [samples, K, 3, S, S]
    want = np.sqrt((plain.mean(axis=0) ** 2).sum(axis=1))[None]
    assert_close_per_concept(got, want, 1e-5)


@pytest.mark.parametrize("bad, match", [
    (dict(score="rank"), "score"), (dict(kind="saliency"), "kind"), (dict(reduce="sum"), "reduce"),
    (dict(strategy="fast"), "strategy"), (dict(chunk=0), "chunk"),
    (dict(concept_index=np.array([0, 60])), r"\[0, 60\)"),
    (dict(score="subtree_cosine", subtree=None), "subtree"),
    (dict(kind="smoothgrad"), "key"),
    (dict(pixel_values=np.zeros((1, 3, 16, 16), np.float32)), r"\[N, 3, 32, 32\]"),
    (dict(bank=np.zeros((60, 8), np.float32)), r"\[T, 16\]"),
])
def test_bad_arguments_raise_input_errors(tiny, pixels, bad, match):
    model, _ = tiny
    args = dict(pixel_values=pixels, bank=unit_bank(NUM_CONCEPTS, 16),
                concept_index=np.arange(2), subtree=SUBTREE)
    bad = dict(bad)
    args.update({k: bad.pop(k) for k in list(bad) if k in args})
    with pytest.raises(InputError, match=match):
        concept_gradient_maps(model.encoder, args["pixel_values"], args["bank"],
                              args["concept_index"], args["subtree"], **bad)
