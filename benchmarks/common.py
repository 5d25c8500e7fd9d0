"""Shared pieces of the benchmarks: the benchmark model, timing, environment, JSON and plots.

Every benchmark follows the same protocol (STYLE.md, "Tests"):

* the first call of each timed function is its warm-up; it includes tracing
  and compilation and is reported separately (`first_call_s`, and
  `compile_s` = first call - median, the compilation's share);
* the timed calls then run in interleaved rounds (A, B, C, A, B, C, ...), so
  that a change of load on a shared machine hits every contender alike,
  and each reports the median of its rounds;
* both frameworks start a timed call with their inputs on the device
  (copying them there is timed apart), and return host arrays;
* results are plain JSON-able dicts, written with the machine (CPU model and
  flags, cores, accelerator), the load average before and after, the dtype
  and library versions of the run (`environment`, `write_json`); a figure
  scaled from a sample says so, and from what.

Run from the repository root: `python benchmarks/run_all.py [--quick]`.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# On a GPU, JAX would otherwise take 75% of its memory when it starts, leaving
# too little for the PyTorch side of the comparisons (read when JAX first
# touches a device, so setting it at import time is early enough).
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
SCHEMA_VERSION = 1

# convis_jax.testing writes random transformers CLIP checkpoints; the tests
# use the same helper, so that tests and benchmarks share one recipe.
from convis_jax.testing import VIT_B32_SHALLOW, make_clip_checkpoint  # noqa: E402

# ViT-B/32 (OpenAI's `openai/clip-vit-base-patch32` shape) at full depth, as the
# issues require: the tests' ViT-B/32 shape with 12 layers in each tower.
VIT_B32 = {name: dict(part, num_hidden_layers=12) if isinstance(part, dict) else part
           for name, part in VIT_B32_SHALLOW.items()}


def benchmark_checkpoint(folder: Path | None = None, spec: dict = VIT_B32, seed: int = 0) -> Path:
    """A random CLIPModel checkpoint written by transformers, created once and reused.

    PyTorch reads it with `CLIPModel.from_pretrained` and convis_jax with
    `load_clip`, so both sides of every comparison use the same weights.

    Args:
        folder: where to write it; default `$CONVIS_JAX_BENCH_MODEL`, else
            `~/.cache/convis_jax_bench/vit_b32_seed<seed>` (outside the
            convis_jax cache root, which the benchmarks point at temporary folders).
        spec: vision/text config kwargs and projection_dim (see convis_jax.testing).
        seed: torch seed of the random weights.

    Returns:
        The checkpoint folder (config.json + model.safetensors).
    """
    if folder is None:
        folder = Path(os.environ.get("CONVIS_JAX_BENCH_MODEL")
                      or Path.home() / ".cache" / "convis_jax_bench" / f"vit_b32_seed{seed}")
    folder = Path(folder)
    marker = folder / "spec.json"
    wanted = json.dumps({"spec": spec, "seed": seed}, sort_keys=True)
    if marker.is_file() and marker.read_text() == wanted:
        return folder
    make_clip_checkpoint(folder, spec, seed=seed)
    # Written last: a checkpoint interrupted while saving is rebuilt next time.
    marker.write_text(wanted)
    return folder


@dataclass
class Timing:
    """Wall-clock seconds of one benchmarked function.

    Attributes:
        first_call_s: the first (warm-up) call: tracing, compilation and one run.
        times: the timed calls, in seconds.
    """

    first_call_s: float = 0.0
    times: list[float] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return statistics.median(self.times)

    def to_dict(self) -> dict:
        return {"first_call_s": self.first_call_s,
                "compile_s": max(self.first_call_s - self.median_s, 0.0),
                "median_s": self.median_s,
                "min_s": min(self.times), "max_s": max(self.times), "repeats": len(self.times),
                "times_s": self.times}


def timed(fn, *args, **kwargs):
    """(seconds, result) of one call; fn must return host data (it has synchronised)."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def warm_up(functions: dict, log=print) -> tuple[dict[str, Timing], dict]:
    """Calls every function once (tracing and compiling), timing each call.

    Args:
        functions: name -> zero-argument callable returning host (NumPy) data, so that
            the clock stops after the device has finished.
        log: progress printer.

    Returns:
        (name -> Timing with only first_call_s, name -> output of the call); the outputs
        are what the benchmarks cross-check before trusting any timing.
    """
    timings, outputs = {}, {}
    for name, fn in functions.items():
        seconds, outputs[name] = timed(fn)
        timings[name] = Timing(first_call_s=seconds)
        log(f"  warm-up {name}: {seconds:.2f} s")
    return timings, outputs


