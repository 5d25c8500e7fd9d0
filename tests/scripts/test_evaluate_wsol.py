"""scripts/evaluate_wsol.py end to end on a tiny random CLIP.

Random weights make the numbers meaningless, so the tests check structure,
ranges and internal consistency: summaries recomputed from the per-image
logs equal the reported ones, exported maps have the photos' sizes, and a
rerun does no work.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from convis_jax import evaluation
from convis_jax.core.vocabulary import ConceptVocabulary
from convis_jax.evaluation import scene_folder
from convis_jax.scenes import DRAWN_CONCEPTS, make_dataset
from convis_jax.testing import CUB_PHOTOS, write_cub_folder
from tests.evaluation.test_protocols import wsolevaluation_reference
from tests.scripts.helpers import load_script, read_log

REPO = Path(__file__).resolve().parents[2]
WSOL = load_script("evaluate_wsol")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Data folders, a small vocabulary file, and a cache folder shared by the module."""
    root = tmp_path_factory.mktemp("eval_data")
    write_cub_folder(root / "cub")
    scene_folder.write_scene_folder(root / "scenes", make_dataset(seed=11, n=2, size=64))
    vocabulary = ConceptVocabulary.from_synsets(["bird.n.01", *DRAWN_CONCEPTS])
    (root / "vocabulary.json").write_text(json.dumps(vocabulary.to_dict()))
    return root


@pytest.fixture(autouse=True)
def cache(data, monkeypatch):
    monkeypatch.setenv("CONVIS_JAX_CACHE", str(data / "cache"))


def wsol_args(data, checkpoint, out, *extra):
    return [str(data / "cub"), "--out", str(out), "--model", str(checkpoint),
            "--vocabulary", str(data / "vocabulary.json"), "--quiet", *extra]


def check_report(report: dict, count: int) -> None:
    assert report["count"] == count
    for key in ("max_box_acc", "max_box_acc_v2", "pointing_game"):
        value = report[key]["value"] if isinstance(report[key], dict) else report[key]
        assert 0.0 <= value <= 1.0
    curve = report["max_box_acc"]["curve"]
    assert len(curve) == 100 and max(curve) == report["max_box_acc"]["value"]
    assert report["max_box_acc_v2"]["value"] == pytest.approx(
        np.mean([r["value"] for r in report["max_box_acc_v2"]["per_iou"]]))


def test_wsol_on_cub_with_export_and_resume(data, tiny_checkpoint, tmp_path, monkeypatch, capsys):
    from convis_jax.api import ConVis

    out = tmp_path / "cub.json"
    export = tmp_path / "scoremaps"
    calls = []
    original = ConVis.occlusion_maps

    def spy(self, images, concepts=None, **kwargs):
        calls.append((list(concepts), kwargs["seed"]))
        return original(self, images, concepts, **kwargs)

    monkeypatch.setattr(ConVis, "occlusion_maps", spy)
    args = wsol_args(data, tiny_checkpoint[0], out, "--export-wsol", str(export))
    assert WSOL.main(args) == 0
    assert "MaxBoxAcc" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["dataset"] == "cub" and doc["concepts"] == ["bird.n.01"]
    assert doc["settings"]["method"] == "occlusion" and doc["settings"]["padding"] == "noise"
    assert doc["protocol"] == doc["settings"]["protocol"] == "convis"
    assert doc["pointing_protocol"] == "torchray"
    assert doc["results"]["all"]["max_box_acc"]["protocol"] == "convis"
    assert set(doc["results"]) == {"all"}
    check_report(doc["results"]["all"], len(CUB_PHOTOS))
    # One map per image, each with its own padding noise.
    assert len(calls) == 3 and len({seed for _, seed in calls}) == 3

    # The report is the summary of the per-image log.
    records = read_log(out.with_name("cub.images.jsonl"))
    assert [r["image_id"] for r in records] == list(CUB_PHOTOS)
    again = evaluation.wsol_report(evaluation.summarise_wsol(
        [evaluation.Localisation.from_json(r) for r in records]))
    assert again == doc["results"]["all"]

    # wsolevaluation layout: <root>/<image id>.npy, 224 x 224, in [0, 1], maximum 1.
    for rel in CUB_PHOTOS:
        saved = np.load(export / (rel + ".npy"))
        assert saved.shape == (224, 224) and saved.dtype == np.float32
        assert 0.0 <= saved.min() and saved.max() == 1.0

    # The same command again maps nothing and reports the same numbers.
    calls.clear()
    assert WSOL.main(args) == 0
    assert calls == []
    assert json.loads(out.read_text())["results"] == doc["results"]

    # Other options do not mix with the old results.
    assert WSOL.main(wsol_args(data, tiny_checkpoint[0], out, "--padding", "constant")) == 2
    assert "--restart" in capsys.readouterr().err
    assert WSOL.main(wsol_args(data, tiny_checkpoint[0], out, "--protocol", "wsolevaluation")) == 2
    assert "--restart" in capsys.readouterr().err

    # --protocol wsolevaluation scores what BoxEvaluator computes on the export:
    # the exported maps (stacked as its loader stacks them) against its resized boxes.
    out_w = tmp_path / "cub_wsol.json"
    export_w = tmp_path / "scoremaps_wsol"
    assert WSOL.main(wsol_args(data, tiny_checkpoint[0], out_w, "--protocol", "wsolevaluation",
                               "--export-wsol", str(export_w))) == 0
    doc_w = json.loads(out_w.read_text())
    assert doc_w["protocol"] == doc_w["results"]["all"]["max_box_acc_v2"]["protocol"] == "wsolevaluation"
    cams = np.stack([np.load(export_w / (rel + ".npy")) for rel in CUB_PHOTOS]).astype(np.float64)
    gts = [evaluation.wsolevaluation_boxes(np.array([[x, y, x + w, y + h]]), size)
           for size, (x, y, w, h) in CUB_PHOTOS.values()]
    thresholds = np.arange(0, 1, 0.01)
    counts = wsolevaluation_reference(list(cams), gts, thresholds, [50], multi_contour=False)[0]
    assert doc_w["results"]["all"]["max_box_acc"]["curve"] == (counts / len(CUB_PHOTOS)).tolist()
    counts = wsolevaluation_reference(list(cams), gts, thresholds, [30, 50, 70], multi_contour=True)
    assert [r["value"] for r in doc_w["results"]["all"]["max_box_acc_v2"]["per_iou"]] == \
        (counts.max(axis=1) / len(CUB_PHOTOS)).tolist()


