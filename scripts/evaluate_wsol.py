"""Weakly supervised localisation of concept maps: MaxBoxAcc, MaxBoxAccV2, pointing game.

The paper's experiment (docs/method.md, section 5) on any checkpoint:

    python -m scripts.evaluate_wsol DATA --out results.json \
        [--model FOLDER_OR_HUB_ID] [--method occlusion|gradient] [--concept bird.n.01] \
        [--limit N] [--padding noise|constant] [--aggregation window|webapp] \
        [--protocol convis|wsolevaluation] [--export-wsol DIR]

DATA is a CUB-200-2011 folder (`images.txt`, `bounding_boxes.txt`, `images/`)
or a folder of synthetic scenes (`scenes.json`, written by
`convis_jax.evaluation.scene_folder.write_scene_folder`). CUB maps `bird.n.01` by
default; scenes map every drawn object with its own concept unless
`--concept` names one. Each image is centre-cropped and resized to 224, its
boxes moved the same way.

`--protocol` picks whose rules score the boxes (docs/protocols.md):
"convis" (default) reproduces the ConVis authors' `wsol_evaluation.py`, the
paper's number, on the 224 square; "wsolevaluation" reproduces Choe et al.'s
`BoxEvaluator` on the map as `--export-wsol` writes it (photo resized to
224 x 224, boxes resized the same way) and needs OpenCV
(`pip install "convis_jax[wsol]"`). MaxBoxAccV2 follows the same protocol;
the pointing game is TorchRay's. The JSON report names the protocols.

Per-image results go to `<out>.images.jsonl` as they are done; running the
same command again skips them (`--restart` starts afresh). The summary goes
to `--out` as JSON and a short table to stdout. `--export-wsol DIR` also
writes every map as wsolevaluation's `evaluation.py --scoremap_root DIR`
scores it: 224 x 224, maximum 1, `DIR/<image id>.npy` (or
`DIR/<concept>/<image id>.npy` when several concepts are evaluated).

User mistakes end with one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

from convis_jax.errors import InputError
from convis_jax.programs import add_gradient_options, script_main, script_parser


def build_parser():
    parser = script_parser("evaluate_wsol", __doc__.split("\n\n")[0])
    parser.add_argument("data", help="CUB-200-2011 folder or scene folder")
    parser.add_argument("--out", required=True, help="results JSON file")
    parser.add_argument("--dataset", choices=["auto", "cub", "scenes"], default="auto",
                        help="the folder's layout (auto: scenes.json -> scenes, else CUB)")
    parser.add_argument("--split", choices=["all", "train", "test"], default="all",
                        help="CUB images to use (train/test need train_test_split.txt)")
    parser.add_argument("--concept", default=None,
                        help="synset (or word with one sense) to map; default bird.n.01 for CUB, "
                             "every drawn object's own concept for scenes")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--vocabulary", default=None,
                        help="physical_objects, all_nouns, or a vocabulary file (default: the "
                             "model's own vocabulary, else physical_objects)")
    parser.add_argument("--method", choices=["occlusion", "gradient"], default="occlusion")
    parser.add_argument("--padding", choices=["noise", "constant"], default="noise",
                        help="occlusion: padding of the image (the paper: noise)")
    parser.add_argument("--aggregation", choices=["window", "webapp"], default="window",
                        help="occlusion: Algorithm 1 (window) or the authors' web app order")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the padding noise (and SmoothGrad), per image")
    add_gradient_options(parser)
    parser.add_argument("--reduce", choices=["absmax", "l2"], default="absmax",
                        help="gradient: channel reduction")
    parser.add_argument("--tolerance", type=float, default=15.0,
                        help="pointing-game tolerance in pixels of the 224 square")
    parser.add_argument("--protocol", choices=["convis", "wsolevaluation"], default="convis",
                        help="rules of MaxBoxAcc and MaxBoxAccV2: the ConVis authors' script "
                             "(the paper's number) or wsolevaluation's BoxEvaluator (needs "
                             "OpenCV: the wsol extra); see docs/protocols.md")
    parser.add_argument("--export-wsol", "--export", dest="export", default=None, metavar="DIR",
                        help="also write every map for wsolevaluation's evaluator: "
                             "DIR/<image id>.npy, 224 x 224, maximum 1")
    return parser


def read_items(args) -> tuple[str, list]:
    """The dataset's kind and its items, before any model is loaded."""
    from convis_jax.evaluation import (
        WSOL_CONCEPT,
        cub_items,
        datasets,
        scene_folder,
        scene_items,
    )

    root = Path(args.data)
    if not root.is_dir():
        raise InputError(f"expected a data folder, found no folder at {args.data!r}")
    kind = args.dataset
    if kind == "auto":
        kind = "scenes" if (root / scene_folder.SCENES_FILE).is_file() else "cub"
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit: expected a positive number of images, found {args.limit}")
    if kind == "cub":
        split = None if args.split == "all" else args.split
        records = datasets.read_cub(root, split=split)[: args.limit]
        items = cub_items(records, args.concept or WSOL_CONCEPT)
    else:
        if args.split != "all":
            raise InputError("--split: expected 'all' for a scene folder, which has no splits")
        records = scene_folder.read_scene_folder(root)[: args.limit]
        items = scene_items(records, args.concept)
    if not items:
        raise InputError(f"expected images with the concept {args.concept!r} in {args.data!r}, "
                         f"found none")
    return kind, items