def rounds(functions: dict, timings: dict[str, Timing], repeats: int, log=print,
           after_round=None) -> None:
    """Times the (warmed-up) functions in `repeats` interleaved rounds, appending to timings.

    Args:
        functions: name -> zero-argument callable (see `warm_up`).
        timings: name -> Timing to append to.
        repeats: rounds.
        log: progress printer.
        after_round: called with (name -> output) after each round, e.g. to replace a
            timing by a clock the function keeps itself.
    """
    for round_index in range(repeats):
        outputs = {}
        for name, fn in functions.items():
            seconds, outputs[name] = timed(fn)
            timings[name].times.append(seconds)
            log(f"  round {round_index + 1}/{repeats} {name}: {seconds:.2f} s")
        if after_round is not None:
            after_round(outputs)


def measure(functions: dict, repeats: int, log=print) -> tuple[dict[str, Timing], dict]:
    """`warm_up`, then `rounds`; returns (name -> Timing, name -> warm-up output)."""
    timings, outputs = warm_up(functions, log)
    rounds(functions, timings, repeats, log)
    return timings, outputs


def faster_torch_threads(run, log=print, label: str = "") -> int:
    """The faster PyTorch intra-op thread count, 1 or all cores, for `run` (sets it).

    One timed call each after a warm-up: a coarse choice, enough to avoid the
    case where PyTorch's threads mostly wait for each other (a shared or
    loaded machine), which would make the PyTorch side look slower than it is.
    """
    import torch

    seconds = {}
    for threads in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(threads)
        run()
        seconds[threads] = timed(run)[0]
    choice = min(seconds, key=seconds.get)
    torch.set_num_threads(choice)
    log(f"  PyTorch threads{' for ' + label if label else ''}: {choice} "
        f"({', '.join(f'{t}: {s * 1000:.0f} ms' for t, s in seconds.items())})")
    return choice


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far, in bytes.

    Linux: VmHWM of /proc/self/status, the high-water mark of this program's
    own memory. getrusage's ru_maxrss is not used there: it survives exec, so
    a subprocess would report its parent's peak whenever that was larger.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # reported in kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def machine_name() -> str:
    """A file name for this kind of machine: 'cpu-amd-epyc-2cores', 'nvidia-h200', ...

    CPUs are named by model and cores: machines of one core count but another
    CPU rank the frameworks differently, so their results must not share a file.
    """
    import jax

    device = jax.devices()[0]
    if device.platform == "cpu":
        name = f"cpu-{cpu_info()['model']}-{os.cpu_count()}cores"
    else:
        name = device.device_kind
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


# The instruction-set extensions that decide which framework's matrix products are
# faster on a CPU (float32 FMA width, bfloat16 and AMX units): recorded in every result.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16",
             "amx_int8")
VERSIONED = ("convis_jax", "jax", "jaxlib", "flax", "orbax-checkpoint", "numpy", "torch",
             "transformers", "tokenizers", "safetensors", "nltk", "pillow")


def cpu_info() -> dict:
    """The CPU: {"model", "flags" (those of CPU_FLAGS it has), "cores", "label"}.

    Linux reads /proc/cpuinfo; elsewhere the model is `platform.processor()` and
    the flags are unknown (None).
    """
    model, flags = None, None
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and model is None:
                model = value.strip()
            elif key in ("flags", "Features") and flags is None:
                present = set(value.split())
                flags = [flag for flag in CPU_FLAGS if flag in present]
    model = model or platform.processor() or platform.machine()
    cores = os.cpu_count()
    shown = ", ".join(flags) if flags else ("no AVX2" if flags == [] else "flags unknown")
    return {"model": model, "flags": flags, "cores": cores,
            "label": f"{model} ({shown}), {cores} cores"}


