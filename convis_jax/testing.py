"""Small random inputs for testing code built on convis_jax: CLIP folders and data folders.

* `make_clip_checkpoint` writes a random CLIP folder exactly as Hugging Face
  does (transformers' PyTorch `CLIPModel(...).save_pretrained`), optionally
  with CLIP's tokenizer files, and returns the PyTorch model, which serves
  as the independent reference for whatever is computed from the folder.
  `load_clip(folder)` reads it like any downloaded checkpoint.
* `write_cub_folder` and `write_imagenet_folder` write tiny datasets in the
  layouts `convis_jax.evaluation.datasets` reads (CUB-200-2011 with boxes,
  ImageNet-style `<wnid>/*.JPEG` folders), so that an evaluation pipeline can
  be run end to end in seconds. In the CUB photos the box is the only white
  region, so a map that is the photo's brightness localises it perfectly.

PyTorch is a test and benchmark dependency of convis_jax, not a runtime one:
it is imported only inside `make_clip_checkpoint`
(`pip install torch==2.13.0`, or `pip install -e ".[test]"`).

Every file is written atomically (a temporary file beside it, then a rename).
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from convis_jax.core.cache import atomic_write_bytes
from convis_jax.errors import InputError

# A CLIP small enough for unit tests (32-pixel images, 8-pixel patches, width 32,
# two layers per tower); its text tower keeps CLIP's 49,408-token vocabulary.
TINY = dict(
    vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, image_size=32, patch_size=8),
    text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
              num_attention_heads=4, max_position_embeddings=77, vocab_size=49408),
    projection_dim=16,
)

# ViT-B/32 shape (width 768, 12 heads, patch 32, image 224; text width 512),
# depth cut to 2 so that tests stay fast.
VIT_B32_SHALLOW = dict(
    vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=2,
                num_attention_heads=12, image_size=224, patch_size=32),
    text=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=2,
              num_attention_heads=8, max_position_embeddings=77, vocab_size=49408),
    projection_dim=512,
)

TORCH_INSTALL = "pip install torch==2.13.0"


def _import_torch():
    """torch, or a ModuleNotFoundError that says how to install the pinned build."""
    try:
        import torch
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "convis_jax.testing.make_clip_checkpoint writes checkpoints with transformers' "
            f"PyTorch CLIPModel, and PyTorch is not installed: {TORCH_INSTALL}",
            name="torch") from None
    return torch


def _move_files_into(source: Path, target: Path) -> None:
    """Renames every file of the flat folder `source` into `target`, then removes `source`."""
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.iterdir()):
        os.replace(path, target / path.name)
    source.rmdir()


def make_clip_checkpoint(path: Path, spec: dict | None = None, *, hidden_act: str = "quick_gelu",
                         seed: int = 0, max_shard_size: str | None = None,
                         tokenizer: bool = False):
    """Writes a random CLIP folder with transformers' `save_pretrained`; returns the torch model.

    The LayerNorms are perturbed away from (1, 0) and the logit scale set to 3,
    so that a wrong weight mapping cannot go unnoticed.

    Args:
        path: folder to write (created if missing; files of the same names are replaced).
        spec: dict with `vision` and `text` (CLIPVisionConfig / CLIPTextConfig keyword
            arguments) and `projection_dim`, e.g. `VIT_B32_SHALLOW`; default `TINY`.
        hidden_act: activation of both towers ("quick_gelu" or "gelu").
        seed: torch seed of the random initialisation.
        max_shard_size: e.g. "200KB" to write a sharded checkpoint with an index.
        tokenizer: also write CLIP's tokenizer files (tokenizer.json,
            tokenizer_config.json, ...), built from the vocabulary convis_jax bundles.
            Without them `load_clip` uses that same bundled vocabulary.

    Returns:
        The `transformers.CLIPModel` (eval mode) whose weights the folder holds.

    Raises:
        ModuleNotFoundError: PyTorch is not installed (the message names the pinned
            version to install).
    """
    torch = _import_torch()
    from transformers import CLIPConfig, CLIPModel

    spec = TINY if spec is None else spec

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(spec["text"], hidden_act=hidden_act),
        vision_config=dict(spec["vision"], hidden_act=hidden_act),
        projection_dim=spec["projection_dim"],
    )
    model = CLIPModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name or "layrnorm" in name or "layernorm" in name:
                p.add_(0.1 * torch.randn_like(p))
        model.logit_scale.fill_(3.0)
    kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        model.save_pretrained(staging, **kwargs)
        if tokenizer:
            from transformers import CLIPTokenizer

            from convis_jax.models.tokenizer import bundled_vocabulary

            vocab, merges = bundled_vocabulary()
            CLIPTokenizer(vocab=vocab, merges=merges).save_pretrained(staging)
        _move_files_into(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return model


# A small vocabulary for tests where its size does not matter (its bank builds in
# a second, where physical_objects' 7,080 texts take several).
WORDS = ["dog", "cat", "car", "tree", "chair", "bird", "bottle", "house", "ball", "flower",
         "fish", "book"]


def write_words_file(folder: Path, words: list[str] | None = None) -> Path:
    """Writes words (default `WORDS`), one per line, to folder/words.txt; returns its path.

    The file is a `--vocabulary` file of the command line (one word or synset a line).
    """
    words = WORDS if words is None else words
    path = Path(folder) / "words.txt"
    atomic_write_bytes(path, ("\n".join(words) + "\n").encode())
    return path


def _write_image(path: Path, pixels: np.ndarray) -> None:
    """Saves uint8 [H, W, 3] pixels in the format of path's suffix, atomically."""
    from PIL import Image

    buffer = io.BytesIO()
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None:
        raise InputError(f"cannot write {path}: Pillow knows no image format for "
                         f"{path.suffix!r}; use .jpg, .png or .JPEG")
    Image.fromarray(pixels).save(buffer, format=image_format, quality=100)
    atomic_write_bytes(path, buffer.getvalue())


