"""One prepared command that cross-checks and times the occlusion sweep on a GPU against PyTorch.

    bash benchmarks/gpu_run.sh check            # on the GPU machine, after `gpu_run.sh prepare`
    python benchmarks/gpu_check.py [--out FILE] [--budget-s 420] [--small]

Made for a machine without network access whose Python has JAX (with CUDA),
flax, orbax, transformers and torch; `gpu_run.sh` brings this package and
nltk as wheels (benchmarks/gpu.md). Steps, in order:

1. a random CLIP of the ViT-B/32 shape at full depth, written by
   transformers in a temporary folder and read by both frameworks;
2. the concepts: `ConceptVocabulary.physical_objects()` (7,080 synsets, from
   the WordNet shipped in the package, read through nltk); only when that
   fails (no nltk) a random hierarchy of as many concepts, and the JSON's
   `vocabulary_fallback` says why;
3. the concept bank, from convis_jax's float32 text tower;
4. for float32, then bfloat16: convis_jax's maps of one image, every
   concept, cross-checked against the batched PyTorch re-creation on the
   same device (`bench_occlusion.check_maps`; float32 with strict float32
   matmuls in both frameworks); then, for 1, 8 and 64 images per call, both
   sweeps timed with their inputs already on the device (copying the images
   there is timed apart, `transfers`): a warm-up call (its excess over the
   median is `compile_s`, never part of a median), then interleaved rounds;
5. the bfloat16 maps against the float32 maps of the same images.

The JSON is rewritten (atomically) after every step, so a failed check or a
cut keeps what was measured. The budget (`--budget-s`, default 420 s) counts
from the start, checkpoint, compiles and cross-checks included: a step whose
estimated cost does not fit is skipped and listed under `skipped`, and the
measuring process runs as a child that is stopped at the budget whatever
it is doing (`status` "cut at the budget", exit 124). Exit 0 when every
step ran or was skipped for the budget, 1 when a cross-check failed or a
step raised. `--small` runs the same steps on a CPU in a minute or two (a
tiny model, stride 32, 1 and 2 images per call): the test suite runs it so.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

# Sibling modules: the script's folder is first on sys.path.
import common
import numpy as np

DEFAULT_BUDGET_S = 420.0
# Every key a finished (or cut) result holds; tests/test_benchmarks_smoke.py checks them.
PROMISED = ("schema", "kind", "status", "machine", "environment", "settings", "budget_s",
            "vocabulary", "vocabulary_fallback", "concepts", "steps", "skipped", "checks",
            "rows", "transfers", "summary", "targets", "total_s")


@dataclass(frozen=True)
class CheckSettings:
    """What one gpu_check run measures.

    Attributes:
        spec: the random checkpoint's shape (`common.VIT_B32`: ViT-B/32, 12 layers).
        vocabulary: "auto" (physical_objects, else a random hierarchy with the reason
            recorded), "physical_objects" or "random".
        random_concepts: concepts of the random hierarchy.
        image_counts: images per call of the timed sweeps.
        dtypes: compute dtypes, in this order.
        stride: the window lattice's step.
        repeats: timed rounds per point (after the warm-up).
        chunk: convis_jax windows per compiled step; None: the library's default on the
            device (`occlusion.sweep_sizes`; the JSON records it as "chunk").
        torch_chunk: PyTorch crops per forward batch; None: 256 on a GPU, 64 on a CPU.
        torch_threads: PyTorch CPU threads; None: the faster of 1 and all cores.
        budget_s: seconds from the start after which nothing more is started.
    """

    spec: dict = field(default_factory=lambda: common.VIT_B32)
    vocabulary: str = "auto"
    random_concepts: int = 7080
    image_counts: tuple = (1, 8, 64)
    dtypes: tuple = ("float32", "bfloat16")
    stride: int = 16
    repeats: int = 3
    chunk: int | None = None
    torch_chunk: int | None = None
    torch_threads: int | None = None
    budget_s: float = DEFAULT_BUDGET_S


def small_settings() -> CheckSettings:
    """`--small`: the same steps and vocabulary on a CPU in a minute or two (tiny model)."""
    from convis_jax.testing import TINY

    return CheckSettings(spec=TINY, image_counts=(1, 2), stride=32, repeats=2, chunk=16,
                         torch_chunk=16, torch_threads=1, budget_s=600.0)


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


def pick_vocabulary(settings: CheckSettings) -> tuple[object, str, str | None]:
    """(vocabulary, what it is, why the random fallback was taken or None)."""
    if settings.vocabulary in ("auto", "physical_objects"):
        try:
            from convis_jax.core.vocabulary import ConceptVocabulary

            return (ConceptVocabulary.physical_objects(),
                    "physical_objects (bundled WordNet 3.0)", None)
        except Exception as error:  # noqa: BLE001 - any failure is reported, then fallen back from
            if settings.vocabulary == "physical_objects":
                raise
            reason = f"physical_objects failed: {type(error).__name__}: {error}"
    else:
        reason = "asked for (--vocabulary random)"
    count = settings.random_concepts
    return random_vocabulary(count), f"random hierarchy of {count}", reason


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
    """Seconds since `start` (a `time.time()`), against the run's budget."""

    def __init__(self, seconds: float, start: float | None = None):
        self.seconds = seconds
        self.start = time.time() if start is None else start

    @property
    def used_s(self) -> float:
        return time.time() - self.start

    @property
    def left_s(self) -> float:
        return self.seconds - self.used_s

    def fits(self, estimate_s: float) -> bool:
        return estimate_s <= self.left_s


