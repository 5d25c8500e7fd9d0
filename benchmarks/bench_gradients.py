"""Gradient concept maps: convis_jax against the PyTorch programs that give the same maps.

The suite's random ViT-B/32 CLIP (`common.benchmark_checkpoint`: full depth, read
by convis_jax and by transformers' PyTorch CLIPModel, so both use the same
weights), one 224 image, and a random bank of 7,080 unit concept embeddings
(d = 512). For K concepts, every contender computes the same K maps (cosine
score, input gradient, absmax over the channels):

* convis_jax `concept_gradient_maps` with both strategies: "vmap" (one forward,
  the pullback vmapped over the K cotangents) and "jacobian" (one forward, the
  d basis vectors pulled back once, every map a linear combination);
* `torch_vjp`: what a careful PyTorch user writes for the same result: one
  forward, then batched vector-Jacobian products of the K cotangents
  (`torch.autograd.grad(..., is_grads_batched=True)`), chunked to fit memory;
* `torch_jacobian`: one forward and the Jacobian of the unit embedding (the
  d basis vectors' batched VJPs, chunked, as `torch.func.jacrev` computes
  it), every map a linear combination (the careful user's choice once K >= d);
* `torch_loop`: one forward and one backward pass per concept, what tools
  such as pytorch-grad-cam run today.

Every K of the settings is measured, none extrapolated: the full run measures
K = 1, 64, 512 and 7,080; `--quick` only K = 1, 16 and 64 (the README says
so). At each K the contenders' maps are cross-checked against the loop's
before any timing counts. PyTorch runs on the faster of 1 and all intra-op
threads, its chunk is the fastest of CHUNKS on a probe. The first call of a
convis_jax configuration that traces a kernel is its warm-up (compile time
reported apart); a first call that traces nothing, and every PyTorch call, is
a timed call. Contenders alternate within each round; calls longer than
SLOW_S are timed once.

    python benchmarks/bench_gradients.py           # K = 1, 64, 512, 7080 (hours on 2 cores)
    python benchmarks/bench_gradients.py --quick   # K = 1, 16, 64

Writes benchmarks/results/<machine>-gradients[-quick].json (or --out).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

# Sibling modules: the script's folder is first on sys.path.
import common
import numpy as np

NUM_CONCEPTS = 7080  # the paper's vocabulary
# Which contender runs at which K. torch_vjp at K = 7,080 would be 7,080 batched
# backward passes, which the Jacobian route replaces once K >= d; convis_jax's
# vmap strategy likewise.
FULL = {"K": (1, 64, 512, 7080), "repeats": 3,
        "contenders": {"convis_jax_vmap": (1, 64, 512), "convis_jax_jacobian": (1, 64, 512, 7080),
                       "torch_vjp": (1, 64, 512), "torch_jacobian": (512, 7080),
                       "torch_loop": (1, 64, 512, 7080)}}
QUICK = {"K": (1, 16, 64), "repeats": 1,
         "contenders": {"convis_jax_vmap": (1, 16, 64), "torch_vjp": (1, 16, 64),
                        "torch_loop": (1, 16, 64)}}
CHUNKS = (8, 16, 32)  # PyTorch cotangents per batched backward pass, probed
TOLERANCE = 1e-4  # of the largest map value: 12 float32 layers, summed in other orders
SLOW_S = 30.0  # calls longer than this are timed once
DESCRIPTIONS = {
    "convis_jax_vmap": "convis_jax, one forward, the pullback vmapped over the K cotangents",
    "convis_jax_jacobian": "convis_jax, one forward, d basis pullbacks, maps as combinations",
    "torch_vjp": "PyTorch, one forward, batched VJPs (autograd.grad is_grads_batched), chunked",
    "torch_jacobian": "PyTorch, one forward, the Jacobian from d batched VJPs, maps as "
                      "combinations",
    "torch_loop": "PyTorch, one forward + one backward per concept (pytorch-grad-cam's way)",
}


# ----------------------------------------------------------------- PyTorch contenders


def _unit_embedding(torch_model, x):
    """Unit image embeddings [N, d] of pixel_values x [N, 3, S, S] (differentiable)."""
    features = torch_model.get_image_features(pixel_values=x)
    features = getattr(features, "pooler_output", features)
    return features / features.norm(dim=-1, keepdim=True)


def _absmax(gradients):
    """[K, 3, S, S] input gradients -> [K, S, S] maps on the host."""
    return gradients.abs().amax(1).cpu().numpy()


def torch_loop(torch_model, x0, bank, k: int) -> np.ndarray:
    """One forward and one backward pass per concept -> maps [K, S, S]."""
    maps = []
    for concept in range(k):
        x = x0.clone().requires_grad_(True)
        (_unit_embedding(torch_model, x)[0] @ bank[concept]).backward()
        maps.append(_absmax(x.grad))  # [1, S, S]
    return np.concatenate(maps)


def torch_vjp(torch_model, x0, bank, k: int, chunk: int) -> np.ndarray:
    """One forward, then the K cotangents' VJPs, `chunk` at a time -> maps [K, S, S]."""
    import torch

    x = x0.clone().requires_grad_(True)
    v = _unit_embedding(torch_model, x)  # [1, d]
    maps = []
    for start in range(0, k, chunk):
        cotangents = bank[start:min(start + chunk, k), None, :]  # [B, 1, d]
        (grads,) = torch.autograd.grad(v, x, grad_outputs=cotangents, is_grads_batched=True,
                                       retain_graph=start + chunk < k)
        maps.append(_absmax(grads[:, 0]))
    return np.concatenate(maps)


