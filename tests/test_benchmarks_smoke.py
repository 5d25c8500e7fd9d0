"""The benchmark suite's pieces on a tiny model: cross-checks that can fail, and the JSON schema.

Timings are never judged here (STYLE.md); what is checked is that the
benchmarks compare what they claim to compare and write what the README
generator reads.
"""

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from tests.bench_modules import load_benchmark
from tests.scripts.helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
common = load_benchmark("common")
torch_reference = load_benchmark("torch_reference")
bench_occlusion = load_benchmark("bench_occlusion")
bench_hardware = load_benchmark("bench_hardware")
bench_bank = load_benchmark("bench_bank")
run_all = load_benchmark("run_all")

SYNSETS = ["bird.n.01", "dog.n.01", "car.n.01", "chair.n.01", "apple.n.01"]
SETTINGS = bench_occlusion.Settings(stride=32, repeats=1, image_counts=(1,),
                                    concept_counts=(1, None), authors_sample=3, memory_images=0,
                                    matmul_n=128, parts=False, api=True, torch_threads=1)
BANK_SETTINGS = bench_bank.Settings(build=True, sample_every=2, reload_repeats=2, torch_texts=8,
                                    batch_size=8)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny forwards: a second PyTorch thread only adds waits on a loaded machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def vocabularies():
    from convis_jax.core.vocabulary import ConceptVocabulary

    return {"small": ConceptVocabulary.from_synsets(SYNSETS),
            "smaller": ConceptVocabulary.from_synsets(SYNSETS[:2])}


