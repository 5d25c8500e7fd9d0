"""Two processes, the same inputs and seeds: bit-identical banks and maps, and one good bank file.

Two worker processes (this file run as a script) start together on one
cache folder, meet at a barrier, and build the same concept bank at once;
then each computes occlusion maps with noise padding and SmoothGrad maps.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["dog", "cat", "car", "tree", "chair", "bird", "bottle", "house", "ball", "flower",
         "fish", "book"]
CONCEPTS = ["dog.n.01", "cat.n.01"]
WORKERS = 2
TIMEOUT = 300  # seconds; a hung worker fails the test instead of blocking CI
OUTPUTS = ("bank", "occlusion", "smoothgrad")


def worker(checkpoint: str, words: str, out: str, barrier: str, index: int) -> None:
    """One process: race the other to build the bank, then compute maps; saves everything to `out`."""
    from convis_jax.api import ConVis
    from convis_jax.core.vocabulary import ConceptVocabulary
    from convis_jax.jax_backend.bank import bank_cache_path
    from convis_jax.jax_backend.bank import build_bank
    from convis_jax.jax_backend.loading import load_clip

    model = load_clip(checkpoint)
    vocabulary = ConceptVocabulary.from_file(words)
    path = bank_cache_path(model, vocabulary, "definition")
    (Path(barrier) / f"ready-{index}").touch()
    deadline = time.monotonic() + TIMEOUT
    while len(list(Path(barrier).glob("ready-*"))) < WORKERS:
        if time.monotonic() > deadline:
            raise SystemExit("the other worker never reached the barrier")
        time.sleep(0.005)
    found_a_bank = path.exists()  # False in both: each builds and writes its own copy
    bank = build_bank(model, vocabulary, progress=False)
    convis = ConVis(model, vocabulary, progress=False)
    photo = np.random.default_rng(11).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    occlusion = convis.occlusion_maps(photo, CONCEPTS, padding="noise", seed=3)
    smoothgrad = [convis.gradient_maps(photo, CONCEPTS, kind="smoothgrad", smoothgrad_samples=4,
                                       seed=seed) for seed in (5, 6)]
    np.savez(out, bank=bank.embeddings, occlusion=occlusion, smoothgrad=smoothgrad[0],
             smoothgrad_other_seed=smoothgrad[1], found_a_bank=found_a_bank, bank_path=str(path))


@pytest.fixture(scope="module")
def runs(tiny_checkpoint, tmp_path_factory):
    """The two workers' outputs and their shared cache folder."""
    root = tmp_path_factory.mktemp("determinism")
    (root / "words.txt").write_text("\n".join(WORDS) + "\n")
    (root / "barrier").mkdir()
    env = dict(os.environ, CONVIS_JAX_CACHE=str(root / "cache"), HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    processes = [subprocess.Popen(
        [sys.executable, __file__, str(tiny_checkpoint[0]), str(root / "words.txt"),
         str(root / f"run-{i}.npz"), str(root / "barrier"), str(i)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(WORKERS)]
    logs = []
    for process in processes:
        try:
            logs.append(process.communicate(timeout=TIMEOUT)[0])
        except subprocess.TimeoutExpired:
            for p in processes:
                p.kill()
            pytest.fail(f"a worker did not finish in {TIMEOUT} s")
    for process, log in zip(processes, logs):
        assert process.returncode == 0, log
    outputs = []
    for i in range(WORKERS):
        with np.load(root / f"run-{i}.npz") as npz:
            outputs.append({key: npz[key] for key in npz.files})
    return outputs, root / "cache"


def test_two_processes_give_bit_identical_outputs(runs):
    (first, second), _ = runs
    for key in OUTPUTS:
        assert first[key].dtype == second[key].dtype == np.float32
        assert first[key].tobytes() == second[key].tobytes(), key
    assert first["bank"].shape == (first["bank"].shape[0], 16) and first["bank"].shape[0] > len(WORDS)
    assert first["occlusion"].shape == (1, 2, 224, 224) and np.ptp(first["occlusion"]) > 0
    assert first["smoothgrad"].shape == (1, 2, 32, 32) and first["smoothgrad"].max() > 0
    # The SmoothGrad seed matters: the bits above are not the same by accident.
    assert not np.array_equal(first["smoothgrad"], first["smoothgrad_other_seed"])


def test_two_processes_building_one_bank_leave_one_good_copy(runs, tiny_checkpoint, monkeypatch):
    from convis_jax.core.cache import load_arrays
    from convis_jax.core.vocabulary import ConceptVocabulary
    from convis_jax.jax_backend import bank as bank_module
    from convis_jax.jax_backend.loading import load_clip

    outputs, cache = runs
    assert [bool(run["found_a_bank"]) for run in outputs] == [False] * WORKERS  # a true race
    path = Path(str(outputs[0]["bank_path"]))
    assert sorted(p.name for p in (cache / "banks").iterdir()) == [path.name]  # no temporary left
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a damaged file would warn
        stored = load_arrays(path)
    assert stored["embeddings"].tobytes() == outputs[0]["bank"].tobytes()

    monkeypatch.setenv("CONVIS_JAX_CACHE", str(cache))
    monkeypatch.setattr(bank_module, "encode_texts_bucketed", _must_not_encode)
    words = cache.parent / "words.txt"
    bank = bank_module.build_bank(load_clip(tiny_checkpoint[0]), ConceptVocabulary.from_file(words),
                                  progress=False)
    assert bank.path == path and bank.embeddings.tobytes() == outputs[1]["bank"].tobytes()


def _must_not_encode(*args, **kwargs):
    raise AssertionError("the bank both processes wrote should have been read")


if __name__ == "__main__":
    worker(*sys.argv[1:5], int(sys.argv[5]))