def torch_jacobian(torch_model, x0, bank, k: int, chunk: int, combine: int = 256) -> np.ndarray:
    """One forward, the Jacobian of the unit embedding from the d basis vectors' VJPs
    (`chunk` at a time), then every map as a combination of its rows -> maps [K, S, S].

    `torch.func.jacrev(..., chunk_size=chunk)` computes the same rows; it vmaps
    the pullback through functorch, which ran several times slower than
    `is_grads_batched` on the CPU this was written on, so a careful user takes this.
    """
    import torch

    x = x0.clone().requires_grad_(True)
    v = _unit_embedding(torch_model, x)  # [1, d]
    d = v.shape[1]
    basis = torch.eye(d, device=v.device)
    rows = []
    for start in range(0, d, chunk):
        cotangents = basis[start:start + chunk, None, :]
        (grads,) = torch.autograd.grad(v, x, grad_outputs=cotangents, is_grads_batched=True,
                                       retain_graph=start + chunk < d)
        rows.append(grads.reshape(len(cotangents), -1))
    jacobian = torch.cat(rows)  # [d, 3 S S]
    maps = []
    with torch.inference_mode():
        for start in range(0, k, combine):
            grads = bank[start:min(start + combine, k)] @ jacobian
            maps.append(_absmax(grads.reshape((-1,) + tuple(x0.shape[1:]))))
    return np.concatenate(maps)


def pick_torch_threads(run_one, threads: int, log=print) -> int:
    """The faster of 1 and `threads` PyTorch intra-op threads for `run_one()` (sets it)."""
    import torch

    seconds = {}
    for n in sorted({1, threads}):
        torch.set_num_threads(n)
        run_one()  # warm-up
        seconds[n] = min(common.timed(run_one)[0] for _ in range(2))
    best = min(seconds, key=seconds.get)
    torch.set_num_threads(best)
    log(f"PyTorch threads: {best} ({', '.join(f'{n}: {s:.2f} s' for n, s in seconds.items())})")
    return best


def pick_torch_chunk(run, k: int, log=print) -> tuple[int, dict]:
    """The fastest of CHUNKS for `run(k, chunk)` (one call each after one warm-up)."""
    run(min(CHUNKS), min(CHUNKS))
    seconds = {chunk: common.timed(run, k, chunk)[0] for chunk in CHUNKS}
    best = min(seconds, key=seconds.get)
    log(f"PyTorch cotangents per backward pass: {best} (K = {k}: "
        + ", ".join(f"{c}: {s:.2f} s" for c, s in seconds.items()) + ")")
    return best, {str(c): s for c, s in seconds.items()}


# ----------------------------------------------------------------- measuring


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


