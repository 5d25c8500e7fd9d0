"""Prints the README's performance tables, in Markdown, from benchmark result files.

    python scripts/readme_performance_table.py benchmarks/results/cpu-amd-epyc-2cores-quick.json
    python scripts/readme_performance_table.py --headline benchmarks/results/cpu-amd-epyc-2cores.json
    python scripts/readme_performance_table.py --update README.md docs/guides/performance.md

Each file is one that a benchmark wrote (`benchmarks/run_all.py`,
`bench_gradients.py`, `bench_precision.py`, `bench_sweep_ratio.py`,
`bench_chunk.py`, `bench_atlas.py`, `gpu_check.py`); the table's kind
follows from its content, and every table opens with the machine it was
measured on. In a Markdown file, a table
stands between

    <!-- generated: python scripts/readme_performance_table.py FILE -->
    <!-- end generated -->

(`--headline` before the files gives the few rows the README shows, each
file's rows under the machine it was measured on).
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
    if results.get("unfinished"):
        what += f", stopped before {', '.join(results['unfinished'])} ended"
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
    precision = results["benchmarks"].get("precision")
    if precision is not None:
        lines += ["", *_precision_tables(precision)]
    gradients = results["benchmarks"].get("gradients")
    targets = list(results["targets"])
    if gradients is not None:
        if "summary" in gradients["result"]:
            lines += ["", _gradient_note(gradients["result"]), "",
                      *_gradient_table(gradients["result"])]
        else:  # an older form: a loop extrapolated from a few concepts, no batched PyTorch peer
            lines += ["", "(This file's gradient figures predate the same-algorithm PyTorch "
                          "peers and are not shown.)"]
            targets = [t for t in targets if not t["name"].startswith("gradients:")]
    lines += ["", *_targets(targets)]
    return "\n".join(lines)


# ----------------------------------------------------------------- other result files


def _gradient_note(result: dict) -> str:
    return (f"Gradient maps: every figure measured (none extrapolated), seconds per image, "
            f"median of the timed calls; ratios of medians; PyTorch on "
            f"{result['torch_threads']} thread(s), {result['torch_chunk']} cotangents per "
            "batched backward pass; maps checked against the loop's at every K. Strategies: "
            "vmap (the pullback vmapped over the K cotangents), vjp (batched VJPs of the K "
            "cotangents), jacobian (d basis pullbacks, maps as combinations).")


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
    lines = [machine_line(result["environment"], what, source) + " " + _gradient_note(result),
             "", *_gradient_table(result)]
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


def _precision_tables(result: dict) -> list[str]:
    """bench_precision's agreement and timing tables (either may be absent)."""
    lines = []
    names = {"bfloat16": "bfloat16 (its bank built by the bfloat16 text tower: what a user "
                         "gets)", "bfloat16_image_tower": "bfloat16 image tower, float32 bank"}
    if "agreement" in result:
        any_entry = next(iter(result["agreement"].values()))
        lines += [f"| bfloat16 maps against float32, {any_entry['maps']:,} maps | correlation "
                  "median | 10th percentile | minimum | peak cell moves |",
                  "|---|---|---|---|---|"]
        for key, entry in result["agreement"].items():
            lines.append(f"| {names.get(key, key)} | {entry['correlation_median']:.5f} "
                         f"| {entry['correlation_p10']:.5f} | {entry['correlation_min']:.3f} "
                         f"| {100 * entry['argmax_moved_fraction']:.1f}% of maps |")
    if "timings" in result:
        windows, ratios = result["windows"], result["ratios"]
        if lines:
            lines.append("")
        lines += [f"| one image, {windows} windows, all {result['concepts']:,} concepts "
                  "| s per image | ms per crop | rounds |", "|---|---|---|---|"]
        for name, t in result["timings"].items():
            rounds = ", ".join(f"{v:.1f}" for v in t["times_s"])
            lines.append(f"| {name} | {t['median_s']:.2f} | {1000 * t['median_s'] / windows:.0f} "
                         f"| {rounds} |")
        f32_peer = ratios.get("torch_f32_peer", "PyTorch float32 bare encoding")
        lines += ["", "| ratio of medians | |", "|---|---|",
                  f"| bfloat16 sweep / {ratios['torch_bf16_peer']} (PyTorch's fastest bfloat16) "
                  f"| {_ratio(ratios['ours_bf16_over_torch_bf16_bare'])} |",
                  f"| bfloat16 sweep / float32 sweep "
                  f"| {_ratio(ratios['ours_bf16_over_ours_f32'])} |",
                  f"| float32 sweep / {f32_peer} | {_ratio(ratios['ours_f32_over_torch_f32_bare'])} |"]
    return lines


