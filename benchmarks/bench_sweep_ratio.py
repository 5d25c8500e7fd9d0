"""The sweep against encoding its crops alone, and against PyTorch's bare encoding, in rounds.

    python benchmarks/bench_sweep_ratio.py [--rounds 3] [--stride 32] [--out FILE]

A focused, repeated version of two of `bench_occlusion`'s ratios for a
loaded machine, where one round per contender (`run_all.py --quick`) says
little: the convis_jax all-concept sweep of one image (ViT-B/32 shape, every
concept of `physical_objects`), the same crops encoded alone by convis_jax
(`bench_occlusion.jax_encode_alone`) and by PyTorch
(`bench_occlusion.torch_encode_alone`, on the faster of 1 and all cores,
as `run_all.py` picks), interleaved in each round; ratios are taken within
a round and their medians reported. The bank is random unit vectors
(ranking costs the same as for a text bank, and no 7,080-text bank has to
be built first).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# Sibling modules: the script's folder is first on sys.path.
import bench_occlusion
import common
import numpy as np


def run(rounds: int = 3, stride: int = 32, log=print) -> dict:
    """Interleaved rounds of the three contenders; per-round ratios and their medians."""
    from convis_jax.core.vocabulary import ConceptVocabulary

    vocabulary = ConceptVocabulary.physical_objects()
    model, torch_model = bench_occlusion.load_models(common.benchmark_checkpoint(), "float32")
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(len(vocabulary), model.embedding_dim)).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    concepts = bench_occlusion.concepts_from(vocabulary, bank)
    setup = bench_occlusion.make_setup(model, torch_model, concepts,
                                       bench_occlusion.Settings(stride=stride), "float32", 1)
    threads = bench_occlusion.pick_torch_threads(setup, 8, log)
    functions = {
        "sweep": bench_occlusion.jax_sweep(setup, np.arange(concepts.count), 1),
        "encode_alone": bench_occlusion.jax_encode_alone(setup,
                                                         bench_occlusion.window_pixels(setup)),
        "torch_encode_alone": bench_occlusion.torch_encode_alone(setup, threads),
    }
    timings, _ = common.measure(functions, rounds, log=log)
    t = {name: np.asarray(timing.times) for name, timing in timings.items()}
    out = {"stride": stride, "crops": setup.grid.n_windows, "chunk": setup.settings.chunk,
           "torch_threads": threads,
           "rounds_s": {name: times.tolist() for name, times in t.items()},
           "sweep_over_encode_alone_per_round": (t["sweep"] / t["encode_alone"]).tolist(),
           "torch_encode_alone_over_sweep_per_round":
               (t["torch_encode_alone"] / t["sweep"]).tolist()}
    out["medians"] = {name: float(np.median(values)) for name, values in out.items()
                      if name.endswith("per_round")}
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stride", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    environment = common.environment("float32")  # its load average before the rounds
    result = dict(run(args.rounds, args.stride), environment=environment)
    out = args.out or common.RESULTS_DIR / f"{common.machine_name()}-sweep-ratio.json"
    common.write_json(out, result)
    print(json.dumps(result["medians"]))
    return result


if __name__ == "__main__":
    main()