def resolve_concepts(vocabulary, items: list) -> list:
    """Items with canonical synset names; every concept must be in the vocabulary."""
    from dataclasses import replace

    names = sorted({item.concept for item in items})
    canonical = {}
    for name in names:
        resolved = vocabulary.resolve([name])
        if len(resolved) != 1:
            raise InputError(f"--concept: expected one synset, found {len(resolved)} for "
                             f"{name!r} ({', '.join(resolved)}); name the synset")
        canonical[name] = resolved[0]
    return [replace(item, concept=canonical[item.concept]) for item in items]


def run(args) -> dict:
    from convis_jax.api import ConVis
    from convis_jax.evaluation import (
        POINTING_PROTOCOL,
        ResultLog,
        default_log_path,
        format_wsol_table,
        gradient_map_fn,
        occlusion_map_fn,
        run_wsol,
        summarise_wsol,
        write_json,
        wsol_report,
    )
    from convis_jax.models.loading import load_model

    if args.seed < 0:
        raise InputError(f"--seed: expected an integer >= 0, found {args.seed}")
    if not args.tolerance >= 0:
        raise InputError(f"--tolerance: expected a number of pixels >= 0, found {args.tolerance}")
    if args.protocol == "wsolevaluation":
        from convis_jax.evaluation.protocols import require_opencv

        try:
            require_opencv()
        except ImportError as err:
            raise InputError(f"--protocol wsolevaluation: {err}") from None
    kind, items = read_items(args)
    model = load_model(args.model, dtype=args.dtype)
    convis = ConVis(model, args.vocabulary, text=args.text, progress=not args.quiet)
    items = resolve_concepts(convis.vocabulary, items)
    concepts = sorted({item.concept for item in items})

    if args.method == "occlusion":
        options = {"padding": args.padding, "aggregation": args.aggregation, "seed": args.seed}
        map_fn = occlusion_map_fn(convis, **options)
    else:
        options = {"score": args.score, "kind": args.kind, "reduce": args.reduce,
                   "strategy": args.strategy, "seed": args.seed}
        map_fn = gradient_map_fn(convis, **options)
    settings = {"task": "wsol", "model_fingerprint": model.fingerprint, "dtype": args.dtype,
                "vocabulary": convis.vocabulary.fingerprint(), "text": args.text,
                "method": args.method, **options, "tolerance": args.tolerance,
                "protocol": args.protocol}
    log_path = Path(args.log) if args.log else default_log_path(args.out)
    log = ResultLog(log_path, settings, restart=args.restart)
    results = run_wsol(items, map_fn, log, protocol=args.protocol, tolerance=args.tolerance,
                       export_dir=args.export,
                       export_by_concept=len(concepts) > 1, progress=not args.quiet)

    summaries = {"all": summarise_wsol(results)}
    if len(concepts) > 1:
        for concept in concepts:
            summaries[concept] = summarise_wsol([r for r in results if r.concept == concept])
    document = {
        "task": "wsol",
        "data": str(args.data),
        "dataset": kind,
        "model": model.name,
        "settings": settings,
        "concepts": concepts,
        "images": len({item.image_id for item in items}),
        "log": str(log_path),
        "protocol": args.protocol,
        "pointing_protocol": POINTING_PROTOCOL,
        "export": args.export,
        "results": {label: wsol_report(s) for label, s in summaries.items()},
    }
    write_json(args.out, document)
    print(f"protocol: {args.protocol} (MaxBoxAcc, MaxBoxAccV2); pointing game: "
          f"{POINTING_PROTOCOL}")
    print(format_wsol_table(summaries))
    print(f"results in {args.out}; per-image results in {log_path}")
    return document


def main(argv: list[str] | None = None) -> int:
    return script_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
