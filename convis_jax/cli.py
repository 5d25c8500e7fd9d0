"""The `convis-jax` command line: explain, top, bank, explore, atlas, demo.

User mistakes (missing or damaged files, unknown concepts, bad options) and
files that cannot be read or written end with one line on stderr and exit
code 2, never a traceback (`programs.run_command`, which the scripts use too). Images and concept
names are checked before the model is loaded and the concept bank is built,
so a typo costs no waiting. Ctrl-C always stops a run with exit code 130
(`programs.interrupt_at_safe_points`), and every file is written whole or not at all
(`convis_jax.core.cache.atomic_write_bytes`), under a file name made safe from
the concept's name (`concept_file_names`).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from convis_jax.errors import ConvisError
from convis_jax.programs import (
    EXIT_INTERRUPTED,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    SEED,
    DefaultsHelpFormatter,
    OneLineParser,
    add_gradient_options,
    add_model_options,
    ignore_interrupts_after_the_run,
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
                         help="output folder: overlays, grid.png, maps.npz, summary.json")
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

    demo = command("demo", "a small gallery from the bundled model")
    demo.add_argument("--out", required=True,
                      help="output folder: scenes, maps/<scene>/grid.png, explorer/index.html")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def add_atlas_commands(commands) -> None:
    """`atlas build` and `atlas explore`: sweep a collection once, ask any concept later."""
    atlas = commands.add_parser("atlas", help="the concept atlas of an image collection")
    sub = atlas.add_subparsers(dest="atlas_command", required=True, parser_class=OneLineParser)
    build = sub.add_parser("build", help="encode every window of every image once (resumable)")
    build.add_argument("images", help="a folder of images (recursive) or a list file")
    build.add_argument("--out", required=True, help="the atlas folder (shared by all processes)")
    add_model_options(build, vocabulary=False)
    build.add_argument("--store", choices=["float16", "float32"], default="float16",
                       help="stored window embeddings (float16: 0.75 MB an image for ViT-B/32)")
    build.add_argument("--padding", choices=["noise", "constant"], default="noise")
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
    explore = sub.add_parser("explore", help="write the atlas page: search a concept, see the "
                                             "images that show it most")
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
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConvisError(f"--out must be a folder, found a file at {out!r}")
    return path


def _stem(index: int, path: str) -> str:
    return f"{index:02d}-{Path(path).stem}"


# Characters never written into a file name: path separators, NUL and other controls,
# and those Windows refuses; each becomes %XX (and "%" itself %25, so that the mapping
# stays one-to-one).
_UNSAFE_CHARACTERS = set('%/\\:*?"<>|') | {chr(c) for c in range(32)} | {"\x7f"}
# Longest file-name stem, in UTF-8 bytes (file systems allow 255; room for suffixes).
_MAX_STEM_BYTES = 200


def concept_file_name(concept: str) -> str:
    """The overlay file of one concept: its name with unsafe characters escaped, + ".png".

    "/" (as in `24/7.n.01`), "\\", NUL and other control characters become %XX,
    a leading "." becomes %2E (so "." and ".." are ordinary names, not folders or
    hidden files), and a name too long for a file system is shortened with a hash of
    the whole name. Different concepts can still map to names that differ only in
    case; `concept_file_names` makes a list unique.
    """
    stem = "".join(f"%{ord(c):02X}" if c in _UNSAFE_CHARACTERS else c for c in str(concept))
    if not stem or stem.startswith("."):
        stem = "%2E" + stem[1:]
    if len(stem.encode("utf-8", "surrogatepass")) > _MAX_STEM_BYTES:
        digest = hashlib.sha256(str(concept).encode("utf-8", "surrogatepass")).hexdigest()[:16]
        cut = stem.encode("utf-8", "surrogatepass")[:_MAX_STEM_BYTES - 17]
        stem = cut.decode("utf-8", "ignore") + "-" + digest
    return stem + ".png"


def concept_file_names(concepts: list[str], reserved: tuple[str, ...] = ("grid.png",)) -> list[str]:
    """Safe (see `concept_file_name`) and unique file names, one per concept.

    Names that would clash on a case-insensitive file system, or with a file in
    `reserved`, get "~2", "~3", ... before ".png".
    """
    taken = {name.lower() for name in reserved}
    names = []
    for concept in concepts:
        name = concept_file_name(concept)
        stem, count = name[:-4], 1
        while name.lower() in taken:
            count += 1
            name = f"{stem}~{count}.png"
        taken.add(name.lower())
        names.append(name)
    return names


def write_explanations(convis, images: list, names: list[str], concepts: list[str], out: Path, *,
                       method: str = "occlusion", gamma: float = 1.0, padding: str = "noise",
                       seed: int = 0, score: str = "cosine", kind: str = "gradient",
                       strategy: str = "auto",
                       sources: list[str] | None = None,
                       export_wsol: Path | None = None,
                       on_maps: Callable[[], object] | None = None) -> dict:
    """Maps, overlays, grids, maps.npz and summary.json for images and concepts.

    Args:
        convis: the `ConVis` to explain with.
        images: anything `load_images` accepts, N images.
        names: N folder names, one per image.
        concepts: synset names or words (see `ConceptVocabulary.resolve`).
        out: the output folder; gets `<name>/<concept>.png` overlays at each photo's
            size, `<name>/grid.png`, `maps.npz` (`maps` float32 [N, K, S, S] in [0, 1]
            on the centre square the model saw, `concepts` [K]) and `summary.json`.
        method: "occlusion" or "gradient" (gradient maps are min-max normalised per map).
        gamma: the overlay exponent.
        padding, seed: the occlusion padding and its noise seed (SmoothGrad's seed too).
        score, kind: the gradient method's score and kind of map.
        sources: how summary.json names the images (default: `names`).
        export_wsol: also write each map as wsolevaluation scores it
            (`convis_jax.evaluation.export_wsolevaluation`) to
            `<export_wsol>/<concept>/<image id>.npy`, the image id being the file
            name of its source (None: nothing).
        on_maps: called once the maps are computed, before any file is written.

    Returns:
        The summary written to summary.json.
    """
    from convis_jax.core.cache import atomic_write_bytes
    from convis_jax.core.cells import min_max
    from convis_jax.core.images import load_images
    from convis_jax.core.windows import map_to_image
    from convis_jax.pictures.overlays import concept_grid, save_png, white_overlay

    photos = load_images(images)
    resolved = convis.vocabulary.resolve(concepts)
    if method == "occlusion":
        maps = convis.occlusion_maps(photos, resolved, padding=padding, seed=seed)
    else:
        maps = min_max(convis.gradient_maps(photos, resolved, score=score, kind=kind,
                                                strategy=strategy, seed=seed))
    if on_maps is not None:
        on_maps()
    out.mkdir(parents=True, exist_ok=True)
    summary = {"model": convis.model.name,
               "precision": getattr(convis.model, "precision", "") or "the encoder's own",
               "method": method, "concepts": resolved,
               "vocabulary_size": len(convis.vocabulary), "text": convis.bank.text,
               "maps": "maps.npz: maps [N, K, S, S] float32 in [0, 1] on the centre square "
                       "the model saw; concepts [K]", "images": []}
    file_names = concept_file_names(resolved)
    # Titles drawn in the grid: control characters (a NUL, say) shown as escapes.
    titles = ["".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in concept)
              for concept in resolved]
    for n, (photo, name) in enumerate(zip(photos, names)):
        on_photo = map_to_image(maps[n], photo.shape[:2])
        files = {}
        for concept, file_name, m in zip(resolved, file_names, on_photo):
            files[concept] = save_png(white_overlay(photo, m, gamma), out / name / file_name).name
        if export_wsol is not None:
            from convis_jax.evaluation.export import export_wsolevaluation

            for file_name, m in zip(file_names, on_photo):
                export_wsolevaluation(export_wsol / file_name.removesuffix(".png"),
                                      [Path((sources or names)[n]).name], [m])
        grid = concept_grid(photo, on_photo, titles, out / name / "grid.png", gamma=gamma)
        peaks = {c: [int(v) for v in np.unravel_index(np.argmax(m), m.shape)[::-1]]
                 for c, m in zip(resolved, on_photo)}
        summary["images"].append({"image": (sources or names)[n], "size": list(photo.shape[1::-1]),
                                  "folder": name, "overlays": files, "grid": grid.name,
                                  "peak_xy": peaks})
    buffer = io.BytesIO()
    np.savez_compressed(buffer, maps=maps.astype(np.float32), concepts=np.array(resolved))
    atomic_write_bytes(out / "maps.npz", buffer.getvalue())
    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2).encode())
    return summary


def cmd_explain(args) -> None:
    """`explain`: overlays, grids, maps.npz and summary.json for named concepts."""
    from tqdm.auto import tqdm

    from convis_jax.api import resolve_vocabulary

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
        concepts = vocabulary.resolve(args.concepts)  # before the bank: a typo costs no waiting
        stages.set_description("explain: concept bank")
        stages.update()
        convis = _convis(args, model, vocabulary)
        convis.progress = False  # the stage bar speaks for the sweep
        stages.set_description(f"explain: {args.method} maps of {len(photos)} image(s)")
        stages.update()
        names = [_stem(i, p) for i, p in enumerate(args.images)]
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
          f"({model.precision})")


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
    return "\n".join(lines)


# Images decoded at a time by `top`: memory stays flat however many files are listed.
TOP_BATCH = 32


def _check_image_files(paths: list[str]) -> None:
    """Opens every file's header (no decoding), so that a bad path fails before any model work.

    Raises:
        InputError: a missing, empty or unreadable file, or one Pillow does not recognise.
    """
    from PIL import Image, UnidentifiedImageError

    from convis_jax.errors import InputError

    for path in paths:
        if not Path(path).is_file() or Path(path).stat().st_size == 0:
            _load_images([path])  # the loader's own one-line message
        try:
            with Image.open(path):
                pass
        except (UnidentifiedImageError, OSError, ValueError) as err:
            _load_images([path])  # the loader's own one-line message, when it has one
            raise InputError(f"{path!r} is not an image Pillow can read "
                             f"({type(err).__name__}: {err})") from None


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


def cmd_demo(args) -> None:
    """`demo`: scenes, their maps and an explorer page from the bundled model."""
    from convis_jax.api import ConVis
    from convis_jax.models.loading import load_clip
    from convis_jax.pictures.overlays import save_png
    from convis_jax.scenes import make_dataset

    out = _output_folder(args.out)
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
        (out / "maps" / "summary.json").replace(out / "maps" / f"{name}.json")
        (out / "maps" / "maps.npz").replace(out / "maps" / f"{name}.npz")
    page = convis.explore([s.image for s in scenes], out / "explorer", names=names)
    print(f"demo gallery in {out}: scenes, maps/<scene>/grid.png overlays, explorer {page}")


COMMANDS = {"explain": cmd_explain, "top": cmd_top, "bank": cmd_bank, "explore": cmd_explore,
            "atlas": cmd_atlas, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit code (see `run_command`).

    Run as a program (`argv` None), an interrupted run ends at once with exit code 130
    instead of finalising the interpreter while XLA's threads may still be running.
    """
    def dispatch():
        args = build_parser().parse_args(argv)
        COMMANDS[args.command](args)

    if argv is None:
        ignore_interrupts_after_the_run()
    code = run_command(dispatch)
    if code == EXIT_INTERRUPTED and argv is None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
