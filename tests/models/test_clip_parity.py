"""The Flax CLIP against transformers' PyTorch CLIPModel on the same weights."""

import numpy as np
import pytest
import torch

from convis_jax.models.loading import load_clip
from convis_jax.testing import TINY, VIT_B32_SHALLOW, make_clip_checkpoint

PATCH14_336 = dict(
    vision=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, image_size=336, patch_size=14),
    text=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=4, max_position_embeddings=77, vocab_size=49408),
    projection_dim=32,
)

# Real WordNet 3.0 glosses of varied lengths; world_war_ii.n.01's runs to 124 tokens,
# so it is truncated (with a warning) and its last token stays EOS.
GLOSSES = ["dog.n.01", "bird.n.01", "circle.n.01", "entity.n.01", "world_war_ii.n.01"]


@pytest.fixture(scope="module")
def definitions():
    from convis_jax.core.wordnet import load_wordnet

    wordnet = load_wordnet()
    return [wordnet.synset(name).definition() for name in GLOSSES]


def torch_embeddings(model, pixel_values, input_ids):
    with torch.no_grad():
        image = model.get_image_features(pixel_values=torch.from_numpy(pixel_values))
        text = model.get_text_features(input_ids=torch.from_numpy(input_ids.astype(np.int64)))
    image = getattr(image, "pooler_output", image)
    text = getattr(text, "pooler_output", text)
    unit = lambda t: (t / t.norm(dim=-1, keepdim=True)).numpy()
    return unit(image), unit(text)


@pytest.mark.parametrize("spec,act", [(TINY, "quick_gelu"), (TINY, "gelu"),
                                      (VIT_B32_SHALLOW, "quick_gelu"),
                                      (PATCH14_336, "quick_gelu")],
                         ids=["tiny-quick_gelu", "tiny-gelu", "vit-b32-shape", "patch14-336"])
def test_embeddings_match_pytorch(tmp_path, spec, act, definitions):
    torch_model = make_clip_checkpoint(tmp_path, spec, hidden_act=act, seed=1)
    model = load_clip(tmp_path)
    s = spec["vision"]["image_size"]
    pixel_values = np.random.default_rng(0).normal(size=(3, 3, s, s)).astype(np.float32)
    with pytest.warns(UserWarning, match="1 of 5 text"):
        batch = model.tokenize(definitions)
    assert batch.input_ids.shape[1] == 77 and batch.input_ids[-1, -1] == 49407
    want_image, want_text = torch_embeddings(torch_model, pixel_values, batch.input_ids)

    got_image = model.embed_pixel_values(pixel_values)
    with pytest.warns(UserWarning):
        got_text = model.embed_texts(definitions)
    assert np.abs(got_image - want_image).max() < 1e-5
    assert np.abs(got_text - want_text).max() < 1e-5
    np.testing.assert_allclose(np.linalg.norm(got_image, axis=1), 1, atol=1e-6)


def test_unnormalised_features_match_pytorch(tiny_checkpoint):
    path, torch_model = tiny_checkpoint
    model = load_clip(path)
    pixel_values = np.random.default_rng(1).normal(size=(2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        want = torch_model.get_image_features(pixel_values=torch.from_numpy(pixel_values))
    want = getattr(want, "pooler_output", want).numpy()
    got = model.embed_pixel_values(pixel_values, normalize=False)
    assert np.abs(got - want).max() < 1e-5 * max(1.0, np.abs(want).max())


def test_bucketed_text_lengths_do_not_change_embeddings(tiny_checkpoint):
    path, _ = tiny_checkpoint
    model = load_clip(path)
    short = model.embed_texts(["a round object"])  # bucket 16
    padded = model.embed_texts(["a round object", "x " * 40])  # bucket 48
    assert np.abs(short[0] - padded[0]).max() < 1e-6


def test_eos_legacy_rule_uses_largest_id():
    import jax.numpy as jnp

    from convis_jax.models.clip import eos_position

    ids = jnp.array([49406, 320, 49407, 49407, 49407])
    assert int(eos_position(ids, 2)) == 2
    assert int(eos_position(jnp.array([5, 7, 3, 3]), 3)) == 2


def test_known_token_ids_of_the_bundled_bpe_vocabulary(tiny_checkpoint):
    # Documented by OpenAI CLIP and Hugging Face for "a photo of a cat".
    model = load_clip(tiny_checkpoint[0])
    ids = model.tokenize(["a photo of a cat"]).input_ids[0]
    assert ids[:7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
