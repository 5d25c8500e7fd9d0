"""Test-only model helpers: OpenCLIP's ViT-CLIP written out in PyTorch under OpenCLIP's
names (the reference for the OpenCLIP loader, since open_clip itself cannot be installed
here: see tests/models/test_openclip.py) and a Hugging Face hub-cache layout.

Random CLIP and SigLIP folders come from `convis_jax.testing`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


def open_clip_reference(model_cfg: dict, seed: int = 0):
    """A PyTorch ViT-CLIP written out from OpenCLIP's code (`open_clip.model.CLIP`,
    `open_clip.transformer.VisionTransformer / ResidualAttentionBlock`), with its parameter
    names, so that `state_dict()` is what OpenCLIP writes. Returns the module.

    OpenCLIP itself cannot be imported here (see tests/models/test_openclip.py).
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
