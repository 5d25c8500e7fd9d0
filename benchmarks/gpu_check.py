"""One prepared command that measures the occlusion sweep on a GPU against PyTorch.

    python benchmarks/gpu_check.py                        # writes benchmarks/results/gpu-check-<machine>.json
    python benchmarks/gpu_check.py --out check.json --checkpoint /path/to/clip

Made for a machine without network access whose Python already has JAX
(with CUDA), flax, orbax, transformers and torch. It needs nothing else:

* the model is a random CLIP of the ViT-B/32 shape at full depth, written
  by transformers (`common.benchmark_checkpoint`) and read by both
  frameworks;
* the concepts are `ConceptVocabulary.physical_objects()` (7,080 synsets,
  from the bundled WordNet) when nltk can be imported, otherwise a random
  hierarchy of as many concepts (`random_vocabulary`: every concept hangs
  under a uniformly drawn earlier one, which gives subtrees of about the
  same total size, 66k members against WordNet's 66,643); `--vocabulary`
  picks, and the JSON says which was used. The concept bank comes from
  convis_jax's float32 text tower either way, shared by every run.

Then, for float32 and bfloat16 in turn:

1. cross-check: convis_jax's maps of one image for every concept against
   the batched PyTorch re-creation (`torch_reference.batched_sweep`) on the
   same device, with `bench_occlusion.check_maps` (window embeddings within
   a tolerance, maps within the bound that tolerance implies; in bfloat16
   the maps' median correlation). On NVIDIA GPUs both frameworks run this
   check with strict float32 matmuls (JAX's default would allow TF32);
2. timing: both sweeps for 1, 8 and 64 images per call (all concepts, the
   paper's stride-16 lattice), interleaved rounds after a warm-up; the
   warm-up is reported as compile time. Float32 is timed at each
   framework's fast setting on the device (TF32 allowed on both sides).

Finally the bfloat16 maps are compared with the float32 maps of the same
images (`bench_occlusion.map_agreement`). A time budget (`--budget-s`,
default 420 s) skips the remaining timings, saying so in the JSON, so that
the whole run stays under 8 minutes including compilation. With
`--small` the same code runs on a CPU in seconds (a tiny model, 40
concepts, stride 32, one image per call): the test suite runs it that way.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Sibling modules: the script's folder is first on sys.path.
import bench_occlusion
import common
import numpy as np
import torch_reference


@dataclass(frozen=True)
class CheckSettings:
    """What one gpu_check run measures.

    Attributes:
        spec: the random checkpoint's shape (`common.VIT_B32`: ViT-B/32, 12 layers).
        concepts: concepts of a random vocabulary.
        vocabulary: "auto" (physical_objects when nltk imports, else random),
            "physical_objects" or "random".
        image_counts: images per call of the timed sweeps.
        dtypes: compute dtypes, timed in this order.
        stride: the window lattice's step.
        repeats: timed rounds per point (after the warm-up).
        chunk: convis_jax windows per compiled step; None: the library's default on the
            device (`occlusion.sweep_sizes`; the JSON records it as "chunk").
        torch_chunk: PyTorch crops per forward batch; None: 256 on a GPU, 64 on a CPU.
        torch_threads: PyTorch CPU threads; None: the faster of 1 and all cores.
        budget_s: seconds after which the remaining timings are skipped.
    """

    spec: dict = field(default_factory=lambda: common.VIT_B32)
    concepts: int = 7080
    vocabulary: str = "auto"
    image_counts: tuple = (1, 8, 64)
    dtypes: tuple = ("float32", "bfloat16")
    stride: int = 16
    repeats: int = 3
    chunk: int | None = None
    torch_chunk: int | None = None
    torch_threads: int | None = None
    budget_s: float = 420.0


def small_settings() -> CheckSettings:
    """The settings of `--small`: seconds on a CPU, every code path of the full run."""
    from convis_jax.testing import TINY

    return CheckSettings(spec=TINY, concepts=40, vocabulary="random", image_counts=(1,),
                         stride=32, repeats=1, chunk=16, torch_chunk=16, torch_threads=1,
                         budget_s=300.0)


def random_vocabulary(count: int, seed: int = 0):
    """A random hierarchy of `count` concepts, named like synsets, for runs without WordNet.

    Concept i > 0 hangs under a uniformly drawn concept j < i (a random
    recursive tree rooted at concept 0), so subtree sizes spread as in a
    deep taxonomy. Definitions and lemmas are made-up words.

    Returns:
        A `ConceptVocabulary`.
    """
    from convis_jax.core.vocabulary import ConceptVocabulary

    rng = np.random.default_rng(seed)
    names = [f"concept{i:05d}.n.01" for i in range(count)]
    parents = [int(rng.integers(0, i)) for i in range(1, count)]
    edges = [(names[p], names[i + 1]) for i, p in enumerate(parents)]
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo"]
    word = lambda: "".join(rng.choice(syllables, size=3))
    definitions = [" ".join(word() for _ in range(6)) for _ in range(count)]
    lemmas = [[f"concept{i:05d}"] for i in range(count)]
    return ConceptVocabulary(names, edges, definitions, lemmas)


def pick_vocabulary(settings: CheckSettings) -> tuple[object, str]:
    """(vocabulary, what it is): physical_objects or a random hierarchy (see `random_vocabulary`)."""
    kind = settings.vocabulary
    if kind == "auto":
        try:
            import nltk  # noqa: F401

            kind = "physical_objects"
        except ImportError:
            kind = "random"
    if kind == "physical_objects":
        from convis_jax.core.vocabulary import ConceptVocabulary

        return ConceptVocabulary.physical_objects(), "physical_objects (bundled WordNet 3.0)"
    return random_vocabulary(settings.concepts), f"random hierarchy of {settings.concepts}"


@contextlib.contextmanager
def strict_float32():
    """Strict float32 matmuls in both frameworks (no TF32 on NVIDIA GPUs) inside the block."""
    import jax
    import torch

    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    # CPUs have no TF32: there JAX's default already is strict, and leaving it alone
    # lets the timed one-image sweep reuse the check's compilation.
    strict = jax.devices()[0].platform != "cpu"
    try:
        with jax.default_matmul_precision("float32") if strict else contextlib.nullcontext():
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def fast_float32() -> None:
    """Each framework's fast float32 setting on the device: TF32 allowed on both sides."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True


