"""convis_jax.evaluation.wsol without a model: map functions are spies.

The localisation chain is checked against the pixels themselves: photos of
odd sizes hold a white rectangle where the ground-truth box is, and a "map"
that is the prepared photo's own brightness must localise it perfectly, so
boxes and maps went through the same crop and resize.
"""

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from convis_jax import evaluation
from convis_jax.core.images import load_image
from convis_jax.core.windows import map_to_image, prepare_image
from convis_jax.errors import InputError
from convis_jax.evaluation import datasets, localisation, scene_folder
from convis_jax.evaluation.pointing import pointing_game
from convis_jax.testing import (
    CUB_PHOTOS,
    write_cub_folder,
)


def brightness_map(photo, concepts, image_id):
    """A 'perfect' map: the prepared photo's own brightness, one copy per concept."""
    square = prepare_image(photo, evaluation.SQUARE)[..., 0] / 255.0
    return np.repeat(square[None], len(concepts), axis=0)


class Spy:
    """Wraps a map function and records which images it was asked for."""

    def __init__(self, fn):
        self.fn = fn
        self.calls = []

    def __call__(self, photo, concepts, image_id):
        self.calls.append((image_id, tuple(concepts)))
        return self.fn(photo, concepts, image_id)


SETTINGS = {"task": "wsol", "method": "spy", "tolerance": 15}


# ---------------------------------------------------------------------------
# Items


def test_items_of_cub_and_scenes(tmp_path):
    records = datasets.read_cub(write_cub_folder(tmp_path / "cub"))
    items = evaluation.cub_items(records)
    assert [i.image_id for i in items] == list(CUB_PHOTOS)
    assert {i.concept for i in items} == {"bird.n.01"}
    np.testing.assert_array_equal(items[2].boxes, [[50, 55, 85, 85]])

    from convis_jax.scenes import make_dataset

    scenes = scene_folder.write_scene_folder(tmp_path / "s", make_dataset(seed=4, n=3, size=40))
    items = evaluation.scene_items(scenes)
    assert [(i.image_id, i.concept) for i in items] == [
        (r.image_id, c) for r in scenes for c in r.concepts
    ]
    one = scenes[0].concepts[0]
    only = evaluation.scene_items(scenes, one)
    assert [i.image_id for i in only] == [r.image_id for r in scenes if one in r.concepts]
    assert all(i.concept == one and i.boxes.shape == (1, 4) for i in only)


# ---------------------------------------------------------------------------
# Per-image localisation and the summary


def test_perfect_and_inverted_maps(tmp_path):
    items = evaluation.cub_items(datasets.read_cub(write_cub_folder(tmp_path)))
    log = evaluation.ResultLog(tmp_path / "log.jsonl", SETTINGS)
    results = evaluation.run_wsol(items, brightness_map, log, progress=False)
    summary = evaluation.summarise_wsol(results)
    assert summary.count == 3 and summary.cut_away == 0
    assert summary.max_box_acc.value == 1.0
    assert summary.max_box_acc_v2.value == 1.0
    assert summary.pointing_game == 1.0
    # Every image hits at t = 0.5: its half-intensity edges are the box.
    assert all(r.hits[50] for r in results)

    def inverted(photo, concepts, image_id):
        return 1.0 - brightness_map(photo, concepts, image_id)

    log = evaluation.ResultLog(tmp_path / "inverted.jsonl", SETTINGS)
    worst = evaluation.summarise_wsol(evaluation.run_wsol(items, inverted, log, progress=False))
    # The background's box is the whole square; every rectangle covers less than half of it.
    assert worst.max_box_acc.value == 0.0


def test_summary_equals_the_batch_metrics():
    rng = np.random.default_rng(5)
    maps = [rng.random((24, 24)) for _ in range(6)]
    for m in maps:
        m[rng.integers(0, 12):, rng.integers(0, 12):] += 1.0
        m /= m.max()
    boxes = [np.array([[4, 6, 20, 18]]), np.array([[0, 0, 10, 10], [12, 12, 24, 24]])] * 3
    # Square 24 x 24 photos: the boxes stay as they are on the square.
    results = [evaluation.localise(m, b, (24, 24)) for m, b in zip(maps, boxes)]
    summary = evaluation.summarise_wsol(results)
    v1 = localisation.max_box_acc(maps, boxes)
    v2 = localisation.max_box_acc_v2(maps, boxes, protocol="convis")
    assert summary.max_box_acc.protocol == summary.max_box_acc_v2.protocol == "convis"
    np.testing.assert_array_equal(summary.max_box_acc.curve, v1.curve)
    assert summary.max_box_acc.best_threshold == v1.best_threshold
    assert summary.max_box_acc_v2.value == v2.value
    for mine, theirs in zip(summary.max_box_acc_v2.per_iou, v2.per_iou):
        np.testing.assert_array_equal(mine.curve, theirs.curve)
    assert summary.pointing_game == pointing_game(maps, boxes).value
    report = evaluation.wsol_report(summary)
    assert report["max_box_acc"]["value"] == v1.value
    assert report["protocol"] == report["max_box_acc"]["protocol"] == "convis"
    assert report["pointing_game_protocol"] == "torchray"
    assert [r["iou_threshold"] for r in report["max_box_acc_v2"]["per_iou"]] == [0.3, 0.5, 0.7]
    # The JSON form reads back exactly.
    again = [evaluation.Localisation.from_json(json.loads(json.dumps(r.to_json())))
             for r in results]
    for a, b in zip(again, results):
        np.testing.assert_array_equal(a.hits_v2, b.hits_v2)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        assert a.pointing == b.pointing
        assert a.protocol == b.protocol == "convis"
    mixed = dataclasses.replace(results[0], protocol="wsolevaluation")
    with pytest.raises(InputError, match="one protocol"):
        evaluation.summarise_wsol([results[1], mixed])
    with pytest.raises(InputError, match="hits"):
        evaluation.Localisation.from_json({**results[0].to_json(), "hits": [1, 0]})
    with pytest.raises(InputError, match="at least one"):
        evaluation.summarise_wsol([])


