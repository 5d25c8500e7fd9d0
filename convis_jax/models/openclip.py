"""OpenCLIP checkpoints (the hub layout `open_clip_config.json` + weights) onto the Flax CLIP.

An OpenCLIP ViT-CLIP is the same network as Hugging Face's CLIPModel under
other names: `ClipConfig` is read from `open_clip_config.json`
(`model_cfg`), and `clip_state` renames the OpenCLIP state dict to the
PyTorch CLIPModel keys, after which `pytorch_names.pytorch_to_flax` converts
it strictly like any CLIP checkpoint. The rules:

| OpenCLIP key                                   | CLIPModel key                                        |
|------------------------------------------------|------------------------------------------------------|
| `visual.conv1.weight`                          | `vision_model.embeddings.patch_embedding.weight`     |
| `visual.class_embedding`                       | `vision_model.embeddings.class_embedding`            |
| `visual.positional_embedding`                  | `vision_model.embeddings.position_embedding.weight`  |
| `visual.ln_pre` / `visual.ln_post`             | `vision_model.pre_layrnorm` / `.post_layernorm`      |
| `visual.transformer.resblocks.N.`              | `vision_model.encoder.layers.N.`                     |
| `transformer.resblocks.N.`                     | `text_model.encoder.layers.N.`                       |
| `.ln_1` / `.ln_2`                              | `.layer_norm1` / `.layer_norm2`                      |
| `.attn.in_proj_weight` [3D, D] (and `_bias`)   | `.self_attn.{q,k,v}_proj.weight` [D, D] (thirds)     |
| `.attn.out_proj`                               | `.self_attn.out_proj`                                |
| `.mlp.c_fc` / `.mlp.c_proj`                    | `.mlp.fc1` / `.mlp.fc2`                              |
| `visual.proj` [D, d] (x @ proj)                | `visual_projection.weight` [d, D] (transposed)       |
| `text_projection` [D, d]                       | `text_projection.weight` [d, D] (transposed)         |
| `token_embedding.weight`, `positional_embedding` | `text_model.embeddings.{token,position}_embedding.weight` |
| `ln_final`                                     | `text_model.final_layer_norm`                        |
| `logit_scale`                                  | `logit_scale`                                        |

`CustomTextCLIP` checkpoints (`custom_text`) put the text keys under `text.`;
that prefix is dropped. `attn_mask` (the causal mask, a buffer that old
checkpoints saved) is not a parameter and is dropped. Any other key stays as
it is, so the strict conversion names it as unexpected.

Only the plain ViT-CLIP loads: `ModelLoadError` names the first option a
config sets that this network does not have (timm or ResNet towers, layer
scale, attentional pooling, Hugging Face text towers or tokenizers, a
sigmoid logit bias, ...). The text is tokenised with CLIP's BPE vocabulary,
which is OpenCLIP's default tokenizer, and padded like every CLIP (the
causal tower pools at the end-of-text token, the largest id, as OpenCLIP's
`argmax` pooling does).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from convis_jax.errors import InputError, ModelLoadError
from convis_jax.models.checkpoints import OPEN_CLIP_CONFIG as CONFIG_FILE
from convis_jax.models.config import ClipConfig, TextConfig, VisionConfig
from convis_jax.models.preprocessing import CLIP_MEAN, CLIP_STD, PreprocessConfig

# Options of OpenCLIP's CLIPVisionCfg / CLIPTextCfg that this network implements only at
# these values (None: the option must be absent or null). Anything else is refused.
_VISION_FIXED = {"ls_init_value": None, "attentional_pool": False, "no_ln_pre": False,
                 "pos_embed_type": "learnable", "pool_type": "tok", "timm_model_name": None,
                 "input_patchnorm": False, "global_average_pool": False, "act_kwargs": None,
                 "block_type": None, "qk_norm": False, "scaled_cosine_attn": False,
                 "scale_heads": False, "scale_attn_inner": False, "scale_attn": False,
                 "scale_fc": False}
_TEXT_FIXED = {"ls_init_value": None, "embed_cls": False, "no_causal_mask": False,
               "pool_type": "argmax", "proj_bias": False, "proj_type": "linear",
               "hf_model_name": None, "hf_tokenizer_name": None, "tokenizer_mode": None,
               "act_kwargs": None, "block_type": None, "qk_norm": False,
               "scaled_cosine_attn": False, "scale_heads": False, "scale_attn_inner": False,
               "scale_attn": False, "scale_fc": False}
_MODEL_FIXED = {"init_logit_bias": None}
# OpenCLIP's interpolation names -> Pillow filters.
_RESAMPLE = {"bicubic": 3, "bilinear": 2, "nearest": 0}
# The BPE vocabulary OpenCLIP's default tokenizer shares with CLIP.
CLIP_VOCAB_SIZE = 49408


def read_config(folder: Path) -> tuple[ClipConfig, PreprocessConfig]:
    """The architecture and preprocessing named by `folder/open_clip_config.json`.

    Args:
        folder: an OpenCLIP hub folder.

    Returns:
        (ClipConfig, PreprocessConfig): the towers as CLIPModel would describe them
        (heads = width / head_width for the image tower, the MLP width = width *
        mlp_ratio, QuickGELU when `quick_gelu` is set, else exact GELU), and
        OpenCLIP's evaluation transform: shortest-edge resize (or "squash") to
        `size`, centre crop, CLIP's or the config's mean and std.

    Raises:
        ModelLoadError: the file is unreadable, or describes a network this one is not.
    """
    path = Path(folder) / CONFIG_FILE
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"{path} is not a readable JSON file: {err}") from None
    model = raw.get("model_cfg") if isinstance(raw, dict) else None
    if not isinstance(model, dict):
        raise ModelLoadError(f"{path}: expected an object with a 'model_cfg' object")
    source = str(path)
    vision_cfg, text_cfg = model.get("vision_cfg"), model.get("text_cfg")
    if not isinstance(vision_cfg, dict) or not isinstance(text_cfg, dict):
        raise ModelLoadError(f"{source}: expected 'model_cfg' with 'vision_cfg' and 'text_cfg' "
                             f"objects, found keys {sorted(model)}")
    _check_fixed(model, _MODEL_FIXED, source, "model_cfg",
                 why="a sigmoid (SigLIP-style) OpenCLIP model")
    _check_fixed(vision_cfg, _VISION_FIXED, source, "model_cfg.vision_cfg")
    _check_fixed(text_cfg, _TEXT_FIXED, source, "model_cfg.text_cfg")
    act = "quick_gelu" if model.get("quick_gelu", False) else "gelu"
    try:
        vision = _vision_config(vision_cfg, act)
        text = _text_config(text_cfg, act)
        embed_dim = int(model["embed_dim"])
    except (KeyError, TypeError, ValueError) as err:
        raise ModelLoadError(f"{source}: malformed model_cfg ({type(err).__name__}: {err})") from None
    for name, tower in (("vision_cfg", vision), ("text_cfg", text)):
        if tower.hidden_size % tower.num_attention_heads:
            raise ModelLoadError(f"{source}: {name} width {tower.hidden_size} is not divisible by "
                                 f"its {tower.num_attention_heads} heads")
    if text.vocab_size != CLIP_VOCAB_SIZE:
        raise ModelLoadError(f"{source}: text_cfg.vocab_size {text.vocab_size} is not CLIP's BPE "
                             f"vocabulary ({CLIP_VOCAB_SIZE}), the only tokenizer supported")
    config = ClipConfig(vision=vision, text=text, projection_dim=embed_dim)
    return config, _preprocess_config(raw.get("preprocess_cfg") or {}, vision_cfg,
                                      vision.image_size, source)


def _check_fixed(section: dict, fixed: dict, source: str, where: str, *, why: str = "") -> None:
    for key, want in fixed.items():
        value = section.get(key)
        if value is None or value == want or (want is None and value in ({}, "")):
            continue
        note = f" ({why})" if why else ""
        raise ModelLoadError(f"{source}: {where}.{key} = {value!r} is not supported{note}: only "
                             f"the plain OpenCLIP ViT-CLIP loads")


def _square(value, name: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise ValueError(f"{name} must be square, found {list(value)}")
        value = value[0]
    return int(value)


def _eps(section: dict) -> float:
    norm_kwargs = section.get("norm_kwargs") or {}
    extra = set(norm_kwargs) - {"eps"}
    if extra:
        raise ValueError(f"norm_kwargs {sorted(extra)} are not supported (only eps)")
    return float(norm_kwargs.get("eps", 1e-5))  # torch.nn.LayerNorm's default


def _vision_config(cfg: dict, act: str) -> VisionConfig:
    layers = cfg.get("layers", 12)
    if not isinstance(layers, int):
        raise ValueError(f"vision_cfg.layers {layers!r} describes a ResNet tower, not a ViT")
    width = int(cfg.get("width", 768))
    return VisionConfig(hidden_size=width,
                        intermediate_size=int(width * float(cfg.get("mlp_ratio", 4.0))),
                        num_hidden_layers=layers,
                        num_attention_heads=width // int(cfg.get("head_width", 64)),
                        hidden_act=act, layer_norm_eps=_eps(cfg),
                        image_size=_square(cfg.get("image_size", 224), "image_size"),
                        patch_size=_square(cfg.get("patch_size", 16), "patch_size"))


def _text_config(cfg: dict, act: str) -> TextConfig:
    width = int(cfg.get("width", 512))
    # Pooling at argmax(ids) is the first end-of-text token; CLIPModel's rule for a
    # config with eos_token_id 49407 (the id of CLIP's <|endoftext|>) is the same.
    return TextConfig(hidden_size=width,
                      intermediate_size=int(width * float(cfg.get("mlp_ratio", 4.0))),
                      num_hidden_layers=int(cfg.get("layers", 12)),
                      num_attention_heads=int(cfg.get("heads", 8)), hidden_act=act,
                      layer_norm_eps=_eps(cfg),
                      vocab_size=int(cfg.get("vocab_size", CLIP_VOCAB_SIZE)),
                      max_position_embeddings=int(cfg.get("context_length", 77)),
                      pad_token_id=int(cfg.get("pad_id", 0)))


def _preprocess_config(cfg: dict, vision_cfg: dict, image_size: int,
                       source: str) -> PreprocessConfig:
    """OpenCLIP's evaluation transform (`image_transform(is_train=False)`) as a PreprocessConfig."""
    size = cfg.get("size", image_size)
    mode = cfg.get("resize_mode") or "shortest"
    interpolation = cfg.get("interpolation") or "bicubic"
    try:
        size = _square(size, "preprocess_cfg.size")
        if interpolation not in _RESAMPLE:
            raise ValueError(f"interpolation {interpolation!r} is not one of {sorted(_RESAMPLE)}")
        if mode not in ("shortest", "squash"):
            raise ValueError(f"resize_mode {mode!r} is not supported (only 'shortest', 'squash')")
        mean = cfg.get("mean") or vision_cfg.get("image_mean") or CLIP_MEAN
        std = cfg.get("std") or vision_cfg.get("image_std") or CLIP_STD
        shape = dict(shortest_edge=size) if mode == "shortest" else \
            dict(shortest_edge=None, resize_size=(size, size))
        return PreprocessConfig(**shape, crop_size=(size, size),
                                resample=_RESAMPLE[interpolation],
                                image_mean=tuple(float(m) for m in mean),
                                image_std=tuple(float(s) for s in std))
    except (ValueError, TypeError, InputError) as err:
        raise ModelLoadError(f"{source}: preprocess_cfg: {err}") from None