class Contender:
    """One contender at one K: its calls' times, warm-up and cross-check."""

    def __init__(self, name: str, run, traces=None):
        self.name, self.run, self.traces = name, run, traces
        self.timing = common.Timing()
        self.traced = False

    def first(self, log):
        """The first call: a warm-up when it traced a kernel, else a timed call."""
        before = self.traces() if self.traces else None
        seconds, maps = common.timed(self.run)
        self.timing.first_call_s = seconds
        self.traced = self.traces is not None and self.traces() != before
        if not self.traced:
            self.timing.times.append(seconds)
        log(f"    {self.name}: first call {seconds:.2f} s"
            f"{' (traced: warm-up)' if self.traced else ''}")
        return maps

    def wanted(self, repeats: int) -> int:
        return 1 if self.timing.first_call_s > SLOW_S else repeats

    def result(self, error: float) -> dict:
        out = dict(self.timing.to_dict(), seconds=self.timing.median_s, measured=True,
                   error_vs_loop=error, description=DESCRIPTIONS[self.name])
        out["compile_s"] = (max(self.timing.first_call_s - self.timing.median_s, 0.0)
                            if self.traced else 0.0)
        return out


def measure_k(contenders: list, repeats: int, log) -> dict:
    """First calls (the loop's maps are the reference), cross-checks, then rounds."""
    reference, errors = None, {}
    for contender in contenders:  # the loop first: it is the reference
        maps = contender.first(log)
        if reference is None:
            reference, errors[contender.name] = maps, 0.0
            continue
        errors[contender.name] = relative_error(maps, reference)
        if errors[contender.name] > TOLERANCE:
            raise AssertionError(
                f"{contender.name}'s maps differ from the per-concept loop's by "
                f"{errors[contender.name]:.2e} of their largest value (tolerance {TOLERANCE:g})")
        del maps
    del reference
    for _ in range(max(c.wanted(repeats) for c in contenders)):
        for contender in contenders:
            if len(contender.timing.times) < contender.wanted(repeats):
                seconds, _ = common.timed(contender.run)
                contender.timing.times.append(seconds)
    return {c.name: c.result(errors[c.name]) for c in contenders}


def run(settings: dict, checkpoint: Path, *, seed: int = 0, threads: int | None = None,
        log=print) -> dict:
    """The gradient benchmark; returns the JSON-able result (without the environment)."""
    import jax
    import torch
    from transformers import CLIPModel

    from convis_jax.kernels.gradients import TRACES
    from convis_jax.models.loading import load_clip

    model = load_clip(checkpoint)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_model = CLIPModel.from_pretrained(checkpoint, attn_implementation="sdpa")
    torch_model = torch_model.eval().requires_grad_(False).to(device)
    s, d = model.image_size, model.embedding_dim
    rng = np.random.default_rng(seed)
    pixel_values = rng.normal(size=(1, 3, s, s)).astype(np.float32)
    bank = rng.normal(size=(NUM_CONCEPTS, d)).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    # Both sides' inputs on their device before any clock starts.
    x_jax, bank_jax = jax.device_put((pixel_values, bank))
    x_torch, bank_torch = (torch.from_numpy(a).to(device) for a in (pixel_values, bank))

    torch_threads = pick_torch_threads(lambda: torch_loop(torch_model, x_torch, bank_torch, 1),
                                       threads or os.cpu_count(), log)
    chunk, chunk_probe = pick_torch_chunk(
        lambda k, c: torch_vjp(torch_model, x_torch, bank_torch, k, c), max(CHUNKS), log)
    traces = lambda: TRACES.count

    def convis(strategy, k):
        index = np.arange(k)
        return lambda: np.asarray(common.gradient_maps(model, x_jax, bank_jax, index,
                                                       strategy))[0]

    makers = {
        "torch_loop": lambda k: Contender("torch_loop",
                                          lambda: torch_loop(torch_model, x_torch, bank_torch, k)),
        "convis_jax_vmap": lambda k: Contender("convis_jax_vmap", convis("vmap", k), traces),
        "convis_jax_jacobian": lambda k: Contender("convis_jax_jacobian",
                                                   convis("jacobian", k), traces),
        "torch_vjp": lambda k: Contender(
            "torch_vjp", lambda: torch_vjp(torch_model, x_torch, bank_torch, k, chunk)),
        "torch_jacobian": lambda k: Contender(
            "torch_jacobian", lambda: torch_jacobian(torch_model, x_torch, bank_torch, k, chunk)),
    }
    rows = []
    for k in settings["K"]:
        names = [n for n in makers if k in settings["contenders"].get(n, ())]
        assert names[0] == "torch_loop", f"K = {k}: the per-concept loop is the reference"
        log(f"  K = {k}: {', '.join(names)}")
        row = {"K": k, **measure_k([makers[n](k) for n in names], settings["repeats"], log)}
        rows.append(row)
        log("  " + format_row(row))
    return {
        "checkpoint": str(checkpoint), "image_size": s, "embedding_dim": d,
        "torch_threads": torch_threads, "torch_chunk": chunk, "torch_chunk_probe_s": chunk_probe,
        "torch_device": device,
        "bank": f"{NUM_CONCEPTS} random unit vectors, d = {d}", "score": "cosine",
        "kind": "gradient", "reduce": "absmax", "images_per_call": 1,
        "tolerance": TOLERANCE, "contenders": DESCRIPTIONS,
        "seconds": "per image, median of the timed calls; every figure measured, none "
                   "extrapolated; maps checked against torch_loop's at every K",
        "rows": rows, "summary": summarise(rows),
    }


