"""The jitted occlusion sweep against the deliberately plain Algorithm 1 (tests/reference.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convis_jax.core.cells import cells_to_pixels
from convis_jax.core.windows import pad_images, prepare_image, window_grid
from convis_jax.kernels.occlusion import (
    TRACES,
    SweepSpec,
    occlusion_cells,
    window_pixel_values,
    window_rank_similarities,
)
from convis_jax.kernels.sweep import ConceptRequest
from convis_jax.models.loading import load_clip
from tests.reference import (
    plain_map_from_ranks,
    plain_subtree_index,
    plain_window_ranks,
)

# A small DAG over 24 synsets: 0 is the root, inner nodes 1-5, the rest leaves.
EDGES = [(0, 1), (0, 2), (0, 3), (1, 4), (1, 5), (2, 5)] + \
    [(1 + (s % 5), s) for s in range(6, 24)]
N_SYNSETS = 24


@pytest.fixture(scope="module")
def setup(tiny_checkpoint):
    model = load_clip(tiny_checkpoint[0])
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(N_SYNSETS, model.embedding_dim)).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    offsets, members = plain_subtree_index(N_SYNSETS, EDGES)
    pre = model.preprocess_config
    static = dict(embed=model.encoder.embed_images, image_size=model.image_size, chunk=64,
                  mean=tuple(pre.image_mean), std=tuple(pre.image_std))

    to_pixels = jax.jit(window_pixel_values, static_argnums=(1, 2, 3))

    def encode(crop):  # the same encoder, one crop at a time
        pixels = to_pixels(jnp.asarray(crop, jnp.float32), model.image_size,
                           static["mean"], static["std"])
        return model.embed_pixel_values(np.asarray(pixels)[None])[0]

    return model, bank, offsets, members, static, encode


def request(offsets, members, concepts):
    """(members, segment_ids, K padded) of some concepts of the DAG, on the device."""
    m, seg, k_padded = ConceptRequest.from_subtrees(concepts, concepts, offsets, members).padded()
    return jnp.asarray(m), jnp.asarray(seg), k_padded


def photo(height, width, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    image = np.stack([(xx * 255 // width), (yy * 255 // height), np.full_like(xx, 90)], -1)
    image[height // 4: height // 2, width // 3: 2 * width // 3] = rng.integers(0, 255, 3)
    return image.astype(np.uint8)


@pytest.mark.parametrize("size,n_images", [((224, 224), 1), ((300, 180), 2), ((150, 261), 4)])
def test_sweep_equals_plain_algorithm_1(setup, size, n_images):
    model, bank, offsets, members, static, encode = setup
    images = np.stack([prepare_image(photo(*size, seed=s), 224) for s in range(n_images)])
    grid = window_grid((224, 224), (128, 64), 16)
    padded = pad_images(images, grid.padding, "constant")
    concepts = np.array([0, 1, 2, 5, 7, 23])  # root, inner nodes, leaves
    m, seg, k_padded = request(offsets, members, concepts)
    spec = SweepSpec(grid=grid, **static)
    cells = occlusion_cells(model.params, jnp.asarray(padded), jnp.asarray(bank), m, seg,
                            spec=spec, num_concepts=k_padded)
    maps = cells_to_pixels(np.asarray(cells)[:, : len(concepts)], grid)
    sims = np.asarray(window_rank_similarities(model.params, jnp.asarray(padded),
                                               jnp.asarray(bank), spec=spec))
    # The first image against the plain loop (1,800 single encodings) ...
    for n in range(1):
        plain = plain_window_ranks(images[n], encode, bank)
        # Identical ranks in every window that the sweep encodes.
        flat = 0
        for size_index, (oy, ox) in enumerate(grid.origins):
            w = grid.window_sizes[size_index]
            for y in oy:
                for x in ox:
                    want = plain[(w, int(y), int(x))]
                    got = np.rint((1 - sims[n, flat]) * N_SYNSETS).astype(int)
                    np.testing.assert_array_equal(got, want)
                    flat += 1
        assert flat == 730
        for k, c in enumerate(concepts):
            want = plain_map_from_ranks(plain, (224, 224), offsets, members, c, padding=128)
            assert np.abs(maps[n, k] - want).max() < 1e-6
    # ... and every image of the batch against a sweep of that image alone.
    for n in range(1, n_images):
        alone = occlusion_cells(model.params, jnp.asarray(padded[n:n + 1]), jnp.asarray(bank),
                                m, seg, spec=spec, num_concepts=k_padded)
        assert np.abs(np.asarray(alone)[0] - np.asarray(cells)[n]).max() < 1e-6


def test_same_shapes_do_not_trace_again(setup):
    model, bank, offsets, members, static, _ = setup
    grid = window_grid((224, 224), (128,), 48)  # a grid no other test sweeps: a new program
    padded = jnp.asarray(pad_images(prepare_image(photo(224, 224, 1), 224)[None], 128, seed=3))
    spec = SweepSpec(grid=grid, **static)

    def run(concepts):
        m, seg, k_padded = request(offsets, members, np.array(concepts))
        return occlusion_cells(model.params, padded, jnp.asarray(bank), m, seg, spec=spec,
                               num_concepts=k_padded)

    before = TRACES["occlusion_cells"]
    run([6, 7, 8])
    assert TRACES["occlusion_cells"] == before + 1  # the first call traces
    run([6, 7, 9])  # same bucket of K and of subtree members
    run([9, 10, 11])
    assert TRACES["occlusion_cells"] == before + 1  # the others reuse its program



def _equations(jaxpr):
    """Every equation of a jaxpr and of the jaxprs nested in it (jit, scan, ...)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _equations(inner)


