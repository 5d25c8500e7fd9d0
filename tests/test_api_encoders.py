"""`ConVis` on every kind of `Encoder`: a SigLIP, an OpenCLIP folder and a Flax module written
outside the package, against plain per-window and per-concept loops over the encoder's own
embeddings (each family's embeddings are held to PyTorch within 1e-5 in
tests/models/test_siglip.py and test_openclip.py), and a sharded SigLIP sweep on 8
forced CPU devices against one device."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from convis_jax.errors import InputError

TESTS = Path(__file__).resolve().parent
WINDOWS = dict(window_sizes=(128,), stride=32)  # 15 x 15 windows: a quick plain loop
WORDS = ["dog", "cat", "car"]


def outside_encoder():
    """A Flax module written outside convis_jax, wrapped as an Encoder in a few lines."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from convis_jax import Encoder

    class Tower(nn.Module):  # one image [3, S, S] -> a feature [d]
        @nn.compact
        def __call__(self, x):
            x = nn.Conv(16, (8, 8), strides=(8, 8))(jnp.transpose(x, (1, 2, 0)))
            return nn.Dense(12)(nn.gelu(x).mean(axis=(0, 1)))

    tower = Tower()
    params = tower.init(jax.random.key(0), jnp.zeros((3, 32, 32)))["params"]

    def embed_images(params, pixel_values):  # [B, 3, S, S] -> unit [B, d]
        v = jax.vmap(lambda x: tower.apply({"params": params}, x))(pixel_values)
        return v / jnp.linalg.norm(v, axis=-1, keepdims=True)

    def embed_texts(texts):  # a stand-in text model: one seeded unit vector per text
        rows = np.stack([np.random.default_rng(list(t.encode())).normal(size=12) for t in texts])
        return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)

    return Encoder(embed_images=embed_images, params=params, image_size=32,
                   image_mean=(0.5, 0.4, 0.3), image_std=(0.2, 0.25, 0.3),
                   embed_texts=embed_texts, embedding_dim=12, logit_scale=10.0,
                   name="outside tower")


def open_clip_folder(path: Path) -> Path:
    from tests.checkpoints import open_clip_reference, write_open_clip_folder

    model_cfg = {"embed_dim": 16, "quick_gelu": False,
                 "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8,
                                "head_width": 8},
                 "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32,
                              "heads": 4, "layers": 2}}
    return write_open_clip_folder(path, model_cfg, open_clip_reference(model_cfg, seed=3)
                                  .state_dict())


@pytest.fixture(scope="module")
def siglip_folder(tmp_path_factory):
    from convis_jax.testing import make_siglip_checkpoint

    path = tmp_path_factory.mktemp("siglip")
    return path, make_siglip_checkpoint(path)


@pytest.fixture(scope="module", params=["siglip", "open_clip", "outside"])
def convis(request, siglip_folder, tmp_path_factory):
    from convis_jax.api import ConVis
    from convis_jax.testing import write_words_file

    root = tmp_path_factory.mktemp(request.param)
    words = write_words_file(root, WORDS)
    model = {"siglip": lambda: str(siglip_folder[0]),
             "open_clip": lambda: str(open_clip_folder(root / "open_clip")),
             "outside": outside_encoder}[request.param]()
    return ConVis(model, words, progress=False)


@pytest.fixture(scope="module")
def photo():
    rng = np.random.default_rng(11)
    image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    image[10:40, 20:50] = (200, 40, 30)
    return image


def plain_pixel_values(convis, photo) -> np.ndarray:
    """The encoder's input [1, 3, S, S]: a loaded model's processor, else square + normalise."""
    from convis_jax.core.windows import prepare_image

    if convis.model is not convis.encoder:
        return convis.model.preprocess(photo)
    e = convis.encoder
    square = prepare_image(photo, e.image_size) / 255.0
    return np.moveaxis((square - e.image_mean) / e.image_std, -1, 0)[None].astype(np.float32)


def test_occlusion_maps_equal_a_plain_window_loop(convis, photo):
    import jax
    import jax.numpy as jnp

    from convis_jax.core.windows import prepare_image
    from convis_jax.kernels.occlusion import window_pixel_values
    from tests.reference import plain_map_from_ranks, plain_window_ranks

    enc, vocab = convis.encoder, convis.vocabulary
    names = vocab.resolve(["dog", "car"])
    got = convis.occlusion_maps(photo, names, padding="constant", **WINDOWS)
    assert got.shape == (1, len(names), 224, 224)

    to_pixels = jax.jit(window_pixel_values, static_argnums=(1, 2, 3))
    embed = jax.jit(enc.embed_images)

    def encode(crop):  # one crop at a time, through the encoder's own embed_images
        pixels = to_pixels(jnp.asarray(crop, jnp.float32), enc.image_size, enc.image_mean,
                           enc.image_std)
        return np.asarray(embed(enc.params, pixels[None]))[0]

    ranks = plain_window_ranks(prepare_image(photo, 224), encode, convis.bank.embeddings,
                               **WINDOWS)
    for k, name in enumerate(names):
        want = plain_map_from_ranks(ranks, (224, 224), vocab.subtree_offsets,
                                    vocab.subtree_members, vocab.index(name), padding=128)
        assert want.std() > 0.01  # a map with something in it, not a constant
        assert np.abs(got[0, k] - want).max() < 1e-6, name


