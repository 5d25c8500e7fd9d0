"""Out-of-distribution detection (docs/method.md, section 5): whole images scored against an ID synset."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from convis_jax.errors import ConceptError, InputError
from convis_jax.evaluation.datasets import ImageNetRecord, OodPair, split_ood
from convis_jax.evaluation.logs import ResultLog

# ---------------------------------------------------------------------------
# Out-of-distribution detection


@dataclasses.dataclass(frozen=True, eq=False)
class OodConcepts:
    """The text embeddings that score images against one ID synset.

    Attributes:
        id_synset: the in-distribution synset.
        leaves: the leaves of its subtree in the vocabulary (itself when it
            has no children there).
        id_embedding: float32 [d], unit text embedding of `id_synset`.
        leaf_embeddings: float32 [L, d], unit text embeddings of `leaves`.
    """

    id_synset: str
    leaves: tuple[str, ...]
    id_embedding: np.ndarray
    leaf_embeddings: np.ndarray


def ood_concepts(model, vocabulary, id_synset: str, *, text: str = "definition") -> OodConcepts:
    """Embeds the ID synset and the leaves of its subtree (only those texts).

    Args:
        model: a `ClipModel` (its `embed_texts` gives unit embeddings).
        vocabulary: a `ConceptVocabulary` that contains `id_synset`.
        id_synset: e.g. "bird.n.01".
        text: the text mode ("definition", the paper's, "lemmas" or a template).

    Returns:
        `OodConcepts`.

    Raises:
        ConceptError: when the vocabulary lacks `id_synset`.
    """
    if id_synset not in vocabulary:
        raise ConceptError(
            f"expected the ID synset {id_synset} in the vocabulary ({len(vocabulary)} "
            f"synsets), found it missing; use a vocabulary that contains it"
        )
    leaves = vocabulary.leaves(id_synset)
    texts = vocabulary.texts(text)
    wanted = [id_synset, *leaves]
    embeddings = np.asarray(model.embed_texts([texts[vocabulary.index(n)] for n in wanted]),
                            dtype=np.float32)
    return OodConcepts(id_synset, tuple(leaves), embeddings[0], embeddings[1:])


@dataclasses.dataclass(frozen=True, eq=False)
class OodScores:
    """OOD scores of N images; higher means more in-distribution.

    Attributes:
        naive: float64 [N], cosine with the ID synset.
        hierarchy: float64 [N], maximum cosine over the leaves of its subtree.
    """

    naive: np.ndarray
    hierarchy: np.ndarray


def ood_scores(image_embeddings: np.ndarray, concepts: OodConcepts) -> OodScores:
    """Scores whole-image embeddings against an ID synset (docs/method.md, section 5).

    Args:
        image_embeddings: float [N, d], unit image embeddings.
        concepts: from `ood_concepts`, same d.

    Returns:
        `OodScores`.

    Raises:
        InputError: when the embeddings are not [N, d].
    """
    e = np.asarray(image_embeddings, dtype=np.float64)
    d = concepts.id_embedding.shape[0]
    if e.ndim != 2 or e.shape[1] != d:
        raise InputError(f"image_embeddings: expected shape [N, {d}], found {e.shape}")
    naive = e @ concepts.id_embedding.astype(np.float64)
    hierarchy = (e @ concepts.leaf_embeddings.astype(np.float64).T).max(axis=1)
    return OodScores(naive=naive, hierarchy=hierarchy)


def pair_name(pair: OodPair) -> str:
    """"<ID synset>/<OOD synset>", the pair's name in logs and reports."""
    return f"{pair.id_synset}/{pair.ood_synset}"


def image_key(record: ImageNetRecord) -> str:
    """An ImageNet-style image's key: "<wnid>/<file name>"."""
    return f"{record.wnid}/{record.path.name}"


@dataclasses.dataclass(frozen=True, eq=False)
class OodPairResult:
    """One ID/OOD experiment.

    Attributes:
        pair: the ID and OOD synsets.
        leaves: the leaves the hierarchy score maximises over.
        id_images, ood_images: the image keys of each side.
        naive_id, naive_ood: float64 [N_id], [N_ood], naive scores per side.
        hierarchy_id, hierarchy_ood: hierarchy scores per side.
        auroc_naive, auroc_hierarchy: AUROC of each score, in [0, 1].
    """

    pair: OodPair
    leaves: tuple[str, ...]
    id_images: tuple[str, ...]
    ood_images: tuple[str, ...]
    naive_id: np.ndarray
    naive_ood: np.ndarray
    hierarchy_id: np.ndarray
    hierarchy_ood: np.ndarray
    auroc_naive: float
    auroc_hierarchy: float


@dataclasses.dataclass(frozen=True)
class OodRun:
    """The experiments of one OOD run.

    Attributes:
        results: one per pair with images on both sides.
        skipped: (pair, reason) for the pairs left out.
    """

    results: tuple[OodPairResult, ...]
    skipped: tuple[tuple[OodPair, str], ...]


def run_ood(
    model,
    vocabulary,
    records: Sequence[ImageNetRecord],
    pairs: Sequence[OodPair],
    log: ResultLog,
    *,
    text: str = "definition",
    batch_size: int = 32,
    progress: bool = True,
    wordnet=None,
) -> OodRun:
    """Scores every image of every pair not yet in the log; AUROC per pair.

    Each image is embedded once, whatever the number of pairs it belongs to;
    images in no pair are not embedded. Results are appended to `log` batch
    by batch: {"image": key, "scores": {pair name: {"side": "id" | "ood",
    "naive": z, "hierarchy": z}}}.

    Args:
        model: a `ClipModel`.
        vocabulary: a `ConceptVocabulary` holding every pair's ID synset.
        records: from `read_imagenet_folders`.
        pairs: the experiments (e.g. `OOD_PRESETS`).
        log: where results go and where earlier runs' results are found.
        text: the concept text mode.
        batch_size: images per embedding call.
        progress: show a progress bar.
        wordnet: an nltk WordNet reader; None opens the bundled one.

    Returns:
        `OodRun`: pairs without images on one side are skipped, with a reason.

    Raises:
        InputError: when no pair has images on both sides, or an image is unreadable.
        ConceptError: when the vocabulary lacks an ID synset.
    """
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise InputError(f"batch_size: expected an integer >= 1, found {batch_size!r}")
    roles: dict[str, dict[str, str]] = {}
    paths: dict[str, Path] = {}
    active, skipped = [], []
    for pair in pairs:
        split = split_ood(records, pair, wordnet)
        if not split.in_distribution or not split.out_of_distribution:
            missing = "ID" if not split.in_distribution else "OOD"
            skipped.append((pair, f"no {missing} images"))
            continue
        active.append(pair)
        for side, members in (("id", split.in_distribution), ("ood", split.out_of_distribution)):
            for record in members:
                key = image_key(record)
                roles.setdefault(key, {})[pair_name(pair)] = side
                paths[key] = record.path
    if not active:
        classes = sorted({r.synset for r in records})
        raise InputError(
            f"expected images on both sides of at least one ID/OOD pair, found none for "
            f"{', '.join(pair_name(p) for p in pairs)} among the classes {classes[:8]}"
            + (" ..." if len(classes) > 8 else "")
        )
    concepts = {pair_name(p): ood_concepts(model, vocabulary, p.id_synset, text=text)
                for p in active}

    todo = [key for key in roles if key not in log]
    with tqdm(total=len(roles), initial=len(roles) - len(todo), desc="OOD scores",
              unit="image", disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            embeddings = model.embed_images([paths[k] for k in batch], batch_size=batch_size)
            for key, embedding in zip(batch, embeddings):
                scores = {}
                for name, side in roles[key].items():
                    s = ood_scores(embedding[None], concepts[name])
                    scores[name] = {"side": side, "naive": float(s.naive[0]),
                                    "hierarchy": float(s.hierarchy[0])}
                log.append(key, {"image": key, "scores": scores})
            bar.update(len(batch))

    results = []
    for pair in active:
        name = pair_name(pair)
        sides: dict[str, list[tuple[str, float, float]]] = {"id": [], "ood": []}
        for key, role in roles.items():
            if name in role:
                entry = log.get(key)["scores"][name]
                sides[role[name]].append((key, entry["naive"], entry["hierarchy"]))
        ids, oods = sides["id"], sides["ood"]
        naive_id = np.array([s[1] for s in ids])
        naive_ood = np.array([s[1] for s in oods])
        hier_id = np.array([s[2] for s in ids])
        hier_ood = np.array([s[2] for s in oods])
        results.append(
            OodPairResult(
                pair=pair,
                leaves=concepts[name].leaves,
                id_images=tuple(s[0] for s in ids),
                ood_images=tuple(s[0] for s in oods),
                naive_id=naive_id,
                naive_ood=naive_ood,
                hierarchy_id=hier_id,
                hierarchy_ood=hier_ood,
                auroc_naive=auroc(naive_id, naive_ood),
                auroc_hierarchy=auroc(hier_id, hier_ood),
            )
        )
    return OodRun(results=tuple(results), skipped=tuple(skipped))


def ood_report(run: OodRun) -> dict:
    """The JSON-able form of an `OodRun` (per-image scores live in the log)."""
    return {
        "pairs": [
            {
                "id_synset": r.pair.id_synset,
                "ood_synset": r.pair.ood_synset,
                "n_id": len(r.id_images),
                "n_ood": len(r.ood_images),
                "leaves": list(r.leaves),
                "auroc": {"naive": r.auroc_naive, "hierarchy": r.auroc_hierarchy},
            }
            for r in run.results
        ],
        "skipped_pairs": [
            {"id_synset": p.id_synset, "ood_synset": p.ood_synset, "reason": reason}
            for p, reason in run.skipped
        ],
    }


def format_ood_table(run: OodRun) -> str:
    """A short text table: one row per pair, AUROC of both scores."""
    names = [f"{r.pair.id_synset} / {r.pair.ood_synset}" for r in run.results]
    width = max(len("ID / OOD"), *(len(n) for n in names))
    lines = [f"{'ID / OOD':<{width}}  {'n_id':>5}  {'n_ood':>5}  {'naive':>6}  {'hierarchy':>9}"]
    for name, r in zip(names, run.results):
        lines.append(f"{name:<{width}}  {len(r.id_images):>5}  {len(r.ood_images):>5}  "
                     f"{r.auroc_naive:>6.3f}  {r.auroc_hierarchy:>9.3f}")
    for pair, reason in run.skipped:
        lines.append(f"{pair.id_synset} / {pair.ood_synset}: skipped ({reason})")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# AUROC


def auroc(scores_id: np.ndarray, scores_ood: np.ndarray) -> float:
    """Area under the ROC curve for telling ID from OOD samples by score.

    AUROC = P(s_id > s_ood) + 1/2 P(s_id = s_ood) over all pairs, i.e. the
    Mann-Whitney U statistic over n_id n_ood, with ties counted 1/2 (the
    convention of the trapezoid ROC area, as in scikit-learn). Higher
    scores are meant to indicate in-distribution; 0.5 is chance. Computed
    from average ranks in O(n log n).

    Args:
      scores_id: float array [N_id], scores of in-distribution samples.
      scores_ood: float array [N_ood], scores of out-of-distribution samples.

    Returns:
      AUROC in [0, 1].

    Raises:
      InputError: when either array is empty, not 1-D, or not finite.
    """
    pos = np.asarray(scores_id, dtype=np.float64)
    neg = np.asarray(scores_ood, dtype=np.float64)
    for name, arr in (("scores_id", pos), ("scores_ood", neg)):
        if arr.ndim != 1 or arr.size == 0:
            raise InputError(f"{name}: expected a non-empty 1-D array, found shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise InputError(f"{name}: expected finite scores, found NaN or inf")
    both = np.concatenate([pos, neg])
    _, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
    # 1-based average rank of every distinct value: tied values share the
    # mean of the ranks they occupy.
    last = np.cumsum(counts)
    avg_rank = last - (counts - 1) / 2.0
    rank_sum = avg_rank[inverse[: pos.size]].sum()
    u = rank_sum - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))
