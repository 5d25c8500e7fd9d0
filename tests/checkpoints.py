"""Small random CLIP checkpoints written by transformers' PyTorch CLIPModel.

Tests load them through the real loading code, and use the same PyTorch
model as the independent reference.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

TINY = dict(
    vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, image_size=32, patch_size=8),
    text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
              num_attention_heads=4, max_position_embeddings=77, vocab_size=49408),
    projection_dim=16,
)

# ViT-B/32 shape (width 768, 12 heads, patch 32, image 224; text width 512),
# depth cut to 2 so that CI stays fast.
VIT_B32_SHALLOW = dict(
    vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=2,
                num_attention_heads=12, image_size=224, patch_size=32),
    text=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=2,
              num_attention_heads=8, max_position_embeddings=77, vocab_size=49408),
    projection_dim=512,
)


def make_clip_checkpoint(path: Path, spec: dict = TINY, *, hidden_act: str = "quick_gelu",
                         seed: int = 0,
                         max_shard_size: str | None = None):
    """Writes a random CLIPModel to `path` with `save_pretrained`; returns the torch model.

    Args:
        path: folder to write (created).
        spec: dict with `vision` and `text` CLIPVisionConfig/CLIPTextConfig kwargs
            and `projection_dim`.
        hidden_act: activation of both towers ("quick_gelu" or "gelu").
        seed: torch seed of the random initialisation.
        max_shard_size: e.g. "200KB" to write a sharded checkpoint with an index.
    """
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(spec["text"], hidden_act=hidden_act),
        vision_config=dict(spec["vision"], hidden_act=hidden_act),
        projection_dim=spec["projection_dim"],
    )
    model = CLIPModel(config).eval()
    # Random init leaves LayerNorms at (1, 0) and the logit scale at its
    # default; perturb them so that a wrong mapping cannot go unnoticed.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name or "layrnorm" in name or "layernorm" in name:
                p.add_(0.1 * torch.randn_like(p))
        model.logit_scale.fill_(3.0)
    kwargs = {}
    if max_shard_size is not None:
        kwargs["max_shard_size"] = max_shard_size
    Path(path).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, **kwargs)
    return model


# A small vocabulary for tests where its size does not matter (its bank builds in
# a second, where physical_objects' 7,080 texts take several).
WORDS = ["dog", "cat", "car", "tree", "chair", "bird", "bottle", "house", "ball", "flower",
         "fish", "book"]


def write_words_file(folder: Path) -> Path:
    """Writes WORDS, one per line, to folder/words.txt (a `--vocabulary` file)."""
    path = Path(folder) / "words.txt"
    path.write_text("\n".join(WORDS) + "\n")
    return path


# ------------------------------------------------------------------ SigLIP

SIGLIP_TINY = dict(
    vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, image_size=32, patch_size=8),
    text=dict(hidden_size=24, intermediate_size=48, num_hidden_layers=2,
              num_attention_heads=4, max_position_embeddings=16, projection_size=32),
)

# Lower-case words of the tiny SigLIP tokenizer; ids 0, 1, 2 are <pad>, </s>, <unk>.
SIGLIP_WORDS = ["a", "photo", "of", "cat", "dog", "round", "object", "an", "entity", "with",
                "much", "longer", "description", "the", "red", "car"]


def write_siglip_tokenizer(path: Path, max_length: int) -> None:
    """A word-level fast tokenizer laid out like SigLIP's: lower-cases, appends </s>, pads with </s>.

    SigLIP's own SentencePiece tokenizer needs the sentencepiece package; this one
    has the same special-token behaviour (EOS appended, EOS as the pad token) and
    loads through transformers' AutoTokenizer from tokenizer.json.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    vocab.update({w: i + 3 for i, w in enumerate(SIGLIP_WORDS)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="</s>",
                                   unk_token="<unk>", model_max_length=max_length)
    fast.save_pretrained(str(path))


def make_siglip_checkpoint(path: Path, spec: dict = SIGLIP_TINY, *, seed: int = 0):
    """Writes a random transformers SiglipModel (and a tokenizer) to `path`; returns the torch model."""
    import torch
    from transformers import SiglipConfig, SiglipModel

    torch.manual_seed(seed)
    text = dict(spec["text"], vocab_size=len(SIGLIP_WORDS) + 3, pad_token_id=1, eos_token_id=1,
                bos_token_id=None)
    model = SiglipModel(SiglipConfig(text_config=text, vision_config=dict(spec["vision"]))).eval()
    with torch.no_grad():  # LayerNorms at (1, 0) and a zero probe bias would hide wrong mappings
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("in_proj_bias"):
                p.add_(0.1 * torch.randn_like(p))
        model.logit_scale.fill_(2.5)
        model.logit_bias.fill_(-3.0)
    Path(path).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    write_siglip_tokenizer(path, spec["text"]["max_position_embeddings"])
    return model


# ------------------------------------------------------------------ OpenCLIP