def test_bfloat16_encodes_in_bfloat16_and_ranks_in_float32(setup, tiny_checkpoint):
    """The precision policy: a bfloat16 model's sweep runs the encoder in bfloat16, and its
    similarities, ranks and cell sums in float32."""
    model, bank, offsets, members, static, encode = setup
    low = load_clip(tiny_checkpoint[0], dtype="bfloat16")
    grid = window_grid((224, 224), (128, 64), 32)
    padded = jnp.asarray(pad_images(prepare_image(photo(224, 224, 5), 224)[None], grid.padding,
                                    "constant"))
    m, seg, k_padded = request(offsets, members, np.array([0, 1, 5, 7]))
    args = (low.params, padded, jnp.asarray(bank), m, seg)
    kwargs = dict(spec=SweepSpec(**dict(static, embed=low.encoder.embed_images,
                                        image_size=low.image_size, grid=grid)),
                  num_concepts=k_padded)
    jaxpr = jax.make_jaxpr(lambda *a: occlusion_cells(*a, **kwargs))(*args).jaxpr
    equations = list(_equations(jaxpr))
    dtypes = lambda eqn: {v.aval.dtype for v in eqn.invars if hasattr(v, "aval")}
    dots = [eqn for eqn in equations if eqn.primitive.name == "dot_general"]
    # The encoder's matrix products run in bfloat16 ...
    assert sum(dtypes(eqn) == {jnp.dtype(jnp.bfloat16)} for eqn in dots) >= 8
    # ... the one against the bank (rhs [T, d] or [d, T]) in float32, as do the sorts behind
    # the ranks.
    against_bank = [eqn for eqn in dots
                    if eqn.invars[1].aval.shape in (bank.shape, bank.shape[::-1])]
    assert against_bank and all(dtypes(eqn) == {jnp.dtype(jnp.float32)} for eqn in against_bank)
    sorts = [eqn for eqn in equations if eqn.primitive.name == "sort"]
    assert sorts and all(eqn.invars[0].aval.dtype == jnp.float32 for eqn in sorts)
    cells = np.asarray(occlusion_cells(*args, **kwargs))
    assert cells.dtype == np.float32
    # And the maps are those of the float32 model up to bfloat16's rounding.
    high_spec = SweepSpec(**dict(static, grid=grid))
    high = np.asarray(occlusion_cells(model.params, *args[1:], spec=high_spec,
                                      num_concepts=k_padded))
    assert np.corrcoef(cells.ravel(), high.ravel())[0, 1] > 0.9
