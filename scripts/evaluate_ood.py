"""Out-of-distribution detection with WordNet concepts: AUROC of the naive and hierarchy scores.

The paper's experiment (docs/method.md, section 5) on any checkpoint:

    python -m scripts.evaluate_ood DATA --out results.json \
        [--model FOLDER_OR_HUB_ID] [--pairs all | ID/OOD ...] \
        [--vocabulary physical_objects|all_nouns|classes|FILE] [--limit N]

DATA holds ImageNet-style class folders named by WordNet id (`n01530575/`,
...). For each ID/OOD pair (default: the paper's six, those with images on
both sides), classes under the ID synset are in-distribution and classes
under the OOD synset out-of-distribution. Whole images are scored (the
model's own preprocessing, no windows): "naive" is the cosine with the ID
synset's text, "hierarchy" the maximum cosine over the leaves of the ID
synset's subtree in the vocabulary.

The vocabulary decides those leaves. The default, `physical_objects`, is the
paper's (7,080 synsets; it holds all six ID synsets). `classes` builds one
from the data's own class synsets plus the pairs' synsets: the leaves are
then exactly the ID classes present, a setting that knows the test classes.
Only the texts of the ID synsets and their leaves are embedded.

Per-image scores go to `<out>.images.jsonl` as they are computed; running
the same command again skips them (`--restart` starts afresh).

User mistakes end with one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

from convis_jax.errors import InputError
from convis_jax.programs import script_main, script_parser


def build_parser():
    parser = script_parser("evaluate_ood", __doc__.split("\n\n")[0])
    parser.add_argument("data", help="folder of class folders named by WordNet id")
    parser.add_argument("--out", required=True, help="results JSON file")
    parser.add_argument("--pairs", nargs="+", default=["all"], metavar="PAIR",
                        help="'all' (the paper's six pairs) or pairs like "
                             "bird.n.01/hunting_dog.n.01")
    parser.add_argument("--vocabulary", default="physical_objects",
                        help="physical_objects (the paper's), all_nouns, classes (the data's "
                             "classes and the pairs' synsets), or a vocabulary file")
    parser.add_argument("--limit", type=int, default=None,
                        help="at most N images per class folder (the first N by name)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per embedding call")
    return parser


def parse_pairs(texts: list[str]) -> tuple:
    """`OodPair`s from 'all' or 'ID/OOD' strings."""
    from convis_jax.evaluation.datasets import OOD_PRESETS, OodPair

    if texts == ["all"]:
        return OOD_PRESETS
    pairs = []
    for text in texts:
        parts = text.split("/")
        if len(parts) != 2 or not all(parts):
            raise InputError(f"--pairs: expected 'all' or pairs like bird.n.01/hunting_dog.n.01, "
                             f"found {text!r}")
        pairs.append(OodPair(parts[0], parts[1]))
    return tuple(pairs)


def limit_per_class(records: list, limit: int | None) -> list:
    """The first `limit` records of every class (records come sorted by class, then name)."""
    if limit is None:
        return records
    if limit < 1:
        raise InputError(f"--limit: expected a positive number of images, found {limit}")
    kept, seen = [], {}
    for record in records:
        seen[record.wnid] = seen.get(record.wnid, 0) + 1
        if seen[record.wnid] <= limit:
            kept.append(record)
    return kept


def load_vocabulary(choice: str, records: list, pairs: tuple, wordnet):
    """The vocabulary named by --vocabulary ('classes' is built from the data)."""
    from convis_jax.api import resolve_vocabulary
    from convis_jax.core.vocabulary import ConceptVocabulary

    if choice == "classes":
        names = {r.synset for r in records}
        names |= {p.id_synset for p in pairs} | {p.ood_synset for p in pairs}
        return ConceptVocabulary.from_synsets(sorted(names), wordnet=wordnet)
    return resolve_vocabulary(choice)


def run(args) -> dict:
    from convis_jax.core.wordnet import load_wordnet
    from convis_jax.evaluation import (
        ResultLog,
        default_log_path,
        format_ood_table,
        ood_report,
        pair_name,
        run_ood,
        write_json,
    )
    from convis_jax.evaluation.datasets import read_imagenet_folders
    from convis_jax.models.loading import load_model

    pairs = parse_pairs(args.pairs)
    if args.batch_size < 1:
        raise InputError(f"--batch-size: expected a positive number, found {args.batch_size}")
    if not Path(args.data).is_dir():
        raise InputError(f"expected a folder of class folders, found no folder at {args.data!r}")
    wordnet = load_wordnet()
    records = limit_per_class(read_imagenet_folders(args.data, wordnet), args.limit)
    vocabulary = load_vocabulary(args.vocabulary, records, pairs, wordnet)
    model = load_model(args.model, dtype=args.dtype)

    settings = {"task": "ood", "model_fingerprint": model.fingerprint, "dtype": args.dtype,
                "vocabulary": vocabulary.fingerprint(), "text": args.text,
                "pairs": [pair_name(p) for p in pairs]}
    log_path = Path(args.log) if args.log else default_log_path(args.out)
    log = ResultLog(log_path, settings, restart=args.restart)
    result = run_ood(model, vocabulary, records, pairs, log, text=args.text,
                     batch_size=args.batch_size, progress=not args.quiet, wordnet=wordnet)
    document = {
        "task": "ood",
        "data": str(args.data),
        "model": model.name,
        "settings": settings,
        "vocabulary": {"source": args.vocabulary, "synsets": len(vocabulary)},
        **ood_report(result),
        "log": str(log_path),
    }
    write_json(args.out, document)
    print(format_ood_table(result))
    print(f"results in {args.out}; per-image scores in {log_path}")
    return document


def main(argv: list[str] | None = None) -> int:
    return script_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