def open_clip_reference(model_cfg: dict, seed: int = 0):
    """A PyTorch ViT-CLIP written out from OpenCLIP's code (`open_clip.model.CLIP`,
    `open_clip.transformer.VisionTransformer / ResidualAttentionBlock`), with its parameter
    names, so that `state_dict()` is what OpenCLIP writes. Returns the module.

    OpenCLIP itself cannot be imported here (see tests/jax_backend/test_openclip.py).
    """
    from collections import OrderedDict

    import torch
    from torch import nn

    class QuickGELU(nn.Module):
        def forward(self, x):
            return x * torch.sigmoid(1.702 * x)

    act = QuickGELU if model_cfg.get("quick_gelu", False) else nn.GELU

    class Block(nn.Module):  # ResidualAttentionBlock
        def __init__(self, width, heads, mlp_ratio):
            super().__init__()
            self.ln_1 = nn.LayerNorm(width)
            self.attn = nn.MultiheadAttention(width, heads)
            self.ln_2 = nn.LayerNorm(width)
            hidden = int(width * mlp_ratio)
            self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, hidden)),
                                                  ("gelu", act()),
                                                  ("c_proj", nn.Linear(hidden, width))]))

        def forward(self, x, attn_mask=None):  # x [L, N, D], OpenCLIP's (pre-batch_first) layout
            y = self.ln_1(x)
            x = x + self.attn(y, y, y, need_weights=False, attn_mask=attn_mask)[0]
            return x + self.mlp(self.ln_2(x))

    class Transformer(nn.Module):
        def __init__(self, width, layers, heads, mlp_ratio):
            super().__init__()
            self.resblocks = nn.ModuleList([Block(width, heads, mlp_ratio) for _ in range(layers)])

        def forward(self, x, attn_mask=None):
            x = x.transpose(0, 1)
            for block in self.resblocks:
                x = block(x, attn_mask)
            return x.transpose(0, 1)

    v, t, embed = model_cfg["vision_cfg"], model_cfg["text_cfg"], model_cfg["embed_dim"]

    class Visual(nn.Module):  # VisionTransformer, pool_type "tok"
        def __init__(self):
            super().__init__()
            w, p, s = v["width"], v["patch_size"], v["image_size"]
            scale = w ** -0.5
            self.conv1 = nn.Conv2d(3, w, kernel_size=p, stride=p, bias=False)
            self.class_embedding = nn.Parameter(scale * torch.randn(w))
            self.positional_embedding = nn.Parameter(scale * torch.randn((s // p) ** 2 + 1, w))
            self.ln_pre = nn.LayerNorm(w)
            self.transformer = Transformer(w, v["layers"], w // v.get("head_width", 64),
                                           v.get("mlp_ratio", 4.0))
            self.ln_post = nn.LayerNorm(w)
            self.proj = nn.Parameter(scale * torch.randn(w, embed))

        def forward(self, x):
            x = self.conv1(x).flatten(2).transpose(1, 2)
            cls = self.class_embedding.expand(x.shape[0], 1, -1)
            x = torch.cat([cls, x], dim=1) + self.positional_embedding
            x = self.ln_post(self.transformer(self.ln_pre(x)))
            return x[:, 0] @ self.proj

    class Clip(nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = Visual()
            w, ctx = t["width"], t.get("context_length", 77)
            self.transformer = Transformer(w, t["layers"], t["heads"], t.get("mlp_ratio", 4.0))
            self.token_embedding = nn.Embedding(t.get("vocab_size", 49408), w)
            self.positional_embedding = nn.Parameter(0.01 * torch.randn(ctx, w))
            self.ln_final = nn.LayerNorm(w)
            self.text_projection = nn.Parameter(w ** -0.5 * torch.randn(w, embed))
            self.logit_scale = nn.Parameter(torch.tensor(2.9))
            mask = torch.full((ctx, ctx), float("-inf")).triu_(1)
            self.register_buffer("attn_mask", mask, persistent=False)

        def encode_image(self, image):
            return nn.functional.normalize(self.visual(image), dim=-1)

        def encode_text(self, text):  # text [N, context_length], padded with 0
            x = self.token_embedding(text) + self.positional_embedding
            x = self.ln_final(self.transformer(x, attn_mask=self.attn_mask))
            x = x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection
            return nn.functional.normalize(x, dim=-1)

    torch.manual_seed(seed)
    model = Clip().eval()
    with torch.no_grad():  # LayerNorms at (1, 0) would hide a swapped mapping
        for name, p in model.named_parameters():
            if ".ln_" in name or name.startswith(("ln_", "visual.ln_")) or "in_proj_bias" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def write_open_clip_folder(path: Path, model_cfg: dict, state: dict, *,
                           preprocess_cfg: dict | None = None, weights: str = "safetensors") -> Path:
    """An OpenCLIP hub folder as `open_clip.push_to_hf_hub` writes it.

    Args:
        path: the folder (created).
        model_cfg: OpenCLIP's model config.
        state: the torch state dict.
        preprocess_cfg: written beside model_cfg (OpenCLIP writes mean, std,
            interpolation, resize_mode, size).
        weights: "safetensors" (open_clip_model.safetensors) or "bin"
            (open_clip_pytorch_model.bin, torch.save of the state dict).
    """
    import json

    import torch
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg or {
        "mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
        "interpolation": "bicubic", "resize_mode": "shortest",
        "size": model_cfg["vision_cfg"]["image_size"]}}
    (path / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    tensors = {k: v.detach().contiguous() for k, v in state.items()}
    if weights == "safetensors":
        save_file(tensors, str(path / "open_clip_model.safetensors"))
    else:
        torch.save(tensors, path / "open_clip_pytorch_model.bin")
    return path


# ------------------------------------------------------------------ hub cache


def lay_out_hub_cache(hub: Path, repo_id: str, folder: Path) -> str:
    """Copies `folder` into a Hugging Face cache laid out as huggingface_hub writes it.

    `models--org--name/blobs/<sha256>` holds the files, `snapshots/<commit>/`
    relative links to them, and `refs/main` the commit hash. Returns the commit.
    """
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for file in sorted(folder.iterdir()):
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.copyfile(file, repo / "blobs" / digest)
        os.symlink(f"../../blobs/{digest}", repo / "snapshots" / commit / file.name)
    return commit
