"""OpenCLIP checkpoints in the hub layout, loaded onto the Flax CLIP.

OpenCLIP's own package cannot be imported on this machine: `open_clip`
imports torchvision when it is imported (`open_clip/utils.py`: `from
torchvision.ops.misc import FrozenBatchNorm2d`), and the only torchvision
0.28.0 (the release pinned to torch 2.13.0) the package index here serves is
the CUDA build, whose `_C.so` links libtorch_cuda.so, which torch 2.13.0+cpu
lacks (`import torchvision` fails: "operator torchvision::nms does not
exist"); download.pytorch.org, which has the CPU build, is unreachable. So the
reference is `checkpoints.open_clip_reference`: OpenCLIP's ViT-CLIP written
out in PyTorch (`nn.MultiheadAttention` with its fused `in_proj_weight`,
QuickGELU or GELU, argmax text pooling over 0-padded ids, the causal
`attn_mask` buffer), whose `state_dict()` is what OpenCLIP saves. That
reference was checked once against `open_clip.model.CLIP` 3.3.0 itself
(imported with a placeholder torchvision; same keys and shapes for ViT-B-16,
ViT-L-14, ViT-L-14-336, ViT-B-32-quickgelu; outputs within 1e-7), and the
loader against OpenCLIP's model within 2.3e-7, full depth included (see
scripts/check_open_clip_parity.py).
"""

import copy
import json
import shutil

import jax
import numpy as np
import pytest

from convis_jax.errors import ModelLoadError
from convis_jax.models.checkpoints import detect_family
from convis_jax.models.loading import load_clip, load_model
from convis_jax.models.model import ClipModel
from tests.checkpoints import open_clip_reference, write_open_clip_folder

TEXTS = ["a photo of a cat", "fish &amp; chips", "an entity with a much longer description"]


def cfg(image_size=32, patch_size=8, width=32, head_width=8, layers=2, text_width=32,
        text_heads=4, text_layers=2, embed_dim=16, quick_gelu=False):
    """OpenCLIP's model_cfg (CLIPVisionCfg / CLIPTextCfg keys)."""
    return {"embed_dim": embed_dim, "quick_gelu": quick_gelu,
            "vision_cfg": {"image_size": image_size, "layers": layers, "width": width,
                           "patch_size": patch_size, "head_width": head_width},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": text_width,
                         "heads": text_heads, "layers": text_layers}}


def reference_embeddings(reference, pixel_values, token_ids):
    """The reference's unit embeddings; texts 0-padded to 77 as open_clip.tokenize does."""
    import torch

    ids = np.zeros((len(token_ids), 77), np.int64)
    for i, row in enumerate(token_ids):
        row = [t for t in row if t != 49407] + [49407]  # our padding (EOS) -> OpenCLIP's (0)
        ids[i, :len(row)] = row
    with torch.no_grad():
        return (reference.encode_image(torch.from_numpy(pixel_values)).numpy(),
                reference.encode_text(torch.from_numpy(ids)).numpy())


def assert_matches_reference(model, reference, size, tol=1e-5):
    pixel_values = np.random.default_rng(0).normal(size=(2, 3, size, size)).astype(np.float32)
    images, texts = reference_embeddings(reference, pixel_values, model.tokenize(TEXTS).input_ids)
    diff = np.abs(model.embed_pixel_values(pixel_values) - images).max()
    assert diff <= tol, f"image embeddings differ by {diff}"
    diff = np.abs(model.embed_texts(TEXTS) - texts).max()
    assert diff <= tol, f"text embeddings differ by {diff}"