# Relative path -> ((height, width), box (x, y, width, height) in CUB's form).
# Odd sizes; the second box sticks out of the centre crop on the left; one file
# name has a space in it.
CUB_PHOTOS = {
    "001.Albatross/a_1.jpg": ((121, 90), (20, 40, 45, 30)),
    "001.Albatross/a 2.png": ((75, 131), (20, 10, 60, 40)),
    "002.Ani/b_3.png": ((100, 100), (50, 55, 35, 30)),
}


def cub_photo(size: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """A black photo with a white rectangle where the box is.

    Args:
        size: (height, width) in pixels.
        box: (x, y, width, height) in pixels, CUB's form.

    Returns:
        uint8 [height, width, 3]: 255 inside the box, 0 elsewhere.
    """
    height, width = size
    x, y, w, h = box
    photo = np.zeros((height, width, 3), np.uint8)
    photo[y:y + h, x:x + w] = 255
    return photo


def write_cub_folder(root: Path, photos: dict | None = None) -> Path:
    """Writes a CUB-200-2011 layout (`images/`, images.txt, bounding_boxes.txt); returns root.

    Args:
        root: the dataset folder (created).
        photos: relative image path under images/ -> ((height, width), (x, y, w, h));
            image ids are 1, 2, ... in the dict's order; default `CUB_PHOTOS`. Each photo
            is `cub_photo`.

    Returns:
        root, ready for `convis_jax.evaluation.datasets.read_cub`.
    """
    root = Path(root)
    photos = CUB_PHOTOS if photos is None else photos
    lines, boxes = [], []
    for i, (rel, (size, box)) in enumerate(photos.items(), start=1):
        _write_image(root / "images" / rel, cub_photo(size, box))
        lines.append(f"{i} {rel}\n")
        boxes.append(f"{i} {' '.join(map(str, box))}\n")
    atomic_write_bytes(root / "images.txt", "".join(lines).encode())
    atomic_write_bytes(root / "bounding_boxes.txt", "".join(boxes).encode())
    return root


# WordNet id -> number of images: two birds, two hunting dogs, and chairs, which
# no bird/dog out-of-distribution pair uses.
IMAGENET_CLASSES = {
    "n01530575": 3,  # brambling: a bird
    "n01531178": 2,  # goldfinch.n.02: a bird
    "n02087394": 2,  # Rhodesian ridgeback: a hunting dog
    "n02088364": 2,  # beagle: a hunting dog
    "n03001627": 2,  # chair
}


def write_imagenet_folder(root: Path, classes: dict[str, int] | None = None) -> Path:
    """Writes ImageNet-style class folders `<wnid>/<wnid>_<j>.JPEG` of tiny flat photos.

    Args:
        root: the dataset folder (created).
        classes: WordNet id (e.g. "n01530575") -> number of images in its folder.
            Default `IMAGENET_CLASSES`. Image j is (10, 12 + j) pixels of colour (40 j, 90, 10).

    Returns:
        root, ready for `convis_jax.evaluation.datasets.read_imagenet_folders`.
    """
    root = Path(root)
    classes = IMAGENET_CLASSES if classes is None else classes
    for wnid, count in classes.items():
        for j in range(count):
            photo = np.empty((10, 12 + j, 3), np.uint8)
            photo[:] = (j * 40, 90, 10)
            _write_image(root / wnid / f"{wnid}_{j}.JPEG", photo)
    return root


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
    torch = _import_torch()
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