class Record:
    """The result being built, written whole (atomically) after every step."""

    def __init__(self, path: Path, budget: Budget, result: dict):
        self.path, self.budget, self.result = Path(path), budget, result

    def save(self) -> None:
        self.result["total_s"] = self.budget.used_s
        common.write_json(self.path, self.result)

    def skip(self, step: str, reason: str, log) -> None:
        self.result["skipped"].append(f"{step}: {reason}")
        self.result["steps"].append({"step": step, "status": "skipped", "reason": reason,
                                     "at_s": self.budget.used_s})
        log(f"  skipped {step}: {reason}")
        self.save()

    @contextlib.contextmanager
    def step(self, name: str, log):
        """Runs a step, records its time and status, saves; a failure is recorded, then raised."""
        entry = {"step": name, "status": "running", "at_s": self.budget.used_s}
        self.result["steps"].append(entry)
        started = time.time()
        try:
            yield entry
        except Exception as error:
            entry.update(status="failed", error=f"{type(error).__name__}: {error}")
            raise
        else:
            entry["status"] = "done"
        finally:
            entry["seconds"] = time.time() - started
            self.save()
            log(f"  {name}: {entry['status']} in {entry['seconds']:.1f} s "
                f"({self.budget.used_s:.0f} s of {self.budget.seconds:.0f})")


def timing_row(timing: common.Timing, dtype: str, n: int, framework: str) -> dict:
    """One framework at one point; without a timed round there is no median (never the warm-up)."""
    row = {"dtype": dtype, "images_per_call": n, "framework": framework,
           "first_call_s": timing.first_call_s, "repeats": len(timing.times),
           "times_s": list(timing.times)}
    if timing.times:
        median = timing.median_s
        row.update(median_s=median, min_s=min(timing.times), max_s=max(timing.times),
                   compile_s=max(timing.first_call_s - median, 0.0),
                   ms_per_image=1000 * median / n)
    else:
        row.update(median_s=None, min_s=None, max_s=None, compile_s=None, ms_per_image=None)
    return row


def estimate_point(previous: dict | None, n: int, repeats: int) -> float:
    """Seconds a timing point of n images will take: warm-up plus one round at least.

    From the last point measured (any dtype): its first calls, and its rounds
    scaled by n / its images. With nothing measured yet, 0 (the point is
    tried; the child's hard stop at the budget remains).
    """
    if previous is None:
        return 0.0
    scale = n / previous["images_per_call"]
    first = previous["first_calls_s"] * max(scale, 1.0)
    per_round = previous["round_s"] * scale
    return first + per_round * min(repeats, 1)