@pytest.fixture(scope="module")
def suite(tiny_checkpoint, vocabularies, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    results = run_all.run_suite(
        tiny_checkpoint[0], quick=True, out_dir=out, machine="smoke",
        occlusion_settings=SETTINGS, bank_settings=BANK_SETTINGS,
        vocabularies=vocabularies, gradients=True, precision=False, log=lambda *_: None)
    return results, out


def test_suite_writes_schema_valid_json_and_plots(suite, vocabularies):
    results, out = suite
    written = json.loads((out / "smoke-quick.json").read_text())
    common.check_results(written)
    assert set(written["benchmarks"]) == {"bank", "occlusion", "hardware", "gradients"}
    assert "unfinished" not in written
    gradients = written["benchmarks"]["gradients"]["result"]
    assert [row["K"] for row in gradients["rows"]] == [1, 16, 64]  # the quick run's K
    assert gradients["environment"]["cpu"]["model"]
    assert all(row[name]["measured"] for row in gradients["rows"]
               for name in ("torch_loop", "torch_vjp", "convis_jax_vmap"))
    assert "gradients: PyTorch loop / convis_jax at K=64" in {t["name"] for t in written["targets"]}
    assert written["environment"]["cpu"]["model"]
    assert len(written["environment"]["load_average_after"]) == 3
    names = {t["name"] for t in written["targets"]}
    assert {"concept bank: cached reload", "occlusion all concepts / one concept",
            "occlusion sweep / encoding its crops alone",
            "sweep FLOP/s / float32 matmul FLOP/s"} <= names
    for plot in written["plots"]:
        path = Path(plot) if Path(plot).is_absolute() else common.ROOT / plot
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    occlusion = written["benchmarks"]["occlusion"]
    vocabulary_size = len(vocabularies["small"])
    assert occlusion["concepts"] == vocabulary_size
    check = occlusion["checks"]["maps_all_concepts"]
    assert check["concepts"] == vocabulary_size
    assert check["maps_checked"] >= vocabulary_size / 2
    assert check["embedding_max_distance"] <= check["embedding_tolerance"]
    assert occlusion["crops_per_image"] == 164  # stride 32: 10 x 10 + 8 x 8 windows
    assert occlusion["checks"]["geometry"]["lattice_windows"] == 2 * 15 * 15
    assert occlusion["cells_bytes_one_image_all_concepts"] == vocabulary_size * 7 * 7 * 4
    # The schema check fails on a damaged file.
    broken = dict(written, targets=[dict(written["targets"][0], value="fast")])
    with pytest.raises(ValueError, match="targets"):
        common.check_results(broken)
    with pytest.raises(ValueError, match="total_s"):
        common.check_results({k: v for k, v in written.items() if k != "total_s"})


def test_readme_table_renders_the_figures(suite):
    results, out = suite
    module = load_script("readme_performance_table")
    text = module.render(results)
    occlusion = results["benchmarks"]["occlusion"]
    row = next(line for line in text.splitlines() if "Sweep time / encoding" in line)
    assert row.endswith(f"{occlusion['ratios']['sweep_over_encode_alone']:.2f}x |")
    assert text.count("| met |") + text.count("| **missed** |") == len(results["targets"])
    assert "measured on CPU " in text.splitlines()[0]
    summary = results["benchmarks"]["gradients"]["result"]["summary"]
    row = next(line for line in text.splitlines() if line.startswith("| K = 64 |"))
    assert f"{summary[-1]['torch_loop_over_convis_jax']:.2f}x" in row


def test_suite_keeps_what_it_measured_when_a_later_benchmark_fails(
        tiny_checkpoint, vocabularies, tmp_path, monkeypatch):
    def failing(*args, **kwargs):
        raise RuntimeError("maps differ")

    monkeypatch.setattr(run_all.bench_occlusion, "run", failing)
    with pytest.raises(RuntimeError, match="maps differ"):
        run_all.run_suite(tiny_checkpoint[0], quick=True, out_dir=tmp_path, machine="failed",
                          occlusion_settings=SETTINGS, bank_settings=BANK_SETTINGS,
                          vocabularies=vocabularies, gradients=True, precision=False,
                          log=lambda *_: None)
    written = json.loads((tmp_path / "failed-quick.json").read_text())
    common.check_results(written)
    assert set(written["benchmarks"]) == {"bank"}
    assert written["unfinished"] == ["occlusion", "gradients"]
    module = load_script("readme_performance_table")
    assert "stopped before occlusion, gradients ended" in module.render(written).splitlines()[0]


def test_precision_benchmark_starts_from_an_empty_cache(tmp_path, monkeypatch):
    """The quick bank benchmark caches a stand-in bank of random vectors; the precision
    benchmark, whose float32 side would read it, gets a cache folder of its own."""
    folders = {}

    def bank(*args, **kwargs):
        folders["bank"] = Path(os.environ["CONVIS_JAX_CACHE"])
        (folders["bank"] / "stand-in bank").write_text("random vectors")
        return {"timings": {}, "cached_reload_s": 0.0}

    def precision(*args, **kwargs):
        folders["precision"] = Path(os.environ["CONVIS_JAX_CACHE"])
        assert not any(folders["precision"].iterdir())
        return {"timings": {}, "targets": []}

    monkeypatch.setattr(run_all.bench_bank, "run", bank)
    monkeypatch.setattr(run_all.bench_occlusion, "run",
                        lambda *a, **k: {"occlusion": {"timings": {}}, "hardware": {"timings": {}}})
    monkeypatch.setattr(run_all.bench_occlusion, "targets", lambda *a: [])
    monkeypatch.setattr(run_all.bench_precision, "run", precision)
    monkeypatch.setattr(run_all, "plot_all", lambda *a: [])
    run_all.run_suite(tmp_path / "checkpoint", quick=True, out_dir=tmp_path, machine="cache",
                      gradients=False, log=lambda *_: None)
    assert folders["precision"] != folders["bank"]
    assert json.loads((tmp_path / "cache-quick.json").read_text())["benchmarks"]["precision"]


@pytest.fixture(scope="module")
def tiny_setup(tiny_checkpoint, vocabularies, one_torch_thread):
    from convis_jax.kernels.bank import build_bank

    model, torch_model = bench_occlusion.load_models(tiny_checkpoint[0], "float32")
    vocabulary = vocabularies["small"]
    bank = build_bank(model, vocabulary, cache=False, progress=False).embeddings
    concepts = bench_occlusion.concepts_from(vocabulary, bank)
    setup = bench_occlusion.make_setup(model, torch_model, concepts, SETTINGS, "float32", 1)
    everything = np.arange(concepts.count)
    cells = bench_occlusion.jax_sweep(setup, everything, 1)()
    sweep = bench_occlusion.torch_checked_sweep(setup, everything)
    # The timed PyTorch sweep returns the cells of the sweep it is checked with.
    assert np.array_equal(bench_occlusion.torch_batched(setup, everything, 1, threads=1)(),
                          sweep.cells)
    embeddings = bench_occlusion.jax_encode_alone(setup, bench_occlusion.window_pixels(setup))()
    return setup, everything, cells, sweep, embeddings


def test_map_cross_check_passes_and_can_fail(tiny_setup):
    setup, everything, cells, sweep, embeddings = tiny_setup
    figures = bench_occlusion.check_maps(cells[0], sweep, embeddings, setup.concepts, everything,
                                         1e-3)
    assert figures["maps_checked"] == len(everything)
    # A map that is not the PyTorch one (inverted) is caught ...
    wrong = cells[0].copy()
    moving = int(np.argmax(np.ptp(wrong.reshape(len(wrong), -1), axis=1)))
    wrong[moving] = 1 - wrong[moving]
    with pytest.raises(AssertionError, match="beyond the bound"):
        bench_occlusion.check_maps(wrong, sweep, embeddings, setup.concepts, everything, 1e-3)
    # ... and so are embeddings from a different preprocessing.
    shifted = embeddings + 0.01 / np.sqrt(embeddings.shape[1])
    shifted[:, 0] += 0.01
    with pytest.raises(AssertionError, match="window embeddings differ"):
        bench_occlusion.check_maps(cells[0], sweep, shifted, setup.concepts, everything, 1e-3)


def test_rank_intervals_bound_ranks_of_perturbed_similarities():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5, 300))
    delta = 0.01
    lo, hi = bench_occlusion.rank_intervals(z, delta)
    plain = lambda row: np.argsort(np.argsort(-row, kind="stable"), kind="stable")
    for _ in range(20):
        moved = z + rng.uniform(-delta, delta, z.shape)
        got = np.stack([plain(row) for row in moved])
        assert np.all((lo <= got) & (got <= hi))
    assert np.all(lo <= np.stack([plain(row) for row in z]))
    np.testing.assert_array_equal(bench_occlusion.rank_intervals(z, 0.0)[0],
                                  np.stack([plain(row) for row in z]))