@pytest.mark.parametrize("quick_gelu", [False, True])
def test_safetensors_match_the_reference(tmp_path, quick_gelu):
    model_cfg = cfg(quick_gelu=quick_gelu)
    reference = open_clip_reference(model_cfg, seed=1)
    folder = write_open_clip_folder(tmp_path, model_cfg, reference.state_dict())
    assert detect_family(folder) == "open_clip"
    model = load_model(folder)
    assert isinstance(model, ClipModel) and model.family == "open_clip"
    want = "quick_gelu" if quick_gelu else "gelu"
    assert model.config.vision.hidden_act == model.config.text.hidden_act == want
    assert model.config.vision.num_attention_heads == 4  # width 32 / head_width 8
    assert_matches_reference(model, reference, 32)
    assert model.logit_scale == pytest.approx(np.exp(2.9), rel=1e-6)
    # OpenCLIP unescapes HTML entities twice before BPE (CLIPTokenizer does not).
    ids = model.tokenize(["fish &amp;amp; chips", "fish & chips"]).input_ids
    assert (ids[0] == ids[1]).all()


def test_pytorch_bin_with_the_mask_buffer_and_custom_text_prefix(tmp_path):
    model_cfg = dict(cfg(), custom_text=True)
    reference = open_clip_reference(model_cfg, seed=2)
    state = reference.state_dict()
    # CustomTextCLIP keeps the text tower under `text.`; old checkpoints saved the mask.
    visual = {k: v for k, v in state.items() if k.startswith("visual.") or k == "logit_scale"}
    text = {f"text.{k}": v for k, v in state.items() if k not in visual}
    text["text.attn_mask"] = reference.attn_mask
    folder = write_open_clip_folder(tmp_path, model_cfg, {**visual, **text}, weights="bin")
    model = load_model(folder)
    assert_matches_reference(model, reference, 32)


def test_pytorch_bin_is_converted_once(tmp_path, monkeypatch):
    """OpenCLIP's pickle goes through the converted-weight cache like pytorch_model.bin."""
    from convis_jax.core.cache import CACHE_ENV
    from convis_jax.models import checkpoints

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    model_cfg = cfg()
    reference = open_clip_reference(model_cfg, seed=5)
    folder = write_open_clip_folder(tmp_path / "oc", model_cfg, reference.state_dict(),
                                    weights="bin")
    first = load_model(folder)
    reads = []
    real = checkpoints.read_state_dict
    monkeypatch.setattr(checkpoints, "read_state_dict",
                        lambda *args: reads.append(args) or real(*args))
    second = load_model(folder)
    assert reads == [] and len(list((tmp_path / "cache" / "converted").iterdir())) == 1
    for a, b in zip(jax.tree_util.tree_leaves(first.params), jax.tree_util.tree_leaves(second.params)):
        np.testing.assert_array_equal(a, b)


# Real checkpoints' vision shapes (width, heads, patch, input size), depth cut to one layer;
# nothing may assume 224 pixels or patch 32.
REAL_SHAPES = {
    "ViT-B-16": dict(image_size=224, patch_size=16, width=768, head_width=64, embed_dim=512),
    "ViT-L-14": dict(image_size=224, patch_size=14, width=1024, head_width=64, embed_dim=768),
    "ViT-L-14-336": dict(image_size=336, patch_size=14, width=1024, head_width=64,
                         embed_dim=768),
}


