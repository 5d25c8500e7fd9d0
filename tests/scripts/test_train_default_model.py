"""Tests of scripts/train_default_model.py: its labels against a pixel count, its
padded texts against full-length ones, and a two-step run whose folder
transformers' PyTorch CLIP loads and agrees with, and which a rerun repeats
byte for byte, and the frozen text tower staying exactly as it was.
"""

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

from convis_jax.scenes import DRAWN_CONCEPTS, render_scene

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def train():
    # The script sets XLA_FLAGS for its own process; later tests' subprocesses
    # should not inherit it.
    flags = os.environ.get("XLA_FLAGS")
    try:
        # The repository root is on sys.path: pytest puts it there for the `tests` package.
        import scripts.train_default_model as module
        yield module
    finally:
        if flags is None:
            os.environ.pop("XLA_FLAGS", None)
        else:
            os.environ["XLA_FLAGS"] = flags


@pytest.fixture(scope="module")
def scene():
    return render_scene(3, size=224, n_objects=3)


@pytest.fixture(scope="module")
def texts(train):
    """The training texts as the shipped tokenizer (ids 3000, 2998, 2999) splits them."""
    from tokenizers import Tokenizer

    from convis_jax.core.vocabulary import ConceptVocabulary

    tokenizer = Tokenizer.from_file(str(ROOT / "convis_jax" / "data" / "default_model" / "tokenizer.json"))
    return train.training_texts(tokenizer, ConceptVocabulary.from_synsets(DRAWN_CONCEPTS), 2999)


def _padded_masks(train, masks):
    side = train.SCENE_SIZE + 2 * train.PADDING
    padded = np.zeros((len(masks), side, side), bool)
    padded[:, train.PADDING:train.PADDING + train.SCENE_SIZE,
           train.PADDING:train.PADDING + train.SCENE_SIZE] = masks
    return padded


# Crops of the whole scene, across its border and in the padding only.
BOXES = [(128, 128, 224), (100, 150, 128), (300, 90, 64), (0, 0, 100), (250, 260, 77), (400, 0, 64)]


@pytest.mark.parametrize("box", BOXES)
def test_crop_labels_match_a_count_of_visible_pixels(train, scene, box):
    settings = train.TrainSettings()
    present, known = train.crop_labels(scene.masks, box, settings)
    x0, y0, side = box
    padded = _padded_masks(train, scene.masks)
    for i, mask in enumerate(padded):
        fraction = mask[y0:y0 + side, x0:x0 + side].sum() / mask.sum()
        assert present[i] == (fraction >= settings.present_fraction)
        assert known[i] == (present[i] or fraction <= settings.absent_fraction)


def test_texts_padded_to_their_group_embed_as_at_full_length(train, texts):
    import jax.numpy as jnp

    from convis_jax.models import clip

    config = train.model_config(train.TrainSettings(), 3000, 2998, 2999)  # the shipped ids
    eos = config.text.eos_token_id
    definitions, captions = texts.input_ids
    assert definitions.shape[0] == len(texts.concepts) and captions.shape[1] < definitions.shape[1]
    params = clip.init_params(config, 0)
    short = train.encode_training_texts(params, config, tuple(map(jnp.asarray, texts.input_ids)))
    length = config.text.max_position_embeddings
    full = np.concatenate([np.pad(ids, ((0, 0), (0, length - ids.shape[1])), constant_values=eos)
                           for ids in texts.input_ids])
    np.testing.assert_allclose(np.asarray(short), np.asarray(clip.encode_texts(params, config, full)),
                               atol=1e-6)


def test_batches_are_a_function_of_seed_and_step(train):
    settings = train.TrainSettings(batch_size=16)
    first, again, other = (train.make_batch(0, step, settings, 32) for step in (5, 5, 6))
    for field in ("pixels", "present", "known", "single"):
        np.testing.assert_array_equal(getattr(first, field), getattr(again, field))
    assert not np.array_equal(first.pixels, other.pixels)
    assert first.pixels.shape == (16, 3, 32, 32)


TINY = dict(steps=2, warmup_steps=1, batch_size=16, eval_every=2, image_size=32, width=32,
            vision_layers=1, text_layers=1)


