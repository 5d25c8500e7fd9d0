"""SigLIP: the Flax model against transformers' PyTorch `SiglipModel`, loading, tokenizer, Encoder.

Every number is checked against transformers' own PyTorch SiglipModel run on
the same random weights, images and token ids (the ids from the folder's
tokenizer called directly with padding="max_length").
"""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from convis_jax.errors import ModelLoadError
from convis_jax.models import siglip
from convis_jax.models.loading import load_clip, load_model
from convis_jax.models.model import SiglipModel
from convis_jax.testing import SIGLIP_TINY, make_siglip_checkpoint

TEXTS = ["a photo of a cat", "the red car", "an entity with a much longer description"]


@pytest.fixture(scope="module")
def tiny_siglip(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_siglip")
    return path, make_siglip_checkpoint(path)


def torch_unit(features):
    out = getattr(features, "pooler_output", features)
    return (out / out.norm(dim=-1, keepdim=True)).numpy()


def torch_images(model, pixel_values):
    import torch

    with torch.no_grad():
        return torch_unit(model.get_image_features(pixel_values=torch.from_numpy(pixel_values)))


def torch_texts(model, folder, texts, length):
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    ids = tokenizer(texts, padding="max_length", max_length=length, truncation=True,
                    return_tensors="pt")
    with torch.no_grad():
        return torch_unit(model.get_text_features(input_ids=ids["input_ids"]))


def pixels(n, size, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 3, size, size)).astype(np.float32)


# Two shapes: the tiny default, and a non-square-of-2 grid with patch 16 at 48 px
# (nothing may assume 224 or patch 32).
SHAPES = {
    "tiny": SIGLIP_TINY,
    "patch16_48px": dict(
        vision=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=1,
                    num_attention_heads=3, image_size=48, patch_size=16),
        text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2, max_position_embeddings=12, projection_size=48)),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_unit_embeddings_match_transformers(tmp_path, shape):
    spec = SHAPES[shape]
    torch_model = make_siglip_checkpoint(tmp_path, spec, seed=1)
    model = load_model(tmp_path)
    assert isinstance(model, SiglipModel) and model.family == "siglip"
    size = spec["vision"]["image_size"]
    pixel_values = pixels(3, size)
    diff = np.abs(model.embed_pixel_values(pixel_values) - torch_images(torch_model, pixel_values))
    assert diff.max() <= 1e-5, f"image embeddings differ by {diff.max()}"
    length = spec["text"]["max_position_embeddings"]
    got = model.embed_texts(TEXTS)
    diff = np.abs(got - torch_texts(torch_model, tmp_path, TEXTS, length))
    assert diff.max() <= 1e-5, f"text embeddings differ by {diff.max()}"
    assert model.logit_scale == pytest.approx(np.exp(2.5), rel=1e-6)
    assert model.logit_bias == pytest.approx(-3.0)


def test_texts_are_padded_to_the_maximum_length(tiny_siglip):
    folder, _ = tiny_siglip
    model = load_model(folder)
    batch = model.tokenize(TEXTS)
    length = SIGLIP_TINY["text"]["max_position_embeddings"]
    assert batch.input_ids.shape == (3, length) and (batch.lengths == length).all()
    # "a photo of a cat" + </s>, then </s> (the pad token, id 1) to the end.
    assert batch.input_ids[0, :6].tolist() == [3, 4, 5, 3, 6, 1]
    assert (batch.input_ids[0, 6:] == 1).all()
    # The last position is pooled, so padding changes the embedding: 16 is not 8.
    params, config = model.params, model.config
    ids8 = jnp.asarray(batch.input_ids[:1, :8])
    short = jax.jit(siglip.encode_texts, static_argnums=1)(params, config, ids8)
    assert np.abs(np.asarray(short) - model.embed_texts(TEXTS[:1])).max() > 1e-3


def test_long_texts_are_truncated_with_a_warning(tiny_siglip):
    folder, _ = tiny_siglip
    model = load_model(folder)
    with pytest.warns(UserWarning, match="1 of 2 text"):
        batch = model.tokenize(["cat " * 40, "dog"])
    assert batch.truncated == 1 and batch.input_ids.shape[1] == 16