def render_precision(result: dict, source: str) -> str:
    s = result["settings"]
    what = f"`bench_precision.py`, stride {s['stride']}"
    if "agreement" in result:
        what += f", the maps of {s['images']} rendered scene(s)"
    if "timings" in result:
        what += f", {s['repeats']} interleaved timing round(s) of one scene"
    lines = [machine_line(result["environment"], what, source), "", *_precision_tables(result)]
    if result.get("targets"):
        lines += ["", *_targets(result["targets"])]
    return "\n".join(lines)


def render_atlas(result: dict, source: str) -> str:
    """bench_atlas.py: building against sweeping, bytes, stored-image queries, the index."""
    rows = []
    if "build_vs_sweep" in result:
        b = result["build_vs_sweep"]
        rows.append((f"building {b['images']} image(s), against the all-concept sweep of the same",
                     f"{_seconds(b['build']['median_s'])} against "
                     f"{_seconds(b['sweep']['median_s'])}: "
                     f"{_ratio(b['build_cost_over_sweep_cost'])}"))
    if "bytes_per_image" in result:
        size = result["bytes_per_image"]
        rows.append(("bytes an image on disk", f"{size['float16']:,.0f} (float16), "
                                              f"{size['float32']:,.0f} (float32)"))
    if "all_maps_one_image" in result:
        maps = result["all_maps_one_image"]
        rows.append((f"all {result['concepts']:,} maps of one stored image, warm atlas",
                     f"{_seconds(maps['median_s'])} (correlation with the sweep's "
                     f"{maps['correlation_with_sweep_float16']:.6f})"))
    stored = result["stored_synthetic"]
    n = stored["images"]
    rows.append((f"top 20 of {n:,} stored images by whole-image score",
                 _seconds(stored["top20_by_image"]["median_s"])))
    rows.append((f"top 20 of {n:,} stored images by map peak, no index",
                 f"{_seconds(stored['top20_by_map_peak_s'])}, "
                 f"{_seconds(stored['map_peak_per_image_s'])} an image"))
    if "index" in result:
        index = result["index"]
        rows.append((f"building the index ({index['images']} images, "
                     f"{index['concepts']:,} concepts), against one map-peak query without it",
                     f"{_seconds(index['build_per_image_s'])} against "
                     f"{_seconds(index['map_peak_query_per_image_s'])} an image: "
                     f"{_ratio(index['build_over_one_query'])}"))
        rows.append(("index size, an image and a concept",
                     f"{index['bytes_per_image_per_concept_full_block']:.2f} bytes"))
    if "index_top20" in result:
        top = result["index_top20"]
        rows.append((f"top 20 of {top['images']:,} indexed images by map peak",
                     f"{_seconds(top['top20_by_map_peak_indexed']['median_s'])} (without the "
                     f"index: {_seconds(top['top20_by_map_peak_unindexed_extrapolated_s'])}, "
                     "extrapolated from the per-image query time above)"))
    what = "`bench_atlas.py`" + (f", {result['model']}" if "model" in result else "")
    return "\n".join([machine_line(result["environment"], what, source)
                      + " Stored images beyond the built ones are synthetic (random values "
                      "written through the store's own code).", "",
                      "| | measured |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)])


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
    if "precision_auto" in result:
        return "precision"
    if "stored_synthetic" in result:
        return "atlas"
    raise ValueError("not a results file this script knows: keys "
                     + ", ".join(sorted(result)[:12]))


RENDERERS = {"suite": render_suite, "gradients": render_gradients,
             "sweep_ratio": render_sweep_ratio, "chunk": render_chunk,
             "gpu_check": render_gpu_check, "precision": render_precision,
             "atlas": render_atlas}


def render(results: dict, source: str = "a results file") -> str:
    """The Markdown of one results dict (its kind from its content)."""
    return RENDERERS[kind(results)](results, source)


# ----------------------------------------------------------------- the README's headline


def _headline_rows(results: dict) -> list[tuple[str, str, str, str]]:
    """The few (what, convis_jax, PyTorch, ratio) rows of a file that the README shows."""
    if kind(results) == "suite":
        k = results["benchmarks"]["occlusion"]["concepts"]
        wanted = ("Occlusion maps, 1 concept, 1 image", f"Occlusion maps, all {k:,} concepts, 1 image")
        rows = [row for row in _rows(results) if row[0].startswith(wanted)
                and not row[0].endswith("vs the floor")]
        gradients = results["benchmarks"].get("gradients")
        if gradients is not None and "summary" in gradients["result"]:
            rows += _headline_rows(gradients["result"])
        return rows
    if kind(results) == "gradients":
        entry = max(results["summary"], key=lambda e: e["K"])
        strategy = lambda name: name.split("_", 1)[1].replace("jax_", "")
        mine = f"{_seconds(entry['convis_jax_s'])} ({strategy(entry['convis_jax'])})"
        what = f"Gradient maps, {entry['K']:,} concepts, 1 image"
        rows = []
        if "torch_batched" in entry:
            rows.append((what, mine, f"{_seconds(entry['torch_batched_s'])} (one forward, "
                         f"batched {strategy(entry['torch_batched'])})",
                         _ratio(entry["torch_batched_over_convis_jax"])))
        rows.append((what, mine, f"{_seconds(entry['torch_loop_s'])} (one backward per concept)",
                     _ratio(entry["torch_loop_over_convis_jax"])))
        return rows
    raise ValueError(f"no headline rows for a {kind(results)} file")


def render_headline(results: dict, source: str) -> str:
    """The README's rows of one result file, under the machine it was measured on."""
    what = {"suite": "`run_all.py" + (" --quick`" if results.get("quick") else "`"),
            "gradients": "`bench_gradients.py" + (" --quick`" if results.get("quick") else "`")}
    return "\n".join([machine_line(results["environment"], what[kind(results)], source), "",
                      "| | convis_jax | PyTorch | ratio |", "|---|---|---|---|",
                      *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in _headline_rows(results))])


def _shown(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def render_file(path: Path, headline: bool = False) -> str:
    results = json.loads(Path(path).read_text())
    return (render_headline if headline else render)(results, _shown(path))


def blocks(text: str) -> list[tuple[list[str], str]]:
    """The generated blocks of a Markdown text: (file arguments, body); options left out."""
    return [([a for a in shlex.split(m.group("args")) if not a.startswith("--")], m.group("body"))
            for m in BLOCK.finditer(text)]


def regenerate(text: str) -> str:
    """The Markdown with every generated block rewritten from its files."""
    def body(match):
        arguments = shlex.split(match.group("args"))
        headline = "--headline" in arguments
        files = [a for a in arguments if not a.startswith("--")]
        rendered = "\n\n".join(render_file(ROOT / f, headline) for f in files)
        return (f"<!-- generated: {COMMAND} {match.group('args')} -->\n{rendered}\n"
                "<!-- end generated -->")

    return BLOCK.sub(body, text)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="*", help="result files to print")
    parser.add_argument("--update", type=Path, nargs="+", default=[], metavar="MARKDOWN",
                        help="rewrite the generated blocks of these Markdown files")
    parser.add_argument("--headline", action="store_true",
                        help="print only the rows the README shows")
    args = parser.parse_args(argv)
    for path in args.update:
        path.write_text(regenerate(path.read_text()))
    if args.results:
        sys.stdout.write("\n\n".join(render_file(p, args.headline) for p in args.results) + "\n")
    elif not args.update:
        parser.error("name result files to print, or --update Markdown files")


if __name__ == "__main__":
    main()