def load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages, or None where the system has none."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def environment(dtype: str) -> dict:
    """The machine (CPU model, flags, cores, devices), load average and library versions.

    `load_average_before` is taken here; `write_json` adds `load_average_after`
    whenever it writes a results dict holding this environment.
    """
    import importlib.metadata as metadata

    import jax

    versions = {}
    for package in VERSIONED:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    devices = jax.devices()
    accelerator = None
    if devices[0].platform != "cpu":
        accelerator = devices[0].device_kind
    return {
        "machine": machine_name(),
        "cpu": cpu_info(),
        "accelerator": accelerator,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_before": load_average(),
        "jax_backend": devices[0].platform,
        "devices": [f"{d.platform}:{d.device_kind}" for d in devices],
        "dtype": dtype,
        "python": platform.python_version(),
        "versions": versions,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def target(name: str, value: float, op: str, threshold: float, unit: str = "") -> dict:
    """One acceptance target: value `op` threshold, with the verdict."""
    met = value <= threshold if op == "<=" else value >= threshold
    return {"name": name, "value": value, "op": op, "threshold": threshold, "unit": unit,
            "met": bool(met)}


# The keys every results file has; `check_results` enforces them.
REQUIRED = {
    "schema": int, "machine": str, "quick": bool, "dtype": str, "environment": dict,
    "benchmarks": dict, "targets": list, "total_s": float,
}
TARGET_KEYS = {"name": str, "value": float, "op": str, "threshold": float, "unit": str,
               "met": bool}


def check_results(results: dict) -> None:
    """Raises ValueError naming every key of a results file that is missing or mistyped."""
    problems = []
    for key, kind in REQUIRED.items():
        if key not in results:
            problems.append(f"missing {key!r}")
        elif not isinstance(results[key], kind) and not (kind is float
                                                         and isinstance(results[key], int)):
            problems.append(f"{key!r} should be {kind.__name__}, found "
                            f"{type(results[key]).__name__}")
    for i, entry in enumerate(results.get("targets", [])):
        for key, kind in TARGET_KEYS.items():
            value = entry.get(key)
            if not isinstance(value, kind) and not (kind is float and isinstance(value, int)
                                                    and not isinstance(value, bool)):
                problems.append(f"targets[{i}].{key} should be {kind.__name__}, found {value!r}")
    for name, section in results.get("benchmarks", {}).items():
        if not isinstance(section, dict) or "error" not in section and "timings" not in section:
            problems.append(f"benchmarks[{name!r}] needs 'timings' (or 'error')")
    if problems:
        raise ValueError("results file does not match schema "
                         f"{SCHEMA_VERSION}: " + "; ".join(problems))


@contextlib.contextmanager
def empty_cache():
    """Points CONVIS_JAX_CACHE at a new temporary folder for the block, then restores it."""
    previous = os.environ.get("CONVIS_JAX_CACHE")
    with tempfile.TemporaryDirectory(prefix="convis_bench_cache_") as cache:
        os.environ["CONVIS_JAX_CACHE"] = cache
        try:
            yield cache
        finally:
            if previous is None:
                os.environ.pop("CONVIS_JAX_CACHE", None)
            else:
                os.environ["CONVIS_JAX_CACHE"] = previous


def write_json(path: Path, data: dict) -> None:
    """Writes `data` as indented JSON, through a temporary file and a rename (atomic).

    A results dict with an `environment` (see `environment`) gets the load
    average at the time of writing as `environment["load_average_after"]`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data.get("environment"), dict):
        data["environment"]["load_average_after"] = load_average()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)


def new_figure(title: str, panels: int = 1):
    """A matplotlib figure with `panels` side-by-side axes (Agg backend, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 3.8), squeeze=False)
    fig.suptitle(title)
    return fig, list(axes[0])