def test_authors_loop_gives_the_sweep_map(tiny_setup):
    from convis_jax.core.cells import cells_to_pixels

    setup, everything, cells, sweep, _ = tiny_setup
    c = setup.concepts
    subtree = c.members[c.offsets[c.one]:c.offsets[c.one + 1]]
    pad = setup.grid.padding
    want = torch_reference.authors_map(
        setup.torch_model, setup.padded[0, pad:-pad, pad:-pad], c.bank, subtree,
        window_sizes=SETTINGS.window_sizes, stride=SETTINGS.stride, **setup.preprocessing)
    got = cells_to_pixels(cells[0, c.one], setup.grid)
    # The tiny model's embeddings agree to ~1e-7, far below the gaps between its
    # synsets' similarities, so every rank and hence the map must match exactly.
    assert np.abs(got - want).max() < 1e-5


def test_vit_b32_forward_flops_match_the_published_count():
    class Vision:
        hidden_size, intermediate_size, num_hidden_layers = 768, 3072, 12
        image_size, patch_size = 224, 32

    flops = common.vit_forward_flops(Vision, 512)
    # ViT-B/32 at 224 px: 4.4 GMACs per image (CLIP paper, timm/fvcore counts).
    assert 4.3e9 < flops["total"] / 2 < 4.5e9
    assert flops["total"] == sum(v for k, v in flops.items() if k != "total")


def test_map_correlations_of_known_pairs():
    rng = np.random.default_rng(1)
    maps = rng.uniform(size=(3, 7, 7))
    maps[2] = 0.5  # a flat map
    np.testing.assert_allclose(bench_occlusion.map_correlations(maps, maps), [1, 1, 1])
    np.testing.assert_allclose(bench_occlusion.map_correlations(maps, 1 - maps)[:2], [-1, -1])
    other = maps.copy()
    other[2] = rng.uniform(size=(7, 7))
    assert bench_occlusion.map_correlations(maps, other)[2] == 0.0


def test_map_agreement_counts_moved_peaks_and_skips_flat_maps():
    rng = np.random.default_rng(2)
    reference = rng.uniform(size=(2, 3, 4, 4))
    reference[1, 2] = 1.0  # flat in both: left out
    other = reference.copy()
    same = bench_occlusion.map_agreement(reference, other)
    assert same["maps"] == 5 and same["flat_maps_left_out"] == 1
    assert same["correlation_min"] == pytest.approx(1.0) and same["argmax_moved_fraction"] == 0
    # One map's peak moves from cell (0, 0) to cell (3, 3): 1 of 5 maps, sqrt(18) cells away.
    reference[0, 0] = 0.0
    reference[0, 0, 0, 0] = 1.0
    other[0, 0] = 0.0
    other[0, 0, 3, 3] = 1.0
    moved = bench_occlusion.map_agreement(reference, other)
    assert moved["argmax_moved_fraction"] == pytest.approx(0.2)
    assert moved["argmax_moved_cells_median"] == pytest.approx(np.sqrt(18))
    assert moved["correlation_min"] < 0


