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
from convis_jax.evaluation import localisation
from convis_jax.evaluation.boxes import (
    boxes_to_square,
    convis_square_boxes,
    wsolevaluation_boxes,
)
from convis_jax.evaluation.datasets import CubRecord
from convis_jax.evaluation.export import (
    export_wsolevaluation,
    wsolevaluation_map,
    wsolevaluation_path,
)
from convis_jax.evaluation.logs import ResultLog
from convis_jax.evaluation.maps import SQUARE, MapFn
from convis_jax.evaluation.pointing import pointing_game
from convis_jax.evaluation.scene_folder import SceneRecord

#: The concept of the paper's CUB-200-2011 experiment.
WSOL_CONCEPT = "bird.n.01"

#: Pointing-game tolerance in pixels of the 224 square (Zhang et al. use 15).
POINTING_TOLERANCE = 15

#: The pointing game's protocol in a localisation run (`pointing_game`).
POINTING_PROTOCOL = "torchray"

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
        records: from `convis_jax.evaluation.scene_folder.read_scene_folder`.
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
            `localisation.CAM_THRESHOLDS` (one box, IoU 0.5) under `protocol`.
        hits_v2: bool [3, T], MaxBoxAccV2 hits (all boxes, IoU thresholds
            `localisation.V2_IOU_THRESHOLDS`) under `protocol`.
        pointing: the pointing-game hit, 0 or 1 (`POINTING_PROTOCOL`, on the
            square against `boxes`).
        protocol: the box protocol, "convis" or "wsolevaluation" (`localise`).
    """

    image_id: str
    concept: str
    boxes: np.ndarray
    hits: np.ndarray
    hits_v2: np.ndarray
    pointing: float
    protocol: str

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
            "protocol": self.protocol,
        }

    @classmethod
    def from_json(cls, data: dict) -> Localisation:
        """Reads back `to_json`'s dict.

        Raises:
            InputError: when a field is missing or has the wrong shape.
        """
        t = len(localisation.CAM_THRESHOLDS)
        try:
            result = cls(
                image_id=str(data["image_id"]),
                concept=str(data["concept"]),
                boxes=np.asarray(data["boxes"], dtype=np.float64).reshape(-1, 4),
                hits=np.asarray(data["hits"], dtype=bool),
                hits_v2=np.asarray(data["hits_v2"], dtype=bool),
                pointing=float(data["pointing"]),
                protocol=str(data["protocol"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(
                f"expected a localisation record, found {data!r:.200} ({err})"
            ) from None
        v2 = (len(localisation.V2_IOU_THRESHOLDS), t)
        if result.hits.shape != (t,) or result.hits_v2.shape != v2:
            raise InputError(
                f"expected hits of shape ({t},) and hits_v2 of shape {v2}, found "
                f"{result.hits.shape} and {result.hits_v2.shape} for {result.image_id!r}"
            )
        return result


def localise(
    saliency: np.ndarray,
    boxes: np.ndarray,
    original_size: tuple[int, int],
    *,
    protocol: str = "convis",
    image_id: str = "",
    concept: str = "",
    tolerance: float = POINTING_TOLERANCE,
) -> Localisation:
    """Scores one square map against its photo's ground truth, as `protocol` scores it.

    * "convis": the square map itself, against the boxes the ConVis
      authors' script derives (`boxes.convis_square_boxes`).
    * "wsolevaluation": the map put back on its photo and resized to
      224 x 224 as the export writes it (`export.wsolevaluation_map`),
      against the boxes `BoxEvaluator` derives (`boxes.wsolevaluation_boxes`);
      what wsolevaluation's own code computes on the export. Needs OpenCV.

    The pointing game ("torchray") is played on the square map against the
    boxes moved onto it (`boxes.boxes_to_square`) under both protocols.

    Args:
        saliency: float [S, S] in [0, 1] on the prepared square, high where
            the concept is.
        boxes: float [K, 4] ground truth in the photo's pixels, (x0, y0, x1,
            y1) with exclusive ends, K >= 1.
        original_size: (H0, W0) of the photo.
        protocol: "convis" or "wsolevaluation".
        image_id: recorded in the result.
        concept: recorded in the result.
        tolerance: pointing-game tolerance in pixels of the square.

    Returns:
        The `Localisation`.

    Raises:
        InputError: for a map outside [0, 1], malformed boxes or an unknown
            protocol; ImportError naming the extra when OpenCV is needed and
            missing.
    """
    saliency = np.asarray(saliency, dtype=np.float64)
    if saliency.ndim != 2 or saliency.shape[0] != saliency.shape[1]:
        raise InputError(f"expected a square map [S, S], found shape {saliency.shape}")
    side = saliency.shape[0]
    square_boxes = boxes_to_square(boxes, original_size, side)
    if protocol == "wsolevaluation":
        scored = wsolevaluation_map(map_to_image(saliency, original_size))
        truth = wsolevaluation_boxes(boxes, original_size, SQUARE)
    else:
        scored = saliency
        truth = convis_square_boxes(boxes, original_size, side)
    hits = localisation.localisation_hits(scored, truth, protocol=protocol)[0]
    hits_v2 = localisation.localisation_hits(
        scored, truth, protocol=protocol, iou_thresholds=localisation.V2_IOU_THRESHOLDS,
        all_components=True,
    )
    pointing = pointing_game(
        [saliency], [square_boxes], tolerance=tolerance, protocol=POINTING_PROTOCOL
    ).hits[0]
    return Localisation(image_id, concept, square_boxes, hits, hits_v2, float(pointing),
                        protocol)


@dataclasses.dataclass(frozen=True)
class WsolSummary:
    """The localisation metrics of a set of maps.

    Attributes:
        count: number of maps (image, concept pairs).
        max_box_acc: MaxBoxAcc under the results' protocol.
        max_box_acc_v2: MaxBoxAccV2 under the same protocol.
        pointing_game: mean pointing-game hit, in [0, 1] (`POINTING_PROTOCOL`).
        cut_away: maps whose every ground-truth box lies outside the centre
            crop (they count as misses).
    """

    count: int
    max_box_acc: localisation.MaxBoxAccResult
    max_box_acc_v2: localisation.MaxBoxAccV2Result
    pointing_game: float
    cut_away: int


def summarise_wsol(results: Sequence[Localisation]) -> WsolSummary:
    """MaxBoxAcc, MaxBoxAccV2 and the pointing game from per-image results.

    Args:
        results: at least one `Localisation`, all of one protocol.

    Returns:
        The `WsolSummary`.

    Raises:
        InputError: when `results` is empty or mixes protocols.
    """
    if not results:
        raise InputError("expected at least one localisation result, found none")
    protocols = sorted({r.protocol for r in results})
    if len(protocols) != 1:
        raise InputError(f"expected results of one protocol, found {', '.join(protocols)}")
    hits = np.stack([r.hits for r in results])
    hits_v2 = np.stack([r.hits_v2 for r in results])
    return WsolSummary(
        count=len(results),
        max_box_acc=localisation.max_box_acc_from_hits(hits, protocol=protocols[0],
                                                  iou_threshold=0.5),
        max_box_acc_v2=localisation.max_box_acc_v2_from_hits(hits_v2, protocol=protocols[0]),
        pointing_game=float(np.mean([r.pointing for r in results])),
        cut_away=sum(r.cut_away for r in results),
    )


def wsol_report(summary: WsolSummary) -> dict:
    """The JSON-able form of a `WsolSummary` (the curve included)."""
    acc = summary.max_box_acc
    return {
        "count": summary.count,
        "boxes_outside_crop": summary.cut_away,
        "protocol": acc.protocol,
        "max_box_acc": {
            "protocol": acc.protocol,
            "value": acc.value,
            "best_threshold": acc.best_threshold,
            "iou_threshold": acc.iou_threshold,
            "curve": acc.curve.tolist(),
        },
        "max_box_acc_v2": {
            "protocol": summary.max_box_acc_v2.protocol,
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
        "pointing_game_protocol": POINTING_PROTOCOL,
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
    protocol: str = "convis",
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
        log: where results go and where earlier runs' results are found
            (its settings should name the protocol).
        protocol: the box protocol of `localise`, "convis" or "wsolevaluation".
        tolerance: pointing-game tolerance in pixels of the 224 square.
        export_dir: also write each map as wsolevaluation scores it
            (`export_wsolevaluation`: 224 x 224, one `.npy` per image id);
            None writes nothing.
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
                result = localise(saliency, item.boxes, photo.shape[:2], protocol=protocol,
                                  image_id=image_id, concept=item.concept, tolerance=tolerance)
                root = export_root(item)
                if root is not None:
                    export_wsolevaluation(root, [image_id],
                                          [map_to_image(saliency, photo.shape[:2])])
                log.append(item.key, result.to_json())
            bar.update(1)
    return [Localisation.from_json(log.get(item.key)) for item in items]