def best(row: dict, prefix: str) -> tuple[float, str] | None:
    """(seconds, contender) of the fastest contender of a row whose name starts with prefix."""
    found = [(entry["seconds"], name) for name, entry in row.items()
             if name.startswith(prefix) and isinstance(entry, dict)]
    return min(found) if found else None


def summarise(rows: list[dict]) -> list[dict]:
    """Per K: the fastest convis_jax and PyTorch one-forward contenders, the loop, ratios."""
    out = []
    for row in rows:
        convis = best(row, "convis_jax")
        batched = min(filter(None, (best(row, "torch_vjp"), best(row, "torch_jacobian"))),
                      default=None)
        loop = row["torch_loop"]["seconds"]
        entry = {"K": row["K"], "convis_jax": convis[1], "convis_jax_s": convis[0],
                 "torch_loop_s": loop, "torch_loop_over_convis_jax": loop / convis[0]}
        if batched is not None:
            entry.update(torch_batched=batched[1], torch_batched_s=batched[0],
                         torch_batched_over_convis_jax=batched[0] / convis[0])
        out.append(entry)
    return out


def targets(result: dict) -> list[dict]:
    """The gradient targets: against the loop (issue 10) and against PyTorch's batched program."""
    summary = {entry["K"]: entry for entry in result["summary"]}
    rows = {row["K"]: row for row in result["rows"]}
    out = []
    if 64 in summary:
        out.append(common.target("gradients: PyTorch loop / convis_jax at K=64",
                                 summary[64]["torch_loop_over_convis_jax"], ">=", 1.3, "x"))
    if 7080 in summary:
        out.append(common.target("gradients: PyTorch loop / convis_jax at K=7080",
                                 summary[7080]["torch_loop_over_convis_jax"], ">=", 10.0, "x"))
        out.append(common.target("gradients: PyTorch batched / convis_jax at K=7080",
                                 summary[7080]["torch_batched_over_convis_jax"], ">=", 1.0, "x"))
    if 7080 in rows and 512 in rows and "convis_jax_jacobian" in rows[512]:
        out.append(common.target("gradients: convis_jax jacobian K=7080 / K=512",
                                 rows[7080]["convis_jax_jacobian"]["seconds"]
                                 / rows[512]["convis_jax_jacobian"]["seconds"], "<=", 1.5, "x"))
    return out


def format_row(row: dict) -> str:
    return f"K={row['K']:>5}: " + "; ".join(
        f"{name} {entry['seconds']:.3f}s" for name, entry in row.items() if isinstance(entry, dict))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="K = 1, 16, 64, one timed call each")
    parser.add_argument("--threads", type=int, default=None,
                        help="PyTorch intra-op threads to try besides 1 (default: all cores)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a transformers CLIP folder (default: the suite's random ViT-B/32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    log = lambda message: print(message, flush=True)
    environment = common.environment("float32")
    checkpoint = args.checkpoint or common.benchmark_checkpoint(seed=args.seed)
    result = run(QUICK if args.quick else FULL, checkpoint, seed=args.seed,
                 threads=args.threads, log=log)
    result = {"environment": environment, "quick": args.quick, **result}
    result["targets"] = targets(result)
    out = args.out or (common.RESULTS_DIR / f"{common.machine_name()}-gradients"
                       f"{'-quick' if args.quick else ''}.json")
    common.write_json(out, result)
    log(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