def test_preprocessing_is_siglips(tiny_siglip):
    folder, _ = tiny_siglip
    pre = load_model(folder).preprocess_config
    # transformers' SiglipImageProcessor: square bicubic resize, no crop, mean = std = 0.5.
    assert pre.resize_size == (32, 32) and not pre.do_center_crop and pre.resample == 3
    assert pre.image_mean == (0.5, 0.5, 0.5) and pre.image_std == (0.5, 0.5, 0.5)
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    assert load_model(folder).preprocess([image]).shape == (1, 3, 32, 32)


def test_encoder_contract(tiny_siglip):
    folder, torch_model = tiny_siglip
    model = load_model(folder)
    encoder = model.encoder
    assert (encoder.image_size, encoder.embedding_dim) == (32, 32)
    assert encoder.logit_bias == pytest.approx(-3.0)
    pixel_values = pixels(2, 32, seed=3)
    v = jax.jit(encoder.embed_images)(encoder.params, jnp.asarray(pixel_values))
    assert v.shape == (2, 32)
    assert np.abs(np.asarray(v) - torch_images(torch_model, pixel_values)).max() <= 1e-5
    np.testing.assert_allclose(encoder.embed_texts(TEXTS), model.embed_texts(TEXTS), atol=1e-6)
    # Differentiable: d(v . u)/d pixels against a central finite difference.
    u = jnp.asarray(np.random.default_rng(4).normal(size=32), jnp.float32)
    f = jax.jit(lambda x: jnp.sum(encoder.embed_images(encoder.params, x) @ u))
    x = jnp.asarray(pixel_values[:1])
    g = jax.jit(jax.grad(f))(x)
    direction = jnp.asarray(np.random.default_rng(5).normal(size=x.shape), jnp.float32)
    eps = 1e-2
    numeric = (f(x + eps * direction) - f(x - eps * direction)) / (2 * eps)
    assert float(jnp.sum(g * direction)) == pytest.approx(float(numeric), rel=2e-2, abs=1e-4)


def test_strict_loading_names_missing_and_unexpected_tensors(tiny_siglip, tmp_path):
    folder, _ = tiny_siglip
    shutil.copytree(folder, tmp_path / "bad")
    state = load_file(tmp_path / "bad" / "model.safetensors")
    state.pop("vision_model.head.probe")
    state["vision_model.head.extra"] = np.zeros(3, np.float32)
    save_file(state, tmp_path / "bad" / "model.safetensors")
    with pytest.raises(ModelLoadError) as err:
        load_model(tmp_path / "bad", cache=False)
    message = str(err.value)
    assert "missing 1 tensor(s): vision_model.head.probe [1, 1, 32]" in message
    assert "unexpected 1 tensor(s): vision_model.head.extra [3]" in message


def test_families_and_unknown_layouts(tiny_siglip, tmp_path):
    folder, _ = tiny_siglip
    with pytest.raises(ModelLoadError, match="is a siglip checkpoint, not a CLIP: load it with "
                                             "convis_jax.load_model"):
        load_clip(folder)
    with pytest.raises(ModelLoadError, match="loaded siglip model, not a CLIP.*model.encoder"):
        load_clip(load_model(folder))
    naflex = tmp_path / "naflex"
    naflex.mkdir()
    (naflex / "config.json").write_text(json.dumps({"model_type": "siglip2"}))
    with pytest.raises(ModelLoadError, match="NaFlex SigLIP 2") as err:
        load_model(naflex)
    assert "\n" not in str(err.value)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelLoadError, match="unknown model layout .*model_type 'bert'.*supported "
                                             "layouts: Hugging Face CLIP .*SigLIP.*OpenCLIP"):
        load_model(other)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "weights.npz").write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"unknown model layout \(files \['weights.npz'\]\)"):
        load_model(empty)


def test_config_without_head_or_with_mismatched_widths_is_refused(tiny_siglip, tmp_path):
    folder, _ = tiny_siglip
    raw = json.loads((folder / "config.json").read_text())
    for change, match in ((("vision_config", "vision_use_head", False), "no pooled image"),
                          (("text_config", "projection_size", 16), "cannot be compared")):
        target = tmp_path / change[1]
        shutil.copytree(folder, target)
        edited = json.loads(json.dumps(raw))
        edited[change[0]][change[1]] = change[2]
        (target / "config.json").write_text(json.dumps(edited))
        with pytest.raises(ModelLoadError, match=match):
            load_model(target)