def time_point(setup, bench_occlusion, everything: np.ndarray, n: int, threads, torch_chunk: int,
               repeats: int, budget: Budget, log) -> tuple[dict, dict]:
    """Transfers, warm-up and interleaved rounds of both sweeps of n images.

    Returns:
        ({"convis_jax": Timing, "pytorch": Timing, "transfers": {...}}, warm-up outputs).
    """
    setup = replace(setup, settings=replace(setup.settings, torch_chunk=torch_chunk))
    transfers = {"convis_jax": bench_occlusion.jax_transfer(setup, n),
                 "pytorch": bench_occlusion.torch_transfer(setup, n)}
    moved = {name: [common.timed(fn)[0] for _ in range(3)][1:] for name, fn in transfers.items()}
    functions = {"convis_jax": bench_occlusion.jax_sweep(setup, everything, n),
                 "pytorch": bench_occlusion.torch_batched(setup, everything, n, threads)}
    timings, outputs = common.warm_up(functions, log=log)
    for _ in range(repeats):
        round_s = sum(t.times[-1] if t.times else t.first_call_s for t in timings.values())
        if not budget.fits(round_s):
            break
        common.rounds(functions, timings, 1, log=log)
    return {"timings": timings,
            "transfers": {name: float(np.median(times)) for name, times in moved.items()}}, outputs


def measure(settings: CheckSettings, record: Record, checkpoint: Path | None, log) -> None:
    """The steps (module docstring), recording into `record`; raises when a step fails."""
    import torch

    import bench_occlusion
    from convis_jax.kernels import occlusion
    from convis_jax.kernels.bank import build_bank
    from convis_jax.models.loading import load_clip

    result, budget = record.result, record.budget
    on_gpu = torch.cuda.is_available()
    torch_chunk = settings.torch_chunk or (256 if on_gpu else 64)
    result.update(machine=common.machine_name(),
                  environment=common.environment(",".join(settings.dtypes)),
                  torch_chunk=torch_chunk, torch_device="cuda" if on_gpu else "cpu")
    with tempfile.TemporaryDirectory(prefix="convis_gpu_check_") as folder:
        with record.step("checkpoint", log) as entry:
            if checkpoint is None:
                checkpoint = common.benchmark_checkpoint(Path(folder) / "clip", settings.spec)
            entry["path"] = str(checkpoint)
        with record.step("vocabulary", log):
            vocabulary, kind, fallback = pick_vocabulary(settings)
            result.update(vocabulary=kind, vocabulary_fallback=fallback,
                          concepts=len(vocabulary))
        with record.step("bank", log):
            bank = build_bank(load_clip(checkpoint), vocabulary, cache=False,
                              progress=False).embeddings
            concepts = bench_occlusion.concepts_from(vocabulary, bank)
        everything = np.arange(concepts.count)
        maps, previous = {}, None
        for dtype in settings.dtypes:
            with record.step(f"{dtype}: models and inputs", log):
                model = load_clip(checkpoint, dtype=dtype)
                torch_model = bench_occlusion.torch_reference.torch_model_of(checkpoint, dtype)
                # chunk None: make_setup takes the library's default on this device.
                setup = bench_occlusion.make_setup(
                    model, torch_model, concepts,
                    bench_occlusion.Settings(stride=settings.stride, chunk=settings.chunk,
                                             torch_chunk=torch_chunk),
                    dtype, max(settings.image_counts))
                result["chunk"] = setup.settings.chunk
                result["library_defaults"] = dict(zip(
                    ("chunk", "images_per_call"),
                    occlusion.sweep_sizes(model.config, setup.grid, concepts.count)))
                threads = settings.torch_threads
                if threads is None and not on_gpu:
                    threads = bench_occlusion.pick_torch_threads(setup, 8, log)
            try:
                with record.step(f"{dtype}: cross-check", log):
                    result["checks"][dtype] = cross_check(setup, everything, dtype)
            except AssertionError as error:
                result["checks"][dtype] = {"error": str(error)}
                result["status"] = "check failed"
                for n in settings.image_counts:
                    record.skip(f"{dtype}, {n} images per call", "its cross-check failed", log)
                continue
            fast_float32()
            for n in settings.image_counts:
                name = f"{dtype}, {n} images per call"
                estimate = estimate_point(previous, n, settings.repeats)
                if not budget.fits(estimate):
                    record.skip(name, f"would not fit: about {estimate:.0f} s needed, "
                                      f"{budget.left_s:.0f} s left", log)
                    continue
                with record.step(name, log) as entry:
                    point, outputs = time_point(setup, bench_occlusion, everything, n, threads,
                                                torch_chunk, settings.repeats, budget, log)
                    maps[dtype, n] = outputs["convis_jax"]
                    rows = [timing_row(t, dtype, n, f) for f, t in point["timings"].items()]
                    result["rows"] += rows
                    result["transfers"].append({"dtype": dtype, "images_per_call": n,
                                                **{f"{k}_s": v for k, v in
                                                   point["transfers"].items()}})
                    entry["timed_rounds"] = min(r["repeats"] for r in rows)
                    if entry["timed_rounds"] == 0:
                        result["skipped"].append(f"{name}: timed rounds (the budget was spent "
                                                 "after the warm-up)")
                    previous = {"images_per_call": n,
                                "first_calls_s": sum(t.first_call_s
                                                     for t in point["timings"].values()),
                                "round_s": sum(t.times[-1] if t.times else t.first_call_s
                                               for t in point["timings"].values())}
                    result["summary"] = summarise(result["rows"])
                    result["targets"] = targets(result["summary"])
        shared = [n for n in settings.image_counts
                  if ("float32", n) in maps and ("bfloat16", n) in maps]
        if shared:
            with record.step("bfloat16 against float32 maps", log):
                n = max(shared)
                result["bfloat16_vs_float32"] = dict(
                    bench_occlusion.map_agreement(maps["float32", n], maps["bfloat16", n]),
                    images=n)


