"""Gradient concept maps: seconds per image against a PyTorch loop of K backward passes.

A ViT-B/32-shaped CLIP image tower (width 768, 12 heads, patch 32, 224 px, 12
layers; random weights, the same in JAX and in transformers' PyTorch CLIPModel)
and a random bank of 7,080 unit concept embeddings (d = 512). For K concepts it
times `concept_gradient_maps` (cosine score, input gradient, absmax over the
channels) with both strategies, and the way tools do it today: one forward and
one backward pass through transformers' CLIPModel per concept (weights frozen,
so the backward computes input gradients only). Costs that grow linearly with
K are extrapolated from the largest K measured where measuring would take too
long; the JSON says which numbers are measured.

Every configuration is first run once (compilation, reported separately) and
its maps are checked against PyTorch's before it is timed; timings are the
median of the repeats.

    python benchmarks/bench_gradients.py           # full run (about 15 minutes on 2 cores)
    python benchmarks/bench_gradients.py --quick   # K = 1, 64, 512, 7080; fewer repeats

Writes benchmarks/results/gradients-<hostname>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import time
from pathlib import Path

import numpy as np

NUM_CONCEPTS = 7080  # the paper's vocabulary
ALL_K = (1, 16, 64, 512, 7080)
QUICK_K = (1, 64, 512, 7080)
CHECKED = 2  # concepts whose maps are compared with PyTorch in every configuration
TOLERANCE = 1e-4  # of the largest map value; 12 float32 layers, summed in other orders
SLOW_S = 30.0  # runs longer than this are repeated fewer times


def build_models(depth: int, seed: int):
    """(torch CLIPModel, ClipConfig, Flax params) with the same random weights."""
    import jax
    import jax.numpy as jnp
    import torch
    from transformers import CLIPConfig, CLIPModel

    from convis_jax.jax_backend import clip
    from convis_jax.jax_backend.config import ClipConfig
    from convis_jax.jax_backend.pytorch_names import pytorch_to_flax

    torch.manual_seed(seed)
    hf_config = CLIPConfig(
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=depth,
                           num_attention_heads=12, image_size=224, patch_size=32),
        # The text tower plays no part in gradient maps (the bank is given): keep it small.
        text_config=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=1,
                         num_attention_heads=8),
        projection_dim=512)
    torch_model = CLIPModel(hf_config).eval().requires_grad_(False)
    config = ClipConfig.from_dict(hf_config.to_dict())
    state = {k: v.numpy() for k, v in torch_model.state_dict().items()}
    params = pytorch_to_flax(state, clip.parameter_shapes(config), source="benchmark model")
    return torch_model, config, jax.tree_util.tree_map(jnp.asarray, params)


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


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def pick_torch_threads(torch_model, pixel_values, bank, threads: int) -> int:
    """The faster of 1 and `threads` intra-op threads (on a shared machine OpenMP's
    spinning threads can make 2 slower than 1): the loop gets its best setting."""
    import torch

    best, best_t = 1, float("inf")
    for n in sorted({1, threads}):
        torch.set_num_threads(n)
        torch_maps(torch_model, pixel_values, bank, [0])
        t = statistics.median(timed(lambda: torch_maps(torch_model, pixel_values, bank, [0]))[0]
                              for _ in range(2))
        if t < best_t:
            best, best_t = n, t
    torch.set_num_threads(best)
    return best


def relative_error(got, want) -> float:
    return float(np.abs(np.asarray(got) - want).max() / np.abs(want).max())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="K = 1, 64, 512, 7080; fewer repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (3; quick 1)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="PyTorch intra-op threads to try besides 1")
    parser.add_argument("--depth", type=int, default=12, help="vision layers (12 = ViT-B/32)")
    parser.add_argument("--chunk", type=int, default=None, help="concept chunk (default: auto)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    sizes = QUICK_K if args.quick else ALL_K

    import jax
    import torch

    from convis_jax.jax_backend.gradients import concept_gradient_maps

    rng = np.random.default_rng(args.seed)
    t_build, (torch_model, config, params) = timed(lambda: build_models(args.depth, args.seed))
    pixel_values = rng.normal(size=(1, 3, 224, 224)).astype(np.float32)
    bank = rng.normal(size=(NUM_CONCEPTS, config.projection_dim)).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    torch_threads = pick_torch_threads(torch_model, pixel_values, bank, args.threads)
    reference = torch_maps(torch_model, pixel_values, bank, range(CHECKED))
    print(f"model built in {t_build:.1f}s; depth {args.depth}; torch threads {torch_threads}; "
          f"jax devices {jax.devices()}")

    def jax_run(k, strategy):
        maps = concept_gradient_maps(params, config, pixel_values, bank, np.arange(k), None,
                                     1.0, score="cosine", kind="gradient", reduce="absmax",
                                     strategy=strategy, chunk=args.chunk)
        return maps.block_until_ready()

    # The loop's cost is K times one pass: measure K = 1 and a few, extrapolate the rest.
    loop_k = 4 if args.quick else 16
    measured_loop = {
        1: statistics.median(timed(lambda: torch_maps(torch_model, pixel_values, bank, [0]))[0]
                             for _ in range(repeats)),
        loop_k: timed(lambda: torch_maps(torch_model, pixel_values, bank, range(loop_k)))[0]}
    print("torch loop: " + ", ".join(f"K={k} {t:.2f}s" for k, t in measured_loop.items()))

    rows = []
    for k in sizes:
        row = {"K": k}
        for strategy in ("vmap", "jacobian"):
            # The vmap route grows linearly with K: beyond 512 concepts, extrapolate.
            if strategy == "vmap" and k > 512:
                base = max(r["K"] for r in rows if r["vmap"]["measured"])
                per = next(r for r in rows if r["K"] == base)["vmap"]["seconds"] / base
                row["vmap"] = {"seconds": per * k, "measured": False, "from_K": base}
                continue
            first, maps = timed(lambda: jax_run(k, strategy))
            checked = min(k, CHECKED)
            err = relative_error(np.asarray(maps)[0, :checked], reference[:checked])
            assert err < TOLERANCE, f"{strategy} K={k}: maps differ from PyTorch by {err:.2e}"
            n = min(repeats, 2) if first > SLOW_S else repeats
            times = [timed(lambda: jax_run(k, strategy))[0] for _ in range(n)]
            seconds = statistics.median(times)
            row[strategy] = {"seconds": seconds, "measured": True, "repeats": n,
                             "first_call": first, "compile": max(first - seconds, 0.0),
                             "error_vs_torch": err}
            del maps
        if k in measured_loop:
            row["torch_loop"] = {"seconds": measured_loop[k], "measured": True}
        else:
            row["torch_loop"] = {"seconds": measured_loop[loop_k] / loop_k * k,
                                 "measured": False, "from_K": loop_k}
        rows.append(row)
        print(format_row(row), flush=True)

    by_k = {r["K"]: r for r in rows}
    best = lambda k: min(by_k[k][s]["seconds"] for s in ("vmap", "jacobian") if s in by_k[k])
    targets = {
        "jacobian K=7080 / K=512 <= 1.5": by_k[7080]["jacobian"]["seconds"]
        / by_k[512]["jacobian"]["seconds"],
        "torch loop / jax at K=64 >= 1.3": by_k[64]["torch_loop"]["seconds"] / best(64),
        "torch loop / jax at K=7080 >= 10": by_k[7080]["torch_loop"]["seconds"] / best(7080),
    }
    limits = {"jacobian K=7080 / K=512 <= 1.5": (None, 1.5),
              "torch loop / jax at K=64 >= 1.3": (1.3, None),
              "torch loop / jax at K=7080 >= 10": (10.0, None)}
    checks = {}
    for name, value in targets.items():
        low, high = limits[name]
        met = (low is None or value >= low) and (high is None or value <= high)
        checks[name] = {"value": value, "met": met}
        print(f"{name}: {value:.2f} {'met' if met else 'NOT MET'}")

    result = {
        "host": socket.gethostname(), "machine": platform.machine(),
        "processor": platform.processor(), "cpu_count": os.cpu_count(),
        "jax": jax.__version__, "torch": torch.__version__, "torch_threads": torch_threads,
        "model": f"ViT-B/32 image tower, {args.depth} layers, random weights, d = 512",
        "bank": f"{NUM_CONCEPTS} random unit vectors", "score": "cosine",
        "kind": "gradient", "reduce": "absmax", "images_per_call": 1, "chunk": args.chunk,
        "quick": args.quick, "build_seconds": t_build, "rows": rows, "targets": checks,
        "note": "seconds per image; torch_loop = one forward + backward per concept through "
                "transformers' CLIPModel with frozen weights",
    }
    out = args.out or Path(__file__).parent / "results" / f"gradients-{socket.gethostname()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


def format_row(row: dict) -> str:
    def cell(name):
        entry = row.get(name)
        if entry is None:
            return f"{name} -"
        mark = "" if entry["measured"] else " (extrapolated)"
        extra = f", compile {entry['compile']:.1f}s" if "compile" in entry else ""
        return f"{name} {entry['seconds']:.3f}s{mark}{extra}"

    return f"K={row['K']:>5}: " + "; ".join(cell(n) for n in ("vmap", "jacobian", "torch_loop"))


if __name__ == "__main__":
    main()
