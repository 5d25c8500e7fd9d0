"""The `convis-jax` command line: explain, top, bank, explore, demo.

User mistakes (missing files, unknown concepts, bad options) end with one
line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from convis_jax.errors import ConvisError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        raise ConvisError(f"{self.prog}: {message} (see --help)")


def _common(parser: argparse.ArgumentParser, *, vocabulary: bool = True) -> None:
    parser.add_argument("--model", default=None,
                        help="model folder or Hugging Face hub id (default: the bundled model)")
    if vocabulary:
        parser.add_argument("--vocabulary", default=None,
                            help="physical_objects, all_nouns, or a file of words/synsets "
                                 "(default: the model's own vocabulary, else physical_objects)")
        parser.add_argument("--text", default="definition",
                            help='concept texts: definition, lemmas, or a template like '
                                 '"a photo of a {}"')
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="convis-jax",
                     description="ConVis saliency maps of WordNet concepts for CLIP, in JAX.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    explain = commands.add_parser("explain", help="maps of named concepts for images")
    explain.add_argument("images", nargs="+", help="image files")
    explain.add_argument("--concepts", nargs="+", required=True,
                         help="synset names (dog.n.01) or words (dog)")
    explain.add_argument("--method", choices=["occlusion", "gradient"], default="occlusion")
    explain.add_argument("--out", required=True, help="output folder")
    explain.add_argument("--padding", choices=["noise", "constant"], default="noise")
    explain.add_argument("--seed", type=int, default=0)
    explain.add_argument("--score", default="cosine",
                         choices=["cosine", "subtree_cosine", "probability", "subtree_probability"],
                         help="gradient method: the concept score to differentiate")
    explain.add_argument("--kind", default="gradient",
                         choices=["gradient", "grad_x_input", "smoothgrad", "tokens"],
                         help="gradient method: the kind of map")
    explain.add_argument("--gamma", type=float, default=1.0, help="overlay exponent")
    _common(explain)

    top = commands.add_parser("top", help="the concepts CLIP sees in whole images")
    top.add_argument("images", nargs="+")
    top.add_argument("--k", type=int, default=10)
    top.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _common(top)

    bank = commands.add_parser("bank", help="build and cache a concept bank ahead of time")
    _common(bank)

    explore = commands.add_parser("explore", help="write the concept explorer HTML page")
    explore.add_argument("images", nargs="+")
    explore.add_argument("--out", required=True)
    explore.add_argument("--data-files", action="store_true",
                         help="one data file per image beside index.html (for many images)")
    explore.add_argument("--seed", type=int, default=0)
    _common(explore)

    demo = commands.add_parser("demo", help="a small gallery from the bundled model")
    demo.add_argument("--out", required=True)
    demo.add_argument("--quiet", action="store_true")
    return parser


def _convis(args):
    from convis_jax.api import ConVis
    from convis_jax.jax_backend.loading import load_clip

    model = load_clip(args.model, dtype=args.dtype)
    return ConVis(model, args.vocabulary, text=args.text, progress=not args.quiet)


def _check_images(paths: list[str]) -> None:
    for p in paths:
        if not Path(p).is_file():
            raise ConvisError(f"no image file at {p!r}")


def _stem(index: int, path: str) -> str:
    return f"{index:02d}-{Path(path).stem}"


def _normalise(maps: np.ndarray) -> np.ndarray:
    """Min-max per map (gradient maps are unbounded), constant maps -> zeros."""
    low = maps.min(axis=(-2, -1), keepdims=True)
    span = maps.max(axis=(-2, -1), keepdims=True) - low
    return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1), 0).astype(np.float32)


def write_explanations(convis, images: list, names: list[str], concepts: list[str], out: Path, *,
                       method: str = "occlusion", gamma: float = 1.0, padding: str = "noise",
                       seed: int = 0, score: str = "cosine", kind: str = "gradient",
                       sources: list[str] | None = None) -> dict:
    """Maps, overlays, grids, maps.npz and summary.json for images and concepts; returns the summary."""
    from convis_jax.core.images import load_images
    from convis_jax.core.pictures import concept_grid, save_png, white_overlay
    from convis_jax.core.windows import map_to_image

    photos = load_images(images)
    resolved = convis.vocabulary.resolve(concepts)
    if method == "occlusion":
        maps = convis.occlusion_maps(photos, resolved, padding=padding, seed=seed)
    else:
        maps = _normalise(convis.gradient_maps(photos, resolved, score=score, kind=kind))
    out.mkdir(parents=True, exist_ok=True)
    summary = {"model": convis.model.name, "method": method, "concepts": resolved,
               "vocabulary_size": len(convis.vocabulary), "text": convis.bank.text,
               "maps": "maps.npz: maps [N, K, S, S] float32 in [0, 1] on the centre square "
                       "the model saw; concepts [K]", "images": []}
    for n, (photo, name) in enumerate(zip(photos, names)):
        on_photo = map_to_image(maps[n], photo.shape[:2])
        files = {}
        for concept, m in zip(resolved, on_photo):
            files[concept] = save_png(white_overlay(photo, m, gamma),
                                      out / name / f"{concept}.png").name
        grid = concept_grid(photo, on_photo, resolved, out / name / "grid.png", gamma=gamma)
        peaks = {c: [int(v) for v in np.unravel_index(np.argmax(m), m.shape)[::-1]]
                 for c, m in zip(resolved, on_photo)}
        summary["images"].append({"image": (sources or names)[n], "size": list(photo.shape[1::-1]),
                                  "folder": name, "overlays": files, "grid": grid.name,
                                  "peak_xy": peaks})
    np.savez_compressed(out / "maps.npz", maps=maps.astype(np.float32), concepts=np.array(resolved))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def cmd_explain(args) -> None:
    _check_images(args.images)
    convis = _convis(args)
    names = [_stem(i, p) for i, p in enumerate(args.images)]
    write_explanations(convis, args.images, names, args.concepts, Path(args.out),
                       method=args.method, gamma=args.gamma, padding=args.padding, seed=args.seed,
                       score=args.score, kind=args.kind, sources=args.images)
    print(f"wrote maps of {len(args.concepts)} concept(s) for {len(args.images)} image(s) "
          f"to {args.out}")


def cmd_top(args) -> None:
    _check_images(args.images)
    convis = _convis(args)
    results = convis.top_concepts(args.images, k=args.k)
    if args.json:
        print(json.dumps([{"image": p, "flat": dict(zip(r.flat.names, map(float, r.flat.scores))),
                           "hierarchical": dict(zip(r.hierarchical.names,
                                                    map(float, r.hierarchical.scores)))}
                          for p, r in zip(args.images, results)], indent=2))
        return
    for path, r in zip(args.images, results):
        print(f"{path}")
        print(f"  {'rank':>4}  {'flat':<32} {'cosine':>7}   {'hierarchical':<32} {'cosine':>7}")
        for i in range(len(r.flat.names)):
            print(f"  {i + 1:>4}  {r.flat.names[i]:<32} {r.flat.scores[i]:7.4f}   "
                  f"{r.hierarchical.names[i]:<32} {r.hierarchical.scores[i]:7.4f}")


def cmd_bank(args) -> None:
    convis = _convis(args)
    bank = convis.bank
    print(f"concept bank: {len(bank)} concepts x {bank.embeddings.shape[1]} dims, "
          f"text={bank.text!r}, cached at {bank.path}")


def cmd_explore(args) -> None:
    _check_images(args.images)
    convis = _convis(args)
    page = convis.explore(args.images, Path(args.out), seed=args.seed,
                          single_file=not args.data_files)
    print(f"wrote {page}")


def cmd_demo(args) -> None:
    from convis_jax.api import ConVis
    from convis_jax.core.pictures import save_png
    from convis_jax.core.scenes import make_dataset
    from convis_jax.jax_backend.loading import load_clip

    out = Path(args.out)
    convis = ConVis(load_clip(None), None, progress=not args.quiet)
    scenes = make_dataset(seed=2024, n=4, size=224)
    names = [f"scene-{i}" for i in range(len(scenes))]
    for name, scene in zip(names, scenes):
        save_png(scene.image, out / f"{name}.png")
    vocab = convis.vocabulary
    for name, scene in zip(names, scenes):
        present = list(scene.concepts)
        parents = [p for c in present for p in vocab.parents(c)][:1]
        write_explanations(convis, [scene.image], [name], present + parents, out / "maps",
                           sources=[f"{name}.png"])
        (out / "maps" / "summary.json").rename(out / "maps" / f"{name}.json")
        (out / "maps" / "maps.npz").rename(out / "maps" / f"{name}.npz")
    page = convis.explore([s.image for s in scenes], out / "explorer", names=names)
    print(f"demo gallery in {out}: scenes, maps/<scene>/grid.png overlays, explorer {page}")


COMMANDS = {"explain": cmd_explain, "top": cmd_top, "bank": cmd_bank, "explore": cmd_explore,
            "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        COMMANDS[args.command](args)
    except ConvisError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
