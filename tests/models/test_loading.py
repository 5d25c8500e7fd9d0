"""`load_clip`: formats, dtypes, hub ids, damaged checkpoints, tokenizer files, jit, cache.

The reference for every number is an independent implementation of the same
weights: transformers' PyTorch `CLIPModel`, or transformers 4's
`FlaxCLIPModel` for the committed msgpack fixture (`expected.npz`).
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import warnings
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from convis_jax.core.cache import CACHE_ENV
from convis_jax.errors import InputError, ModelLoadError
from convis_jax.models import checkpoints, clip
from convis_jax.models.loading import load_clip
from convis_jax.testing import TINY, make_clip_checkpoint
from tests.checkpoints import lay_out_hub_cache

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "data" / "flax_clip_tiny"
TEXTS = ["a photo of a cat", "a round object", "an entity with a much longer description"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets its own converted-weight cache root."""
    root = tmp_path / "convis-cache"
    monkeypatch.setenv(CACHE_ENV, str(root))
    return root


def torch_features(model, pixel_values=None, input_ids=None, normalize=True):
    """transformers' PyTorch projected features, as NumPy."""
    import torch

    with torch.no_grad():
        if pixel_values is not None:
            out = model.get_image_features(pixel_values=torch.from_numpy(pixel_values))
        else:
            out = model.get_text_features(input_ids=torch.from_numpy(np.asarray(input_ids, np.int64)))
    out = getattr(out, "pooler_output", out)
    if normalize:
        out = out / out.norm(dim=-1, keepdim=True)
    return out.numpy()


@partial(jax.jit, static_argnames=("config",))
def text_features(params, config, input_ids):
    """Unnormalised text features [N, d] of input_ids [N, L], straight from token ids."""
    return clip.encode_texts(params, config, input_ids, normalize=False)


@partial(jax.jit, static_argnames=("config", "layer"))
def image_tokens(params, config, pixel_values, layer):
    """Vision token activations [N, 1 + patches, D] after `layer` layers."""
    return jax.vmap(clip.image_tokens, in_axes=(None, None, 0, None))(params, config, pixel_values, layer)


def pixels(n=3, size=32, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 3, size, size)).astype(np.float32)


def assert_matches_torch(model, torch_model, tol=1e-5):
    """Image and text unit embeddings of `model` against the PyTorch model."""
    pixel_values = pixels(size=model.image_size)
    got = model.embed_pixel_values(pixel_values)
    diff = np.abs(got - torch_features(torch_model, pixel_values)).max()
    assert diff <= tol, f"image embeddings differ by {diff}"
    ids = model.tokenize(TEXTS).input_ids
    diff = np.abs(model.embed_texts(TEXTS) - torch_features(torch_model, input_ids=ids)).max()
    assert diff <= tol, f"text embeddings differ by {diff}"


# ----------------------------------------------------------------- formats


def test_flax_msgpack_written_by_transformers_4_matches_its_outputs():
    expected = np.load(FIXTURE / "expected.npz")
    model = load_clip(FIXTURE)
    got = model.embed_pixel_values(expected["pixel_values"], normalize=False)
    assert np.abs(got - expected["image_features"]).max() < 1e-5
    unit = expected["image_features"] / np.linalg.norm(expected["image_features"], axis=1, keepdims=True)
    assert np.abs(model.embed_pixel_values(expected["pixel_values"]) - unit).max() < 1e-5
    # The fixture's 256-token vocabulary is not CLIP's: feed its token ids directly.
    text = text_features(model.params, model.config, expected["input_ids"])
    assert np.abs(np.asarray(text) - expected["text_features"]).max() < 1e-5
    tokens = image_tokens(model.params, model.config, expected["pixel_values"], 1)
    assert np.abs(np.asarray(tokens) - expected["vision_hidden_1"]).max() < 1e-5
    assert model.logit_scale == pytest.approx(float(np.exp(expected["logit_scale"])), rel=1e-6)


