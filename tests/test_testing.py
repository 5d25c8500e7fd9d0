"""convis_jax.testing: the folders it writes read back through the package's own readers,
and a missing PyTorch is named with the version to install."""

import sys

import numpy as np
import pytest

from convis_jax import testing
from convis_jax.errors import InputError


def test_clip_folder_with_tokenizer_files_loads(tmp_path):
    from transformers import CLIPModel, CLIPTokenizer

    from convis_jax.models.loading import load_clip

    torch_model = testing.make_clip_checkpoint(tmp_path / "clip", seed=5, tokenizer=True)
    names = {p.name for p in (tmp_path / "clip").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer_config.json"} <= names
    assert {"tokenizer.json", "vocab.json"} & names
    assert not [p for p in tmp_path.iterdir() if p.name != "clip"]  # no staging folder left
    # The returned model is the one in the folder (the parity tests compare outputs).
    saved = CLIPModel.from_pretrained(tmp_path / "clip").state_dict()
    for name, value in torch_model.state_dict().items():
        assert value.equal(saved[name]), name
    # load_clip tokenizes with the folder's files, as transformers does.
    texts = ["a photo of a cat", "warm-blooded egg-laying vertebrates"]
    reference = CLIPTokenizer.from_pretrained(str(tmp_path / "clip"))(texts)["input_ids"]
    ids = load_clip(tmp_path / "clip").tokenize(texts).input_ids
    for row, want in zip(ids, reference):
        assert row[:len(want)].tolist() == want and want[0] == 49406 and want[-1] == 49407


def test_a_missing_torch_names_the_pinned_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
    with pytest.raises(ModuleNotFoundError, match=r"pip install torch==2\.13\.0"):
        testing.make_clip_checkpoint(tmp_path / "clip")
    assert not (tmp_path / "clip").exists()


def test_data_folders_read_back(tmp_path):
    from convis_jax.core.images import load_image
    from convis_jax.core.wordnet import load_wordnet
    from convis_jax.evaluation import datasets

    records = datasets.read_cub(testing.write_cub_folder(tmp_path / "cub"))
    assert len(records) == len(testing.CUB_PHOTOS)
    assert [str(r.path.relative_to(tmp_path / "cub" / "images")) for r in records] == list(
        testing.CUB_PHOTOS)
    for record, (size, box) in zip(records, testing.CUB_PHOTOS.values()):
        photo = load_image(record.path)
        assert photo.shape == (*size, 3)
        x, y, w, h = box
        white = np.argwhere(photo.min(axis=-1) > 127)  # [M, 2] (row, column)
        assert white.min(axis=0).tolist() == [y, x]
        assert white.max(axis=0).tolist() == [y + h - 1, x + w - 1]
    classes = {"n01530575": 2, "n03001627": 1}
    records = datasets.read_imagenet_folders(
        testing.write_imagenet_folder(tmp_path / "inet", classes), load_wordnet())
    assert sorted(r.path.name for r in records) == [
        "n01530575_0.JPEG", "n01530575_1.JPEG", "n03001627_0.JPEG"]
    assert load_image(tmp_path / "inet" / "n01530575" / "n01530575_1.JPEG").shape == (10, 13, 3)
    words = testing.write_words_file(tmp_path)
    assert words.read_text().split() == testing.WORDS
    with pytest.raises(InputError, match=r"no image format for '\.unknown'"):
        testing.write_cub_folder(tmp_path / "bad", {"a/x.unknown": ((4, 4), (0, 0, 1, 1))})
