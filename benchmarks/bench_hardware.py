"""The occlusion sweep against the hardware: achieved FLOP/s next to a large matmul.

The sweep's useful work is the ViT forward of its crops; its FLOPs are
counted analytically (`vit_forward_flops`: patch embedding, attention
projections, attention scores and mixing, MLP, final projection; one
multiply-add = 2 FLOPs; LayerNorms, softmax, activations, the resize and the
ranking are left out, so the figure is a lower bound on the work done).
A large float32 `jnp` matmul, timed in the same process and interleaved
with the sweep (see `bench_occlusion.run`), is what this device can reach.

Run alone: `python benchmarks/bench_hardware.py [--quick]` (it runs the
occlusion sweep and the matmul); `run_all.py` reuses the occlusion rounds.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common


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


def report(sweep_s: float, n_crops: int, vision, projection_dim: int, matmul_s: dict,
           matmul_n: int, torch_batched_s: float | None = None,
           matmul_over_sweep_paired: float | None = None) -> dict:
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

    Returns:
        A JSON-able dict (FLOPs per crop by part, FLOP/s, fractions of the matmul).
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
    return out


def plot(result: dict, path: Path) -> str:
    """Bar chart of GFLOP/s: the sweep, PyTorch's batched forward, the matmul(s)."""
    labels = ["convis_jax sweep"]
    values = [result["sweep_flop_per_s"] / 1e9]
    if "torch_batched_flop_per_s" in result:
        labels.append("PyTorch batched")
        values.append(result["torch_batched_flop_per_s"] / 1e9)
    for dtype, rate in result["matmul_flop_per_s"].items():
        labels.append(f"matmul {result['matmul_n']}^2 {dtype}")
        values.append(rate / 1e9)
    fig, (ax,) = common.new_figure("ViT forward FLOP/s against a large matmul")
    common.bar_chart(ax, labels, values, "GFLOP/s")
    return common.save_figure(fig, path)


def main(argv=None) -> None:
    """Runs the occlusion benchmark's core rounds (with the matmul) and prints the FLOP/s."""
    import argparse
    import json

    from benchmarks import bench_occlusion

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    args = parser.parse_args(argv)
    settings = bench_occlusion.QUICK if args.quick else bench_occlusion.FULL
    settings = bench_occlusion.replace(settings, image_counts=(1,), concept_counts=(1, None),
                                       authors_sample=0, memory_images=0, api=False, parts=False)
    result = bench_occlusion.run(common.benchmark_checkpoint(), settings, dtype=args.dtype)
    print(json.dumps(result["hardware"], indent=1))


if __name__ == "__main__":
    main()