def test_sharded_safetensors_with_index(tiny_checkpoint, tmp_path):
    _, torch_model = tiny_checkpoint
    torch_model.save_pretrained(tmp_path, max_shard_size="200KB")
    index = json.loads((tmp_path / checkpoints.SAFETENSORS_INDEX).read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and not (tmp_path / checkpoints.SAFETENSORS).exists()
    assert checkpoints.weight_files(tmp_path) == [tmp_path / s for s in shards]
    assert_matches_torch(load_clip(tmp_path), torch_model)


@pytest.fixture(scope="module")
def pytorch_bin_checkpoint(tiny_checkpoint, tmp_path_factory):
    """(folder, torch model) with `pytorch_model.bin`, as transformers 4 wrote with
    safe_serialization=False (transformers 5's save_pretrained writes safetensors only)."""
    import torch

    source, torch_model = tiny_checkpoint
    path = tmp_path_factory.mktemp("bin")
    shutil.copyfile(source / "config.json", path / "config.json")
    torch.save(torch_model.state_dict(), path / checkpoints.PYTORCH_BIN)
    return path, torch_model


def test_pytorch_bin_loads_with_torch(pytorch_bin_checkpoint):
    path, torch_model = pytorch_bin_checkpoint
    assert checkpoints.weight_format(path) == checkpoints.PYTORCH_BIN
    assert_matches_torch(load_clip(path), torch_model)


def test_pytorch_bin_without_torch_is_a_clear_error(pytorch_bin_checkpoint, monkeypatch):
    path, _ = pytorch_bin_checkpoint
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(ModelLoadError, match="needs torch") as err:
        load_clip(path)
    assert "pytorch_model.bin" in str(err.value) and "safetensors" in str(err.value)


def test_bfloat16_is_close_to_float32(tiny_checkpoint):
    path, _ = tiny_checkpoint
    full, half = load_clip(path), load_clip(path, dtype="bfloat16")
    assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree_util.tree_leaves(half.params))
    pixel_values = pixels()
    image_diff = np.abs(half.embed_pixel_values(pixel_values) - full.embed_pixel_values(pixel_values)).max()
    text_diff = np.abs(half.embed_texts(TEXTS) - full.embed_texts(TEXTS)).max()
    # bfloat16 keeps 8 significant bits (relative rounding 2**-9 per op) over
    # two layers: a few 1e-3 on unit vectors; 2e-2 leaves room for other seeds.
    assert image_diff < 2e-2 and text_diff < 2e-2, (image_diff, text_diff)
    assert image_diff > 0  # the computation really ran in bfloat16


def test_unknown_dtype_is_an_input_error(tiny_checkpoint):
    with pytest.raises(InputError, match="float16"):
        load_clip(tiny_checkpoint[0], dtype="float16")


# ----------------------------------------------------------------- hub ids


HUB_PROBE = textwrap.dedent("""
    import json, sys
    import numpy as np
    from convis_jax.errors import ModelLoadError
    from convis_jax.models.loading import load_clip

    model = load_clip("org/tiny-clip")
    pixel_values = np.load(sys.argv[1])
    np.save(sys.argv[2], model.embed_pixel_values(pixel_values))
    try:
        load_clip("org/not-cached")
        error = None
    except ModelLoadError as err:
        error = str(err)
    print(json.dumps({"folder": str(model.name), "fingerprint": model.fingerprint,
                      "error": error}))
""")


def test_hub_id_from_the_offline_cache_and_a_missing_id(tiny_checkpoint, tmp_path):
    folder, torch_model = tiny_checkpoint
    hub = tmp_path / "hf" / "hub"
    lay_out_hub_cache(hub, "org/tiny-clip", folder)
    pixel_values = pixels()
    np.save(tmp_path / "pixels.npy", pixel_values)
    # huggingface_hub reads HF_HUB_OFFLINE and the cache folder when it is imported:
    # a fresh interpreter is the reliable way to set them.
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_HUB_CACHE=str(hub), HF_HUB_OFFLINE="1",
               PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", HUB_PROBE, str(tmp_path / "pixels.npy"),
                             str(tmp_path / "out.npy")], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    got = np.load(tmp_path / "out.npy")
    assert np.abs(got - torch_features(torch_model, pixel_values)).max() < 1e-5
    # Blobs are named by their SHA-256, so the id and the local copy hash alike.
    assert report["fingerprint"] == load_clip(folder).fingerprint
    error = report["error"]
    assert error is not None and "org/not-cached" in error
    assert "HF_HUB_OFFLINE" in error and "hf download org/not-cached" in error