@pytest.mark.parametrize("score", ["cosine", "probability", "subtree_probability"])
def test_gradient_maps_equal_a_plain_concept_loop(convis, photo, score):
    """Each concept's score written out (SigLIP: its sigmoid) and differentiated by jax.grad."""
    import jax
    import jax.numpy as jnp

    enc, vocab = convis.encoder, convis.vocabulary
    names = vocab.resolve(["dog", "car"])
    got = convis.gradient_maps(photo, names, score=score, reduce=None)
    pixels = jnp.asarray(plain_pixel_values(convis, photo))
    bank = jnp.asarray(convis.bank.embeddings)
    s, b = enc.logit_scale, enc.logit_bias

    def score_of(x, c):
        z = bank @ enc.embed_images(enc.params, x[None])[0]
        subtree = vocab.subtree_members[vocab.subtree_offsets[c]:vocab.subtree_offsets[c + 1]]
        if score == "cosine":
            return z[c]
        if b is None:  # CLIP: softmax over the bank, its mass over the subtree
            p = jax.nn.softmax(s * z)
            return p[c] if score == "probability" else p[subtree].sum()
        p = jax.nn.sigmoid(s * z + b)  # SigLIP: each concept's own match probability
        return p[c] if score == "probability" else 1 - jnp.prod(1 - p[subtree])

    want = np.stack([np.asarray(jax.grad(score_of)(pixels[0], vocab.index(n)))
                     for n in names])
    assert got.shape == (1, len(names), 3, enc.image_size, enc.image_size)
    scale = np.abs(want).max()
    assert scale > 0
    assert np.abs(got[0] - want).max() <= 2e-5 * scale


def test_siglip_token_maps_match_pytorch_hooks(siglip_folder):
    """SigLIP has no class token: every token is a patch, and its head pools them all."""
    import torch

    from convis_jax.kernels.gradients import concept_gradient_maps
    from convis_jax.models.loading import load_model

    folder, torch_model = siglip_folder
    model = load_model(folder)
    assert model.encoder.image_tokens.prefix_tokens == 0
    assert model.encoder.image_tokens.max_layer == 1  # 2 layers: hidden_states[1]
    rng = np.random.default_rng(4)
    pixels = rng.normal(size=(2, 3, 32, 32)).astype(np.float32)
    bank = rng.normal(size=(5, model.embedding_dim)).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    got = np.asarray(concept_gradient_maps(model.encoder, pixels, bank, np.array([0, 3]), None,
                                           kind="tokens", strategy="vmap", chunk=2))
    store = {}

    def keep(module, inputs, output):
        out = output[0] if isinstance(output, tuple) else output
        store["activation"] = out.detach()
        out.register_hook(lambda grad: store.__setitem__("gradient", grad))

    hook = torch_model.vision_model.encoder.layers[0].register_forward_hook(keep)
    want = []
    try:
        for c in (0, 3):
            features = torch_model.get_image_features(pixel_values=torch.from_numpy(pixels))
            features = getattr(features, "pooler_output", features)
            (features / features.norm(dim=-1, keepdim=True) @ torch.from_numpy(bank[c])
             ).sum().backward()
            cam = (store["gradient"] * store["activation"]).sum(-1).relu().reshape(2, 1, 4, 4)
            want.append(torch.nn.functional.interpolate(cam, size=(32, 32), mode="bilinear",
                                                        align_corners=False)[:, 0].numpy())
    finally:
        hook.remove()
    want = np.stack(want, axis=1)
    assert want.max() > 0 and (want == 0).any()
    assert np.abs(got - want).max() <= 1e-5 * want.max()


def test_similarity_is_the_encoders_image_embedding_against_its_bank(convis, photo):
    import jax

    enc = convis.encoder
    v = np.asarray(jax.jit(enc.embed_images)(enc.params, plain_pixel_values(convis, photo)))
    # Bare encoder: the bank is embed_texts of the concept texts, row for row.
    if convis.model is convis.encoder:
        texts = convis.vocabulary.texts("definition")
        np.testing.assert_allclose(convis.bank.embeddings, enc.embed_texts(texts), atol=1e-7)
    np.testing.assert_allclose(convis.similarity(photo), v @ convis.bank.embeddings.T,
                               rtol=0, atol=1e-6)