def test_gpu_check_runs_small_on_the_cpu(tmp_path):
    """benchmarks/gpu_check.py --small: the GPU run's steps, vocabulary and budget on the CPU."""
    gpu_check = load_benchmark("gpu_check")

    out = tmp_path / "check.json"
    assert gpu_check.main(["--small", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(gpu_check.PROMISED) <= set(result)
    assert result["status"] == "finished" and result["skipped"] == []
    # The GPU run's vocabulary: WordNet's physical objects through nltk, no fallback.
    assert result["vocabulary"].startswith("physical_objects")
    assert result["vocabulary_fallback"] is None and result["concepts"] == 7080
    assert result["environment"]["cpu"]["model"] and result["environment"]["versions"]["jax"]
    assert len(result["environment"]["load_average_after"]) == 3
    for dtype in ("float32", "bfloat16"):
        check = result["checks"][dtype]
        assert check["concepts"] == 7080
        # Window embeddings within the stated tolerance, every constrained map within its bound.
        assert check["embedding_max_distance"] <= bench_occlusion.EMBEDDING_TOLERANCE[dtype]
        assert check["embedding_tolerance"] == bench_occlusion.EMBEDDING_TOLERANCE[dtype]
    assert result["checks"]["float32"]["maps_checked"] >= 7080 / 2
    assert result["checks"]["bfloat16"]["map_correlation_median"] >= \
        bench_occlusion.MAP_CORRELATION_MEDIAN
    points = {(r["framework"], r["dtype"], r["images_per_call"]) for r in result["rows"]}
    assert points == {(f, d, n) for f in ("convis_jax", "pytorch")
                      for d in ("float32", "bfloat16") for n in (1, 2)}
    for row in result["rows"]:
        # Two timed rounds each; the warm-up is apart and never the median.
        assert row["repeats"] == 2 and row["median_s"] == np.median(row["times_s"]) > 0
        assert row["compile_s"] == pytest.approx(max(row["first_call_s"] - row["median_s"], 0))
    assert len(result["transfers"]) == 4
    assert all(t["convis_jax_s"] >= 0 and t["pytorch_s"] >= 0 for t in result["transfers"])
    assert result["bfloat16_vs_float32"]["images"] == 2
    assert {t["name"] for t in result["targets"]} == {
        "convis_jax bfloat16 ms per image, all concepts",
        "PyTorch batched / convis_jax, bfloat16, best of each"}
    assert all(step["status"] == "done" for step in result["steps"])
    # The budget counts everything from the start.
    assert result["total_s"] <= result["budget_s"]
    assert result["total_s"] >= sum(step["seconds"] for step in result["steps"]) - 1


def test_gpu_check_stops_at_its_budget_and_keeps_the_record(tmp_path):
    gpu_check = load_benchmark("gpu_check")

    out = tmp_path / "cut.json"
    started = time.perf_counter()
    assert gpu_check.main(["--small", "--budget-s", "4", "--out", str(out)]) == 124
    assert time.perf_counter() - started < 4 + 15  # SIGTERM, then at most 10 s to SIGKILL
    result = json.loads(out.read_text())
    assert set(gpu_check.PROMISED) <= set(result)
    assert result["status"] == "cut at the budget" and result["rows"] == []
    assert result["skipped"][-1].startswith("every later step")


def test_gpu_check_skips_a_point_that_would_not_fit():
    gpu_check = load_benchmark("gpu_check")

    previous = {"images_per_call": 1, "first_calls_s": 20.0, "round_s": 2.0}
    # 8 images: first calls scaled by 8, one round of 8 x 2 s.
    assert gpu_check.estimate_point(previous, 8, 3) == pytest.approx(20 * 8 + 16)
    assert gpu_check.estimate_point(None, 8, 3) == 0.0
    budget = gpu_check.Budget(100.0, start=time.time() - 50)
    assert budget.fits(40) and not budget.fits(60)


def test_random_vocabulary_is_a_rooted_tree():
    gpu_check = load_benchmark("gpu_check")

    vocabulary = gpu_check.random_vocabulary(50, seed=3)
    assert len(vocabulary) == 50 and len(vocabulary.edges) == 49
    sizes = np.diff(vocabulary.subtree_offsets)
    assert sizes.max() == 50  # the root's subtree holds every concept
    root = vocabulary.index("concept00000.n.01")
    assert sizes[root] == 50


def test_atlas_benchmark_runs_small(tiny_checkpoint, vocabularies):
    """benchmarks/bench_atlas.py end to end on the tiny model: its maps cross-check holds."""
    bench_atlas = load_benchmark("bench_atlas")

    result = bench_atlas.run(images=1, repeats=1, stored=12, concept="dog.n.01",
                             checkpoint=tiny_checkpoint[0], vocabulary=vocabularies["small"],
                             log=lambda *_: None, index_images=3, indexed_stored=40)
    count = len(vocabularies["small"])  # the synsets and their hypernyms
    assert result["concepts"] == count
    assert result["all_maps_one_image"]["correlation_with_sweep_float16"] >= 0.999
    assert result["all_maps_one_image"]["shape"] == [1, count, 14, 14]
    sizes = result["bytes_per_image"]
    assert sizes["float16"] < sizes["float32"] and sizes["windows_float16_payload"] == 730 * 16 * 2
    assert result["stored_synthetic"]["images"] == 12
    assert result["build_vs_sweep"]["build_cost_over_sweep_cost"] > 0
    index = result["index"]
    assert index["images"] == 3 and index["build_over_one_query"] > 0
    assert 12 <= index["bytes_per_image_per_concept_full_block"] < 13  # 3 float32 + overhead
    assert result["index_top20"]["images"] == 40


def test_gradient_benchmark_cross_checks_every_contender(tiny_checkpoint):
    """bench_gradients on the tiny model: every contender at every K, maps equal to the loop's."""
    bench_gradients = load_benchmark("bench_gradients")

    every = ("torch_loop", "convis_jax_vmap", "convis_jax_jacobian", "torch_vjp",
             "torch_jacobian")
    settings = {"K": (1, 40), "repeats": 2, "contenders": {name: (1, 40) for name in every}}
    result = bench_gradients.run(settings, tiny_checkpoint[0], threads=1, log=lambda *_: None)
    assert [row["K"] for row in result["rows"]] == [1, 40]
    for row in result["rows"]:
        for name in every:
            entry = row[name]
            assert entry["measured"] and entry["error_vs_loop"] <= bench_gradients.TOLERANCE
            assert len(entry["times_s"]) == 2 and entry["seconds"] == entry["median_s"] > 0
        assert row["convis_jax_vmap"]["compile_s"] >= 0
    summary = {entry["K"]: entry for entry in result["summary"]}
    assert summary[40]["torch_batched"] in ("torch_vjp", "torch_jacobian")
    assert summary[40]["torch_loop_over_convis_jax"] == pytest.approx(
        summary[40]["torch_loop_s"] / summary[40]["convis_jax_s"])
    # The README's gradient table: both PyTorch programs and the largest map difference.
    module = load_script("readme_performance_table")
    result = dict(result, environment=common.environment("float32"), quick=True)
    result["environment"]["load_average_after"] = common.load_average()
    text = module.render(result, "gradients.json")
    assert "measured on CPU " in text.splitlines()[0]
    row = next(line for line in text.splitlines() if line.startswith("| K = 40 |"))
    assert f"{summary[40]['torch_loop_over_convis_jax']:.2f}x" in row
    assert f"{summary[40]['torch_batched_over_convis_jax']:.2f}x" in row


def test_gradient_contenders_agree_and_a_wrong_map_is_caught(tiny_checkpoint):
    """The PyTorch programs give the loop's maps; the cross-check fails on a different map."""
    import torch

    bench_gradients = load_benchmark("bench_gradients")
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(tiny_checkpoint[0]).eval().requires_grad_(False)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(1, 3, 32, 32)).astype(np.float32))
    bank = torch.nn.functional.normalize(torch.randn(20, model.config.projection_dim), dim=-1)
    loop = bench_gradients.torch_loop(model, x, bank, 20)
    assert loop.shape == (20, 32, 32)
    np.testing.assert_allclose(bench_gradients.torch_vjp(model, x, bank, 20, 7), loop,
                               rtol=0, atol=1e-6 * np.abs(loop).max())
    np.testing.assert_allclose(bench_gradients.torch_jacobian(model, x, bank, 20, 5, combine=6),
                               loop, rtol=0, atol=1e-6 * np.abs(loop).max())
    wrong = lambda: bench_gradients.torch_loop(model, x, -bank.roll(1, 0), 20)
    with pytest.raises(AssertionError, match="differ from the per-concept loop"):
        bench_gradients.measure_k(
            [bench_gradients.Contender("torch_loop", lambda: loop),
             bench_gradients.Contender("torch_vjp", wrong)], 1, lambda *_: None)