def test_the_hub_error_says_what_is_set(tmp_path):
    """Online (HF_HUB_OFFLINE not set) and the hub unreachable, the error gives the download's
    own failure and the endpoint, and does not tell the user to unset what is not set."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="http://127.0.0.1:9", PYTHONPATH=str(REPO),
               HF_HUB_ETAG_TIMEOUT="5", HF_HUB_DOWNLOAD_TIMEOUT="5")
    probe = ("from convis_jax.models.loading import load_clip\n"
             "try:\n    load_clip('org/not-cached')\nexcept Exception as err:\n    print(err)\n")
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                            timeout=300)
    error = result.stdout.strip()
    assert "org/not-cached" in error and "the download failed" in error, error
    assert "http://127.0.0.1:9" in error and "HF_HUB_OFFLINE" not in error, error
    assert "hf download org/not-cached" in error and "\n" not in error


def test_a_path_that_is_neither_folder_nor_hub_id(tmp_path):
    with pytest.raises(ModelLoadError, match="no checkpoint folder"):
        load_clip(tmp_path / "missing" / "deeper" / "folder")


# ----------------------------------------------------------------- damaged checkpoints


def damaged_copy(source: Path, target: Path, *, drop=(), add=None, replace=None, config=None):
    """A copy of a safetensors checkpoint with tensors dropped, added or replaced."""
    shutil.copytree(source, target)
    if drop or add or replace:
        state = load_file(source / checkpoints.SAFETENSORS)
        for key in drop:
            del state[key]
        state.update(add or {})
        state.update(replace or {})
        save_file(state, target / checkpoints.SAFETENSORS, metadata={"format": "pt"})
    if config is not None:
        raw = json.loads((source / "config.json").read_text())
        (target / "config.json").write_text(config(raw))
    return target


def _without_vision(raw):
    raw.pop("vision_config")
    return json.dumps(raw)


def _three_text_layers(raw):
    raw["text_config"]["num_hidden_layers"] = 3
    return json.dumps(raw)


DAMAGE = {
    "missing tensor": (dict(drop=["vision_model.encoder.layers.1.mlp.fc2.bias"]),
                       r"missing 1 tensor\(s\): vision_model\.encoder\.layers\.1\.mlp\.fc2\.bias \[32\]"),
    "extra tensor": (dict(add={"vision_model.encoder.layers.2.mlp.fc2.bias": np.zeros(32, np.float32)}),
                     r"unexpected 1 tensor\(s\): vision_model\.encoder\.layers\.2\.mlp\.fc2\.bias \[32\]"),
    "wrong shape": (dict(replace={"text_projection.weight": np.zeros((16, 31), np.float32)}),
                    r"text_projection\.weight: expected \[32, 16\] \(Flax layout\), found \[31, 16\]"),
    "config without vision_config": (dict(config=_without_vision), r"'vision_config' section"),
    "config and weights disagree": (dict(config=_three_text_layers),
                                    r"missing 16 tensor\(s\): text_model\.encoder\.layers\.2\."),
    "non-JSON config": (dict(config=lambda raw: json.dumps(raw)[:-20]),
                        r"config\.json is not valid JSON"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_checkpoint_names_the_tensor_or_field(tiny_checkpoint, tmp_path, damage):
    kwargs, message = DAMAGE[damage]
    folder = damaged_copy(tiny_checkpoint[0], tmp_path / "ckpt", **kwargs)
    with pytest.raises(ModelLoadError, match=message):
        load_clip(folder)


@pytest.mark.parametrize("name", [checkpoints.SAFETENSORS, checkpoints.FLAX_MSGPACK])
def test_truncated_weight_file(tiny_checkpoint, tmp_path, name):
    source = tiny_checkpoint[0] if name == checkpoints.SAFETENSORS else FIXTURE
    folder = tmp_path / "ckpt"
    shutil.copytree(source, folder)
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=f"cannot read .*{name}.*damaged"):
        load_clip(folder)


def test_index_naming_a_missing_shard(tiny_checkpoint, tmp_path):
    tiny_checkpoint[1].save_pretrained(tmp_path, max_shard_size="200KB")
    index = json.loads((tmp_path / checkpoints.SAFETENSORS_INDEX).read_text())
    shard = sorted(set(index["weight_map"].values()))[-1]
    (tmp_path / shard).unlink()
    with pytest.raises(ModelLoadError, match=f"names shard {shard}, which is missing"):
        load_clip(tmp_path)


def test_nan_weights_warn(tiny_checkpoint, tmp_path):
    source = tiny_checkpoint[0]
    state = load_file(source / checkpoints.SAFETENSORS)
    bias = state["vision_model.encoder.layers.0.mlp.fc1.bias"].copy()
    bias[3] = np.nan
    folder = damaged_copy(source, tmp_path / "ckpt",
                          replace={"vision_model.encoder.layers.0.mlp.fc1.bias": bias})
    with pytest.warns(UserWarning, match=r"1 tensor\(s\) hold NaN or inf values: "
                                         r"vision_model\.encoder\.layers\.0\.mlp\.fc1\.bias"):
        load_clip(folder)


# ----------------------------------------------------------------- tokenizer files


def test_tokenizer_files_in_the_folder_are_used(tiny_checkpoint, tmp_path):
    from transformers import CLIPTokenizer

    from convis_jax.models.tokenizer import bundled_vocabulary

    vocab, merges = bundled_vocabulary()
    saved = CLIPTokenizer(vocab=vocab, merges=merges)
    saved.add_tokens(["<concept>"])  # only the folder's tokenizer knows this token: id 49408
    # The tiny checkpoint's 49,408 embedding rows have none for it: refused, not read past.
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint[0], folder)
    saved.save_pretrained(folder)
    with pytest.raises(ModelLoadError, match="49409 tokens but the model's text embedding "
                                             "table .* has 49408 rows"):
        load_clip(folder)
    # A text tower with a row for it loads, and reads the token.
    folder = tmp_path / "wider"
    make_clip_checkpoint(folder, dict(TINY, text=dict(TINY["text"], vocab_size=49409)))
    saved.save_pretrained(folder)
    model = load_clip(folder)
    bundled = load_clip(tiny_checkpoint[0])
    ids = model.tokenize(["a photo of a <concept>"]).input_ids[0]
    assert ids[:7].tolist() == [49406, 320, 1125, 539, 320, 49408, 49407]
    assert 49408 not in bundled.tokenize(["a photo of a <concept>"]).input_ids[0]
    plain = ["a photo of a cat", "warm-blooded egg-laying vertebrates"]
    assert np.array_equal(model.tokenize(plain).input_ids, bundled.tokenize(plain).input_ids)


# ----------------------------------------------------------------- jit


def test_jit_equals_disable_jit(tiny_checkpoint):
    model = load_clip(tiny_checkpoint[0])
    pixel_values = pixels(n=2)
    texts = ["a photo of a cat", "an entity"]
    jitted_images, jitted_texts = model.embed_pixel_values(pixel_values), model.embed_texts(texts)
    with jax.disable_jit():
        eager_images = model.embed_pixel_values(pixel_values)
        eager_texts = model.embed_texts(texts)
    # XLA may fuse and reorder float32 sums under jit: equal to float32 rounding.
    assert np.abs(jitted_images - eager_images).max() <= 1e-6
    assert np.abs(jitted_texts - eager_texts).max() <= 1e-6


# ----------------------------------------------------------------- openai's config layout


def openai_style_config(text: dict, vision: dict, projection_dim: int) -> dict:
    """A config.json laid out as openai/clip-vit-* on the hub (transformers 4.16 era).

    `text_config` and `vision_config` hold stale full-size ViT-B/32 values and
    `eos_token_id: 2`; the `*_config_dict` sections hold the real (shrunk)
    sizes, which transformers lets win.
    """
    full_text = dict(hidden_size=512, intermediate_size=2048, num_attention_heads=8,
                     num_hidden_layers=12, max_position_embeddings=77, vocab_size=49408,
                     bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_act="quick_gelu",
                     layer_norm_eps=1e-05, model_type="clip_text_model")
    full_vision = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                       num_hidden_layers=12, image_size=224, patch_size=32, num_channels=3,
                       hidden_act="quick_gelu", layer_norm_eps=1e-05, model_type="clip_vision_model")
    return {
        "architectures": ["CLIPModel"], "initializer_factor": 1.0, "logit_scale_init_value": 2.6592,
        "model_type": "clip", "projection_dim": projection_dim,
        "text_config": full_text, "vision_config": full_vision,
        "text_config_dict": {k: text[k] for k in ("hidden_size", "intermediate_size",
                                                  "num_attention_heads", "num_hidden_layers")},
        "vision_config_dict": {k: vision[k] for k in ("hidden_size", "intermediate_size",
                                                      "num_attention_heads", "num_hidden_layers",
                                                      "image_size", "patch_size")},
        "torch_dtype": "float32", "transformers_version": None,
    }


def test_openai_config_layout_matches_transformers(tiny_checkpoint, tmp_path):
    from transformers import CLIPModel

    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint[0], folder)
    config = openai_style_config(TINY["text"], TINY["vision"], TINY["projection_dim"])
    (folder / "config.json").write_text(json.dumps(config))
    # transformers reads the same folder: its own reading of the layout is the reference.
    torch_model = CLIPModel.from_pretrained(folder).eval()
    assert torch_model.config.text_config.num_hidden_layers == 2
    model = load_clip(folder)
    assert model.config.vision.patch_size == 8 and model.config.text.num_hidden_layers == 2
    assert_matches_torch(model, torch_model)


def test_legacy_eos_rule_matches_transformers_with_an_added_token(tmp_path):
    """eos_token_id == 2: transformers pools at the largest id, even an added token after EOS's id."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    text = dict(TINY["text"], vocab_size=49409, bos_token_id=0, eos_token_id=2, pad_token_id=1)
    torch.manual_seed(6)
    torch_model = CLIPModel(CLIPConfig(text_config=text, vision_config=TINY["vision"],
                                       projection_dim=TINY["projection_dim"])).eval()
    torch_model.save_pretrained(tmp_path)
    model = load_clip(tmp_path)
    assert model.config.text.eos_token_id == 2
    # An added token (49408) mid-text: the legacy rule pools there, not at EOS.
    ids = np.array([[49406, 320, 49408, 1125, 49407, 49407],
                    [49406, 320, 1125, 539, 49407, 49407]], np.int32)
    got = np.asarray(text_features(model.params, model.config, ids))
    want = torch_features(torch_model, input_ids=ids, normalize=False)
    assert np.abs(got - want).max() < 1e-5 * np.abs(want).max()
    up_to_added = np.asarray(text_features(model.params, model.config, ids[:1, :3]))
    assert np.abs(got[0] - up_to_added[0]).max() < 1e-6  # pooled at position 2, the added token


