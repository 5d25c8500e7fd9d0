"""`convis-jax atlas build` as processes: killed and rerun, and two jax.distributed processes
on 8 forced CPU devices, each against one uninterrupted in-process build."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
EIGHT_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}


def write_photos(folder: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    (folder / "sub").mkdir(parents=True)
    for i in range(count):
        h, w = int(rng.integers(30, 90)), int(rng.integers(30, 90))
        photo = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        photo[h // 4: h // 2, w // 3: 2 * w // 3] = rng.integers(0, 255, 3)
        Image.fromarray(photo).save(folder / ("sub" if i % 3 == 2 else "") / f"img{i:02d}.png")


def start_build(photos, out, model, *more, env=None):
    env = dict(os.environ, JAX_PLATFORMS="cpu", **(env or {}))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.Popen([sys.executable, "-m", "convis_jax.cli", "atlas", "build",
                             str(photos), "--out", str(out), "--model", str(model),
                             "--store", "float32", "--quiet", *more], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process, timeout=300):
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return out, err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def contents(folder):
    """Everything an atlas answers from: ids, records, window and image embeddings."""
    from convis_jax.atlas import Atlas
    from convis_jax.core.vocabulary import ConceptVocabulary

    atlas = Atlas.open(folder, vocabulary=ConceptVocabulary.from_words(["dog"]), progress=False)
    records = [(r.index, r.image_id, r.size, r.crop) for r in atlas.records()]
    return atlas, records, atlas.window_embeddings(), atlas.image_embeddings()


def test_a_killed_build_rerun_equals_an_uninterrupted_one(tiny_checkpoint, reference, tmp_path):
    photos, want = reference
    out = tmp_path / "atlas"
    process = start_build(photos, out, tiny_checkpoint[0], "--batch", "1")
    deadline = time.monotonic() + 240
    while len(list(out.glob("part-0/done/*.json"))) < 2:
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    recorded = len(list(out.glob("part-0/done/*.json")))
    assert 2 <= recorded < 8, "the build ended before it could be killed"
    _, log = finish(start_build(photos, out, tiny_checkpoint[0], "--batch", "1"))
    assert f"{8 - recorded} of its 8 images to encode" in log
    atlas, records, windows, images = contents(out)
    _, want_records, want_windows, want_images = contents(want)
    assert atlas.pending_ids == () and records == want_records
    np.testing.assert_array_equal(windows, want_windows)
    np.testing.assert_array_equal(images, want_images)


def test_two_processes_on_eight_devices_equal_one_process(tiny_checkpoint, reference, tmp_path):
    photos, want = reference
    out = tmp_path / "atlas"
    port = free_port()
    processes = [start_build(photos, out, tiny_checkpoint[0], "--batch", "2", "--coordinator",
                             f"127.0.0.1:{port}", "--num-processes", "2", "--process-id",
                             str(i), env=EIGHT_DEVICES) for i in range(2)]
    logs = [finish(p)[1] for p in processes]
    assert "process 0 of 2, 4 of its 4 images to encode on 8 device(s)" in logs[0]
    assert "process 1 of 2, 4 of its 4 images to encode on 8 device(s)" in logs[1]
    # Each process wrote only its own part: images 0, 2, 4, 6 and 1, 3, 5, 7.
    atlas, records, windows, images = contents(out)
    assert [r.part for r in atlas.records()] == ["part-0", "part-1"] * 4
    _, want_records, want_windows, want_images = contents(want)
    assert records == want_records
    np.testing.assert_allclose(windows, want_windows, atol=1e-6)
    np.testing.assert_allclose(images, want_images, atol=1e-6)
    # Rerun by one process: nothing left to do.
    _, log = finish(start_build(photos, out, tiny_checkpoint[0]))
    assert "0 of its 8 images to encode" in log
