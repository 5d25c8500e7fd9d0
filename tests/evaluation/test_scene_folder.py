"""convis_jax.evaluation.scene_folder: written scenes read back exactly."""

import json

import numpy as np
import pytest

from convis_jax.core.images import load_image
from convis_jax.errors import InputError
from convis_jax.evaluation import scene_folder
from convis_jax.scenes import make_dataset


@pytest.fixture(scope="module")
def scenes():
    return make_dataset(seed=7, n=3, size=48)


def test_round_trip(tmp_path, scenes):
    written = scene_folder.write_scene_folder(tmp_path / "s", scenes)
    records = scene_folder.read_scene_folder(tmp_path / "s")
    assert records == written
    assert [r.image_id for r in records] == [f"scene_0000{n}.png" for n in range(3)]
    for record, scene in zip(records, scenes):
        np.testing.assert_array_equal(load_image(record.path), scene.image)  # lossless
        assert record.concepts == scene.concepts
        assert record.captions == scene.captions
        np.testing.assert_array_equal(np.asarray(record.boxes), scene.boxes)
        np.testing.assert_array_equal(scene_folder.read_scene_masks(record), scene.masks)
        # The boxes feed the metrics: each object's box is the tight box of
        # its visible mask or larger (hidden parts count).
        for box, mask in zip(record.boxes, scene.masks):
            ys, xs = np.nonzero(mask)
            assert box[0] <= xs.min() and box[1] <= ys.min()
            assert box[2] >= xs.max() + 1 and box[3] >= ys.max() + 1


def test_refuses_to_overwrite(tmp_path, scenes):
    scene_folder.write_scene_folder(tmp_path, scenes[:1])
    with pytest.raises(InputError, match="scenes.json"):
        scene_folder.write_scene_folder(tmp_path, scenes[1:])
    with pytest.raises(InputError, match="at least one scene"):
        scene_folder.write_scene_folder(tmp_path / "empty", [])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(format="other"), "format"),
        (lambda d: d.update(version=2), "version"),
        (lambda d: d.update(scenes=[]), "non-empty"),
        (lambda d: d["scenes"][0].pop("boxes"), "keys"),
        (lambda d: d["scenes"][0].update(boxes=[[0, 0, 1]]), r"scenes\[0\].*box"),
        (lambda d: d["scenes"][1].update(masks=[]), r"scenes\[1\].*mask"),
        (lambda d: d["scenes"][1].update(concepts=["a.n.01", "a.n.01"]), "distinct"),
        (lambda d: d["scenes"][1].update(image="scene_00000.png"), "once"),
        (lambda d: d["scenes"][2].update(image="missing.png"), "missing.png"),
    ],
)
def test_rejects_malformed_folders(tmp_path, scenes, change, message):
    scene_folder.write_scene_folder(tmp_path, scenes)
    document = json.loads((tmp_path / "scenes.json").read_text())
    change(document)
    (tmp_path / "scenes.json").write_text(json.dumps(document))
    with pytest.raises(InputError, match=message):
        scene_folder.read_scene_folder(tmp_path)


def test_rejects_missing_folder_or_file(tmp_path):
    with pytest.raises(InputError, match="no folder"):
        scene_folder.read_scene_folder(tmp_path / "nowhere")
    with pytest.raises(InputError, match="scenes.json"):
        scene_folder.read_scene_folder(tmp_path)
    (tmp_path / "scenes.json").write_text("{not json")
    with pytest.raises(InputError, match="JSON"):
        scene_folder.read_scene_folder(tmp_path)