class Budget:
    """Seconds since the start, against the run's budget."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.start = time.perf_counter()

    @property
    def used_s(self) -> float:
        return time.perf_counter() - self.start

    def spent(self) -> bool:
        return self.used_s > self.seconds


def convis_call(setup, index: np.ndarray, n_images: int):
    """convis_jax's all-concept sweep of n images in one call -> host cells [N, K, cy, cx]."""
    return bench_occlusion.jax_sweep(setup, index, n_images)


def torch_call(setup, index: np.ndarray, n_images: int, chunk: int, threads: int | None):
    """The batched PyTorch sweep of n images (similarities not kept) -> host cells."""
    import torch

    offsets, members = setup.concepts.subset(index)
    segments = np.repeat(np.arange(len(index)), np.diff(offsets))
    s = setup.settings

    def run():
        if threads is not None:
            torch.set_num_threads(threads)
        return torch_reference.batched_sweep(
            setup.torch_model, setup.padded[:n_images], setup.concepts.bank, members, segments,
            len(index), window_sizes=s.window_sizes, stride=s.stride, cell=setup.grid.cell,
            chunk=chunk, **setup.preprocessing).cells

    return run


def cross_check(setup, index: np.ndarray, dtype: str, torch_chunk: int) -> dict:
    """convis_jax against PyTorch on one image, every concept (`bench_occlusion.check_maps`)."""
    with strict_float32():
        cells = bench_occlusion.jax_sweep(setup, index, 1)()
        sweep = torch_reference.batched_sweep(
            setup.torch_model, setup.padded[:1], setup.concepts.bank,
            *_request(setup, index), window_sizes=setup.settings.window_sizes,
            stride=setup.settings.stride, cell=setup.grid.cell, chunk=torch_chunk,
            keep_similarities=True, **setup.preprocessing)
        embeddings = bench_occlusion.jax_encode_alone(setup, bench_occlusion.window_pixels(setup))()
    return bench_occlusion.check_maps(cells[0], sweep, embeddings, setup.concepts, index,
                                      bench_occlusion.EMBEDDING_TOLERANCE[dtype], dtype)