# ------------------------------------------------------------------ names

_BLOCK_RULES = (
    ("ln_1.", "layer_norm1."),
    ("ln_2.", "layer_norm2."),
    ("attn.out_proj.", "self_attn.out_proj."),
    ("mlp.c_fc.", "mlp.fc1."),
    ("mlp.c_proj.", "mlp.fc2."),
)
_RENAMES = {
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
}
_TRANSPOSED = {"visual.proj": "visual_projection.weight",
               "text_projection": "text_projection.weight"}
_BLOCK = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")
_TEXT_KEYS = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.",
              "text_projection", "attn_mask")


def clip_state(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Renames an OpenCLIP ViT-CLIP state dict to the PyTorch CLIPModel keys (see the table above).

    Args:
        state: OpenCLIP key -> array, as read from the checkpoint.

    Returns:
        CLIPModel key -> array; keys no rule covers are kept unchanged, so that
        `pytorch_to_flax` reports them as unexpected.
    """
    out = {}
    for key, value in state.items():
        if key.startswith("module."):  # saved from DistributedDataParallel
            key = key[len("module."):]
        if key.startswith("text.") and key[len("text."):].startswith(_TEXT_KEYS):
            key = key[len("text."):]  # CustomTextCLIP
        if key == "attn_mask":
            continue  # the causal mask buffer: not a parameter
        value = np.asarray(value)
        if key in _RENAMES:
            out[_RENAMES[key]] = value
        elif key in _TRANSPOSED:
            out[_TRANSPOSED[key]] = np.ascontiguousarray(value.T) if value.ndim == 2 else value
        elif (match := _BLOCK.match(key)) is not None:
            tower = "vision_model" if match.group(1) else "text_model"
            prefix, rest = f"{tower}.encoder.layers.{match.group(2)}.", match.group(3)
            if rest in ("attn.in_proj_weight", "attn.in_proj_bias") and value.shape[0] % 3 == 0:
                leaf = "weight" if rest.endswith("weight") else "bias"
                for name, part in zip("qkv", np.split(value, 3, axis=0)):
                    out[f"{prefix}self_attn.{name}_proj.{leaf}"] = part
                continue
            for old, new in _BLOCK_RULES:
                if rest.startswith(old):
                    rest = new + rest[len(old):]
                    break
            out[prefix + rest] = value
        else:
            out[key] = value
    return out
