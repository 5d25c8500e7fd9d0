"""The `convis-jax` command line: explain, top, bank, explore, atlas, demo.

User mistakes (missing or damaged files, unknown concepts, bad options) and
files that cannot be read or written end with one line on stderr and exit
code 2, never a traceback (`programs.run_command`, which the scripts use too). Images and concept
names are checked before the model is loaded and the concept bank is built,
so a typo costs no waiting. Ctrl-C always stops a run with exit code 130: held from
the program's first line (`convis_jax.__main__`) while the native libraries load, then
acted on at safe points (`programs.interrupt_at_safe_points`). Every file is written
whole or not at all, with the mode the umask gives, under a file name made safe from
the concept's name; a rerun of `explain` replaces an image's folder whole
(`convis_jax.pictures.explanations`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from convis_jax.errors import ConvisError, one_line
from convis_jax.programs import (
    EXIT_INTERRUPTED,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    SEED,
    DefaultsHelpFormatter,
    OneLineParser,
    add_gradient_options,
    add_model_options,
    hold_interrupts,
    load_native_libraries,
    release_interrupts,
    run_command,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command; its errors raise `ConvisError`."""
    from convis_jax import __version__

    parser = OneLineParser(prog="convis-jax",
                     description="ConVis saliency maps of WordNet concepts for CLIP, in JAX.")
    parser.add_argument("--version", action="version", version=f"convis-jax {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    def command(name: str, summary: str):
        return commands.add_parser(name, help=summary, description=summary,
                                   formatter_class=DefaultsHelpFormatter)

    explain = command("explain", "maps of named concepts for images")
    explain.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    explain.add_argument("--concepts", nargs="+", required=True,
                         help="synset names (circle.n.01) or words (circle); with "
                              "--vocabulary physical_objects, also dog.n.01 or dog")
    explain.add_argument("--method", choices=["occlusion", "gradient"], default="occlusion",
                         help="occlusion: the paper's Algorithm 1 (sliding windows); gradient: "
                              "gradients of concept scores w.r.t. the pixels")
    explain.add_argument("--out", required=True,
                         help="output folder: <NN-image>/ (overlays, grid.png), maps.npz, "
                              "summary.json; a rerun replaces an image's earlier folder there")
    explain.add_argument("--padding", choices=["noise", "constant"], default="noise",
                         help="occlusion method: pad the image with uniform noise (the paper) "
                              "or black")
    explain.add_argument("--seed", type=SEED, default=0,
                         help="seed of the padding noise (and of SmoothGrad's noise)")
    add_gradient_options(explain)
    explain.add_argument("--gamma", type=POSITIVE_FLOAT, default=1.0,
                         help="overlay exponent: above 1 shows only the strongest regions")
    explain.add_argument("--export-wsol", default=None, metavar="DIR",
                         help="also write every map for wsolevaluation's evaluator: "
                              "DIR/<concept>/<image file name>.npy, 224 x 224, maximum 1 "
                              "(docs/protocols.md)")
    add_model_options(explain)

    top = command("top", "the concepts CLIP sees in whole images")
    top.add_argument("images", nargs="+", help="image files (read a few at a time)")
    top.add_argument("--k", type=POSITIVE_INT, default=10,
                     help="how many concepts to list per image and ranking")
    top.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_model_options(top)

    bank = command("bank", "build and cache a concept bank ahead of time")
    add_model_options(bank)

    explore = command("explore", "write the concept explorer HTML page")
    explore.add_argument("images", nargs="+", help="image files")
    explore.add_argument("--out", required=True, help="output folder for index.html")
    explore.add_argument("--data-files", action="store_true",
                         help="one data file per image beside index.html (for many images)")
    explore.add_argument("--seed", type=SEED, default=0, help="seed of the padding noise")
    add_model_options(explore)

    add_atlas_commands(commands)

    demo = command("demo", "a small gallery from the bundled model (demo takes no --model: "
                           "its scenes are the shapes that model was trained on)")
    demo.add_argument("--out", required=True,
                      help="output folder: scene-N.png, maps/scene-N/ (overlays, grid.png), "
                           "maps/scene-N.npz and .json, explorer/index.html")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def add_atlas_commands(commands) -> None:
    """`atlas build` and `atlas explore`: sweep a collection once, ask any concept later."""
    atlas = commands.add_parser("atlas", help="the concept atlas of an image collection",
                                description="the concept atlas of an image collection")
    sub = atlas.add_subparsers(dest="atlas_command", required=True, parser_class=OneLineParser)

    def command(name: str, summary: str):
        return sub.add_parser(name, help=summary, description=summary,
                              formatter_class=DefaultsHelpFormatter)

    build = command("build", "encode every window of every image once (resumable)")
    build.add_argument("images", help="a folder of images (recursive) or a list file")
    build.add_argument("--out", required=True, help="the atlas folder (shared by all processes)")
    add_model_options(build, vocabulary=False)
    build.add_argument("--store", choices=["float16", "float32"], default="float16",
                       help="stored window embeddings (float16: 0.75 MB an image for ViT-B/32)")
    build.add_argument("--padding", choices=["noise", "constant"], default="noise",
                       help="pad each image with uniform noise (the paper) or black")
    build.add_argument("--seed", type=SEED, default=0, help="seed of the padding noise")
    build.add_argument("--batch", type=POSITIVE_INT, default=None,
                       help="images per compiled call (default: the device's; 1 on CPUs)")
    build.add_argument("--chunk", type=POSITIVE_INT, default=None,
                       help="windows per step (default: the device's; 32 on CPUs)")
    hosts = build.add_argument_group("processes (jax.distributed; see docs/scaling.md)")
    hosts.add_argument("--coordinator", default=None,
                       help="HOST:PORT of process 0 (or JAX_COORDINATOR_ADDRESS)")
    hosts.add_argument("--num-processes", type=POSITIVE_INT, default=None,
                       help="how many processes share the images (or JAX_NUM_PROCESSES)")
    hosts.add_argument("--process-id", type=int, default=None,
                       help="this process's number, 0 to P - 1 (or JAX_PROCESS_ID)")
    hosts.add_argument("--cluster", action="store_true",
                       help="let JAX detect the cluster (Cloud TPU, SLURM, Open MPI)")
    explore = command("explore", "write the atlas page: search a concept, see the images that "
                                 "show it most")
    explore.add_argument("atlas", help="the atlas folder")
    explore.add_argument("--out", required=True, help="the page's folder")
    explore.add_argument("--k", type=POSITIVE_INT, default=8, help="images shown per concept")
    explore.add_argument("--images", default=None,
                         help="where the photos are now (folder or list file; default: where "
                              "the atlas was built from)")
    add_model_options(explore)


def cmd_atlas(args) -> None:
    """`atlas build` / `atlas explore`."""
    if args.atlas_command == "build":
        from convis_jax.atlas import build_atlas, init_processes, list_images

        _output_folder(args.out)
        list_images(args.images)  # before any model work: a wrong path costs no waiting
        process_id, count = init_processes(coordinator=args.coordinator,
                                           num_processes=args.num_processes,
                                           process_id=args.process_id, cluster=args.cluster)
        try:
            summary = build_atlas(args.images, args.out, model=_model(args), dtype=args.store,
                                  padding=args.padding, seed=args.seed, batch=args.batch,
                                  chunk=args.chunk, progress=not args.quiet, source=args.model)
        except KeyboardInterrupt:
            print("the images finished so far are kept; run the same command again to resume",
                  file=sys.stderr)
            raise
        print(f"atlas {summary.out}: process {process_id} of {count} encoded {summary.built} "
              f"image(s) ({summary.skipped} already there)")
        return
    from convis_jax.atlas import Atlas

    _output_folder(args.out)
    atlas = Atlas.open(args.atlas, model=None if args.model is None else _model(args),
                       vocabulary=args.vocabulary, text=args.text, progress=not args.quiet)
    page = atlas.explore(args.out, k=args.k, images=args.images)
    print(f"wrote {page}")


def _model(args):
    from convis_jax.models.loading import load_model

    return load_model(args.model, dtype=args.dtype)


def _convis(args, model=None, vocabulary=None):
    """A ConVis for the options; builds (or reads) the concept bank."""
    from convis_jax.api import ConVis

    model = _model(args) if model is None else model
    vocabulary = args.vocabulary if vocabulary is None else vocabulary
    return ConVis(model, vocabulary, text=args.text, progress=not args.quiet)


def _load_images(paths: list[str]) -> list[np.ndarray]:
    """Every image, read before any model work so that a bad file fails at once."""
    from convis_jax.core.images import load_images

    return load_images(list(paths))


def _output_folder(out: str) -> Path:
    """The --out folder; an empty name is a mistake (it would mean the current folder)."""
    if not out.strip():
        raise ConvisError(f"--out: expected a folder name, found {out!r}")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConvisError(f"--out must be a folder, found a file at {out!r}")
    return path


def _stem(index: int, path: str) -> str:
    return f"{index:02d}-{Path(path).stem}"


def cmd_explain(args) -> None:
    """`explain`: overlays, grids, maps.npz and summary.json for named concepts."""
    from tqdm.auto import tqdm

    from convis_jax.api import resolve_vocabulary
    from convis_jax.pictures.explanations import write_explanations

    photos = _load_images(args.images)
    out = _output_folder(args.out)
    export_wsol = None if args.export_wsol is None else Path(args.export_wsol)
    if export_wsol is not None and len({Path(p).name for p in args.images}) < len(args.images):
        raise ConvisError("--export-wsol: expected images with distinct file names (the "
                          "wsolevaluation image ids), found the same name twice")
    # One bar over the stages: a single image's sweep is one compiled call with no steps
    # of its own to count, and takes seconds.
    with tqdm(total=4, desc="explain: loading the model", unit="stage", disable=args.quiet,
              bar_format="{desc} {n_fmt}/{total_fmt} [{elapsed}]") as stages:
        model = _model(args)
        vocabulary = resolve_vocabulary(args.vocabulary, model)
        concepts = _resolve_concepts(args, vocabulary)  # before the bank: a typo costs no waiting
        stages.set_description("explain: concept bank")
        stages.update()
        convis = _convis(args, model, vocabulary)
        convis.progress = False  # the stage bar speaks for the sweep
        stages.set_description(f"explain: {args.method} maps of {len(photos)} image(s)")
        stages.update()
        names = [_stem(i, p) for i, p in enumerate(args.images)]
        replaced = [name for name in names if (out / name).is_dir()]
        write_explanations(convis, photos, names, concepts, out, method=args.method,
                           gamma=args.gamma, padding=args.padding, seed=args.seed,
                           score=args.score, kind=args.kind, strategy=args.strategy,
                           sources=args.images, export_wsol=export_wsol,
                           on_maps=lambda: (stages.set_description("explain: writing files"),
                                            stages.update()))
        stages.set_description("explain: done")
        stages.update()
    _bundled_model_note(args)
    print(f"wrote maps of {len(concepts)} concept(s) for {len(photos)} image(s) to {out} "
          f"({model.precision})"
          + (f" (replacing the earlier {', '.join(replaced)})" if replaced else ""))


def _resolve_concepts(args, vocabulary) -> list[str]:
    """`--concepts` as synset names; with the bundled model's own vocabulary, an unknown
    concept's error names the shapes it knows and the options for other concepts."""
    from convis_jax.errors import ConceptError

    try:
        return vocabulary.resolve(args.concepts)
    except ConceptError as err:
        if args.model is not None or args.vocabulary is not None:
            raise
        from convis_jax.scenes import CONCEPT_TEXTS

        shapes = ", ".join(text.lemmas[0] for text in CONCEPT_TEXTS.values())
        raise ConceptError(
            f"{one_line(err)}; the bundled model knows only its {len(CONCEPT_TEXTS)} drawn "
            f"shapes ({shapes}) and their WordNet parents, {len(vocabulary)} concepts in all: "
            f"for other concepts pass a real CLIP and the paper's vocabulary, --model "
            f"openai/clip-vit-base-patch32 --vocabulary physical_objects") from None


def format_top_table(paths: list[str], results: list) -> str:
    """The `top` table: per image, rank, flat concept and cosine, hierarchical concept and cosine."""
    lines = []
    for path, r in zip(paths, results):
        width = max(12, *map(len, r.flat.names + r.hierarchical.names))
        lines.append(str(path))
        lines.append(f"  {'rank':>4}  {'flat':<{width}} {'cosine':>7}   "
                     f"{'hierarchical':<{width}} {'cosine':>7}")
        for i, (flat, score, hier, hier_score) in enumerate(zip(
                r.flat.names, r.flat.scores, r.hierarchical.names, r.hierarchical.scores)):
            lines.append(f"  {i + 1:>4}  {flat:<{width}} {score:7.4f}   "
                         f"{hier:<{width}} {hier_score:7.4f}")
    if any(len(set(r.hierarchical.scores.tolist())) < len(r.hierarchical.scores) for r in results):
        lines.append(HIERARCHY_NOTE)
    return "\n".join(lines)


# Printed under a `top` table whose hierarchical column repeats a score.
HIERARCHY_NOTE = ("(hierarchical: a concept scores the best flat cosine in its WordNet subtree, "
                  "so a concept's ancestors repeat its score)")


# Images decoded at a time by `top`: memory stays flat however many files are listed.
TOP_BATCH = 32


def _check_image_files(paths: list[str]) -> None:
    """Opens every file's header as `explain` opens it (`core.images.check_image_file`: no
    decoding), so that a bad path fails before any model work, in one line.

    Raises:
        InputError: a missing, empty or unreadable file, one Pillow does not recognise,
            or one too large to decode safely (a decompression bomb).
    """
    from convis_jax.core.images import check_image_file

    for path in paths:
        check_image_file(path)


def _bundled_model_note(args) -> None:
    """Says on stderr that the bundled model knows only drawn shapes (it answers for photos too)."""
    if args.model is None and not args.quiet:
        print("note: the bundled model was trained on 12 drawn shapes only (44 concepts); for "
              "photographs pass --model openai/clip-vit-base-patch32", file=sys.stderr)


def cmd_top(args) -> None:
    """`top`: each image's best concepts, flat and hierarchical, as a table or JSON.

    Images are decoded `TOP_BATCH` at a time and their results printed as they come.
    """
    _check_image_files(args.images)
    convis = _convis(args)
    _bundled_model_note(args)
    if args.json:
        print("[")
    for start in range(0, len(args.images), TOP_BATCH):
        paths = args.images[start:start + TOP_BATCH]
        results = convis.top_concepts(_load_images(paths), k=args.k)
        if args.json:
            for i, (p, r) in enumerate(zip(paths, results)):
                item = {"image": p, "flat": dict(zip(r.flat.names, map(float, r.flat.scores))),
                        "hierarchical": dict(zip(r.hierarchical.names,
                                                 map(float, r.hierarchical.scores)))}
                last = start + i == len(args.images) - 1
                text = json.dumps(item, indent=2)
                print("  " + text.replace("\n", "\n  ") + ("" if last else ","))
        else:
            print(format_top_table(paths, results), flush=True)
    if args.json:
        print("]")


def _find_cached_bank(args):
    """(embeddings, path) of the bank when a usable cache entry exists, else None.

    Found without loading the model: its cache key needs only the weight files' hash,
    the tokenizer files' hash, config.json and the dtype. Such an entry was written by
    a run that loaded and checked this very folder, so `bank` can answer in a second or
    two (reading weights and importing the tokenizer would cost more than that).
    Hub ids take the full way.
    """
    from types import SimpleNamespace

    from convis_jax.api import resolve_vocabulary
    from convis_jax.core.cache import cache_root
    from convis_jax.kernels.bank import bank_cache_path, cached_bank
    from convis_jax.models import checkpoints
    from convis_jax.models.config import ClipConfig
    from convis_jax.models.precision import resolve_dtype
    from convis_jax.models.tokenizer import tokenizer_fingerprint

    folder = (checkpoints.default_model_path() if args.model is None
              else Path(args.model).expanduser())
    if not folder.is_dir() or checkpoints.detect_family(folder) != "clip":
        return None
    shipped = folder / checkpoints.VOCABULARY_FILE
    key = SimpleNamespace(
        config=ClipConfig.from_json(folder / "config.json"),
        dtype=resolve_dtype(args.dtype).dtype,
        fingerprint=checkpoints.fingerprint_files(checkpoints.weight_files(folder),
                                                memo_dir=cache_root()),
        tokenizer_fingerprint=tokenizer_fingerprint(folder),
        vocabulary_path=shipped if shipped.is_file() else None)
    vocabulary = resolve_vocabulary(args.vocabulary, key)
    embeddings = cached_bank(key, vocabulary, args.text)
    if embeddings is None:
        return None
    return embeddings, bank_cache_path(key, vocabulary, args.text)


def cmd_bank(args) -> None:
    """`bank`: build (or find) the cached concept bank and say where it is."""
    found = _find_cached_bank(args)
    if found is None:
        bank = _convis(args).bank
        embeddings, path = bank.embeddings, bank.path
    else:
        embeddings, path = found
    print(f"concept bank: {len(embeddings)} concepts x {embeddings.shape[1]} dims, "
          f"text={args.text!r}, cached at {path}")


def cmd_explore(args) -> None:
    """`explore`: the concept explorer page of all-concept maps."""
    photos = _load_images(args.images)
    out = _output_folder(args.out)
    page = _convis(args).explore(photos, out, names=[Path(p).name for p in args.images],
                                 seed=args.seed, single_file=not args.data_files)
    print(f"wrote {page}")


# The demo's scenes: `DEMO_SCENES` of `make_dataset(DEMO_SEED, ...)`, chosen by `demo_scenes`.
DEMO_SEED = 2024
DEMO_SCENES = 4
DEMO_CANDIDATES = 64


def demo_scenes(convis, count: int = DEMO_SCENES, seed: int = DEMO_SEED,
                candidates: int = DEMO_CANDIDATES) -> list:
    """The demo's scenes, chosen by a rule and never by hand.

    Going through `make_dataset(seed, candidates, size=224)` in order, a scene is
    kept when the concept the model ranks first for the whole image (flat cosine:
    the concept the explorer opens on) is one of the shapes drawn in it, and is not
    the first concept of a scene kept before (so the scenes show different shapes).
    The first `count` such scenes are the demo's; scenes the model gets wrong (an
    arrow taken for a Greek cross) are passed over.

    Returns:
        `count` `Scene`s, in the order found.

    Raises:
        ConvisError: fewer than `count` of the candidates qualify.
    """
    from convis_jax.scenes import render_scene

    children = np.random.SeedSequence(seed).spawn(candidates)  # as make_dataset draws them
    chosen, tops = [], set()
    for start in range(0, candidates, 8):
        batch = [render_scene(child, size=224) for child in children[start:start + 8]]
        for scene, top in zip(batch, convis.top_concepts([s.image for s in batch], k=1)):
            first = top.flat.names[0]
            if first in scene.concepts and first not in tops:
                chosen.append(scene)
                tops.add(first)
                if len(chosen) == count:
                    return chosen
    raise ConvisError(f"the model ranked a drawn shape first in only {len(chosen)} of "
                      f"{candidates} scenes with different shapes; expected {count}")


def cmd_demo(args) -> None:
    """`demo`: scenes, their maps and an explorer page from the bundled model."""
    from convis_jax.api import ConVis
    from convis_jax.models.loading import load_clip
    from convis_jax.pictures.explanations import write_explanations
    from convis_jax.pictures.overlays import save_png

    out = _output_folder(args.out)
    convis = ConVis(load_clip(None), None, progress=not args.quiet)
    scenes = demo_scenes(convis)
    names = [f"scene-{i}" for i in range(len(scenes))]
    for name, scene in zip(names, scenes):
        save_png(scene.image, out / f"{name}.png")
    vocab = convis.vocabulary
    for name, scene in zip(names, scenes):
        present = list(scene.concepts)
        parents = [p for c in present for p in vocab.parents(c)][:1]
        write_explanations(convis, [scene.image], [name], present + parents, out / "maps",
                           sources=[f"{name}.png"], maps_file=f"{name}.npz",
                           summary_file=f"{name}.json")
    page = convis.explore([s.image for s in scenes], out / "explorer", names=names)
    shown = "; ".join(f"{name}: {scene.captions[1]}" for name, scene in zip(names, scenes))
    print(f"demo gallery in {out}: {shown}; maps/<scene>/grid.png overlays (each drawn shape "
          f"and a WordNet parent), explorer {page}")


COMMANDS = {"explain": cmd_explain, "top": cmd_top, "bank": cmd_bank, "explore": cmd_explore,
            "atlas": cmd_atlas, "demo": cmd_demo}
# The commands that always load a model (`bank` may answer from its cache without jax).
NATIVE_COMMANDS = ("explain", "top", "explore", "atlas", "demo")


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit code (see `run_command`).

    Run as a program (`argv` None; `convis-jax` and `python -m convis_jax` enter
    through `convis_jax.__main__`, which holds Ctrl-C before anything native is
    imported), Ctrl-C is held until the native libraries the command needs are
    loaded, then acted on; an interrupted run ends at once with exit code 130
    instead of finalising the interpreter while XLA's threads may still be running.
    """
    program = argv is None
    if program:
        hold_interrupts()

    def dispatch():
        args = build_parser().parse_args(argv)
        if program and args.command in NATIVE_COMMANDS:
            # Before `jax.distributed.initialize`, JAX's backend must not start.
            load_native_libraries(backend=args.command != "atlas")
        release_interrupts()
        COMMANDS[args.command](args)

    code = run_command(dispatch, program=program)
    if code == EXIT_INTERRUPTED and program:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