def _request(setup, index: np.ndarray) -> tuple:
    offsets, members = setup.concepts.subset(index)
    return members, np.repeat(np.arange(len(index)), np.diff(offsets)), len(index)


def time_pair(functions: dict, repeats: int, budget: Budget, log) -> dict:
    """Warm-up, then interleaved rounds of {name: fn}, stopping early when the budget is spent."""
    timings, outputs = common.warm_up(functions, log=log)
    for _ in range(repeats):
        if budget.spent():
            break
        common.rounds(functions, timings, 1, log=log)
    for name, timing in timings.items():
        if not timing.times:  # no round fitted: the warm-up is all there is
            timing.times.append(timing.first_call_s)
    return {"timings": timings, "outputs": outputs}


def run(settings: CheckSettings, checkpoint: Path | None = None, log=print) -> dict:
    """The whole check; returns the JSON-able result (see the module docstring)."""
    import jax
    import torch

    from convis_jax.kernels import occlusion
    from convis_jax.kernels.bank import build_bank
    from convis_jax.models.loading import load_clip

    budget = Budget(settings.budget_s)
    on_gpu = torch.cuda.is_available()
    torch_chunk = settings.torch_chunk or (256 if on_gpu else 64)
    with tempfile.TemporaryDirectory(prefix="convis_gpu_check_") as folder:
        if checkpoint is None:
            checkpoint = common.benchmark_checkpoint(Path(folder) / "clip", settings.spec)
        vocabulary, vocabulary_kind = pick_vocabulary(settings)
        log(f"gpu_check: {jax.devices()[0].device_kind}, {len(vocabulary)} concepts "
            f"({vocabulary_kind}), checkpoint ready at {budget.used_s:.0f} s")
        bank = build_bank(load_clip(checkpoint), vocabulary, cache=False,
                          progress=False).embeddings
        concepts = bench_occlusion.concepts_from(vocabulary, bank)
        everything = np.arange(concepts.count)
        result = {"schema": 1, "machine": common.machine_name(),
                  "environment": common.environment(",".join(settings.dtypes)),
                  "settings": {k: (list(v) if isinstance(v, tuple) else v)
                               for k, v in asdict(settings).items()},
                  "vocabulary": vocabulary_kind, "concepts": concepts.count,
                  "torch_chunk": torch_chunk, "checks": {}, "rows": [], "skipped": []}
        maps = {}
        for dtype in settings.dtypes:
            model = load_clip(checkpoint, dtype=dtype)
            torch_model = torch_reference.torch_model_of(checkpoint, dtype)
            # chunk None: make_setup takes the library's default on this device.
            bench_settings = bench_occlusion.Settings(stride=settings.stride, chunk=settings.chunk,
                                                      torch_chunk=torch_chunk)
            setup = bench_occlusion.make_setup(model, torch_model, concepts, bench_settings,
                                               dtype, max(settings.image_counts))
            result["library_defaults"] = dict(zip(("chunk", "images_per_call"),
                                                  occlusion.sweep_sizes(model.config, setup.grid,
                                                                        concepts.count)))
            result["chunk"] = setup.settings.chunk
            threads = settings.torch_threads
            if threads is None and not on_gpu:
                threads = bench_occlusion.pick_torch_threads(setup, 8, log)
            result["checks"][dtype] = cross_check(setup, everything, dtype, torch_chunk)
            log(f"  {dtype} cross-check passed at {budget.used_s:.0f} s: "
                f"{json.dumps(result['checks'][dtype])}")
            fast_float32()
            for n in settings.image_counts:
                if budget.spent():
                    result["skipped"].append(f"{dtype}, {n} images per call: time budget spent")
                    continue
                pair = time_pair({"convis_jax": convis_call(setup, everything, n),
                                  "pytorch": torch_call(setup, everything, n, torch_chunk,
                                                        threads)},
                                 settings.repeats, budget, log)
                maps[dtype, n] = pair["outputs"]["convis_jax"]
                for name, timing in pair["timings"].items():
                    row = {"dtype": dtype, "images_per_call": n, "framework": name,
                           **timing.to_dict()}
                    row["ms_per_image"] = 1000 * timing.median_s / n
                    result["rows"].append(row)
                log(f"  {dtype} x {n} images done at {budget.used_s:.0f} s")
        shared = [n for n in settings.image_counts
                  if ("float32", n) in maps and ("bfloat16", n) in maps]
        if shared:
            n = max(shared)
            result["bfloat16_vs_float32"] = dict(
                bench_occlusion.map_agreement(maps["float32", n], maps["bfloat16", n]),
                images=n)
    result["summary"] = summarise(result["rows"])
    result["targets"] = targets(result["summary"])
    result["total_s"] = budget.used_s
    return result


