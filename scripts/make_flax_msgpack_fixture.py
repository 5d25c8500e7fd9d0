"""Build `tests/data/flax_clip_tiny/`: a genuine `flax_model.msgpack` and reference embeddings.

transformers 5 has no Flax models, so the fixture is written by transformers
4.57.6's `FlaxCLIPModel` in a throwaway virtual environment with the
jax/flax versions that transformers release supports. The folder holds:

* `config.json` and `flax_model.msgpack`, exactly as `save_pretrained`
  writes them (and a 256-token tokenizer that fits the config), for a tiny random CLIP (vision width 32, text width 24, two
  layers each, a 256-token text vocabulary so that the file stays small);
* `expected.npz`, computed by the same `FlaxCLIPModel` on fixed inputs:
  `pixel_values` [2, 3, 32, 32] (normal noise from a seed), `input_ids`
  [3, 12] (BOS ... EOS then padding), their unnormalised projected
  features `image_features` [2, 16] and `text_features` [3, 16], the
  vision hidden state after one layer `vision_hidden_1` [2, 17, 32], and
  `logit_scale` (the raw parameter).

LayerNorm parameters and the logit scale are perturbed away from their
initial values so that a wrong mapping of them cannot go unnoticed.

Usage (from the repository root; needs pip access to the registry):

    python scripts/make_flax_msgpack_fixture.py [--venv /tmp/convis-flax-fixture] [--out tests/data/flax_clip_tiny]

The script creates the virtual environment (or reuses it), installs the
pinned packages, and re-runs itself inside it with `--inside`.
"""

from __future__ import annotations

import argparse
import subprocess
import venv
from pathlib import Path

# transformers 4.57.6 allows flax<=0.7.0, jax/jaxlib<=0.4.13, optax<=0.1.4;
# jax 0.4.13 predates NumPy 2.
PINNED = ["transformers==4.57.6", "jax==0.4.13", "jaxlib==0.4.13", "flax==0.7.0",
          "optax==0.1.4", "numpy==1.26.4"]

SEED = 0
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              image_size=32, patch_size=8, hidden_act="quick_gelu")
# A 256-token vocabulary keeps the file small; BOS and EOS are its last two
# ids, so that EOS is also the largest id of every row (both pooling rules agree).
TEXT = dict(hidden_size=24, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=77, vocab_size=256, bos_token_id=254, eos_token_id=255,
            pad_token_id=1, hidden_act="quick_gelu")
PROJECTION_DIM = 16
INPUT_IDS = [
    [254, 17, 200, 33, 255, 1, 1, 1, 1, 1, 1, 1],
    [254, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 255],
    # Padding with the EOS token itself: the first EOS is pooled.
    [254, 100, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255],
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=Path("/tmp/convis-flax-fixture"))
    parser.add_argument("--out", type=Path, default=Path("tests/data/flax_clip_tiny"))
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        build_fixture(args.out)
        return
    python = args.venv / "bin" / "python"
    if not python.is_file():
        venv.create(args.venv, with_pip=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PINNED], check=True)
    subprocess.run([str(python), __file__, "--inside", "--out", str(args.out.resolve())],
                   check=True)


def write_fixture_tokenizer(out: Path) -> None:
    """A 256-token CLIPTokenizer that fits the fixture's text tower (`load_clip` requires one).

    254 single characters (no merges), then BOS 254 and EOS 255 as in the
    config; its texts are not meaningful, only its size and special ids are.
    """
    from transformers import CLIPTokenizer

    characters = [chr(0x21 + i) for i in range(254)]  # "!" onwards, printable
    vocab = {c: i for i, c in enumerate(characters)}
    vocab.update({"<|startoftext|>": 254, "<|endoftext|>": 255})
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(out)


def build_fixture(out: Path) -> None:
    """Writes the fixture folder (runs inside the transformers 4 environment)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import transformers
    from flax.core import freeze, unfreeze
    from flax.traverse_util import flatten_dict, unflatten_dict
    from transformers import CLIPConfig, FlaxCLIPModel

    assert transformers.__version__ == "4.57.6", transformers.__version__
    config = CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=PROJECTION_DIM)
    model = FlaxCLIPModel(config, seed=SEED, dtype=jnp.float32)

    rng = np.random.default_rng(SEED)
    flat = flatten_dict(unfreeze(model.params))
    for path in sorted(flat):
        if any("norm" in part for part in path):  # every LayerNorm's scale and bias
            flat[path] = flat[path] + 0.1 * rng.standard_normal(flat[path].shape).astype(np.float32)
    flat[("logit_scale",)] = jnp.asarray(3.0, jnp.float32)
    model.params = freeze(unflatten_dict(flat))

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    write_fixture_tokenizer(out)

    pixel_values = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    input_ids = np.asarray(INPUT_IDS, np.int32)
    reloaded = FlaxCLIPModel.from_pretrained(out)  # what is on disk, not what is in memory
    image_features = reloaded.get_image_features(pixel_values=pixel_values)
    text_features = reloaded.get_text_features(input_ids=input_ids)
    # Inside the module the image layout is NHWC (FlaxCLIPModel.__call__ transposes).
    nhwc = np.transpose(pixel_values, (0, 2, 3, 1))
    vision = reloaded.module.apply({"params": reloaded.params}, nhwc,
                                   output_hidden_states=True,
                                   method=lambda m, x, **kw: m.vision_model(x, **kw))
    np.savez_compressed(
        out / "expected.npz",
        pixel_values=pixel_values,
        input_ids=input_ids,
        image_features=np.asarray(image_features, np.float32),
        text_features=np.asarray(text_features, np.float32),
        vision_hidden_1=np.asarray(vision.hidden_states[1], np.float32),
        logit_scale=np.asarray(reloaded.params["logit_scale"], np.float32),
    )
    print(f"wrote {out} with transformers {transformers.__version__}, jax {jax.__version__}")


if __name__ == "__main__":
    main()
