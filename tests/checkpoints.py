"""Small random CLIP checkpoints written by transformers' PyTorch CLIPModel.

Tests load them through the real loading code, and use the same PyTorch
model as the independent reference.
"""

from __future__ import annotations

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
