"""Gradient concept maps: seconds per image against a PyTorch loop of K backward passes.

The suite's random ViT-B/32 CLIP (`common.benchmark_checkpoint`: full depth, read
by convis_jax and by transformers' PyTorch CLIPModel, so both use the same
weights) and a random bank of 7,080 unit concept embeddings (d = 512). For K
concepts it times `concept_gradient_maps` (cosine score, input gradient, absmax
over the channels, one image) with both strategies, next to what tools do
today: one forward and one backward pass through CLIPModel per concept
(weights frozen, so the backward computes input gradients only; PyTorch gets
the faster of 1 and all intra-op threads, as OpenMP threads spinning on a
shared machine can make more threads slower). Costs that grow linearly with K
are extrapolated from the largest K measured where measuring would take too
long; the JSON says which numbers are measured.

Protocol (`common`): the first call of a configuration that traces a kernel is
its warm-up (compile time reported separately) and its maps are checked against
PyTorch's before anything is timed; a first call that traces nothing is already
a timed call. Timings are medians of the timed calls.

    python benchmarks/bench_gradients.py           # K = 1, 16, 64, 512, 7080 (~15 min on 2 cores)
    python benchmarks/bench_gradients.py --quick   # K = 1, 64 (vmap), 512, 7080 (jacobian)

Writes benchmarks/results/gradients-<hostname>.json (or --out).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
from pathlib import Path

# Sibling modules: the script's folder is first on sys.path.
import common
import numpy as np

NUM_CONCEPTS = 7080  # the paper's vocabulary
FULL = {"vmap": (1, 16, 64, 512), "jacobian": (1, 16, 64, 512, 7080), "loop": 16, "repeats": 3}
QUICK = {"vmap": (1, 64), "jacobian": (512, 7080), "loop": 4, "repeats": 1}
CHECKED = 2  # concepts whose maps are compared with PyTorch in every configuration
TOLERANCE = 1e-4  # of the largest map value: 12 float32 layers, summed in other orders
SLOW_S = 30.0  # calls longer than this are timed at most twice


def torch_maps(torch_model, pixel_values: np.ndarray, bank: np.ndarray, concepts) -> np.ndarray:
    """The loop tools run today: forward + backward per concept -> absmax maps [K, S, S]."""
    import torch

    x0 = torch.from_numpy(pixel_values)
    maps = []
    for concept in concepts:
        x = x0.clone().requires_grad_(True)
        features = torch_model.get_image_features(pixel_values=x)
        features = getattr(features, "pooler_output", features)
        v = features[0] / features[0].norm()
        (v @ torch.from_numpy(bank[concept])).backward()
        maps.append(x.grad[0].abs().amax(0).numpy())
    return np.stack(maps)


def pick_torch_threads(run_one, threads: int) -> int:
    """The faster of 1 and `threads` PyTorch intra-op threads for `run_one()`."""
    import torch

    best, best_s = 1, float("inf")
    for n in sorted({1, threads}):
        torch.set_num_threads(n)
        run_one()  # warm-up
        seconds = min(common.timed(run_one)[0] for _ in range(2))
        if seconds < best_s:
            best, best_s = n, seconds
    torch.set_num_threads(best)
    return best


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def time_jax(run, reference: np.ndarray, repeats: int, log) -> dict:
    """Warm-up when `run` traces a kernel, a check against PyTorch, then timed calls.

    Args:
        run: () -> maps [1, K, S, S] as NumPy (the device has finished).
        reference: PyTorch's maps [CHECKED, S, S] of the first concepts.
    """
    from convis_jax.kernels.gradients import TRACES

    before = TRACES.count
    first, maps = common.timed(run)
    checked = min(maps.shape[1], len(reference))
    err = relative_error(maps[0, :checked], reference[:checked])
    if err > TOLERANCE:
        raise AssertionError(f"convis_jax maps differ from PyTorch by {err:.2e} of their "
                             f"largest value (tolerance {TOLERANCE:g})")
    del maps
    traced = TRACES.count != before
    wanted = min(repeats, 2) if first > SLOW_S else repeats
    times = [] if traced else [first]
    times += [common.timed(run)[0] for _ in range(wanted - len(times))]
    timing = common.Timing(first_call_s=first, times=times)
    log(f"    first call {first:.2f}s ({'traced' if traced else 'no trace'}), "
        f"median {timing.median_s:.2f}s of {len(times)}")
    return dict(timing.to_dict(), seconds=timing.median_s, measured=True,
                compile_s=max(first - timing.median_s, 0.0) if traced else 0.0,
                first_call_s=first, error_vs_torch=err)


def extrapolated(rows: dict, k: int) -> dict:
    """The vmap route's cost, linear in K, from the largest K measured with it."""
    base = max(kk for kk, row in rows.items() if row.get("vmap", {}).get("measured"))
    return {"seconds": rows[base]["vmap"]["seconds"] / base * k, "measured": False,
            "from_K": base}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="K = 1, 64 (vmap) and 512, 7080 (jacobian), one timed call each")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls (full 3, quick 1)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="PyTorch intra-op threads to try besides 1")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a transformers CLIP folder (default: the suite's random ViT-B/32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    repeats = args.repeats or settings["repeats"]
    log = lambda message: print(message, flush=True)

    from transformers import CLIPModel

    from convis_jax.kernels.gradients import concept_gradient_maps
    from convis_jax.models.loading import load_clip

    checkpoint = args.checkpoint or common.benchmark_checkpoint(seed=args.seed)
    model = load_clip(checkpoint)
    torch_model = CLIPModel.from_pretrained(checkpoint).eval().requires_grad_(False)
    s, d = model.image_size, model.embedding_dim
    rng = np.random.default_rng(args.seed)
    pixel_values = rng.normal(size=(1, 3, s, s)).astype(np.float32)
    bank = rng.normal(size=(NUM_CONCEPTS, d)).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)

    loop = lambda k: torch_maps(torch_model, pixel_values, bank, range(k))
    torch_threads = pick_torch_threads(lambda: loop(1), args.threads)
    reference = loop(CHECKED)
    # The loop's cost is K times one pass: measure K = 1 and a few, extrapolate the rest.
    loop_k = settings["loop"]
    loop_s = {1: statistics.median(common.timed(loop, 1)[0] for _ in range(repeats)),
              loop_k: common.timed(loop, loop_k)[0]}
    log(f"{checkpoint}: ViT-B/32-shaped, {model.config.vision.num_hidden_layers} layers, d = {d}; "
        f"PyTorch loop ({torch_threads} thread(s)): "
        + ", ".join(f"K={k} {t:.2f}s" for k, t in loop_s.items()))

    rows: dict[int, dict] = {}
    for k in sorted(set(settings["vmap"]) | set(settings["jacobian"]) | {512, 7080}):
        row = rows.setdefault(k, {"K": k})
        for strategy in ("vmap", "jacobian"):
            if k not in settings[strategy]:
                continue
            log(f"  K={k} {strategy}")
            run = lambda: np.asarray(concept_gradient_maps(
                model.encoder, pixel_values, bank, np.arange(k), None, score="cosine",
                kind="gradient", reduce="absmax", strategy=strategy))
            row[strategy] = time_jax(run, reference, repeats, log)
        if "vmap" not in row:
            row["vmap"] = extrapolated(rows, k)
        # The jacobian route's cost does not grow linearly with K: never extrapolated.
        row.setdefault("jacobian", {"seconds": None, "measured": False})
        row["torch_loop"] = ({"seconds": loop_s[k], "measured": True} if k in loop_s else
                             {"seconds": loop_s[loop_k] / loop_k * k, "measured": False,
                              "from_K": loop_k})
        log(format_row(row))

    best = lambda k: min(t for t in (rows[k]["vmap"]["seconds"],
                                     rows[k]["jacobian"]["seconds"]) if t is not None)
    targets = {
        "jacobian K=7080 / K=512 <= 1.5": rows[7080]["jacobian"]["seconds"]
        / rows[512]["jacobian"]["seconds"],
        "torch loop / convis_jax at K=64 >= 1.3": rows[64]["torch_loop"]["seconds"] / best(64),
        "torch loop / convis_jax at K=7080 >= 10": rows[7080]["torch_loop"]["seconds"]
        / best(7080),
    }
    checks = {}
    for name, value in targets.items():
        op, threshold = name.split()[-2], float(name.split()[-1])
        met = value <= threshold if op == "<=" else value >= threshold
        checks[name] = {"value": value, "met": met}
        log(f"{name}: {value:.2f} {'met' if met else 'NOT MET'}")

    result = {
        "environment": common.environment("float32"), "host": socket.gethostname(),
        "checkpoint": str(checkpoint), "torch_threads": torch_threads,
        "bank": f"{NUM_CONCEPTS} random unit vectors, d = {d}", "score": "cosine",
        "kind": "gradient", "reduce": "absmax", "images_per_call": 1, "quick": args.quick,
        "seconds": "per image; torch_loop = one forward + backward per concept through "
                   "transformers' CLIPModel with frozen weights",
        "torch_loop_measured": {str(k): v for k, v in loop_s.items()},
        "rows": [rows[k] for k in sorted(rows)], "targets": checks,
    }
    out = args.out or common.RESULTS_DIR / f"gradients-{socket.gethostname()}.json"
    common.write_json(out, result)
    log(f"wrote {out}")
    return result


def format_row(row: dict) -> str:
    def cell(name):
        entry = row[name]
        if entry["seconds"] is None:
            return f"{name} -"
        mark = "" if entry["measured"] else f" (extrapolated from K={entry['from_K']})"
        return f"{name} {entry['seconds']:.3f}s{mark}"

    return f"K={row['K']:>5}: " + "; ".join(cell(n) for n in ("vmap", "jacobian", "torch_loop"))


if __name__ == "__main__":
    main()