def test_wsol_on_scenes_with_gradient_maps(data, tiny_checkpoint, tmp_path, monkeypatch):
    from convis_jax.api import ConVis

    out = tmp_path / "scenes.json"
    export = tmp_path / "scoremaps"
    args = [str(data / "scenes"), "--out", str(out), "--model", str(tiny_checkpoint[0]),
            "--vocabulary", str(data / "vocabulary.json"), "--method", "gradient",
            "--export", str(export), "--quiet"]  # --export: the old spelling still works
    assert WSOL.main(args) == 0
    doc = json.loads(out.read_text())
    records = scene_folder.read_scene_folder(data / "scenes")
    drawn = sorted({c for r in records for c in r.concepts})
    assert doc["dataset"] == "scenes" and doc["concepts"] == drawn
    assert doc["settings"]["method"] == "gradient" and doc["settings"]["kind"] == "gradient"
    assert set(doc["results"]) == {"all", *drawn}
    check_report(doc["results"]["all"], sum(len(r.concepts) for r in records))
    for concept in drawn:
        check_report(doc["results"][concept], sum(concept in r.concepts for r in records))
    # Several concepts per image: one wsolevaluation folder per concept.
    for r in records:
        for concept in r.concepts:
            saved = np.load(export / concept / (r.image_id + ".npy"))
            assert saved.shape == (224, 224) and 0.0 <= saved.min() and saved.max() <= 1.0

    # One concept: only the scenes that hold it, their results taken from the same log.
    one = records[0].concepts[0]
    out_one = tmp_path / "one.json"
    monkeypatch.setattr(ConVis, "gradient_maps", lambda *a, **k: pytest.fail("mapped again"))
    args = [str(data / "scenes"), "--out", str(out_one), "--model", str(tiny_checkpoint[0]),
            "--vocabulary", str(data / "vocabulary.json"), "--method", "gradient",
            "--concept", one, "--log", doc["log"], "--quiet"]
    assert WSOL.main(args) == 0
    doc = json.loads(out_one.read_text())
    assert doc["concepts"] == [one]
    assert doc["results"]["all"]["count"] == sum(one in r.concepts for r in records)


def test_user_mistakes_end_with_one_line(data, tiny_checkpoint, tmp_path, capsys):
    cases = [
        (WSOL, wsol_args(data, tiny_checkpoint[0], tmp_path / "a.json", "--concept",
                         "nothing.n.99"), "nothing.n.99"),
        (WSOL, wsol_args(data, tiny_checkpoint[0], tmp_path / "b.json", "--limit", "0"), "--limit"),
        (WSOL, wsol_args(data, tiny_checkpoint[0], tmp_path / "c.json", "--limit", "x"),
         "invalid int"),
        (WSOL, [str(tmp_path / "nowhere"), "--out", str(tmp_path / "d.json")], "no folder"),
        (WSOL, wsol_args(data, tiny_checkpoint[0], tmp_path / "h.json", "--protocol", "cam"),
         "--protocol: invalid choice"),
    ]
    for script, args, message in cases:
        assert script.main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err, err


def test_command_line_exit_code_and_stderr(tmp_path):
    """As a user runs it: a separate process, exit code 2, one line, no traceback."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "scripts.evaluate_wsol", str(tmp_path / "missing"), "--out",
         str(tmp_path / "r.json")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().startswith("error: ") and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r.json").exists()


def test_help_documents_protocol_and_export(capsys):
    """`--help` of the WSOL script and of `convis-jax explain` names the options of issue 21."""
    from convis_jax.cli import build_parser

    with pytest.raises(SystemExit) as done:
        WSOL.build_parser().parse_args(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "--protocol {convis,wsolevaluation}" in text and "--export-wsol DIR" in text
    explain = build_parser()._subparsers._group_actions[0].choices["explain"]
    assert "--export-wsol DIR" in explain.format_help()