# ----------------------------------------------------------------- converted-weight cache


def cache_entries(root: Path) -> list[Path]:
    folder = root / "converted"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def count_reads(monkeypatch) -> list:
    """Spies on the weight-file reader; returns the list of folders it read."""
    calls = []
    real = checkpoints.read_state_dict

    def spy(folder):
        calls.append(folder)
        return real(folder)

    monkeypatch.setattr(checkpoints, "read_state_dict", spy)
    return calls


def test_second_load_uses_the_cache(tmp_path, private_cache, monkeypatch):
    folder = tmp_path / "ckpt"
    shutil.copytree(FIXTURE, folder)
    reads = count_reads(monkeypatch)
    first = load_clip(folder)
    assert len(reads) == 1 and len(cache_entries(private_cache)) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a good cache entry loads without a word
        second = load_clip(folder)
    assert len(reads) == 1, "the second load read the weight files again"
    for a, b in zip(jax.tree_util.tree_leaves(first.params), jax.tree_util.tree_leaves(second.params)):
        assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))
    # Each dtype has its own entry; cache=False neither reads nor writes one.
    load_clip(folder, dtype="bfloat16")
    assert len(reads) == 2 and len(cache_entries(private_cache)) == 2
    load_clip(folder, cache=False)
    assert len(reads) == 3 and len(cache_entries(private_cache)) == 2


