"""scripts/sweep_dataset.py: image lists, shares, resume and merge; two jax.distributed
processes on localhost against the API in one process."""

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convis_jax.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "sweep_dataset.py"
CONCEPTS = "dog.n.01,bird.n.01,animal.n.01,car.n.01"
# One window size on a coarser lattice: each process compiles the sweep, so a
# smaller one keeps the test fast (the grid itself is tested elsewhere).


def load_script():
    spec = importlib.util.spec_from_file_location("sweep_dataset", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sweep_dataset = load_script()


def write_images(folder: Path) -> None:
    """Five small photos of different shapes, one in a sub-folder, plus files to skip."""
    rng = np.random.default_rng(0)
    (folder / "sub").mkdir(parents=True)
    (folder / ".hidden").mkdir()
    for i, (h, w) in enumerate([(60, 80), (64, 64), (90, 50), (40, 70), (77, 77)]):
        photo = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        photo[h // 4: h // 2, w // 3: 2 * w // 3] = rng.integers(0, 255, 3)
        Image.fromarray(photo).save(folder / ("sub" if i == 2 else "") / f"img{i}.png")
    Image.fromarray(photo).save(folder / ".hidden" / "skipped.png")
    (folder / "notes.txt").write_text("not an image")


def run_script(*args, env=None):
    env = dict(os.environ, JAX_PLATFORMS="cpu", **(env or {}))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.Popen([sys.executable, "-m", "scripts.sweep_dataset", *args], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process, timeout=300):
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return out, err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- no JAX


def test_list_images_folder_and_list_file(tmp_path):
    write_images(tmp_path / "photos")
    found = sweep_dataset.list_images(tmp_path / "photos")
    assert [i for i, _ in found] == ["img0.png", "img1.png", "img3.png", "img4.png",
                                     "sub/img2.png"]
    assert all(p.is_file() for _, p in found)
    listing = tmp_path / "list.txt"
    listing.write_text("# two photos\nphotos/img1.png\n\nphotos/sub/img2.png\n")
    assert sweep_dataset.list_images(listing) == [
        ("photos/img1.png", tmp_path / "photos/img1.png"),
        ("photos/sub/img2.png", tmp_path / "photos/sub/img2.png")]
    listing.write_text("photos/img1.png\nphotos/img1.png\n")
    with pytest.raises(InputError, match="more than once"):
        sweep_dataset.list_images(listing)
    (tmp_path / "empty" / ".hidden").mkdir(parents=True)
    (tmp_path / "empty" / ".hidden" / "skipped.png").write_bytes(b"")
    with pytest.raises(InputError, match="found none"):
        sweep_dataset.list_images(tmp_path / "empty")
    with pytest.raises(InputError, match="no such path"):
        sweep_dataset.list_images(tmp_path / "missing")


@pytest.mark.parametrize("n_images,processes", [(5, 2), (7, 3), (2, 4), (1, 1)])
def test_process_shares_cover_every_image_once(n_images, processes):
    shares = [sweep_dataset.process_share(n_images, p, processes) for p in range(processes)]
    assert sorted(sum(shares, [])) == list(range(n_images))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_merge_joins_shards_in_image_order_and_refuses_gaps(tmp_path):
    images = [f"im{i}.png" for i in range(5)]
    record = dict(layout=sweep_dataset.LAYOUT_VERSION, images=images,
                  settings=dict(concepts=["a.n.01", "b.n.01"], method="occlusion"))
    sweep_dataset.claim_folder(tmp_path, record)
    maps = np.random.default_rng(1).random((5, 2, 3, 3)).astype(np.float32)
    for i in (4, 0, 2):  # written out of order by "process 0", the rest by "process 1"
        sweep_dataset.write_maps(tmp_path, 0, i, images[i], maps[i])
    sweep_dataset.write_maps(tmp_path, 1, 1, images[1], maps[1])
    with pytest.raises(InputError, match="found 1 not done .*im3.png"):
        sweep_dataset.merge(tmp_path)
    sweep_dataset.write_maps(tmp_path, 1, 3, images[3], maps[3])
    with open(tmp_path / "process-1" / sweep_dataset.MANIFEST, "a") as manifest:
        manifest.write('{"index": 9, "ima')  # a line cut short by a crash is ignored
    merged = np.load(sweep_dataset.merge(tmp_path))
    np.testing.assert_array_equal(merged["maps"], maps)
    assert list(merged["images"]) == images
    assert list(merged["concepts"]) == ["a.n.01", "b.n.01"]
    assert json.loads(str(merged["settings"])) == record["settings"]
    with pytest.raises(InputError, match="another settings"):
        sweep_dataset.claim_folder(tmp_path, dict(record, settings=dict(method="gradient")))
    with pytest.raises(InputError, match="another image list"):
        sweep_dataset.claim_folder(tmp_path, dict(record, images=images[:4]))


def test_command_line_mistakes_are_one_line(tmp_path, capsys):
    assert sweep_dataset.main(["merge", str(tmp_path)]) == 2
    assert "sweep.json" in capsys.readouterr().err
    assert sweep_dataset.main(["sweep", str(tmp_path), "--out", str(tmp_path), "--chunk", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--chunk" in err and "positive integer" in err
    assert sweep_dataset.main(["sweep", str(tmp_path), "--out", str(tmp_path), "--coordinator",
                               "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"]) == 2
    assert "process id from 0 to 1" in capsys.readouterr().err


# ----------------------------------------------------------------------------- processes


@pytest.fixture
def dataset(tmp_path):
    """(folder of five photos, vocabulary JSON file of the words dog, bird and car)."""
    from convis_jax.core.vocabulary import ConceptVocabulary

    photos = tmp_path / "photos"
    write_images(photos)
    vocabulary = tmp_path / "vocabulary.json"
    vocabulary.write_text(json.dumps(
        ConceptVocabulary.from_words(["dog", "bird", "car"]).to_dict()))
    return photos, vocabulary


def test_two_processes_merge_to_one_process_result_and_rerun_resumes(tiny_checkpoint, dataset,
                                                                       tmp_path):
    from convis_jax.api import ConVis
    from convis_jax.jax_backend.loading import load_clip

    photos, vocabulary = dataset
    out = tmp_path / "out"
    common = ["sweep", str(photos), "--out", str(out), "--model", str(tiny_checkpoint[0]),
              "--vocabulary", str(vocabulary), "--concepts", CONCEPTS, "--batch", "2",
              "--window-sizes", "128", "--stride", "32", "--quiet"]
    port = free_port()
    processes = [run_script(*common, "--coordinator", f"127.0.0.1:{port}",
                            "--num-processes", "2", "--process-id", str(i)) for i in range(2)]
    logs = [finish(p)[1] for p in processes]
    assert "process 0 of 2: 3 images to do" in logs[0]
    assert "process 1 of 2: 2 images to do" in logs[1]
    assert len(list(out.glob("process-0/*.npz"))) == 3
    assert len(list(out.glob("process-1/*.npz"))) == 2
    finish(run_script("merge", str(out)))
    merged = dict(np.load(out / "merged.npz"))

    # One process, through the API: image n's padding noise comes from (seed, n).
    convis = ConVis(load_clip(tiny_checkpoint[0]), str(vocabulary), progress=False)
    ids = list(merged["images"])
    want = convis.occlusion_cells([photos / i for i in ids], CONCEPTS.split(","),
                                  window_sizes=(128,), stride=32)
    assert merged["maps"].shape == (5, 4, 7, 7)  # 32-pixel cells
    assert list(merged["concepts"]) == CONCEPTS.split(",")
    assert np.abs(merged["maps"] - want).max() < 1e-6
    assert merged["maps"].std(axis=(-1, -2))[:, :3].min() > 0.01  # maps, not constants

    # A rerun on 8 devices with two results lost redoes just those two.
    lost = [out / "process-0" / "0000002.npz", out / "process-1" / "0000003.npz"]
    for path in lost:
        path.unlink()
    kept = {p: p.stat().st_mtime_ns for p in out.glob("process-*/*.npz")}
    _, log = finish(run_script(*common, env={
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}))
    assert "process 0 of 1: 2 images to do on 8 device(s)" in log
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    # Redone by this run's only process, so both now sit in process-0.
    assert all((out / "process-0" / p.name).is_file() for p in lost)
    finish(run_script("merge", str(out), "--output", str(tmp_path / "again.npz")))
    again = np.load(tmp_path / "again.npz")
    assert np.abs(again["maps"] - merged["maps"]).max() < 1e-6
    assert list(again["images"]) == ids


def test_gradient_sweep_on_eight_devices_equals_the_api(tiny_checkpoint, dataset, tmp_path):
    from convis_jax.api import ConVis
    from convis_jax.jax_backend.loading import load_clip

    photos, vocabulary = dataset
    out = tmp_path / "out"
    _, log = finish(run_script(
        "sweep", str(photos), "--out", str(out), "--model", str(tiny_checkpoint[0]),
        "--vocabulary", str(vocabulary), "--concepts", CONCEPTS, "--method", "gradient",
        "--score", "subtree_probability", "--chunk", "4", "--quiet",
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}))
    assert "5 images to do on 8 device(s)" in log
    finish(run_script("merge", str(out)))
    merged = np.load(out / "merged.npz")
    convis = ConVis(load_clip(tiny_checkpoint[0]), str(vocabulary), progress=False)
    want = convis.gradient_maps([photos / i for i in merged["images"]], CONCEPTS.split(","),
                                score="subtree_probability", chunk=4)
    assert merged["maps"].shape == want.shape == (5, 4, 32, 32)
    scale = np.abs(want).max()
    assert scale > 0 and np.abs(merged["maps"] - want).max() <= 1e-5 * scale


def test_gradient_choices_are_the_backends():
    from convis_jax.jax_backend import gradients

    sweep = next(a for a in sweep_dataset.build_parser()._actions
                 if getattr(a, "choices", None) and "sweep" in a.choices).choices["sweep"]
    choices = {a.dest: a.choices for a in sweep._actions if a.choices}
    assert tuple(choices["score"]) == gradients.SCORES
    assert tuple(choices["kind"]) == gradients.KINDS
    assert tuple(choices["strategy"]) == gradients.STRATEGIES
    assert [None if c == "none" else c for c in choices["reduce"]] == list(gradients.REDUCTIONS)