def save_figure(fig, path: Path) -> str:
    """Saves and closes `fig`; returns the path relative to the repository when possible."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def bar_chart(ax, labels: list[str], values: list[float], ylabel: str, log: bool = False) -> None:
    """Bars with their values written on top."""
    bars = ax.bar(range(len(values)), values, color="#4878a8")
    ax.set_xticks(range(len(values)), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    for bar, value in zip(bars, values):
        ax.annotate(f"{value:.3g}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)


# ----------------------------------------------------------------- hardware figures
# Used by bench_occlusion (which times the matmul beside the sweep) and
# bench_hardware (which plots the result).


def vit_forward_flops(vision, projection_dim: int) -> dict:
    """FLOPs of one image through a CLIP ViT image tower, by part.

    Args:
        vision: the vision config (hidden_size, intermediate_size, num_hidden_layers,
            image_size, patch_size attributes).
        projection_dim: d of the visual projection.

    Returns:
        {"patch_embedding", "attention_projections", "attention_scores", "mlp",
        "projection", "total"}, in FLOPs (multiply-adds x 2).
    """
    width, hidden = vision.hidden_size, vision.intermediate_size
    patches = (vision.image_size // vision.patch_size) ** 2
    tokens = patches + 1  # + the class token
    layers = vision.num_hidden_layers
    parts = {
        "patch_embedding": 2 * patches * 3 * vision.patch_size ** 2 * width,
        # q, k, v and the output projection: four [tokens, width] x [width, width].
        "attention_projections": layers * 4 * 2 * tokens * width * width,
        # q k^T and weights v: two [tokens, tokens, width] contractions over all heads.
        "attention_scores": layers * 2 * 2 * tokens * tokens * width,
        "mlp": layers * 2 * 2 * tokens * width * hidden,
        "projection": 2 * width * projection_dim,
    }
    parts["total"] = sum(parts.values())
    return parts


def matmul_function(n: int, dtype: str = "float32", seed: int = 0):
    """A zero-argument callable timing one [n, n] @ [n, n] jnp matmul (returns a host scalar)."""
    import jax
    import jax.numpy as jnp

    key_a, key_b = jax.random.split(jax.random.key(seed))
    a = jax.random.normal(key_a, (n, n), jnp.dtype(dtype))
    b = jax.random.normal(key_b, (n, n), jnp.dtype(dtype))
    product = jax.jit(lambda x, y: (x @ y)[0, 0])  # a scalar out: no device-to-host copy cost

    def run():
        return float(product(a, b))

    return run


def torch_matmul_function(n: int, threads: int, seed: int = 0):
    """`matmul_function`'s PyTorch twin (float32, on the GPU when torch sees one), so that
    both frameworks' matmul rates are measured in the same rounds."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    generator = torch.Generator().manual_seed(seed)
    a, b = (torch.randn(n, n, generator=generator).to(device) for _ in range(2))

    def run():
        torch.set_num_threads(threads)
        with torch.inference_mode():
            return float((a @ b)[0, 0])

    return run


