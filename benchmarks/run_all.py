"""Runs every benchmark and writes benchmarks/results/<machine>.json plus PNG plots.

    python benchmarks/run_all.py                    # the full suite
    python benchmarks/run_all.py --quick            # reduced repeats and sizes
    python benchmarks/run_all.py --dtype bfloat16   # convis_jax and PyTorch in bfloat16

Order: concept banks (which also fills a temporary convis_jax cache with the
7,080-synset bank), occlusion sweeps with the hardware comparison (reading
that bank), bfloat16 against float32 (`bench_precision.py`, in a cache of its
own, building both banks), then gradient maps (`bench_gradients.py`). Every
benchmark cross-checks its convis_jax and PyTorch results before timing and
stops the suite when they disagree; the JSON is written after each
benchmark, so a stop keeps what was measured (`unfinished` names the rest).
`--quick` writes `<machine>-quick.json` so that it never overwrites a full
run. The performance tables of
docs/guides/performance.md (and the README's headline rows) are generated from
the JSON by `scripts/readme_performance_table.py`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

# Sibling modules: the script's folder is first on sys.path.
import bench_bank
import bench_gradients
import bench_hardware
import bench_occlusion
import bench_precision
import common


def gradient_benchmark(quick: bool, checkpoint: Path, log=print) -> dict | None:
    """Runs `bench_gradients.main` and adapts its result."""
    with tempfile.TemporaryDirectory() as folder:
        argv = (["--quick"] if quick else []) + ["--checkpoint", str(checkpoint),
                                                 "--out", str(Path(folder) / "gradients.json")]
        result = bench_gradients.main(argv)
    return {"timings": result.get("rows", []), "result": result}


def gradient_targets(section: dict) -> list[dict]:
    """bench_gradients' targets, already in this suite's form (`common.target`)."""
    return list(section["result"].get("targets", []))


def plot_all(benchmarks: dict, out_dir: Path, stem: str) -> list[str]:
    """Every PNG of a results file's benchmarks, named `<stem>-<plot>.png` in out_dir."""
    paths = []
    if "bank" in benchmarks:
        paths += bench_bank.plot(benchmarks["bank"], out_dir, f"{stem}-")
    if "occlusion" in benchmarks:
        paths += bench_occlusion.plot(benchmarks["occlusion"], out_dir, f"{stem}-")
    if "hardware" in benchmarks:
        paths.append(bench_hardware.plot(benchmarks["hardware"], out_dir / f"{stem}-hardware.png"))
    return paths


def run_suite(checkpoint: Path, *, quick: bool, dtype: str = "float32",
              out_dir: Path = common.RESULTS_DIR, machine: str | None = None,
              occlusion_settings=None, bank_settings=None, vocabularies: dict | None = None,
              gradients: bool = True, precision: bool = True, log=print) -> dict:
    """Every benchmark, one results dict, written as JSON with plots beside it.

    Args:
        checkpoint: the benchmark's transformers CLIP checkpoint.
        quick: reduced repeats and sizes (and the `-quick` file name).
        dtype: "float32" or "bfloat16".
        out_dir: where the JSON and PNGs go.
        machine: the file name stem; default `common.machine_name()`.
        occlusion_settings, bank_settings: override the FULL/QUICK settings.
        vocabularies: override the (built, sampled) vocabularies of the bank benchmark;
            the occlusion benchmark uses the first.
        gradients: run bench_gradients.py too.
        precision: run bench_precision.py too (bfloat16 against float32 and PyTorch).
        log: progress printer.

    Returns:
        The results dict, written to `<out_dir>/<machine>[-quick].json` after each
        benchmark (with `unfinished` naming those still to run until the last one ends).
    """
    started = time.perf_counter()
    machine = machine or common.machine_name()
    stem = f"{machine}-quick" if quick else machine
    if dtype != "float32":
        stem += f"-{dtype}"
    occlusion_settings = occlusion_settings or (bench_occlusion.QUICK if quick
                                                else bench_occlusion.FULL)
    bank_settings = bank_settings or (bench_bank.QUICK if quick else bench_bank.FULL)
    results = {"schema": common.SCHEMA_VERSION, "machine": machine, "quick": quick,
               "dtype": dtype, "environment": common.environment(dtype),
               "checkpoint": str(checkpoint), "benchmarks": {}, "targets": [], "plots": []}
    path = Path(out_dir) / f"{stem}.json"

    wanted = [name for name, runs in (("bank", True), ("occlusion", True),
                                      ("precision", precision), ("gradients", gradients)) if runs]

    def save() -> None:
        """Writes what is measured so far, so that a failure later keeps it."""
        results["total_s"] = time.perf_counter() - started
        unfinished = [name for name in wanted if name not in results["benchmarks"]]
        if unfinished:
            results["unfinished"] = unfinished
        else:
            results.pop("unfinished", None)
        common.check_results(results)
        common.write_json(path, results)

    with common.empty_cache():
        bank = bench_bank.run(checkpoint, bank_settings, dtype=dtype,
                              vocabularies=vocabularies, log=log)
        results["benchmarks"]["bank"] = bank
        results["targets"] += bench_bank.targets(bank)
        save()
        first = None if vocabularies is None else next(iter(vocabularies.values()))
        both = bench_occlusion.run(checkpoint, occlusion_settings, dtype=dtype,
                                   vocabulary=first, log=log)  # reads the bank cached above
        results["benchmarks"].update(both)
        results["targets"] += bench_occlusion.targets(both["occlusion"], both["hardware"])
        save()
    if precision:
        # A cache of its own: the quick bank benchmark caches a stand-in bank of random
        # vectors, which the float32 side would read while the bfloat16 side builds a
        # real one.
        with common.empty_cache():
            results["benchmarks"]["precision"] = bench_precision.run(
                checkpoint, bench_precision.QUICK if quick else bench_precision.FULL,
                vocabulary=first, log=log)
        results["targets"] += results["benchmarks"]["precision"]["targets"]
        save()
    results["plots"] += plot_all(results["benchmarks"], out_dir, stem)
    if gradients:
        section = gradient_benchmark(quick, checkpoint, log=log)
        if section is not None:
            results["benchmarks"]["gradients"] = section
            results["targets"] += gradient_targets(section)
    save()
    log(f"wrote {path} in {results['total_s']:.0f} s")
    for t in results["targets"]:
        log(f"  {'met ' if t['met'] else 'MISS'} {t['name']}: {t['value']:.3g} {t['unit']} "
            f"(target {t['op']} {t['threshold']:g})")
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats, stride-32 windows, sampled banks")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--machine", default=None, help="results file stem (default: detected)")
    parser.add_argument("--out-dir", type=Path, default=common.RESULTS_DIR)
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a transformers CLIP folder (default: a random ViT-B/32, made once)")
    parser.add_argument("--no-gradients", action="store_true", help="skip bench_gradients.py")
    parser.add_argument("--no-precision", action="store_true", help="skip bench_precision.py")
    parser.add_argument("--replot", type=Path, default=None, metavar="RESULTS_JSON",
                        help="only redraw the PNGs of an existing results file")
    args = parser.parse_args(argv)
    if args.replot is not None:
        import json

        results = json.loads(args.replot.read_text())
        common.check_results(results)
        for path in plot_all(results["benchmarks"], args.replot.parent, args.replot.stem):
            print(path)
        return
    checkpoint = args.checkpoint or common.benchmark_checkpoint()
    run_suite(checkpoint, quick=args.quick, dtype=args.dtype, out_dir=args.out_dir,
              machine=args.machine, gradients=not args.no_gradients,
              precision=not args.no_precision)


if __name__ == "__main__":
    main()
