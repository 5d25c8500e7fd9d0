"""Prints the README's performance tables, in Markdown, from benchmark result files.

    python scripts/readme_performance_table.py benchmarks/results/cpu-2cores-quick.json
    python scripts/readme_performance_table.py --update README.md benchmarks/gpu.md

Each file is one that a benchmark wrote (`benchmarks/run_all.py`,
`bench_gradients.py`, `bench_sweep_ratio.py`, `bench_chunk.py`,
`gpu_check.py`); the table's kind follows from its content, and every table
opens with the machine it was measured on. In a Markdown file, a table
stands between

    <!-- generated: python scripts/readme_performance_table.py FILE -->
    <!-- end generated -->

`--update` rewrites those blocks from their files, and the test suite fails
when a block differs from what its file gives
(`tests/scripts/test_readme_performance_table.py`).
Nothing here measures.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
COMMAND = "python scripts/readme_performance_table.py"
BLOCK = re.compile(r"<!-- generated: " + re.escape(COMMAND) + r" (?P<args>[^>]*?) -->\n"
                   r"(?P<body>.*?)<!-- end generated -->", re.S)


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


def _load(values) -> str:
    return "not recorded" if not values else f"{values[0]:.1f}"


def machine_line(env: dict, what: str, source: str) -> str:
    """Where and when a file was measured: CPU model and flags, accelerator, load, versions."""
    cpu = env.get("cpu")
    if cpu:
        where = f"CPU {cpu['label']}"
    else:
        where = (f"a {env.get('cpu_count', '?')}-core {env.get('processor', 'CPU')} whose model "
                 "and flags this file predates recording")
    accelerator = env.get("accelerator")
    if accelerator is None and env.get("jax_backend") not in (None, "cpu"):
        accelerator = ", ".join(sorted(set(env["devices"])))
    if accelerator:
        where += f", accelerator {accelerator}"
    before = env.get("load_average_before", env.get("load_average_at_start"))
    versions = env.get("versions", {})
    stack = ", ".join(f"{name} {versions[name]}" for name in ("jax", "torch", "transformers")
                      if versions.get(name))
    return (f"{what}: measured on {where}; load average {_load(before)} before, "
            f"{_load(env.get('load_average_after'))} after; {stack}; "
            f"{env.get('time', '')[:10]}; `{source}`.")


# ----------------------------------------------------------------- the suite (run_all.py)


def _bank_cell(entry: dict) -> str:
    seconds = entry.get("build_s", entry.get("extrapolated_build_s"))
    sampled = entry.get("sampled_texts")
    if sampled is None and str(entry.get("measured", "")).startswith("extrapolated"):
        sampled = int(re.search(r"\((\d+) texts\)", entry["measured"]).group(1))
    if sampled is not None and sampled < entry["texts"]:
        return (f"{_seconds(seconds)}, extrapolated from {sampled:,} of {entry['texts']:,} "
                f"texts ({entry['texts_per_s']:.0f} texts/s on them)")
    return f"{_seconds(seconds)}, {entry['texts_per_s']:.0f} texts/s"


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
                         f"extrapolated from {a['extrapolated_from']})",
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
            a = occ["authors"]
            rows.append((f"Occlusion maps, all {k:,} concepts, 1 image, vs (a)",
                         _seconds(everything),
                         f"{_seconds(a['per_image_all_concepts_s'])} (a, extrapolated from "
                         f"{a['extrapolated_from']}, x {k:,} concepts)",
                         _ratio(occ["ratios"]["authors_all_over_convis_all"])))
        if "transfer_s" in occ:
            moved = occ["transfer_s"]
            rows.append(("Copying the image to the device (not in the times above)",
                         _seconds(moved["convis_jax"]), _seconds(moved["pytorch"]), ""))
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
            rows.append((f"Concept bank, {entry['texts']:,} definitions ({name})",
                         _bank_cell(entry), "", ""))
        same = bank["torch"]
        rows.append((f"Concept bank, the same {same['texts']} definitions in both frameworks",
                     f"{same['convis_jax_texts_per_s_same_texts']:.0f} texts/s",
                     f"{same['texts_per_s']:.0f} texts/s",
                     _ratio(same["convis_jax_texts_per_s_same_texts"] / same["texts_per_s"])))
        rows.append(("Concept bank, cached reload", _seconds(bank["cached_reload_s"]), "", ""))
    return rows


def _targets(targets: list[dict]) -> list[str]:
    lines = ["| target | measured | goal | |", "|---|---|---|---|"]
    for t in targets:
        unit = f" {t['unit']}" if t["unit"] else ""
        lines.append(f"| {t['name']} | {t['value']:.3g}{unit} | {t['op']} {t['threshold']:g}"
                     f"{unit} | {'met' if t['met'] else '**missed**'} |")
    return lines


def render_suite(results: dict, source: str) -> str:
    """The suite's main table, its gradient table (when in the new form) and its targets."""
    what = f"`run_all.py{' --quick' if results['quick'] else ''}`, {results['dtype']}"
    if results["quick"]:
        what += " (quick run: stride-32 windows, sampled banks, one timed round)"
    what += f", {_seconds(results['total_s'])} in all"
    lines = [
        machine_line(results["environment"], what, source) + " Model: CLIP ViT-B/32 shape at "
        "full depth with random weights, one checkpoint read by both frameworks; times are "
        "medians of repeats after a warm-up; occlusion ratios are medians of per-round ratios "
        "(contenders interleaved in each round).",
        "",
        "| | convis_jax | PyTorch | ratio |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in _rows(results)]
    gradients = results["benchmarks"].get("gradients")
    targets = list(results["targets"])
    if gradients is not None:
        if "summary" in gradients["result"]:
            lines += ["", *_gradient_table(gradients["result"])]
        else:  # an older form: a loop extrapolated from a few concepts, no batched PyTorch peer
            lines += ["", "(This file's gradient figures predate the same-algorithm PyTorch "
                          "peers and are not shown.)"]
            targets = [t for t in targets if not t["name"].startswith("gradients:")]
    lines += ["", *_targets(targets)]
    return "\n".join(lines)


# ----------------------------------------------------------------- other result files


def _gradient_table(result: dict) -> list[str]:
    rows = {row["K"]: row for row in result["rows"]}
    lines = ["| gradient maps, 1 image | convis_jax | PyTorch: one forward, batched | ratio "
             "| PyTorch: loop, one backward per concept | ratio | largest map difference |",
             "|---|---|---|---|---|---|---|"]
    for entry in result["summary"]:
        k = entry["K"]
        row = rows[k]
        strategy = lambda name: name.split("_", 1)[1].replace("jax_", "")
        difference = max(v["error_vs_loop"] for v in row.values() if isinstance(v, dict))
        batched, ratio = "not run at this K", ""
        if "torch_batched" in entry:
            batched = f"{_seconds(entry['torch_batched_s'])} ({strategy(entry['torch_batched'])})"
            ratio = _ratio(entry["torch_batched_over_convis_jax"])
        lines.append(f"| K = {k:,} | {_seconds(entry['convis_jax_s'])} "
                     f"({strategy(entry['convis_jax'])}) | {batched} | {ratio} "
                     f"| {_seconds(entry['torch_loop_s'])} "
                     f"| {_ratio(entry['torch_loop_over_convis_jax'])} "
                     f"| {difference:.1e} of the largest value |")
    return lines


def render_gradients(result: dict, source: str) -> str:
    what = "`bench_gradients.py" + (" --quick`, K <= 64 only (the full run measures K = 512 "
                                   "and 7,080)" if result["quick"] else "`")
    lines = [machine_line(result["environment"], what, source)
             + f" Every figure measured (none extrapolated), seconds per image, median of the "
             f"timed calls; ratios of medians; PyTorch on {result['torch_threads']} thread(s), "
             f"{result['torch_chunk']} cotangents per batched backward pass; maps checked "
             "against the loop's at every K. Strategies: vmap (the pullback vmapped over the K "
             "cotangents), vjp (batched VJPs of the K cotangents), jacobian (d basis pullbacks, "
             "maps as combinations).", "", *_gradient_table(result)]
    if result.get("targets"):
        lines += ["", *_targets(result["targets"])]
    return "\n".join(lines)


def render_sweep_ratio(result: dict, source: str) -> str:
    rounds = result["sweep_over_encode_alone_per_round"]
    torch_rounds = result["torch_encode_alone_over_sweep_per_round"]
    show = lambda values: ", ".join(f"{v:.2f}x" for v in values)
    return "\n".join([
        machine_line(result["environment"], f"`bench_sweep_ratio.py`, stride "
                     f"{result['stride']} ({result['crops']} crops), {len(rounds)} interleaved "
                     "rounds", source),
        "",
        "| per round | rounds | median |",
        "|---|---|---|",
        f"| convis_jax sweep / convis_jax encoding its crops alone | {show(rounds)} "
        f"| {result['medians']['sweep_over_encode_alone_per_round']:.2f}x |",
        f"| PyTorch's bare encoding of the crops / convis_jax sweep | {show(torch_rounds)} "
        f"| {result['medians']['torch_encode_alone_over_sweep_per_round']:.2f}x |",
    ])


def render_chunk(result: dict, source: str) -> str:
    lines = [machine_line(result["environment"], f"`bench_chunk.py`, stride {result['stride']} "
                          f"({result['crops']} crops), all {result['concepts']:,} concepts, "
                          f"{result['rounds']} interleaved rounds", source), "",
             f"| windows per step | median time | per round, / chunk {result['reference']} |",
             "|---|---|---|"]
    for chunk, entry in result["chunks"].items():
        per_round = ", ".join(f"{v:.2f}x" for v in entry["over_reference_per_round"])
        lines.append(f"| {chunk} | {_seconds(entry['median_s'])} | {per_round} |")
    return "\n".join(lines)


def render_gpu_check(result: dict, source: str) -> str:
    lines = [machine_line(result["environment"], f"`gpu_check.py`, {result['vocabulary']}, "
                          f"{result['concepts']:,} concepts", source), "",
             "| dtype | images per call | convis_jax ms/image | PyTorch ms/image | ratio "
             "| compile (convis_jax) |", "|---|---|---|---|---|---|"]
    points = {}
    for row in result["rows"]:
        points.setdefault((row["dtype"], row["images_per_call"]), {})[row["framework"]] = row
    for (dtype, n), pair in points.items():
        mine, theirs = pair.get("convis_jax"), pair.get("pytorch")
        cell = lambda r: "not measured" if r is None or r["median_s"] is None else \
            f"{r['ms_per_image']:.1f}"
        ratio = (_ratio(theirs["median_s"] / mine["median_s"])
                 if mine and theirs and mine["median_s"] and theirs["median_s"] else "")
        compile_s = _seconds(mine["compile_s"]) if mine and mine.get("compile_s") is not None \
            else ""
        lines.append(f"| {dtype} | {n} | {cell(mine)} | {cell(theirs)} | {ratio} | {compile_s} |")
    if result.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(result["skipped"]) + "."]
    return "\n".join(lines)