def test_boxes_cut_away_count_as_misses(tmp_path):
    item = evaluation.WsolItem("x.png", tmp_path / "x.png", "bird.n.01",
                               np.array([[0.0, 0, 10, 40]]))
    # The crop keeps x in [30, 70): the box is cut away.
    Image.fromarray(np.full((40, 100, 3), 255, np.uint8)).save(item.path)
    log = evaluation.ResultLog(tmp_path / "log.jsonl", SETTINGS)
    (result,) = evaluation.run_wsol([item], brightness_map, log, progress=False)
    assert result.cut_away and not result.hits.any() and not result.hits_v2.any()
    assert result.pointing == 0.0
    assert evaluation.summarise_wsol([result]).cut_away == 1


# ---------------------------------------------------------------------------
# Resuming


def test_rerun_skips_finished_images_and_redoes_a_cut_one(tmp_path):
    items = evaluation.cub_items(datasets.read_cub(write_cub_folder(tmp_path / "cub")))
    path = tmp_path / "log.jsonl"
    spy = Spy(brightness_map)
    first = evaluation.run_wsol(items, spy, evaluation.ResultLog(path, SETTINGS), progress=False)
    assert [c[0] for c in spy.calls] == [i.image_id for i in items]

    spy.calls.clear()
    again = evaluation.run_wsol(items, spy, evaluation.ResultLog(path, SETTINGS), progress=False)
    assert spy.calls == []
    assert [r.to_json() for r in again] == [r.to_json() for r in first]

    # A crash while writing the last record leaves half a line: it is dropped
    # and only that image is done again.
    text = path.read_text()
    path.write_text(text[: text.rstrip("\n").rfind("\n") + 1] + '{"key": "001.Ani')
    log = evaluation.ResultLog(path, SETTINGS)
    assert len(log) == 2 and path.read_text().endswith("\n")
    evaluation.run_wsol(items, spy, log, progress=False)
    assert spy.calls == [(items[2].image_id, ("bird.n.01",))]
    assert len(path.read_text().splitlines()) == 1 + 3


# ---------------------------------------------------------------------------
# wsolevaluation export


def test_export_reads_back_at_wsolevaluations_size(tmp_path):
    items = evaluation.cub_items(datasets.read_cub(write_cub_folder(tmp_path / "cub")))
    out = tmp_path / "scoremaps"
    log = evaluation.ResultLog(tmp_path / "log.jsonl", SETTINGS)
    evaluation.run_wsol(items, brightness_map, log, export_dir=out, progress=False)
    for rel, (size, _) in CUB_PHOTOS.items():
        # wsolevaluation loads os.path.join(scoremap_root, image_id + '.npy').
        saved = np.load(out / (rel + ".npy"))
        assert saved.dtype == np.float32 and saved.shape == (224, 224)
        assert saved.min() == 0.0 and saved.max() == 1.0
        photo = load_image(tmp_path / "cub" / "images" / rel)  # the .jpg is lossy
        want = map_to_image(brightness_map(photo, ["c"], rel)[0], size)
        # The map on the photo, resized as wsolevaluation resizes the photo
        # (Pillow bilinear to 224 x 224), min-max normalised.
        resized = np.asarray(Image.fromarray(want).resize((224, 224), Image.BILINEAR), np.float64)
        resized = (resized - resized.min()) / (resized.max() - resized.min())
        np.testing.assert_array_equal(saved, resized.astype(np.float32))

    # A missing export makes its image pending again, even though the log has it.
    (out / (items[1].image_id + ".npy")).unlink()
    spy = Spy(brightness_map)
    log = evaluation.ResultLog(tmp_path / "log.jsonl", SETTINGS)
    evaluation.run_wsol(items, spy, log, export_dir=out, progress=False)
    assert [c[0] for c in spy.calls] == [items[1].image_id]
    assert (out / (items[1].image_id + ".npy")).is_file()


def test_export_by_concept_and_bad_arguments(tmp_path):
    item = evaluation.WsolItem("sub/x.png", tmp_path / "x.png", "circle.n.01",
                               np.array([[1.0, 1, 5, 5]]))
    Image.fromarray(np.zeros((9, 13, 3), np.uint8)).save(item.path)
    log = evaluation.ResultLog(tmp_path / "log.jsonl", SETTINGS)
    evaluation.run_wsol([item], brightness_map, log, export_dir=tmp_path / "e",
                        export_by_concept=True, progress=False)
    assert np.load(tmp_path / "e" / "circle.n.01" / "sub" / "x.png.npy").shape == (224, 224)

    good = np.zeros((4, 5), np.float32)
    with pytest.raises(InputError, match="relative path"):
        evaluation.export_wsolevaluation(tmp_path, ["../escape.jpg"], [good])
    with pytest.raises(InputError, match="relative path"):
        evaluation.export_wsolevaluation(tmp_path, ["/abs.jpg"], [good])
    with pytest.raises(InputError, match="finite"):
        evaluation.export_wsolevaluation(tmp_path, ["a.jpg"], [good + np.nan])
    with pytest.raises(InputError, match="2-D"):
        evaluation.export_wsolevaluation(tmp_path, ["a.jpg"], [np.zeros(3)])
    with pytest.raises(InputError, match="one map per image id"):
        evaluation.export_wsolevaluation(tmp_path, ["a.jpg", "b.jpg"], [good])
    assert not (tmp_path / "a.jpg.npy").exists()
