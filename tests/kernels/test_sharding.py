"""Sharded sweeps against single-device sweeps, on 8 CPU devices.

XLA fixes the number of CPU devices when jax starts, and the rest of the suite
runs with one, so the 8-device work runs in a subprocess: this file, run as a
script with XLA_FLAGS=--xla_force_host_platform_device_count=8. It computes
every sweep both ways and saves the results and the shardings; the test reads
them and checks the numbers and that the work spanned all 8 devices.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from convis_jax.errors import InputError

DEVICES = 8
TESTS = Path(__file__).resolve().parents[1]
# A small DAG over 24 synsets: 0 is the root, inner nodes 1-5, the rest leaves.
EDGES = [(0, 1), (0, 2), (0, 3), (1, 4), (1, 5), (2, 5)] + [(1 + (s % 5), s) for s in range(6, 24)]
N_SYNSETS = 24
CONCEPTS = np.array([0, 1, 2, 5, 7, 23])  # root, inner nodes, leaves


def sharding_facts(array) -> dict:
    """How an array is laid out: its devices and, per device, the rows it holds."""
    shards = sorted(array.addressable_shards, key=lambda s: s.device.id)
    return dict(devices=np.array([s.device.id for s in shards]),
                starts=np.array([s.index[0].start or 0 for s in shards]),
                rows=np.array([s.data.shape[0] for s in shards]),
                axis=str(array.sharding.spec[0]))


def child(checkpoint: str, out: str) -> None:
    """Every sweep on one device and on all 8; results saved to `out` (.npz)."""
    import jax
    import jax.numpy as jnp

    from convis_jax.core.windows import pad_images, window_grid
    from convis_jax.kernels import occlusion, sharding
    from convis_jax.kernels.sweep import ConceptRequest
    from convis_jax.kernels.gradients import concept_gradient_maps
    from convis_jax.kernels.occlusion import TRACES
    from convis_jax.models.loading import load_clip
    from tests.reference import plain_subtree_index

    assert jax.local_device_count() == DEVICES
    model = load_clip(checkpoint)
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(N_SYNSETS, model.embedding_dim)).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    offsets, members = plain_subtree_index(N_SYNSETS, EDGES)
    segment_ids = np.repeat(np.arange(N_SYNSETS), np.diff(offsets)).astype(np.int32)
    results = {}

    # Occlusion: 2 images, 730 windows each; 28 and 19 chunks of 32 per size, which
    # the sharded sweep pads to 32 and 24 (4 and 3 per device).
    grid = window_grid((224, 224), (128, 64), 16)
    images = rng.uniform(0, 255, (2, 224, 224, 3)).astype(np.float32)
    padded = jnp.asarray(pad_images(images, grid.padding, "noise", seed=5))
    m, seg, k_padded = ConceptRequest.from_subtrees(CONCEPTS, CONCEPTS, offsets, members).padded()
    pre = model.preprocess_config
    static = dict(spec=occlusion.SweepSpec(model.encoder.embed_images, model.image_size,
                                           tuple(pre.image_mean), tuple(pre.image_std), grid,
                                           32))
    args = (model.params, padded, jnp.asarray(bank), jnp.asarray(m), jnp.asarray(seg))
    one = jax.local_devices()[:1]
    results["cells_single"] = occlusion.occlusion_cells(*args, num_concepts=k_padded,
                                                        devices=one, **static)
    traced = TRACES["occlusion_cells"]
    results["cells_auto"] = occlusion.occlusion_cells(*args, num_concepts=k_padded, **static)
    # The 8-device sweep is its own compiled program; a second call reuses it.
    occlusion.occlusion_cells(*args, num_concepts=k_padded, **static)
    results["cells_traces"] = TRACES["occlusion_cells"] - traced
    results["cells_split_bank"] = occlusion.occlusion_cells(*args, num_concepts=k_padded,
                                                            split_bank=True, **static)
    # The bank split by concept (24 rows, 3 per device), window scores kept sharded.
    scores = occlusion.occlusion_window_scores(*args, num_concepts=k_padded,
                                               mesh=sharding.local_mesh(), split_bank=True,
                                               **static)
    for key, value in sharding_facts(scores).items():
        results[f"scores_{key}"] = value
    results["sims_single"] = occlusion.window_rank_similarities(
        model.params, padded, jnp.asarray(bank), devices=one, **static)
    results["sims_auto"] = occlusion.window_rank_similarities(
        model.params, padded, jnp.asarray(bank), split_bank=True, **static)

    # Gradients of a subtree score: 8 images (one per device), then 5 (padded to 8).
    s = model.image_size
    pixels = rng.normal(size=(8, 3, s, s)).astype(np.float32)
    options = dict(score="subtree_probability", kind="gradient", strategy="vmap", chunk=4)
    grad_args = (bank, np.array([1, 2, 5]), (offsets, members, segment_ids))
    results["grad_single"] = concept_gradient_maps(model.encoder, pixels,
                                                   *grad_args, devices=one, **options)
    grad8 = concept_gradient_maps(model.encoder, pixels, *grad_args, **options)
    results["grad_auto"] = grad8
    for key, value in sharding_facts(grad8).items():
        results[f"grad_{key}"] = value
    results["grad_auto5"] = concept_gradient_maps(model.encoder, pixels[:5],
                                                  *grad_args, **options)
    # SmoothGrad draws its noise over the whole batch: it stays on one device.
    smooth = dict(options, kind="smoothgrad", smoothgrad_samples=2, key=jax.random.key(4))
    results["smooth_single"] = concept_gradient_maps(model.encoder, pixels[:3],
                                                     *grad_args, devices=one, **smooth)
    results["smooth_auto"] = concept_gradient_maps(model.encoder, pixels[:3],
                                                   *grad_args, **smooth)
    np.savez(out, **{k: np.asarray(v) for k, v in results.items()})


@pytest.fixture(scope="module")
def eight_devices(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("sharding") / "results.npz"
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES}",
               JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(TESTS.parent), str(TESTS),
                                           os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, __file__, str(tiny_checkpoint[0]), str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(np.load(out))


def test_sharded_occlusion_equals_single_device(eight_devices):
    r = eight_devices
    assert r["cells_single"].shape == (2, 8, 14, 14)
    # Not a vacuous comparison: the maps vary over the cells.
    assert r["cells_single"][:, 1:len(CONCEPTS)].std(axis=(-1, -2)).min() > 0.01
    for key in ("cells_auto", "cells_split_bank"):
        assert np.abs(r[key] - r["cells_single"]).max() < 1e-6, key
    assert r["cells_traces"] == 1  # traced once for the mesh, not again on the second call
    assert r["sims_auto"].shape == (2, 730, N_SYNSETS)
    assert np.abs(r["sims_auto"] - r["sims_single"]).max() < 1e-6


def test_occlusion_windows_span_eight_devices(eight_devices):
    r = eight_devices
    chunks = 48  # ceil(2 * 730 / 32) = 46 chunks of one table, rounded up to 8 devices
    facts = {k: r[f"scores_{k}"] for k in ("devices", "starts", "rows", "axis")}
    assert str(facts["axis"]) == "devices"  # the chunk axis is split over the mesh
    np.testing.assert_array_equal(facts["devices"], np.arange(DEVICES))
    # Every device holds (so computed, under shard_map) its own block of chunks.
    np.testing.assert_array_equal(facts["rows"], np.full(DEVICES, chunks // DEVICES))
    np.testing.assert_array_equal(facts["starts"], np.arange(DEVICES) * chunks // DEVICES)


def test_sharded_gradients_equal_single_device(eight_devices):
    r = eight_devices
    single = r["grad_single"]
    assert single.shape == (8, 3, 32, 32)
    scale = np.abs(single).max()
    assert scale > 0
    for key, n in (("grad_auto", 8), ("grad_auto5", 5)):
        assert r[key].shape == (n, 3, 32, 32)
        diff = np.abs(r[key] - single[:n]).max()
        # The maps are tiny (raw gradients of a probability), so relative as well.
        assert diff < 1e-6 and diff <= 1e-5 * scale, (key, diff, scale)
    assert str(r["grad_axis"]) == "devices"
    np.testing.assert_array_equal(r["grad_devices"], np.arange(DEVICES))
    np.testing.assert_array_equal(r["grad_rows"], np.ones(DEVICES))
    np.testing.assert_array_equal(r["grad_starts"], np.arange(DEVICES))
    # SmoothGrad on 8 devices runs on one: the same noise, the same maps.
    assert np.abs(r["smooth_single"]).max() > 0
    np.testing.assert_array_equal(r["smooth_auto"], r["smooth_single"])


def test_one_device_mesh_and_refusals():
    import jax

    from convis_jax.kernels import sharding

    mesh = sharding.local_mesh()
    assert mesh.axis_names == (sharding.AXIS,) and mesh.size == jax.local_device_count()
    with pytest.raises(InputError, match="at least one device"):
        sharding.local_mesh([])


def test_sharding_never_imports_the_sweeps():
    """The mesh helpers know meshes, not sweeps: the sweeps call them, never the reverse."""
    import ast

    source = (TESTS.parent / "convis_jax" / "kernels" / "sharding.py").read_text()
    imported = {alias.name for node in ast.walk(ast.parse(source))
                if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in node.names} | {node.module for node in ast.walk(ast.parse(source))
                                            if isinstance(node, ast.ImportFrom) and node.module}
    assert not {name for name in imported
                if "occlusion" in name or "gradients" in name}, imported


if __name__ == "__main__":
    child(*sys.argv[1:])
