"""Architectures read from a Hugging Face `config.json`: CLIPConfig and SiglipConfig."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from convis_jax.errors import ModelLoadError

ACTIVATIONS = ("quick_gelu", "gelu")
# SigLIP's towers use the tanh approximation of GELU (PyTorch's approximate="tanh").
SIGLIP_ACTIVATIONS = ACTIVATIONS + ("gelu_pytorch_tanh",)

# Upper bounds of the integer fields, far above any published CLIP (ViT-bigG: 48 layers,
# width 1664, 8192 MLP; text contexts of 77 or 248 tokens) and low enough that a typo such
# as 1e9 layers is refused before the parameter tree is built (which grows with depth).
LIMITS = {
    "hidden_size": 16384, "intermediate_size": 65536, "num_hidden_layers": 256,
    "num_attention_heads": 256, "image_size": 4096, "patch_size": 4096, "num_channels": 16,
    "vocab_size": 1 << 22, "max_position_embeddings": 8192, "projection_dim": 16384,
    "projection_size": 16384,  # SigLIP's text head
}
# Fields that are token ids: in [0, vocab_size).
_TOKEN_IDS = ("pad_token_id", "bos_token_id", "eos_token_id")


@dataclass(frozen=True)
class TowerConfig:
    """Fields shared by the vision and the text transformer."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclass(frozen=True)
class VisionConfig(TowerConfig):
    """The ViT image tower (CLIPVisionConfig)."""

    image_size: int = 224
    patch_size: int = 32
    num_channels: int = 3

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size


@dataclass(frozen=True)
class TextConfig(TowerConfig):
    """The causal text transformer (CLIPTextConfig)."""

    vocab_size: int = 49408
    max_position_embeddings: int = 77
    pad_token_id: int = 1
    bos_token_id: int = 49406
    eos_token_id: int = 49407


# transformers' defaults for the fields a config.json may leave out.
_VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                        num_attention_heads=12)
_TEXT_DEFAULTS = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                      num_attention_heads=8)


@dataclass(frozen=True)
class ClipConfig:
    """A whole CLIP: both towers, the projection width and the initial logit scale."""

    vision: VisionConfig
    text: TextConfig
    projection_dim: int = 512
    logit_scale_init_value: float = 2.6592

    @classmethod
    def from_dict(cls, raw: dict, *, source: str = "config") -> "ClipConfig":
        """Builds the config from the dict of a Hugging Face CLIPConfig.

        Raises:
            ModelLoadError: a tower's section is missing, or a field is malformed.
        """
        if not isinstance(raw, dict):
            raise ModelLoadError(f"{source}: expected a JSON object, found {type(raw).__name__}")
        towers = {}
        for key, tower_cls, defaults in (("vision_config", VisionConfig, _VISION_DEFAULTS),
                                         ("text_config", TextConfig, _TEXT_DEFAULTS)):
            section = raw.get(key) or {}
            legacy = raw.get(f"{key}_dict")
            for name, value in ((key, section), (f"{key}_dict", legacy)):
                if value is not None and not isinstance(value, dict):
                    raise ModelLoadError(f"{source}: '{name}' must be a JSON object, found "
                                         f"{type(value).__name__}")
            section = dict(section)
            if legacy is not None:
                # Old checkpoints carry `*_config_dict`; transformers rebuilds the tower
                # from the tower's defaults plus that dict, which then wins over `key`
                # (so a stale eos_token_id 2 in `key` gives way to the default 49407).
                names = {f.name for f in dataclasses.fields(tower_cls)}
                fresh = {f.name: f.default for f in dataclasses.fields(tower_cls)
                         if f.default is not dataclasses.MISSING}
                section.update({**fresh, **defaults, **{k: v for k, v in legacy.items()
                                                         if k in names}})
            if not section:
                raise ModelLoadError(
                    f"{source}: expected a CLIPConfig with a '{key}' section, found keys "
                    f"{sorted(raw)}")
            names = {f.name for f in dataclasses.fields(tower_cls)}
            values = dict(defaults)
            values.update({k: v for k, v in section.items() if k in names and v is not None})
            if isinstance(values.get("eos_token_id"), list) and values["eos_token_id"]:
                values["eos_token_id"] = values["eos_token_id"][0]
            _check_tower(values, tower_cls, f"{source}: '{key}")
            towers[key] = tower_cls(**values)
        projection_dim = raw.get("projection_dim", 512)
        _check_int(projection_dim, f"{source}: 'projection_dim'", LIMITS["projection_dim"])
        scale = raw.get("logit_scale_init_value", 2.6592)
        _check_float(scale, f"{source}: 'logit_scale_init_value'")
        return cls(vision=towers["vision_config"], text=towers["text_config"],
                   projection_dim=projection_dim, logit_scale_init_value=float(scale))

    @classmethod
    def from_json(cls, path: str | Path) -> "ClipConfig":
        """Reads a `config.json` file."""
        return cls.from_dict(read_config_json(path), source=str(path))

    def to_dict(self) -> dict:
        """The Hugging Face CLIPConfig dict for this architecture (for `save_pretrained`-style folders)."""
        vision = dataclasses.asdict(self.vision)
        text = dataclasses.asdict(self.text)
        return {
            "architectures": ["CLIPModel"],
            "model_type": "clip",
            "projection_dim": self.projection_dim,
            "logit_scale_init_value": self.logit_scale_init_value,
            "vision_config": dict(vision, model_type="clip_vision_model"),
            "text_config": dict(text, model_type="clip_text_model"),
        }


