"""Two processes, the same inputs and seeds: bit-identical banks and maps, and one good bank file.

The test process and a fresh one (this file run as a script) share one
cache folder, meet at a barrier and build the same concept bank at once;
then each computes occlusion maps with noise padding and SmoothGrad maps.
The test process has usually run other tests first, so this also checks
that a long-lived session gives what a fresh script gives.
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

from convis_jax.testing import WORDS, write_words_file

ROOT = Path(__file__).resolve().parents[1]
CONCEPTS = ["dog.n.01", "cat.n.01"]
PROCESSES = 2  # this one and a fresh one
TIMEOUT = 300  # seconds; a hung process fails the test instead of blocking CI
OUTPUTS = ("bank", "occlusion", "smoothgrad")


def compute(checkpoint: str, words: str, barrier: str, name: str) -> dict[str, np.ndarray]:
    """Race the other process to build the bank, then compute maps (in the cache `CONVIS_JAX_CACHE`)."""
    from convis_jax.api import ConVis
    from convis_jax.core.vocabulary import ConceptVocabulary
    from convis_jax.kernels.bank import bank_cache_path, build_bank
    from convis_jax.models.loading import load_clip

    model = load_clip(checkpoint)
    vocabulary = ConceptVocabulary.from_file(words)
    path = bank_cache_path(model, vocabulary, "definition")
    (Path(barrier) / f"ready-{name}").touch()
    deadline = time.monotonic() + TIMEOUT
    while len(list(Path(barrier).glob("ready-*"))) < PROCESSES:
        if time.monotonic() > deadline:
            raise RuntimeError("the other process never reached the barrier")
        time.sleep(0.005)
    found_a_bank = path.exists()  # False in both: each builds and writes its own copy
    bank = build_bank(model, vocabulary, progress=False)
    convis = ConVis(model, vocabulary, progress=False)
    photo = np.random.default_rng(11).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    occlusion = convis.occlusion_maps(photo, CONCEPTS, padding="noise", seed=3)
    smoothgrad = [convis.gradient_maps(photo, CONCEPTS, kind="smoothgrad", smoothgrad_samples=4,
                                       seed=seed) for seed in (5, 6)]
    return dict(bank=bank.embeddings, occlusion=occlusion, smoothgrad=smoothgrad[0],
                smoothgrad_other_seed=smoothgrad[1], found_a_bank=np.array(found_a_bank),
                bank_path=np.array(str(path)))


@pytest.fixture(scope="module")
def runs(tiny_checkpoint, tmp_path_factory):
    """(this process's outputs, a fresh process's outputs, their shared cache folder).

    The other process starts first; both meet at the barrier, so the two bank
    builds overlap, and the rest of the work runs side by side.
    """
    root = tmp_path_factory.mktemp("determinism")
    write_words_file(root)
    (root / "barrier").mkdir()
    cache = root / "cache"
    arguments = [str(tiny_checkpoint[0]), str(root / "words.txt"), str(root / "barrier")]
    env = dict(os.environ, CONVIS_JAX_CACHE=str(cache), HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    process = subprocess.Popen([sys.executable, __file__, *arguments, str(root / "there.npz")],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("CONVIS_JAX_CACHE", str(cache))
            here = compute(*arguments, "here")
        log = process.communicate(timeout=TIMEOUT)[0]
    except subprocess.TimeoutExpired:
        pytest.fail(f"the other process did not finish in {TIMEOUT} s")
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, log
    with np.load(root / "there.npz") as npz:
        there = {key: npz[key] for key in npz.files}
    return here, there, cache


def test_two_processes_give_bit_identical_outputs(runs):
    first, second, _ = runs
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
    from convis_jax.kernels import bank as bank_module
    from convis_jax.models.loading import load_clip

    *outputs, cache = runs
    assert [bool(run["found_a_bank"]) for run in outputs] == [False, False]  # a true race
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
    checkpoint, words, barrier, out = sys.argv[1:5]
    np.savez(out, **compute(checkpoint, words, barrier, "there"))