def test_chunk_benchmark_runs_small_and_renders(tiny_checkpoint, vocabularies):
    """bench_chunk on the tiny model: the chunks' maps agree, ratios are to the reference."""
    bench_chunk = load_benchmark("bench_chunk")

    result = bench_chunk.run(chunks=(8, 16), reference=16, rounds=2, stride=32,
                             checkpoint=tiny_checkpoint[0], vocabulary=vocabularies["small"],
                             log=lambda *_: None)
    assert result["reference"] == 16 and result["crops"] == 164
    assert result["chunks"]["16"]["over_reference_per_round"] == [1.0, 1.0]
    eight = result["chunks"]["8"]
    assert eight["over_reference_per_round"] == pytest.approx(
        list(np.asarray(eight["times_s"]) / np.asarray(result["chunks"]["16"]["times_s"])))
    with pytest.raises(ValueError, match="reference chunk"):
        bench_chunk.run(chunks=(8,), reference=16, checkpoint=tiny_checkpoint[0],
                        vocabulary=vocabularies["small"])
    module = load_script("readme_performance_table")
    result["environment"] = common.environment("float32")
    text = module.render(result, "chunk.json")
    assert "| 8 |" in text and "measured on CPU " in text.splitlines()[0]


def test_precision_benchmark_measures_both_precisions_and_pytorch(tiny_checkpoint, vocabularies):
    """benchmarks/bench_precision.py on the tiny model: both agreements, every contender timed,
    the two ratios and the CPU's flags written."""
    bench_precision = load_benchmark("bench_precision")

    settings = bench_precision.Settings(images=2, stride=64, repeats=1, torch_chunk=16)
    result = bench_precision.run(tiny_checkpoint[0], settings, vocabulary=vocabularies["small"],
                                 log=lambda *_: None)
    concepts = len(vocabularies["small"])
    for agreement in result["agreement"].values():
        assert agreement["maps"] + agreement["flat_maps_left_out"] == 2 * concepts
        assert -1 <= agreement["correlation_p10"] <= agreement["correlation_median"] <= 1
    import os

    threads = sorted({1, os.cpu_count()})
    assert set(result["timings"]) == {
        "convis_jax float32 sweep, all concepts", "convis_jax bfloat16 sweep, all concepts"} | {
        bench_precision.torch_name(form, n) for form in bench_precision.TORCH_FORMS
        for n in threads}
    assert all(t["median_s"] > 0 for t in result["timings"].values())
    ratios = result["ratios"]
    timings = {name: t["median_s"] for name, t in result["timings"].items()}
    assert ratios["ours_bf16_over_ours_f32"] == pytest.approx(
        timings["convis_jax bfloat16 sweep, all concepts"]
        / timings["convis_jax float32 sweep, all concepts"])
    peer = ratios["torch_bf16_peer"]
    assert "bfloat16" in peer and timings[peer] == min(
        t for name, t in timings.items() if name.startswith("PyTorch") and "bfloat16" in name)
    from convis_jax.core.windows import window_grid

    # PyTorch encoded the crops of the windows our sweep cuts.
    assert result["windows"] == window_grid((224, 224), (128, 64), 64).n_windows
    assert isinstance(result["cpu"]["bf16_flags"], list) and result["cpu"]["model"]
    assert {t["name"] for t in result["targets"]} == {
        "bfloat16 maps: correlation median vs float32",
        "bfloat16 maps: correlation 10th percentile vs float32",
        "bfloat16 sweep / PyTorch bfloat16 bare encoding", "bfloat16 sweep / float32 sweep"}