def _check_int(value, where: str, upper: int, lower: int = 1) -> None:
    """A JSON integer in [lower, upper], else a one-line `ModelLoadError` naming the field."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelLoadError(f"{where} must be an integer, found {type(value).__name__} "
                             f"{value!r}")
    if not lower <= value <= upper:
        raise ModelLoadError(f"{where} must be in [{lower}, {upper}], found {value}")


def _check_float(value, where: str, positive: bool = False) -> None:
    """A finite JSON number (positive when asked), else a one-line `ModelLoadError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ModelLoadError(f"{where} must be a number, found {type(value).__name__} {value!r}")
    if value != value or value in (float("inf"), float("-inf")) or (positive and value <= 0):
        raise ModelLoadError(f"{where} must be a finite{' positive' if positive else ''} "
                             f"number, found {value}")


def _check_tower(values: dict, tower_cls: type, where: str, activations=ACTIVATIONS,
                 token_ids=_TOKEN_IDS) -> None:
    """Validates one tower's fields (types, ranges, consistency) before it is built.

    Args:
        values: field name -> value, defaults filled in.
        tower_cls: VisionConfig or TextConfig, or a subclass (SigLIP's).
        where: "<source>: '<section>" (the field name and a closing quote are appended).
        activations: the accepted `hidden_act` values.
        token_ids: the text fields that must be ids in [0, vocab_size).

    Raises:
        ModelLoadError: one line naming the first bad field and what it holds.
    """
    missing = [f.name for f in dataclasses.fields(tower_cls)
               if f.default is dataclasses.MISSING and f.name not in values]
    if missing:
        raise ModelLoadError(f"{where}' lacks {', '.join(missing)}")
    for name, value in values.items():
        if name in LIMITS:
            _check_int(value, f"{where}.{name}'", LIMITS[name])
    _check_float(values.get("layer_norm_eps", 1e-5), f"{where}.layer_norm_eps'", positive=True)
    act = values.get("hidden_act", "quick_gelu")
    if act not in activations:
        raise ModelLoadError(f"{where}.hidden_act' must be one of {activations}, found {act!r}")
    if values["hidden_size"] % values["num_attention_heads"]:
        raise ModelLoadError(
            f"{where}.hidden_size' {values['hidden_size']} is not divisible by "
            f"num_attention_heads {values['num_attention_heads']}")
    if issubclass(tower_cls, VisionConfig):
        image, patch = values.get("image_size", 224), values.get("patch_size", 32)
        if patch > image:
            raise ModelLoadError(f"{where}.patch_size' {patch} is larger than image_size {image}")
    if issubclass(tower_cls, TextConfig):
        _check_int(values.get("max_position_embeddings", 77),
                   f"{where}.max_position_embeddings'", LIMITS["max_position_embeddings"], 2)
        vocab = values.get("vocab_size", 49408)
        for name in token_ids:
            if name in values:
                _check_int(values[name], f"{where}.{name}'", vocab - 1, 0)


# ------------------------------------------------------------------ SigLIP


@dataclass(frozen=True)
class SiglipVisionConfig(VisionConfig):
    """SigLIP's ViT (SiglipVisionConfig): no class token, an attention-pooling head."""

    vision_use_head: bool = True


@dataclass(frozen=True)
class SiglipTextConfig(TextConfig):
    """SigLIP's text transformer (SiglipTextConfig): bidirectional, last-token pooling, a head."""

    projection_size: int = 768


# transformers' SiglipVisionConfig / SiglipTextConfig defaults.
_SIGLIP_VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                               num_attention_heads=12, image_size=224, patch_size=16,
                               hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)
_SIGLIP_TEXT_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                             num_attention_heads=12, vocab_size=32000,
                             max_position_embeddings=64, hidden_act="gelu_pytorch_tanh",
                             layer_norm_eps=1e-6, pad_token_id=1, bos_token_id=49406,
                             eos_token_id=49407)


@dataclass(frozen=True)
class SiglipConfig:
    """A whole SigLIP (model_type "siglip"): both towers; the embedding width is the vision width.

    Fixed-resolution SigLIP 2 checkpoints (e.g. google/siglip2-base-patch16-224)
    are written with model_type "siglip" and this architecture; the NaFlex
    SigLIP 2 (model_type "siglip2": a linear patch embedding of flattened
    patches and position embeddings resized per image) is another one.
    """

    vision: SiglipVisionConfig
    text: SiglipTextConfig

    @property
    def projection_dim(self) -> int:
        """The embedding width d (the pooled vision width, which the text head maps to)."""
        return self.vision.hidden_size

    @classmethod
    def from_dict(cls, raw: dict, *, source: str = "config") -> "SiglipConfig":
        """Builds the config from the dict of a Hugging Face SiglipConfig.

        Fields a section leaves out take transformers' defaults (a missing
        `projection_size` is the text width, as in transformers).

        Raises:
            ModelLoadError: a malformed field, an unknown activation, or towers whose
                embeddings cannot be compared (no vision head, or a text head whose
                width differs from the vision width).
        """
        towers = {}
        for key, tower_cls, defaults in (
                ("vision_config", SiglipVisionConfig, _SIGLIP_VISION_DEFAULTS),
                ("text_config", SiglipTextConfig, _SIGLIP_TEXT_DEFAULTS)):
            section = raw.get(key) or {}
            if not isinstance(section, dict):
                raise ModelLoadError(f"{source}: '{key}' must be an object, found "
                                     f"{type(section).__name__}")
            names = {f.name for f in dataclasses.fields(tower_cls)}
            values = dict(defaults)
            values.update({k: v for k, v in section.items() if k in names and v is not None})
            if key == "text_config" and section.get("projection_size") is None:
                values["projection_size"] = values["hidden_size"]
            if isinstance(values.get("eos_token_id"), list):
                values["eos_token_id"] = values["eos_token_id"][0]
            for field in ("image_size", "patch_size"):
                if isinstance(values.get(field), (list, tuple)):
                    if len(set(values[field])) != 1:
                        raise ModelLoadError(f"{source}: '{key}.{field}' must be square, found "
                                             f"{values[field]}")
                    values[field] = values[field][0]
            # transformers' own SigLIP defaults put bos/eos ids (49406, 49407) outside its
            # 32,000-token vocabulary; the towers never read them, so they are not checked.
            _check_tower(values, tower_cls, f"{source}: '{key}", SIGLIP_ACTIVATIONS, token_ids=())
            towers[key] = tower_cls(**values)
        vision, text = towers["vision_config"], towers["text_config"]
        if not vision.vision_use_head:
            raise ModelLoadError(f"{source}: vision_use_head is false: this vision tower has no "
                                 f"pooled image embedding to compare with texts")
        if text.projection_size != vision.hidden_size:
            raise ModelLoadError(
                f"{source}: text_config.projection_size {text.projection_size} differs from "
                f"vision_config.hidden_size {vision.hidden_size}: the embeddings cannot be compared")
        return cls(vision=vision, text=text)

    @classmethod
    def from_json(cls, path: str | Path) -> "SiglipConfig":
        """Reads a `config.json` file."""
        return cls.from_dict(read_config_json(path), source=str(path))

    def to_dict(self) -> dict:
        """The Hugging Face SiglipConfig dict for this architecture."""
        return {
            "architectures": ["SiglipModel"],
            "model_type": "siglip",
            "vision_config": dict(dataclasses.asdict(self.vision), model_type="siglip_vision_model"),
            "text_config": dict(dataclasses.asdict(self.text), model_type="siglip_text_model"),
        }


def read_config_json(path: str | Path) -> dict:
    """The JSON object in `path`.

    Raises:
        ModelLoadError: the file is missing, not JSON, or not an object.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelLoadError(f"no {path.name} at {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelLoadError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{path}: expected a JSON object, found {type(raw).__name__}")
    return raw
