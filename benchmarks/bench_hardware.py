"""The occlusion sweep against the hardware: achieved FLOP/s next to a large matmul.

The sweep's useful work is the ViT forward of its crops; its FLOPs are
counted analytically (`common.vit_forward_flops`: patch embedding, attention
projections, attention scores and mixing, MLP, final projection; one
multiply-add = 2 FLOPs; LayerNorms, softmax, activations, the resize and the
ranking are left out, so the figure is a lower bound on the work done).
A large float32 `jnp` matmul, timed in the same process and interleaved
with the sweep (see `bench_occlusion.run`), is what this device can reach.

Run alone: `python benchmarks/bench_hardware.py [--quick]` (it runs the
occlusion sweep and the matmul); `run_all.py` reuses the occlusion rounds.
"""

from __future__ import annotations

from pathlib import Path

import common  # a sibling module: the script's folder is first on sys.path


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

    import bench_occlusion

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
