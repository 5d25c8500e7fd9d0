"""Weakly supervised localisation: what to evaluate, per-image hits, their summary, the loop."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from convis_jax.core.images import load_image
from convis_jax.core.windows import map_to_image
from convis_jax.errors import InputError
from convis_jax.evaluation import metrics
from convis_jax.evaluation.boxes import boxes_to_square
from convis_jax.evaluation.datasets import CubRecord, SceneRecord
from convis_jax.evaluation.export import export_wsolevaluation, wsolevaluation_path
from convis_jax.evaluation.logs import ResultLog
from convis_jax.evaluation.maps import SQUARE, MapFn

#: The concept of the paper's CUB-200-2011 experiment.
WSOL_CONCEPT = "bird.n.01"

#: Pointing-game tolerance in pixels of the 224 square (Zhang et al. use 15).
POINTING_TOLERANCE = 15

# ---------------------------------------------------------------------------
# Localisation: what to evaluate


@dataclasses.dataclass(frozen=True, eq=False)
class WsolItem:
    """One map to evaluate: an image, a concept, and that concept's boxes.

    Attributes:
        image_id: the image's path relative to the dataset's image folder, with
            "/" separators (wsolevaluation's image id), e.g.
            "001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg".
        path: the image file.
        concept: the synset whose map is scored.
        boxes: float64 [K, 4] ground-truth boxes of the concept in the photo's
            pixels, (x0, y0, x1, y1) with exclusive ends, K >= 1.
    """

    image_id: str
    path: Path
    concept: str
    boxes: np.ndarray

    @property
    def key(self) -> str:
        """The item's key in a `ResultLog`."""
        return item_key(self.image_id, self.concept)


def item_key(image_id: str, concept: str) -> str:
    """The `ResultLog` key of (image, concept): "<image_id>#<concept>"."""
    return f"{image_id}#{concept}"


def cub_items(records: Iterable[CubRecord], concept: str = WSOL_CONCEPT) -> list[WsolItem]:
    """One item per CUB-200-2011 image: the concept's map against the bird's box.

    Args:
        records: from `convis_jax.evaluation.datasets.read_cub`.
        concept: the synset to map; every image's boxes count as its boxes.

    Returns:
        The items, in the records' order.
    """
    return [
        WsolItem(
            image_id=f"{r.path.parent.name}/{r.path.name}",
            path=r.path,
            concept=concept,
            boxes=np.asarray(r.boxes, dtype=np.float64).reshape(-1, 4),
        )
        for r in records
    ]


def scene_items(records: Iterable[SceneRecord], concept: str | None = None) -> list[WsolItem]:
    """Items of a scene folder: each drawn object's concept against its box.

    Args:
        records: from `convis_jax.evaluation.datasets.read_scene_folder`.
        concept: only objects of this synset (images without one are left
            out); None evaluates every object of every image, each with its
            own concept.

    Returns:
        The items, by image in the records' order, then by object.
    """
    items = []
    for r in records:
        for name, box in zip(r.concepts, r.boxes):
            if concept is None or name == concept:
                items.append(
                    WsolItem(r.image_id, r.path, name, np.asarray([box], dtype=np.float64))
                )
    return items


# ---------------------------------------------------------------------------
# Localisation: per-image results and their summary


@dataclasses.dataclass(frozen=True, eq=False)
class Localisation:
    """How one map localises its concept: the per-image step of the metrics.

    Attributes:
        image_id: the image's id.
        concept: the mapped synset.
        boxes: float64 [K, 4], the ground truth on the 224 square (empty boxes
            where the centre crop cut the object away).
        hits: bool [T], MaxBoxAcc hits at the T = 100 thresholds
            `metrics.CAM_THRESHOLDS` (largest component, IoU > 0.5).
        hits_v2: bool [3, T], MaxBoxAccV2 hits (all components, IoU >= d for
            d in `metrics.V2_IOU_THRESHOLDS`).
        pointing: the pointing-game hit in [0, 1] (a fraction when the map's
            maximum is tied, see `metrics.pointing_game`).
    """

    image_id: str
    concept: str
    boxes: np.ndarray
    hits: np.ndarray
    hits_v2: np.ndarray
    pointing: float

    @property
    def cut_away(self) -> bool:
        """Whether every ground-truth box lies outside the centre crop."""
        b = self.boxes
        return bool(np.all((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])))

    def to_json(self) -> dict:
        """A JSON-able dict; hits as lists of 0/1 per threshold."""
        return {
            "image_id": self.image_id,
            "concept": self.concept,
            "boxes": self.boxes.tolist(),
            "hits": self.hits.astype(int).tolist(),
            "hits_v2": self.hits_v2.astype(int).tolist(),
            "pointing": float(self.pointing),
        }

    @classmethod
    def from_json(cls, data: dict) -> Localisation:
        """Reads back `to_json`'s dict.

        Raises:
            InputError: when a field is missing or has the wrong shape.
        """
        t = len(metrics.CAM_THRESHOLDS)
        try:
            result = cls(
                image_id=str(data["image_id"]),
                concept=str(data["concept"]),
                boxes=np.asarray(data["boxes"], dtype=np.float64).reshape(-1, 4),
                hits=np.asarray(data["hits"], dtype=bool),
                hits_v2=np.asarray(data["hits_v2"], dtype=bool),
                pointing=float(data["pointing"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(
                f"expected a localisation record, found {data!r:.200} ({err})"
            ) from None
        v2 = (len(metrics.V2_IOU_THRESHOLDS), t)
        if result.hits.shape != (t,) or result.hits_v2.shape != v2:
            raise InputError(
                f"expected hits of shape ({t},) and hits_v2 of shape {v2}, found "
                f"{result.hits.shape} and {result.hits_v2.shape} for {result.image_id!r}"
            )
        return result


def localise(
    saliency: np.ndarray,
    boxes: np.ndarray,
    *,
    image_id: str = "",
    concept: str = "",
    tolerance: float = POINTING_TOLERANCE,
) -> Localisation:
    """Scores one map against its ground truth (both on the same square).

    Args:
        saliency: float [H, W] in [0, 1], high where the concept is.
        boxes: float [K, 4] ground truth in the map's pixels, K >= 1.
        image_id: recorded in the result.
        concept: recorded in the result.
        tolerance: pointing-game tolerance in pixels.

    Returns:
        The `Localisation`.

    Raises:
        InputError: for a map outside [0, 1] or malformed boxes.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    hits = metrics.localisation_hits(
        saliency, boxes, iou_thresholds=(0.5,), all_components=False, strict=True
    )[0]
    hits_v2 = metrics.localisation_hits(
        saliency,
        boxes,
        iou_thresholds=metrics.V2_IOU_THRESHOLDS,
        all_components=True,
        strict=False,
    )
    pointing = metrics.pointing_game([saliency], [boxes], tolerance=tolerance).hits[0]
    return Localisation(image_id, concept, boxes, hits, hits_v2, float(pointing))


@dataclasses.dataclass(frozen=True)
class WsolSummary:
    """The localisation metrics of a set of maps.

    Attributes:
        count: number of maps (image, concept pairs).
        max_box_acc: MaxBoxAcc, the paper's protocol.
        max_box_acc_v2: MaxBoxAccV2 of Choe et al.
        pointing_game: mean pointing-game hit, in [0, 1].
        cut_away: maps whose every ground-truth box lies outside the centre
            crop (they count as misses).
    """

    count: int
    max_box_acc: metrics.MaxBoxAccResult
    max_box_acc_v2: metrics.MaxBoxAccV2Result
    pointing_game: float
    cut_away: int


def summarise_wsol(results: Sequence[Localisation]) -> WsolSummary:
    """MaxBoxAcc, MaxBoxAccV2 and the pointing game from per-image results.

    Args:
        results: at least one `Localisation`.

    Returns:
        The `WsolSummary`.

    Raises:
        InputError: when `results` is empty.
    """
    if not results:
        raise InputError("expected at least one localisation result, found none")
    hits = np.stack([r.hits for r in results])
    hits_v2 = np.stack([r.hits_v2 for r in results])
    per_iou = tuple(
        metrics.max_box_acc_from_hits(hits_v2[:, i], iou_threshold=d)
        for i, d in enumerate(metrics.V2_IOU_THRESHOLDS)
    )
    return WsolSummary(
        count=len(results),
        max_box_acc=metrics.max_box_acc_from_hits(hits, iou_threshold=0.5),
        max_box_acc_v2=metrics.MaxBoxAccV2Result(
            value=float(np.mean([r.value for r in per_iou])), per_iou=per_iou
        ),
        pointing_game=float(np.mean([r.pointing for r in results])),
        cut_away=sum(r.cut_away for r in results),
    )


def wsol_report(summary: WsolSummary) -> dict:
    """The JSON-able form of a `WsolSummary` (the curve included)."""
    acc = summary.max_box_acc
    return {
        "count": summary.count,
        "boxes_outside_crop": summary.cut_away,
        "max_box_acc": {
            "value": acc.value,
            "best_threshold": acc.best_threshold,
            "iou_threshold": acc.iou_threshold,
            "curve": acc.curve.tolist(),
        },
        "max_box_acc_v2": {
            "value": summary.max_box_acc_v2.value,
            "per_iou": [
                {
                    "iou_threshold": r.iou_threshold,
                    "value": r.value,
                    "best_threshold": r.best_threshold,
                }
                for r in summary.max_box_acc_v2.per_iou
            ],
        },
        "pointing_game": summary.pointing_game,
    }


def format_wsol_table(summaries: dict[str, WsolSummary]) -> str:
    """A short text table, one row per label (e.g. "all" and each concept)."""
    width = max(len("concept"), *(len(label) for label in summaries))
    lines = [f"{'concept':<{width}}  {'maps':>5}  {'MaxBoxAcc':>9}  {'(t)':>5}  "
             f"{'MaxBoxAccV2':>11}  {'pointing':>8}"]
    for label, s in summaries.items():
        lines.append(
            f"{label:<{width}}  {s.count:>5}  {s.max_box_acc.value:>9.3f}  "
            f"{s.max_box_acc.best_threshold:>5.2f}  {s.max_box_acc_v2.value:>11.3f}  "
            f"{s.pointing_game:>8.3f}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Localisation: the loop


def run_wsol(
    items: Sequence[WsolItem],
    map_fn: MapFn,
    log: ResultLog,
    *,
    tolerance: float = POINTING_TOLERANCE,
    export_dir: str | Path | None = None,
    export_by_concept: bool = False,
    progress: bool = True,
) -> list[Localisation]:
    """Maps and scores every item not yet in the log; returns every item's result.

    Images are visited in order; all pending concepts of one image come from
    one `map_fn` call. Each item's result is appended to `log` (and its map
    exported) as soon as it is known, so an interrupted run loses at most one
    image. An item counts as done when the log has it and, when exporting,
    its `.npy` exists.

    Args:
        items: what to evaluate (`cub_items`, `scene_items`).
        map_fn: computes the maps of one image (`occlusion_map_fn`, `gradient_map_fn`).
        log: where results go and where earlier runs' results are found.
        tolerance: pointing-game tolerance in pixels of the 224 square.
        export_dir: also write each map on its photo in the wsolevaluation
            layout (`export_wsolevaluation`); None writes nothing.
        export_by_concept: write to `export_dir/<concept>/` (several
            concepts per image) instead of `export_dir/`.
        progress: show a progress bar over images.

    Returns:
        One `Localisation` per item, in the items' order.

    Raises:
        InputError: when an image is unreadable or `map_fn` returns maps of
            the wrong shape.
    """

    def export_root(item: WsolItem) -> Path | None:
        if export_dir is None:
            return None
        return Path(export_dir) / item.concept if export_by_concept else Path(export_dir)

    def done(item: WsolItem) -> bool:
        root = export_root(item)
        exported = root is None or wsolevaluation_path(root, item.image_id).is_file()
        return item.key in log and exported

    groups: dict[str, list[WsolItem]] = {}
    for item in items:
        groups.setdefault(item.image_id, []).append(item)
    pending = {i: [it for it in g if not done(it)] for i, g in groups.items()}
    pending = {i: g for i, g in pending.items() if g}
    bar = tqdm(total=len(groups), initial=len(groups) - len(pending), desc="localisation",
               unit="image", disable=not progress)
    with bar:
        for image_id, todo in pending.items():
            photo = load_image(todo[0].path)
            maps = np.asarray(map_fn(photo, [it.concept for it in todo], image_id))
            if maps.shape != (len(todo), SQUARE, SQUARE):
                raise InputError(
                    f"expected maps of shape ({len(todo)}, {SQUARE}, {SQUARE}) for "
                    f"{image_id!r}, found {maps.shape}"
                )
            for item, saliency in zip(todo, maps):
                square_boxes = boxes_to_square(item.boxes, photo.shape[:2], SQUARE)
                result = localise(saliency, square_boxes, image_id=image_id,
                                  concept=item.concept, tolerance=tolerance)
                root = export_root(item)
                if root is not None:
                    export_wsolevaluation(root, [image_id],
                                          [map_to_image(saliency, photo.shape[:2])])
                log.append(item.key, result.to_json())
            bar.update(1)
    return [Localisation.from_json(log.get(item.key)) for item in items]