def hardware_report(sweep_s: float, n_crops: int, vision, projection_dim: int, matmul_s: dict,
           matmul_n: int, torch_batched_s: float | None = None,
           matmul_over_sweep_paired: float | None = None, torch_matmul_s: float | None = None,
           torch_encode_s: float | None = None) -> dict:
    """Achieved FLOP/s of the sweep (and of PyTorch's batched forward) against matmuls.

    Args:
        sweep_s: median seconds of the convis_jax sweep.
        n_crops: crops the sweep encodes (the windows it needs, not its chunk padding).
        vision, projection_dim: the model's vision config and projection width.
        matmul_s: dtype name -> median seconds of one [matmul_n]^2 matmul.
        matmul_n: the matmul side.
        torch_batched_s: median seconds of the batched PyTorch sweep of the same crops.
        matmul_over_sweep_paired: median over rounds of (float32 matmul seconds / sweep
            seconds) in the same round; when given, the sweep's fraction of the matmul's
            FLOP/s is taken from it (load changing between rounds cancels).
        torch_matmul_s: median seconds of PyTorch's float32 matmul of the same side.
        torch_encode_s: median seconds of PyTorch's bare encoding of the same crops.

    Returns:
        A JSON-able dict (FLOPs per crop by part, FLOP/s, fractions of the matmul). The
        FLOPs are those of the whole forward, as PyTorch runs it; convis_jax's last
        layer computes the class token alone (`clip.LayerStack.first_token`), so its rates
        are forward-equivalent ones.
    """
    flops = vit_forward_flops(vision, projection_dim)
    sweep_flops = flops["total"] * n_crops
    matmul_flops = 2 * matmul_n ** 3
    matmul_rate = {dtype: matmul_flops / seconds for dtype, seconds in matmul_s.items()}
    reference = matmul_rate["float32"]
    of_medians = sweep_flops / sweep_s / reference
    if matmul_over_sweep_paired is not None:
        fraction = (sweep_flops / matmul_flops) * matmul_over_sweep_paired
    else:
        fraction = of_medians
    out = {
        "vit_flops_per_crop": flops,
        "crops": n_crops,
        "sweep_flops": sweep_flops,
        "sweep_s": sweep_s,
        "sweep_flop_per_s": sweep_flops / sweep_s,
        "matmul_n": matmul_n,
        "matmul_flop_per_s": matmul_rate,
        "sweep_fraction_of_matmul": fraction,
        "sweep_fraction_of_matmul_of_medians": of_medians,
    }
    if torch_batched_s is not None:
        out["torch_batched_flop_per_s"] = sweep_flops / torch_batched_s
        out["torch_batched_fraction_of_matmul"] = sweep_flops / torch_batched_s / reference
    if torch_matmul_s is not None:
        out["torch_matmul_flop_per_s"] = matmul_flops / torch_matmul_s
    if torch_encode_s is not None:
        out["torch_encode_alone_flop_per_s"] = sweep_flops / torch_encode_s
    return out


# ----------------------------------------------------------------- convis_jax's kernels
# The benchmarks time convis_jax's sweep kernels directly (inputs already on the
# device, as the PyTorch contenders get theirs); these helpers are the one place
# that spells out the kernels' arguments.


def sweep_cells(model, padded, bank, members, segments, *, grid, chunk: int,
                num_concepts: int, devices=None):
    """convis_jax's Algorithm 1 kernel (`occlusion.occlusion_cells`) on device arrays.

    Args:
        model: a `ClipModel` (its encoder, input size and normalisation are used).
        padded: float32 [N, Hp, Wp, 3] padded images, on the device.
        bank: float32 [T, d] unit text embeddings, on the device.
        members, segments: the subtree request (`sweep.ConceptRequest.padded`), on the device.
        grid: the window grid; chunk: windows per compiled step.
        num_concepts: K padded to its bucket (`sweep.ConceptRequest.padded`).
        devices: None for the first local device (as the PyTorch contenders run).

    Returns:
        Device cells float32 [N, K_padded, cy, cx].
    """
    import jax

    from convis_jax.kernels import occlusion

    return occlusion.occlusion_cells(
        model.params, padded, bank, members, segments,
        spec=occlusion.SweepSpec.of(model.encoder, grid, chunk), num_concepts=num_concepts,
        devices=devices or jax.local_devices()[:1])


def sweep_embeddings_function(model, grid, chunk: int):
    """A jitted (params, padded [N, Hp, Wp, 3]) -> unit window embeddings [N, W, d]:
    the sweep's own window table, crop cutting, resizing and chunked encoding, with
    the identity in place of similarities and ranks."""
    import jax

    from convis_jax.kernels import occlusion

    spec = occlusion.SweepSpec.of(model.encoder, grid, chunk)

    def run(params, padded):
        outputs = occlusion.sweep_table(params, padded, None, lambda v: v, spec=spec,
                                        similarities=lambda v, bank: v)
        return occlusion.window_rows(outputs, grid, padded.shape[0])

    return jax.jit(run)


def gradient_maps(model, pixel_values, bank, concepts, strategy: str):
    """convis_jax's gradient maps (`gradients.concept_gradient_maps`): cosine score, input
    gradient, absmax over the channels -> device maps [N, K, S, S]."""
    from convis_jax.kernels.gradients import concept_gradient_maps

    return concept_gradient_maps(model.encoder, pixel_values, bank, concepts, None,
                                 score="cosine", kind="gradient", reduce="absmax",
                                 strategy=strategy)