def cross_check(setup, index: np.ndarray, dtype: str) -> dict:
    """convis_jax against PyTorch on one image, every concept (`bench_occlusion.check_maps`)."""
    import bench_occlusion

    with strict_float32():
        cells = bench_occlusion.jax_sweep(setup, index, 1)()
        sweep = bench_occlusion.torch_checked_sweep(setup, index)
        embeddings = bench_occlusion.jax_encode_alone(setup, bench_occlusion.window_pixels(setup))()
    return bench_occlusion.check_maps(cells[0], sweep, embeddings, setup.concepts, index,
                                      bench_occlusion.EMBEDDING_TOLERANCE[dtype], dtype)


def summarise(rows: list[dict]) -> dict:
    """Best ms/image per (dtype, framework), and PyTorch / convis_jax at each timed point."""
    best, ratios = {}, {}
    timed = [row for row in rows if row["median_s"] is not None]
    for row in timed:
        key = f"{row['framework']}_{row['dtype']}"
        best[key] = min(best.get(key, np.inf), row["ms_per_image"])
    for row in timed:
        if row["framework"] != "convis_jax":
            continue
        other = next((r for r in timed if r["framework"] == "pytorch"
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


def new_result(settings: CheckSettings, budget: Budget) -> dict:
    """The result before any step: every promised key, with what is known already."""
    return {"schema": 2, "kind": "gpu_check", "status": "running", "machine": None,
            "environment": {"cpu": common.cpu_info(),
                            "load_average_before": common.load_average()},
            "settings": {k: (list(v) if isinstance(v, tuple) else v)
                         for k, v in asdict(settings).items()},
            "budget_s": budget.seconds, "vocabulary": None, "vocabulary_fallback": None,
            "concepts": None, "steps": [], "skipped": [], "checks": {}, "rows": [],
            "transfers": [], "summary": summarise([]), "targets": [], "total_s": 0.0}


def default_out(machine: str, small: bool) -> Path:
    return common.RESULTS_DIR / f"gpu-check-{machine}{'-small' if small else ''}.json"


def worker(args, settings: CheckSettings) -> int:
    """The measuring child: every step, recorded into args.out (or the default path)."""
    budget = Budget(settings.budget_s, args.started)
    log = lambda message: print(message, flush=True)
    record = Record(Path(args.out), budget, new_result(settings, budget))
    record.save()
    try:
        measure(settings, record, args.checkpoint, log)
    except Exception:  # noqa: BLE001 - recorded in the JSON, then reported by the exit code
        record.result["status"] = "error"
        record.result["error"] = traceback.format_exc(limit=8)
        record.save()
        log(record.result["error"])
        return 1
    if record.result["status"] == "running":
        record.result["status"] = "finished"
    record.save()
    return 0 if record.result["status"] == "finished" else 1


def finish_cut(path: Path, settings: CheckSettings, budget: Budget) -> dict:
    """The record of a child stopped at the budget: what it wrote, the cut step marked."""
    result = (json.loads(path.read_text()) if path.is_file()
              else new_result(settings, budget))
    for entry in result["steps"]:
        if entry["status"] == "running":
            entry.update(status="cut", seconds=budget.used_s - entry["at_s"])
            result["skipped"].append(f"{entry['step']}: cut at the budget")
    result["skipped"].append(f"every later step: the budget of {budget.seconds:.0f} s was "
                             "spent")
    result["status"] = "cut at the budget"
    result["total_s"] = budget.used_s
    common.write_json(path, result)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="the JSON file (default benchmarks/results/gpu-check-<device>.json)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a transformers CLIP folder (default: a random ViT-B/32, temporary)")
    parser.add_argument("--small", action="store_true",
                        help="tiny model, stride 32, 1 and 2 images per call (CPU tests)")
    parser.add_argument("--vocabulary", choices=("auto", "physical_objects", "random"),
                        default=None)
    parser.add_argument("--images", type=int, nargs="+", default=None,
                        help="images per call (default 1 8 64)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help=f"seconds from the start, everything included (default "
                             f"{DEFAULT_BUDGET_S:.0f}; --small 600)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--started", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    settings = small_settings() if args.small else CheckSettings()
    overrides = {key: value for key, value in (("vocabulary", args.vocabulary),
                                               ("budget_s", args.budget_s)) if value is not None}
    if args.images:
        overrides["image_counts"] = tuple(args.images)
    settings = replace(settings, **overrides)
    if args.worker:
        return worker(args, settings)

    budget = Budget(settings.budget_s)
    if args.out is None:
        args.out = default_out(device_name(), args.small)
    command = [sys.executable, str(Path(__file__).resolve()), "--worker",
               "--started", repr(budget.start), "--out", str(args.out),
               "--budget-s", repr(settings.budget_s)]
    command += [flag for flag, value in (("--small", args.small),) if value]
    for flag, value in (("--checkpoint", args.checkpoint), ("--vocabulary", args.vocabulary)):
        if value is not None:
            command += [flag, str(value)]
    if args.images:
        command += ["--images", *map(str, args.images)]
    child = subprocess.Popen(command, start_new_session=True)
    try:
        code = child.wait(timeout=max(budget.left_s, 0.0))
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        result = finish_cut(Path(args.out), settings, budget)
        print(f"cut at the budget of {settings.budget_s:.0f} s; wrote {args.out}")
        report(result)
        return 124
    result = json.loads(Path(args.out).read_text())
    print(f"wrote {args.out} in {result['total_s']:.0f} s ({result['status']})")
    report(result)
    return code


def device_name() -> str:
    """The results file's device name, read without starting JAX in this process."""
    try:
        names = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=30, check=True).stdout
        first = names.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return f"cpu-{os.cpu_count()}cores"
    return "-".join("".join(c if c.isalnum() else " " for c in first.lower()).split())


def report(result: dict) -> None:
    for row in result["rows"]:
        shown = "no timed round" if row["median_s"] is None else f"{row['ms_per_image']:9.1f} ms/image"
        print(f"  {row['framework']:10s} {row['dtype']:8s} {row['images_per_call']:3d} "
              f"images/call: {shown} (first call {row['first_call_s']:.1f} s)")
    for t in result["targets"]:
        print(f"  {'met ' if t['met'] else 'MISS'} {t['name']}: {t['value']:.3g} {t['unit']} "
              f"(target {t['op']} {t['threshold']:g})")
    for skipped in result["skipped"]:
        print(f"  skipped {skipped}")


if __name__ == "__main__":
    sys.exit(main())