def summarise(rows: list[dict]) -> dict:
    """Best ms/image per (dtype, framework), and PyTorch / convis_jax at each point."""
    best, ratios = {}, {}
    for row in rows:
        key = f"{row['framework']}_{row['dtype']}"
        best[key] = min(best.get(key, np.inf), row["ms_per_image"])
    for row in rows:
        if row["framework"] != "convis_jax":
            continue
        other = next((r for r in rows if r["framework"] == "pytorch"
                      and r["dtype"] == row["dtype"]
                      and r["images_per_call"] == row["images_per_call"]), None)
        if other is not None:
            ratios[f"{row['dtype']}_{row['images_per_call']}"] = (other["median_s"]
                                                                  / row["median_s"])
    return {"best_ms_per_image": best, "pytorch_over_convis_jax": ratios}


def targets(summary: dict) -> list[dict]:
    """Issue 22's GPU targets: bfloat16 <= 20 ms/image, >= 1.5x PyTorch's batched sweep."""
    best = summary["best_ms_per_image"]
    out = []
    if "convis_jax_bfloat16" in best:
        out.append(common.target("convis_jax bfloat16 ms per image, all concepts",
                                 best["convis_jax_bfloat16"], "<=", 20.0, "ms"))
        if "pytorch_bfloat16" in best:
            out.append(common.target("PyTorch batched / convis_jax, bfloat16, best of each",
                                     best["pytorch_bfloat16"] / best["convis_jax_bfloat16"],
                                     ">=", 1.5, "x"))
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="the JSON file (default benchmarks/results/gpu-check-<machine>.json)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a transformers CLIP folder (default: a random ViT-B/32, temporary)")
    parser.add_argument("--small", action="store_true",
                        help="tiny model, 40 concepts, stride 32, 1 image per call (CPU tests)")
    parser.add_argument("--vocabulary", choices=("auto", "physical_objects", "random"),
                        default=None)
    parser.add_argument("--images", type=int, nargs="+", default=None,
                        help="images per call (default 1 8 64)")
    parser.add_argument("--budget-s", type=float, default=None)
    args = parser.parse_args(argv)
    settings = small_settings() if args.small else CheckSettings()
    overrides = {key: value for key, value in (("vocabulary", args.vocabulary),
                                               ("budget_s", args.budget_s)) if value is not None}
    if args.images:
        overrides["image_counts"] = tuple(args.images)
    settings = CheckSettings(**{**asdict(settings), **overrides})
    result = run(settings, args.checkpoint)
    out = args.out or common.RESULTS_DIR / f"gpu-check-{result['machine']}.json"
    common.write_json(out, result)
    print(f"wrote {out} in {result['total_s']:.0f} s")
    for row in result["rows"]:
        print(f"  {row['framework']:10s} {row['dtype']:8s} {row['images_per_call']:3d} images/call: "
              f"{row['ms_per_image']:9.1f} ms/image (compile {row['compile_s']:.1f} s)")
    for t in result["targets"]:
        print(f"  {'met ' if t['met'] else 'MISS'} {t['name']}: {t['value']:.3g} {t['unit']} "
              f"(target {t['op']} {t['threshold']:g})")
    return result


if __name__ == "__main__":
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    main()