def kind(result: dict) -> str:
    """Which benchmark wrote a results dict."""
    if "benchmarks" in result:
        return "suite"
    if result.get("kind") == "gpu_check":
        return "gpu_check"
    if "sweep_over_encode_alone_per_round" in result:
        return "sweep_ratio"
    if "chunks" in result and "reference" in result:
        return "chunk"
    if "summary" in result and "contenders" in result:
        return "gradients"
    raise ValueError("not a results file this script knows: keys "
                     + ", ".join(sorted(result)[:12]))


RENDERERS = {"suite": render_suite, "gradients": render_gradients,
             "sweep_ratio": render_sweep_ratio, "chunk": render_chunk,
             "gpu_check": render_gpu_check}


def render(results: dict, source: str = "a results file") -> str:
    """The Markdown of one results dict (its kind from its content)."""
    return RENDERERS[kind(results)](results, source)


def render_file(path: Path) -> str:
    path = Path(path)
    try:
        shown = str(path.resolve().relative_to(ROOT))
    except ValueError:
        shown = str(path)
    return render(json.loads(path.read_text()), shown)


def blocks(text: str) -> list[tuple[list[str], str]]:
    """The generated blocks of a Markdown text: (file arguments, body)."""
    return [(shlex.split(m.group("args")), m.group("body")) for m in BLOCK.finditer(text)]


def regenerate(text: str) -> str:
    """The Markdown with every generated block rewritten from its files."""
    def body(match):
        files = shlex.split(match.group("args"))
        rendered = "\n\n".join(render_file(ROOT / f) for f in files)
        return (f"<!-- generated: {COMMAND} {match.group('args')} -->\n{rendered}\n"
                "<!-- end generated -->")

    return BLOCK.sub(body, text)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="*", help="result files to print")
    parser.add_argument("--update", type=Path, nargs="+", default=[], metavar="MARKDOWN",
                        help="rewrite the generated blocks of these Markdown files")
    args = parser.parse_args(argv)
    for path in args.update:
        path.write_text(regenerate(path.read_text()))
    if args.results:
        sys.stdout.write("\n\n".join(render_file(p) for p in args.results) + "\n")
    elif not args.update:
        parser.error("name result files to print, or --update Markdown files")


if __name__ == "__main__":
    main()