def test_token_maps_of_an_encoder_without_tokens_are_an_input_error(photo, tmp_path):
    from convis_jax.api import ConVis
    from convis_jax.testing import write_words_file

    convis = ConVis(outside_encoder(), write_words_file(tmp_path, WORDS), progress=False)
    with pytest.raises(InputError, match="image_tokens"):
        convis.gradient_maps(photo, ["dog"], kind="tokens")


def test_a_bad_embed_texts_is_an_input_error(tmp_path):
    from dataclasses import replace

    from convis_jax.api import ConVis
    from convis_jax.testing import write_words_file

    wrong = replace(outside_encoder(), embed_texts=lambda texts: np.zeros((len(texts), 5)))
    with pytest.raises(InputError, match=r"embed_texts must give .*\[.*, 12\]"):
        ConVis(wrong, write_words_file(tmp_path, WORDS), progress=False)


# ----------------------------------------------------------------------------- 8 devices


def child(folder: str, out: str) -> None:
    """SigLIP sweeps on one device and on all 8; results saved to `out` (.npz)."""
    import jax
    import jax.numpy as jnp

    from convis_jax.core.windows import pad_images, window_grid
    from convis_jax.kernels import occlusion
    from convis_jax.kernels.sweep import ConceptRequest
    from convis_jax.kernels.gradients import concept_gradient_maps
    from convis_jax.models.loading import load_model

    assert jax.local_device_count() == 8
    enc = load_model(folder).encoder
    rng = np.random.default_rng(6)
    bank = rng.normal(size=(12, enc.embedding_dim)).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    offsets = np.arange(13)  # every concept its own subtree
    members = np.arange(12)
    grid = window_grid((224, 224), (128, 64), 32)
    images = rng.uniform(0, 255, (2, 224, 224, 3)).astype(np.float32)
    padded = jnp.asarray(pad_images(images, grid.padding, "noise", seed=5))
    concepts = np.array([0, 4, 11])
    m, seg, k_padded = ConceptRequest.from_subtrees(concepts, concepts, offsets, members).padded()
    static = dict(spec=occlusion.SweepSpec.of(enc, grid, 16))
    args = (enc.params, padded, jnp.asarray(bank), jnp.asarray(m), jnp.asarray(seg))
    one = jax.local_devices()[:1]
    r = {"cells_single": occlusion.occlusion_cells(*args, num_concepts=k_padded, devices=one,
                                                   **static),
         "cells_eight": occlusion.occlusion_cells(*args, num_concepts=k_padded, **static),
         "cells_split": occlusion.occlusion_cells(*args, num_concepts=k_padded,
                                                  split_bank=True, **static),
         "sims_single": occlusion.window_rank_similarities(*args[:3], devices=one, **static),
         "sims_eight": occlusion.window_rank_similarities(*args[:3], **static)}
    pixels = rng.normal(size=(8, 3, 32, 32)).astype(np.float32)
    grad = dict(score="subtree_probability", kind="gradient", reduce="absmax", chunk=2)
    subtree = (offsets, members, np.arange(12, dtype=np.int32))
    r["grad_single"] = concept_gradient_maps(enc, pixels, bank, np.array([1, 5, 7]), subtree,
                                             devices=one, **grad)
    eight = concept_gradient_maps(enc, pixels, bank, np.array([1, 5, 7]), subtree, **grad)
    r["grad_eight"] = eight
    r["grad_devices"] = np.array(len(eight.sharding.device_set))
    np.savez(out, **{k: np.asarray(v) for k, v in r.items()})


def test_sharded_siglip_sweeps_equal_one_device(siglip_folder, tmp_path):
    out = tmp_path / "results.npz"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, __file__, str(siglip_folder[0]), str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    r = dict(np.load(out))
    assert r["cells_single"].shape == (2, 8, 7, 7)  # 32-pixel cells
    assert r["cells_single"][:, :3].std(axis=(-1, -2)).min() > 0.01  # not a constant map
    for key in ("cells_eight", "cells_split"):
        assert np.abs(r[key] - r["cells_single"]).max() < 1e-6, key
    assert np.abs(r["sims_eight"] - r["sims_single"]).max() < 1e-6
    assert r["grad_devices"] == 8
    assert r["grad_single"].max() > 0
    assert np.abs(r["grad_eight"] - r["grad_single"]).max() <= 1e-5 * r["grad_single"].max()


if __name__ == "__main__":
    child(sys.argv[1], sys.argv[2])
