"""Prints the README's performance section, in Markdown, from a benchmark results file.

    python scripts/readme_performance_table.py                       # newest full run
    python scripts/readme_performance_table.py benchmarks/results/cpu-2cores.json

The file is what `benchmarks/run_all.py` writes; nothing here measures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _seconds(value: float) -> str:
    if value >= 2 * 86400:
        return f"{value / 86400:.1f} days"
    if value >= 2 * 3600:
        return f"{value / 3600:.1f} h"
    if value >= 120:
        return f"{value / 60:.1f} min"
    if value >= 10:
        return f"{value:.0f} s"
    if value >= 0.1:
        return f"{value:.2f} s"
    return f"{value * 1000:.1f} ms"


def _ratio(value: float) -> str:
    return f"{value:,.0f}x" if value >= 100 else f"{value:.2f}x"


def _rows(results: dict) -> list[tuple[str, str, str, str]]:
    """(what, convis_jax, PyTorch, ratio) rows of the main table."""
    b = results["benchmarks"]
    rows = []
    occ = b.get("occlusion")
    if occ is not None:
        t = occ["timings"]
        one, everything = t["convis_one"]["median_s"], t["convis_all"]["median_s"]
        crops, k = occ["crops_per_image"], occ["concepts"]
        if "authors" in occ:
            a = occ["authors"]
            rows.append((f"Occlusion maps, 1 concept, 1 image ({crops} crops)", _seconds(one),
                         f"{_seconds(a['per_image_per_concept_s'])} (a: authors' loop, "
                         f"{a['extrapolated_from']})",
                         _ratio(occ["ratios"]["authors_over_convis_one"])))
        torch_s = t["torch_batched"]["median_s"]
        rows.append((f"Occlusion maps, all {k:,} concepts, 1 image", _seconds(everything),
                     f"{_seconds(torch_s)} (b: batched, same {crops} crops)",
                     _ratio(occ["ratios"]["torch_batched_over_convis_all"])))
        if "torch_encode_alone" in t:
            rows.append((f"Occlusion maps, all {k:,} concepts, 1 image, vs the floor",
                         _seconds(everything),
                         f"{_seconds(t['torch_encode_alone']['median_s'])} (PyTorch only "
                         f"encoding the same {crops} crops)",
                         _ratio(occ["ratios"]["torch_encode_alone_over_convis_all"])))
        if "authors" in occ:
            rows.append((f"Occlusion maps, all {k:,} concepts, 1 image, vs (a)",
                         _seconds(everything),
                         f"{_seconds(occ['authors']['per_image_all_concepts_s'])} (a)",
                         _ratio(occ["ratios"]["authors_all_over_convis_all"])))
        for n, seconds in occ["images_curve_s"].items():
            rows.append((f"Occlusion maps, all concepts, {n} image{'s' if n != '1' else ''} "
                         f"per call", f"{_seconds(seconds)} ({int(n) / seconds:.3f} images/s)",
                         "", ""))
        if "chunk" in occ:
            defaults = occ["library_defaults"]
            rows.append(("Windows per compiled step (chunk) / images per call, this device's "
                         "defaults", f"{occ['chunk']} / {defaults['images_per_call']}", "", ""))
        if "compile_s" in t["convis_all"]:
            rows.append(("Sweep compilation (first call minus median), all concepts",
                         _seconds(t["convis_all"]["compile_s"]), "", ""))
        rows.append(("Sweep time / encoding its crops alone", "", "",
                     _ratio(occ["ratios"]["sweep_over_encode_alone"])))
        rows.append(("Sweep time, all concepts / 1 concept", "", "",
                     _ratio(occ["ratios"]["all_over_one_concept"])))
        if "parts_s" in occ:
            p = occ["parts_s"]
            encoded = occ["encoded_crops_one_image"]
            rows.append((f"Sweep parts: encoding {encoded['windows']} crops alone "
                         f"(in {encoded['encode_alone']} chunk slots)", _seconds(p["encode_alone"]),
                         "", ""))
            rows.append((f"Sweep parts: cutting and resizing ({encoded['sweep']} slots)",
                         _seconds(p["cut_resize_and_chunk_padding"]), "", ""))
            rows.append(("Sweep parts: similarities, ranks, subtree minima (measured alone)",
                         _seconds(p["similarities_ranks_subtree_min_alone"]), "", ""))
        rows.append((f"Cell maps of 1 image, all {k:,} concepts",
                     f"{occ['cells_bytes_one_image_all_concepts'] / 1e6:.2f} MB", "", ""))
        if "memory" in occ:
            m = occ["memory"]
            rows.append((f"Peak host memory, {m['images']} images, all concepts",
                         f"{m['peak_rss_bytes'] / 2**30:.2f} GiB", "", ""))
    hw = b.get("hardware")
    if hw is not None:
        matmul = hw["matmul_flop_per_s"]["float32"]
        gflops = lambda key: f"{hw.get(key, float('nan')) / 1e9:.0f}"
        torch_side = f"{gflops('torch_batched_flop_per_s')} GFLOP/s (b)"
        matmuls = f"matmul {hw['matmul_n']}^2 float32: JAX {matmul / 1e9:.0f} GFLOP/s"
        if "torch_encode_alone_flop_per_s" in hw:
            torch_side += f", {gflops('torch_encode_alone_flop_per_s')} (bare encoding)"
            matmuls += f", PyTorch {gflops('torch_matmul_flop_per_s')}"
        rows.append(("ViT forward-equivalent FLOP/s in the sweep",
                     f"{hw['sweep_flop_per_s'] / 1e9:.0f} GFLOP/s "
                     f"({100 * hw['sweep_fraction_of_matmul']:.0f}% of matmul)",
                     torch_side, matmuls))
    bank = b.get("bank")
    if bank is not None:
        for name, entry in bank.items():
            if not isinstance(entry, dict) or "texts_per_s" not in entry or name == "torch":
                continue
            seconds = entry.get("build_s", entry.get("extrapolated_build_s"))
            rows.append((f"Concept bank, {entry['texts']:,} definitions ({name})",
                         f"{_seconds(seconds)}, {entry['texts_per_s']:.0f} texts/s",
                         f"{bank['torch']['texts_per_s']:.0f} texts/s (sample)",
                         _ratio(entry["texts_per_s"] / bank["torch"]["texts_per_s"])))
        rows.append(("Concept bank, cached reload", _seconds(bank["cached_reload_s"]), "", ""))
    grads = b.get("gradients")
    if grads is not None:
        for row in grads["result"].get("rows", []):
            best = min((row[s]["seconds"], s) for s in ("vmap", "jacobian")
                       if row.get(s, {}).get("seconds") is not None)
            loop = row["torch_loop"]
            rows.append((f"Gradient maps, K = {row['K']:,}, 1 image",
                         f"{_seconds(best[0])} ({best[1]})",
                         f"{_seconds(loop['seconds'])} (loop"
                         f"{'' if loop['measured'] else ', extrapolated'})",
                         _ratio(loop["seconds"] / best[0])))
    return rows


def render(results: dict) -> str:
    """The Markdown: a context line, the figures table and the targets table."""
    env = results["environment"]
    versions = env["versions"]
    load = env.get("load_average_at_start")
    load_text = f"{load[0]:.1f}" if load else "n/a"
    lines = [
        f"Measured on `{results['machine']}` ({', '.join(sorted(set(env['devices'])))}, "
        f"{env['cpu_count']} CPUs, load average at start {load_text}), "
        f"{results['dtype']}, jax {versions['jax']}, torch {versions['torch']}, "
        f"transformers {versions['transformers']}, {env['time'][:10]}"
        f"{' (quick run: reduced sizes)' if results['quick'] else ''}. "
        "Model: CLIP ViT-B/32 shape at full depth with random weights, one checkpoint "
        "read by both frameworks; times are medians of repeats after a warm-up, ratios "
        "medians of per-round ratios (contenders interleaved in each round).",
        "",
        "| | convis_jax | PyTorch | ratio |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in _rows(results)]
    lines += ["", "| target | measured | goal | |", "|---|---|---|---|"]
    for t in results["targets"]:
        unit = f" {t['unit']}" if t["unit"] else ""
        lines.append(f"| {t['name']} | {t['value']:.3g}{unit} | {t['op']} {t['threshold']:g}"
                     f"{unit} | {'met' if t['met'] else '**missed**'} |")
    return "\n".join(lines)


def newest_full_run(folder: Path = RESULTS) -> Path:
    """The most recently written results file that is not a quick run."""
    files = [p for p in folder.glob("*.json") if not p.stem.endswith("-quick")
             and "-quick-" not in p.stem]
    if not files:
        raise SystemExit(f"no full results in {folder}; run benchmarks/run_all.py first")
    return max(files, key=lambda p: p.stat().st_mtime)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="?", default=None)
    args = parser.parse_args(argv)
    path = args.results or newest_full_run()
    sys.stdout.write(render(json.loads(path.read_text())) + "\n")


if __name__ == "__main__":
    main()
