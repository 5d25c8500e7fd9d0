"""Windows per compiled step (chunk): the all-concept sweep of one image at several chunks.

    python benchmarks/bench_chunk.py [--chunks 8 16 32 64] [--rounds 3] [--stride 32] [--out FILE]

What the CPU default of `kernels.occlusion.sweep_sizes` rests on: the
suite's ViT-B/32-shaped model, one image, every concept of `physical_objects`
(a random bank of that size: ranking costs the same as for a text bank), the
sweep compiled once per chunk (warm-up apart), then interleaved rounds; each
chunk's time is divided by the reference chunk's time in the same round.
Before anything is timed, the chunks' window embeddings are checked to agree
to float32 rounding, and their maps to 1e-3 of the largest cell (a near-tie
between two similarities may swap their ranks).
Writes benchmarks/results/<machine>-chunk.json (or --out).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# Sibling modules: the script's folder is first on sys.path.
import bench_occlusion
import common
import numpy as np


EMBEDDING_TOLERANCE = 1e-5  # float32 sums in another order (1.3e-7 measured, chunks 8 to 64)
MAP_TOLERANCE = 1e-3  # of the largest cell: rank swaps between near-tied similarities


def run(chunks=(8, 16, 32, 64), reference: int = 32, rounds: int = 3, stride: int = 32,
        checkpoint: Path | None = None, vocabulary=None, log=print) -> dict:
    """Interleaved rounds of the sweep at every chunk; per-round ratios to `reference`."""
    from convis_jax.core.vocabulary import ConceptVocabulary

    if reference not in chunks:
        raise ValueError(f"the reference chunk {reference} is not among {chunks}")
    vocabulary = vocabulary if vocabulary is not None else ConceptVocabulary.physical_objects()
    checkpoint = checkpoint or common.benchmark_checkpoint()
    model, torch_model = bench_occlusion.load_models(checkpoint, "float32")
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(len(vocabulary), model.embedding_dim)).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    concepts = bench_occlusion.concepts_from(vocabulary, bank)
    everything = np.arange(concepts.count)
    functions, embeddings = {}, {}
    for chunk in chunks:
        setup = bench_occlusion.make_setup(
            model, torch_model, concepts, bench_occlusion.Settings(stride=stride, chunk=chunk),
            "float32", 1)
        functions[chunk] = bench_occlusion.jax_sweep(setup, everything, 1)
        embeddings[chunk] = bench_occlusion.jax_cut_and_encode(setup)()
    timings, outputs = common.warm_up(functions, log=log)
    checks = {}
    for chunk in chunks:
        # Another chunk sums the same products in another order: the window embeddings
        # agree to float32 rounding, and a near-tie between two similarities may swap
        # their ranks, which moves a cell by a rank or two out of thousands.
        distance = float(np.abs(embeddings[chunk] - embeddings[reference]).max())
        difference = float(np.abs(outputs[chunk] - outputs[reference]).max()
                           / np.abs(outputs[reference]).max())
        assert distance < EMBEDDING_TOLERANCE, (
            f"chunk {chunk} gives other window embeddings than {reference}: {distance:.1e}")
        assert difference < MAP_TOLERANCE, (
            f"chunk {chunk} gives other maps than {reference}: {difference:.1e} of the largest")
        checks[str(chunk)] = {"embedding_max_distance": distance,
                              "map_max_difference_of_largest": difference}
    log(f"cross-checks against chunk {reference}: {checks}")
    common.rounds(functions, timings, rounds, log=log)
    base = np.asarray(timings[reference].times)
    return {
        "stride": stride, "crops": setup.grid.n_windows, "concepts": concepts.count,
        "rounds": rounds, "reference": reference, "checks": checks,
        "chunks": {str(chunk): dict(timings[chunk].to_dict(), over_reference_per_round=(
            np.asarray(timings[chunk].times) / base).tolist()) for chunk in chunks},
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--reference", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stride", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    environment = common.environment("float32")
    result = dict(run(tuple(args.chunks), args.reference, args.rounds, args.stride),
                  environment=environment)
    out = args.out or common.RESULTS_DIR / f"{common.machine_name()}-chunk.json"
    common.write_json(out, result)
    print(json.dumps({c: e["median_s"] for c, e in result["chunks"].items()}))
    return result


if __name__ == "__main__":
    main()