@pytest.mark.parametrize("name", sorted(REAL_SHAPES))
def test_real_vision_shapes(tmp_path, name):
    model_cfg = cfg(layers=1, text_layers=1, **REAL_SHAPES[name])
    reference = open_clip_reference(model_cfg, seed=3)
    folder = write_open_clip_folder(tmp_path, model_cfg, reference.state_dict())
    model = load_model(folder, cache=False)
    v = model.config.vision
    shape = REAL_SHAPES[name]
    assert (v.image_size, v.patch_size, v.hidden_size, v.num_attention_heads) == (
        shape["image_size"], shape["patch_size"], shape["width"], shape["width"] // 64)
    assert v.grid_size == shape["image_size"] // shape["patch_size"]  # 14, 16, 24
    assert model.preprocess_config.crop_size == (v.image_size, v.image_size)
    assert_matches_reference(model, reference, v.image_size)


def test_preprocessing_follows_the_config(tmp_path):
    model_cfg = cfg()
    reference = open_clip_reference(model_cfg)
    folder = write_open_clip_folder(
        tmp_path, model_cfg, reference.state_dict(),
        preprocess_cfg={"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.5, 0.75],
                        "interpolation": "bilinear", "resize_mode": "squash", "size": 32})
    pre = load_clip(folder).preprocess_config  # load_clip takes OpenCLIP folders too
    assert pre.image_mean == (0.5, 0.5, 0.5) and pre.image_std == (0.25, 0.5, 0.75)
    assert pre.resize_size == (32, 32) and pre.shortest_edge is None and pre.resample == 2
    default = write_open_clip_folder(tmp_path / "default", model_cfg, reference.state_dict())
    pre = load_model(default).preprocess_config
    assert pre.shortest_edge == 32 and pre.crop_size == (32, 32) and pre.resample == 3


@pytest.mark.parametrize("section, key, value", [
    ("vision_cfg", "ls_init_value", 1e-5),
    ("vision_cfg", "timm_model_name", "vit_base_patch16_siglip_224"),
    ("vision_cfg", "attentional_pool", True),
    ("text_cfg", "hf_tokenizer_name", "timm/ViT-B-16-SigLIP"),
    ("text_cfg", "pool_type", "last"),
    (None, "init_logit_bias", -10),
])
def test_unsupported_options_are_named(tmp_path, section, key, value):
    model_cfg = copy.deepcopy(cfg())
    (model_cfg[section] if section else model_cfg)[key] = value
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    where = f"model_cfg.{section}.{key}" if section else f"model_cfg.{key}"
    with pytest.raises(ModelLoadError, match=f"{where} = .* is not supported") as err:
        load_model(tmp_path)
    assert "\n" not in str(err.value)


def test_strict_names_are_openclips_leftovers(tmp_path):
    model_cfg = cfg()
    state = open_clip_reference(model_cfg).state_dict()
    state.pop("visual.ln_pre.weight")
    state["visual.transformer.resblocks.0.ls_1.gamma"] = state["visual.class_embedding"].clone()
    folder = write_open_clip_folder(tmp_path, model_cfg, state)
    with pytest.raises(ModelLoadError) as err:
        load_model(folder, cache=False)
    message = str(err.value)
    assert "missing 1 tensor(s): vision_model.pre_layrnorm.weight [32]" in message
    assert "unexpected 1 tensor(s): vision_model.encoder.layers.0.ls_1.gamma [32]" in message


def test_a_folder_with_both_layouts_loads_as_hugging_face_clip(tiny_checkpoint, tmp_path):
    folder, _ = tiny_checkpoint
    shutil.copytree(folder, tmp_path / "both")
    (tmp_path / "both" / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg()}))
    assert detect_family(tmp_path / "both") == "clip"


def test_convis_takes_an_openclip_folder_unchanged(tmp_path):
    """ConVis(folder) on the OpenCLIP layout draws the maps of the same weights as a
    Hugging Face CLIP folder: occlusion and gradient maps equal."""
    from safetensors.numpy import save_file

    from convis_jax.api import ConVis
    from convis_jax.models.openclip import clip_state
    from convis_jax.testing import write_words_file

    model_cfg = cfg()
    reference = open_clip_reference(model_cfg, seed=4)
    folder = write_open_clip_folder(tmp_path / "oc", model_cfg, reference.state_dict())
    hf = tmp_path / "hf"
    hf.mkdir()
    state = clip_state({k: v.numpy() for k, v in reference.state_dict().items()})
    save_file({k: np.asarray(v, order="C") for k, v in state.items()}, str(hf / "model.safetensors"))
    (hf / "config.json").write_text(json.dumps(load_model(folder).config.to_dict()))
    words = write_words_file(tmp_path)
    photo = np.random.default_rng(7).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    maps = {}
    for name, path in (("open_clip", folder), ("clip", hf)):
        convis = ConVis(str(path), words, text="lemmas", progress=False)
        assert convis.model.family == name
        maps[name] = (convis.occlusion_maps(photo, ["dog", "car"], window_sizes=(128,),
                                            stride=64),
                      convis.gradient_maps(photo, ["dog", "car"]))
    for got, want in zip(maps["open_clip"], maps["clip"]):
        np.testing.assert_allclose(got, want, atol=1e-5)