@pytest.fixture(scope="module")
def short_run(train, tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    return folder, train.train(train.TrainSettings(**TINY), folder)


def test_a_rerun_with_the_same_seed_gives_the_same_weights(train, short_run, tmp_path):
    train.train(train.TrainSettings(**TINY), tmp_path)
    first = (short_run[0] / "model.safetensors").read_bytes()
    assert (tmp_path / "model.safetensors").read_bytes() == first


def test_a_short_run_writes_a_folder_pytorch_clip_loads(short_run):
    import torch
    from transformers import CLIPModel, CLIPTokenizer

    from convis_jax.models.loading import load_clip

    tmp_path, log = short_run
    assert [entry["step"] for entry in log["curve"]] == [2]
    assert np.isfinite(log["curve"][0]["loss"])
    assert json.loads((tmp_path / "training_log.json").read_text())["settings"]["steps"] == 2

    model = load_clip(tmp_path)
    torch_model = CLIPModel.from_pretrained(tmp_path).eval()
    pixels = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    text = "a six-sided polygon"
    ids = CLIPTokenizer.from_pretrained(tmp_path)([text], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch_image = torch_model.get_image_features(pixel_values=torch.from_numpy(pixels))
        torch_text = torch_model.get_text_features(input_ids=ids)
    def unit(features):
        features = getattr(features, "pooler_output", features)
        return (features / features.norm(dim=-1, keepdim=True)).numpy()

    np.testing.assert_allclose(model.embed_pixel_values(pixels), unit(torch_image), atol=1e-5)
    np.testing.assert_allclose(model.embed_texts([text]), unit(torch_text), atol=1e-5)


def test_after_text_steps_the_text_tower_stays_exactly_as_it_was(train, texts):
    import jax
    import jax.numpy as jnp

    from convis_jax.models import clip

    settings = train.TrainSettings(**dict(TINY, steps=3))
    config = train.model_config(settings, 3000, 2998, 2999)
    input_ids = tuple(map(jnp.asarray, texts.input_ids))
    trainable = {"clip": clip.init_params(config, 0),
                 "extra": {"sigmoid_scale": jnp.log(10.0), "sigmoid_bias": jnp.asarray(-4.0)}}
    tx = train.optimiser(settings)
    step = train.make_train_step(config, texts, tx)
    batches = [dataclasses.asdict(train.make_batch(0, s, settings, 32)) for s in range(3)]
    state, _ = step((trainable, tx.init(trainable)), input_ids, batches[0])
    copy = lambda tree: jax.tree_util.tree_map(np.array, tree)
    before = copy(state[0]["clip"])
    fixed = train.encode_training_texts(state[0]["clip"], config, input_ids)

    # With the embeddings the tower gives, the frozen loss is the learning
    # one without its text-only separation term.
    learning = train.loss_terms(state[0]["clip"], state[0]["extra"], config, texts, input_ids, batches[1])
    frozen = train.loss_terms(state[0]["clip"], state[0]["extra"], config, texts, fixed, batches[1])
    assert float(learning[1]["separation"]) > 0 and float(frozen[1]["separation"]) == 0
    np.testing.assert_allclose(float(frozen[0]), float(learning[0] - learning[1]["separation"]), rtol=1e-5)

    for batch in batches[1:]:
        state, parts = step(state, fixed, batch)
    after = copy(state[0]["clip"])
    for key in train.TEXT_TOWER:
        for old, new in zip(jax.tree_util.tree_leaves(before[key]), jax.tree_util.tree_leaves(after[key])):
            np.testing.assert_array_equal(old, new)
    assert not np.array_equal(before["vision_model"]["embeddings"]["patch_embedding"]["kernel"],
                              after["vision_model"]["embeddings"]["patch_embedding"]["kernel"])


def test_loss_terms_follow_a_plain_loop_over_crops(train, texts):
    """Objects, no object (the general concepts are the targets) and a cut object."""
    import jax.numpy as jnp

    from convis_jax.models import clip

    general = [texts.concepts[row] for row in texts.general_index]
    assert sorted(general) == ["abstraction.n.06", "attribute.n.02", "entity.n.01", "shape.n.02"]

    settings = train.TrainSettings(**TINY)
    config = train.model_config(settings, 3000, 2998, 2999)
    params = clip.init_params(config, 0)
    extra = {"sigmoid_scale": jnp.log(10.0), "sigmoid_bias": jnp.asarray(-4.0)}
    rng = np.random.default_rng(0)
    n_texts = sum(map(len, texts.input_ids))
    fixed = rng.normal(size=(n_texts, config.projection_dim)).astype(np.float32)
    fixed /= np.linalg.norm(fixed, axis=1, keepdims=True)
    d = len(DRAWN_CONCEPTS)
    present, known = np.zeros((4, d), np.float32), np.ones((4, d), np.float32)
    present[0, 3] = 1                      # one object
    present[1, [0, 7]] = 1                 # two objects
    known[3, 5] = 0                        # crop 2 empty; crop 3 only a cut object
    batch = {"pixels": rng.normal(size=(4, 3, 32, 32)).astype(np.float32), "present": present,
             "known": known, "single": np.array([3, -1, -1, -1], np.int32)}
    loss, parts = train.loss_terms(params, extra, config, texts, jnp.asarray(fixed), batch)

    image = np.asarray(clip.encode_images(params, config, jnp.asarray(batch["pixels"])), np.float64)
    cosine = image @ fixed.astype(np.float64).T
    n_concepts = len(texts.concepts)
    scale = min(np.exp(float(params["logit_scale"])), 100.0)
    sigmoid, definition, caption = 0.0, [], []
    for b in range(4):
        holds, clear = present[b].any(), known[b].all()
        for row, name in enumerate(texts.concepts):
            logit = cosine[b, row] * 10.0 - 4.0
            if name in DRAWN_CONCEPTS:
                k = DRAWN_CONCEPTS.index(name)
                y, w = present[b, k], known[b, k]
            elif name in general:
                y, w = float(clear and not holds), float(holds or clear)
            else:
                y, w = 0.0, 1.0
            sigmoid += w * (np.logaddexp(0, logit) - y * logit)
        if not clear:
            continue
        positive = ([texts.drawn_index[k] for k in np.flatnonzero(present[b])] if holds
                    else list(texts.general_index))
        logits = scale * cosine[b, :n_concepts]
        definition.append(np.logaddexp.reduce(logits) - np.logaddexp.reduce(logits[positive]))
        if holds:
            logits = scale * cosine[b, n_concepts:]
            mine = [i for i, owner in enumerate(texts.caption_owner) if present[b, owner]]
            caption.append(np.logaddexp.reduce(logits) - np.logaddexp.reduce(logits[mine]))
    np.testing.assert_allclose(float(parts["sigmoid"]), sigmoid / 4, rtol=1e-4)
    np.testing.assert_allclose(float(parts["definition_ce"]), np.mean(definition), rtol=1e-4)
    np.testing.assert_allclose(float(parts["caption_ce"]), np.mean(caption), rtol=1e-4)
    assert len(definition) == 3 and len(caption) == 2