@pytest.mark.parametrize("section, field, value, match", [
    ("vision_config", "num_hidden_layers", 10**9, r"'vision_config.num_hidden_layers' must be in "
                                                  r"\[1, 256\], found 1000000000"),
    ("text_config", "hidden_size", "32", r"'text_config.hidden_size' must be an integer, found str"),
    ("vision_config", "layer_norm_eps", -1.0, r"'vision_config.layer_norm_eps' must be a finite "
                                              r"positive number"),
    ("vision_config", "hidden_act", "relu", r"'vision_config.hidden_act' must be one of"),
    ("vision_config", "num_attention_heads", 5, "not divisible by num_attention_heads 5"),
    ("vision_config", "patch_size", 64, "patch_size' 64 is larger than image_size 32"),
    ("text_config", "projection_size", 0, r"'text_config.projection_size' must be in \[1,"),
])
def test_malformed_config_fields_are_refused_before_building(tiny_siglip, section, field, value,
                                                             match):
    """SigLIP configs go through the same field checks (`config.LIMITS`) as CLIP's."""
    from convis_jax.models.config import SiglipConfig

    folder, _ = tiny_siglip
    raw = json.loads((folder / "config.json").read_text())
    raw[section][field] = value
    with pytest.raises(ModelLoadError, match=match):
        SiglipConfig.from_dict(raw, source="config.json")


HUB_PROBE = """
import json, sys
import numpy as np
from convis_jax.models.loading import load_model

out = {}
for repo, size in (("org/tiny-siglip", 32), ("org/tiny-open-clip", 32)):
    model = load_model(repo)
    pixel_values = np.random.default_rng(0).normal(size=(2, 3, size, size)).astype(np.float32)
    out[repo] = {"family": model.family, "fingerprint": model.fingerprint,
                 "images": model.embed_pixel_values(pixel_values).tolist(),
                 "texts": model.embed_texts(["a photo of a cat"]).tolist()}
print(json.dumps(out))
"""


def test_hub_ids_of_siglip_and_openclip_from_the_offline_cache(tiny_siglip, tmp_path):
    """Both families resolve from huggingface_hub's cache layout as CLIP does (offline)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.checkpoints import (
        lay_out_hub_cache,
        open_clip_reference,
        write_open_clip_folder,
    )

    folder, _ = tiny_siglip
    model_cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32,
                                                  "patch_size": 8, "head_width": 8},
                 "text_cfg": {"width": 32, "heads": 4, "layers": 1}}
    oc = write_open_clip_folder(tmp_path / "oc", model_cfg,
                                open_clip_reference(model_cfg).state_dict())
    hub = tmp_path / "hf" / "hub"
    lay_out_hub_cache(hub, "org/tiny-siglip", folder)
    lay_out_hub_cache(hub, "org/tiny-open-clip", oc)
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_HUB_CACHE=str(hub),
               HF_HUB_OFFLINE="1", PYTHONPATH=str(repo))
    result = subprocess.run([sys.executable, "-c", HUB_PROBE], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for repo_id, local in (("org/tiny-siglip", folder), ("org/tiny-open-clip", oc)):
        got, model = report[repo_id], load_model(local)
        assert got["family"] == model.family and got["fingerprint"] == model.fingerprint
        pixel_values = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
        np.testing.assert_allclose(got["images"], model.embed_pixel_values(pixel_values), atol=1e-6)
        np.testing.assert_allclose(got["texts"], model.embed_texts(["a photo of a cat"]), atol=1e-6)


def test_concept_bank_of_a_siglip_model_keeps_the_full_padding(tiny_siglip, tmp_path):
    """build_bank's length buckets must not cut SigLIP's padding: equal to embed_texts."""
    from convis_jax.api import resolve_vocabulary
    from convis_jax.kernels.bank import build_bank
    from convis_jax.testing import write_words_file

    folder, torch_model = tiny_siglip
    model = load_model(folder)
    vocabulary = resolve_vocabulary(write_words_file(tmp_path))
    with pytest.warns(UserWarning, match="truncated"):  # some lemma lists exceed 16 words
        bank = build_bank(model, vocabulary, text="lemmas", cache=False, batch_size=8,
                          progress=False)
    texts = vocabulary.texts("lemmas")
    length = SIGLIP_TINY["text"]["max_position_embeddings"]
    np.testing.assert_allclose(bank.embeddings, torch_texts(torch_model, folder, texts, length),
                               atol=1e-5)