def test_safetensors_are_not_cached(tiny_checkpoint, private_cache, monkeypatch):
    reads = count_reads(monkeypatch)
    load_clip(tiny_checkpoint[0])
    load_clip(tiny_checkpoint[0])
    assert len(reads) == 2 and cache_entries(private_cache) == []


def _garble_largest_data_file(entry: Path):
    data = max((p for p in (entry / "params").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    raw = bytearray(data.read_bytes())
    for i in range(len(raw) // 3, len(raw) // 3 + 64):
        raw[i] ^= 0xFF
    data.write_bytes(bytes(raw))


def _truncate_manifest(entry: Path):
    manifest = entry / "manifest.json"
    manifest.write_text(manifest.read_text()[:50])


def _truncate_orbax_metadata(entry: Path):
    for path in (entry / "params").rglob("manifest.ocdbt"):
        path.write_bytes(path.read_bytes()[:10])


def _wrong_checksum(entry: Path):
    manifest = json.loads((entry / "manifest.json").read_text())
    name = sorted(manifest["files"])[0]
    manifest["files"][name][1] = "00000000"
    (entry / "manifest.json").write_text(json.dumps(manifest))


def _missing_file(entry: Path):
    next(p for p in (entry / "params").rglob("*") if p.is_file()).unlink()


def _other_manifest_version(entry: Path):
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["version"] = 0
    (entry / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage", [_garble_largest_data_file, _truncate_manifest,
                                    _truncate_orbax_metadata, _wrong_checksum, _missing_file,
                                    _other_manifest_version],
                         ids=["garbled data", "truncated manifest", "truncated orbax metadata",
                              "wrong checksum", "missing file", "other manifest version"])
def test_damaged_cache_warns_and_is_rebuilt(tmp_path, private_cache, monkeypatch, damage):
    folder = tmp_path / "ckpt"
    shutil.copytree(FIXTURE, folder)
    expected = np.load(FIXTURE / "expected.npz")
    load_clip(folder)
    [entry] = cache_entries(private_cache)
    damage(entry)
    reads = count_reads(monkeypatch)
    with pytest.warns(UserWarning, match="converted-weight cache .* is damaged.*rebuilding"):
        model = load_clip(folder)
    assert len(reads) == 1
    got = model.embed_pixel_values(expected["pixel_values"], normalize=False)
    assert np.abs(got - expected["image_features"]).max() < 1e-5
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        load_clip(folder)  # the rebuilt entry is good again
    assert len(reads) == 1 and cache_entries(private_cache) == [entry]


def test_non_finite_weights_warn_on_cache_hits_too(tmp_path):
    from flax.serialization import msgpack_restore, msgpack_serialize

    folder = tmp_path / "ckpt"
    shutil.copytree(FIXTURE, folder)
    tree = msgpack_restore((folder / checkpoints.FLAX_MSGPACK).read_bytes())
    kernel = tree["text_projection"]["kernel"].copy()  # msgpack_restore's arrays are read-only
    kernel[0, 0] = np.inf
    tree["text_projection"]["kernel"] = kernel
    (folder / checkpoints.FLAX_MSGPACK).write_bytes(msgpack_serialize(tree))
    for _ in range(2):
        with pytest.warns(UserWarning, match=r"NaN or inf values: text_projection\.weight"):
            load_clip(folder)


def test_unwritable_cache_only_warns(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(CACHE_ENV, str(blocker))
    with pytest.warns(UserWarning, match="could not write the converted-weight cache"):
        model = load_clip(FIXTURE)
    expected = np.load(FIXTURE / "expected.npz")
    got = model.embed_pixel_values(expected["pixel_values"], normalize=False)
    assert np.abs(got - expected["image_features"]).max() < 1e-5


RACE_PROBE = textwrap.dedent("""
    import sys, time, warnings
    from pathlib import Path
    import numpy as np
    from convis_jax.models.loading import load_clip

    ready, go = Path(sys.argv[2]), Path(sys.argv[3])
    ready.touch()
    while not go.exists():  # start both loads at the same moment
        time.sleep(0.005)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model = load_clip(sys.argv[1])
    np.save(sys.argv[4], model.embed_pixel_values(np.load(sys.argv[5]), normalize=False))
""")


def test_two_processes_building_one_cache(tmp_path, private_cache, monkeypatch):
    folder = tmp_path / "ckpt"
    shutil.copytree(FIXTURE, folder)
    expected = np.load(FIXTURE / "expected.npz")
    np.save(tmp_path / "pixels.npy", expected["pixel_values"])
    env = dict(os.environ, PYTHONPATH=str(REPO))
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", RACE_PROBE, str(folder), str(tmp_path / f"ready{i}"),
                               str(go), str(tmp_path / f"out{i}.npy"), str(tmp_path / "pixels.npy")],
                              env=env, stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
            if any(p.poll() is not None for p in procs):
                break  # a probe died while starting; its stderr is reported below
            time.sleep(0.01)
        go.touch()
        errors = [p.communicate(timeout=300)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], errors[0][-2000:] + errors[1][-2000:]
    for i in range(2):
        got = np.load(tmp_path / f"out{i}.npy")
        assert np.abs(got - expected["image_features"]).max() < 1e-5
    # One good entry, no temporary folders left, and it serves the next load silently.
    converted = private_cache / "converted"
    assert [p.name for p in converted.iterdir() if p.name.startswith(".")] == []
    assert len(cache_entries(private_cache)) == 1
    reads = count_reads(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        load_clip(folder)
    assert reads == []


def test_file_hashes_are_memoised_by_size_and_times(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoints, "_MEMO_MIN_BYTES", 0)
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"abc" * 1000)
    an_hour_ago = time.time_ns() - 3600 * 10**9
    os.utime(weights, ns=(an_hour_ago, an_hour_ago))
    memo = tmp_path / "memo"
    first = checkpoints.fingerprint_files([weights], memo_dir=memo)
    assert first == checkpoints.fingerprint_files([weights])  # memoised or not, the same hash
    hashed = []
    real = checkpoints._sha256_file
    monkeypatch.setattr(checkpoints, "_sha256_file", lambda p: hashed.append(p) or real(p))
    assert checkpoints.fingerprint_files([weights], memo_dir=memo) == first and hashed == []
    weights.write_bytes(b"abd" * 1000)  # same size, new content, new times
    changed = checkpoints.fingerprint_files([weights], memo_dir=memo)
    assert len(hashed) == 1 and changed != first
    # Modified just now: its times could still repeat, so it is not memoised yet.
    assert checkpoints.fingerprint_files([weights], memo_dir=memo) == changed and len(hashed) == 2
    (memo / "file_hashes.json").write_text("{garbled")
    with pytest.warns(UserWarning, match="file-hash memo .* is damaged"):
        assert checkpoints.fingerprint_files([weights], memo_dir=memo) == changed
