"""Check convis_jax's OpenCLIP loader against OpenCLIP's own PyTorch model.

For each OpenCLIP model config (ViT-B-16, ViT-L-14, ViT-L-14-336 and
ViT-B-32-quickgelu by default, depth cut to `--depth` layers), the script
builds `open_clip.model.CLIP` with random weights (LayerNorms and attention
biases perturbed), writes it in the hub layout (`open_clip_config.json` +
`open_clip_model.safetensors`), loads that folder with
`convis_jax.load_model`, and prints the max abs difference of the unit image
and text embeddings (OpenCLIP's `encode_image` / `encode_text` on
`open_clip.tokenize` ids) and whether the token ids agree. Exit status 1 when
a difference exceeds 1e-5 or ids differ.

Needs `open_clip_torch` importable, e.g.

    pip install --no-deps --target /tmp/openclip_env open_clip_torch ftfy wcwidth torchvision==<matching>
    PYTHONPATH=/tmp/openclip_env python scripts/check_open_clip_parity.py

open_clip imports torchvision when it is imported (image transforms and
`torchvision.ops.misc.FrozenBatchNorm2d`), none of which the ViT-CLIP forward
uses. Where no torchvision build matches the installed torch (on the
development machine only the CUDA build of torchvision 0.28.0 was reachable,
which does not load with torch 2.13.0+cpu), `--placeholder-torchvision`
registers empty placeholder modules under the torchvision names before
open_clip is imported; the numbers compared never pass through them.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

TEXTS = ["a photo of a cat", "Ünïcödé & HTML &amp; entities!!",
         "an entity with a much longer description"]


def install_placeholder_torchvision() -> None:
    """Empty modules under torchvision's names, enough for `import open_clip`."""
    import transformers.utils.import_utils as import_utils

    import_utils.is_torchvision_available()  # transformers caches "not installed" first

    class Placeholder(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return type(name, (), {"__getattr__": lambda self, n: None, "BICUBIC": "bicubic",
                                   "BILINEAR": "bilinear", "NEAREST": "nearest"})

    names = ["torchvision", "torchvision.ops", "torchvision.ops.misc", "torchvision.transforms",
             "torchvision.transforms.functional", "torchvision.transforms.v2"]
    for name in names:
        sys.modules[name] = Placeholder(name)
        sys.modules[name].__path__ = []
    for name in names[1:]:
        parent, _, child = name.rpartition(".")
        setattr(sys.modules[parent], child, sys.modules[name])


def check(name: str, depth: int) -> tuple[float, bool]:
    import open_clip
    import torch
    from safetensors.torch import save_file

    from convis_jax.models.loading import load_model

    cfg = copy.deepcopy(open_clip.get_model_config(name))
    cfg["vision_cfg"]["layers"] = depth
    cfg["text_cfg"]["layers"] = depth
    torch.manual_seed(0)
    model = open_clip.model.CLIP(**cfg).eval()
    with torch.no_grad():
        for key, p in model.named_parameters():
            if "ln_" in key or key.endswith("in_proj_bias"):
                p.add_(0.1 * torch.randn_like(p))
    size = cfg["vision_cfg"]["image_size"]
    pixels = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, size, size))
                              .astype(np.float32))
    ids = open_clip.tokenize(TEXTS)
    with torch.no_grad():
        images = model.encode_image(pixels, normalize=True).numpy()
        texts = model.encode_text(ids, normalize=True).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
        save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                  str(folder / "open_clip_model.safetensors"))
        ours = load_model(folder, cache=False)
        got_images = ours.embed_pixel_values(pixels.numpy())
        got_texts = ours.embed_texts(TEXTS)
        our_ids = ours.tokenize(TEXTS).input_ids
    strip = lambda row: [int(t) for t in row if t not in (0, 49407)]
    same_ids = all(strip(a) == strip(b) for a, b in zip(our_ids, ids.numpy()))
    diff_images = float(np.abs(got_images - images).max())
    diff_texts = float(np.abs(got_texts - texts).max())
    print(f"{name} (depth {depth}, {ours.config.vision.hidden_act}): image {diff_images:.2e}, "
          f"text {diff_texts:.2e}, token ids equal: {same_ids}, family {ours.family}")
    return max(diff_images, diff_texts), same_ids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+",
                        default=["ViT-B-16", "ViT-L-14", "ViT-L-14-336", "ViT-B-32-quickgelu"])
    parser.add_argument("--depth", type=int, default=1)
    parser.add_argument("--placeholder-torchvision", action="store_true")
    args = parser.parse_args()
    if args.placeholder_torchvision:
        install_placeholder_torchvision()
    results = [check(name, args.depth) for name in args.models]
    worst = max(d for d, _ in results)
    print(f"worst max abs difference {worst:.2e}")
    return 0 if worst <= 1e-5 and all(ok for _, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
