"""The paper's experiments on top of the API: localisation and OOD detection.

METHOD.md section 5, on any checkpoint and data folder:

* **Weakly supervised localisation (WSOL).** Every image is centre-cropped
  and resized to the 224 x 224 square the maps live on, its ground-truth
  boxes are moved the same way (`convis_jax.core.boxes`), and the map of the
  concept (`bird.n.01` for CUB) is scored per image by `localise`: the hits
  of MaxBoxAcc (largest component, IoU > 0.5) and MaxBoxAccV2 (all
  components, IoU >= 0.3 / 0.5 / 0.7) at every threshold t in
  {0, 0.01, ..., 0.99}, and the pointing game. `summarise_wsol` turns the
  per-image hits into the metrics (`convis_jax.core.metrics`).
* **Out-of-distribution detection.** Whole images (the model's own
  preprocessing, no windows) are scored against the ID synset: "naive" is
  the cosine with the ID synset's text embedding, "hierarchy" the maximum
  cosine over the leaves of its subtree in the vocabulary. AUROC separates
  the ID side of a pair from the OOD side.
* **Resuming.** Per-image results are appended to a JSON-lines file
  (`ResultLog`) as soon as they are known; a rerun with the same settings
  skips every image already there.
* **Export.** `export_wsolevaluation` writes maps as Choe et al.'s
  wsolevaluation code reads score maps: one `.npy` per image.

Model work goes through the objects passed in (a `ConVis`, a `ClipModel`),
so this module imports no framework itself.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
from tqdm.auto import tqdm

from convis_jax.core import metrics
from convis_jax.core.boxes import boxes_to_square
from convis_jax.core.datasets import CubRecord, ImageNetRecord, OodPair, SceneRecord, split_ood
from convis_jax.core.images import load_image
from convis_jax.core.windows import map_to_image
from convis_jax.errors import ConceptError, ConvisError, InputError

#: Side of the square every map lives on (Algorithm 1, step 1).
SQUARE = 224

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
        records: from `convis_jax.core.datasets.read_cub`.
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
        records: from `convis_jax.core.datasets.read_scene_folder`.
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
# Localisation: maps

#: A map function: (photo uint8 [H, W, 3], K concepts, image id) -> float
#: maps [K, 224, 224] in [0, 1] on the photo's centre square.
MapFn = Callable[[np.ndarray, Sequence[str], str], np.ndarray]


def image_seed(seed: int, image_id: str) -> int:
    """The seed of one image's randomness (padding noise, SmoothGrad).

    Drawn from (run seed, CRC-32 of the image id), so an image gets the same
    noise whatever the order of the images and whichever of them a resumed
    run still has to do, and different images get different noise.

    Args:
        seed: the run's seed, >= 0.
        image_id: the image's id.

    Returns:
        An int in [0, 2**32).

    Raises:
        InputError: for a negative or non-integer seed.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed: expected an integer >= 0, found {seed!r}")
    sequence = np.random.SeedSequence([int(seed), zlib.crc32(image_id.encode("utf-8"))])
    return int(sequence.generate_state(1)[0])


def occlusion_map_fn(
    convis, *, padding: str = "noise", seed: int = 0, aggregation: str = "window"
) -> MapFn:
    """Map function of ConVis occlusion maps (Algorithm 1 by default).

    Args:
        convis: a `convis_jax.api.ConVis`.
        padding: "noise" (the paper) or "constant".
        seed: the run's seed; each image's noise comes from `image_seed`.
        aggregation: "window" (Algorithm 1) or "webapp" (the authors' web app).

    Returns:
        A `MapFn` giving the API's maps as they are ([0, 1] by construction).
    """

    def maps(photo: np.ndarray, concepts: Sequence[str], image_id: str) -> np.ndarray:
        out = convis.occlusion_maps(
            photo,
            list(concepts),
            padding=padding,
            seed=image_seed(seed, image_id),
            aggregation=aggregation,
            resolution="pixels",
        )
        return out[0]

    return maps


def gradient_map_fn(
    convis,
    *,
    score: str = "cosine",
    kind: str = "gradient",
    reduce: str = "absmax",
    strategy: str = "auto",
    seed: int = 0,
) -> MapFn:
    """Map function of gradient maps, made comparable with occlusion maps.

    The API's gradient maps are raw, at the model's input size, on the centre
    square of the model's preprocessing; each is resized to 224 x 224 and
    min-max normalised (`unit_square_maps`).

    Args:
        convis: a `convis_jax.api.ConVis` with `gradient_maps`.
        score: the differentiated concept score (see `ConVis.gradient_maps`).
        kind: the kind of map.
        reduce: channel reduction, "absmax" or "l2" (localisation needs one
            value per pixel).
        strategy: "auto", "vmap" or "jacobian".
        seed: the run's seed; each image's SmoothGrad noise comes from `image_seed`.

    Returns:
        A `MapFn`.

    Raises:
        InputError: when `convis` has no `gradient_maps`, or `reduce` keeps
            the channels.
    """
    if not callable(getattr(convis, "gradient_maps", None)):
        raise InputError(
            "expected a ConVis with gradient_maps for the gradient method, found none in "
            "this version; use the occlusion method"
        )
    if reduce not in ("absmax", "l2"):
        raise InputError(f"reduce: expected 'absmax' or 'l2' for localisation, found {reduce!r}")

    def maps(photo: np.ndarray, concepts: Sequence[str], image_id: str) -> np.ndarray:
        raw = convis.gradient_maps(
            photo,
            list(concepts),
            score=score,
            kind=kind,
            reduce=reduce,
            strategy=strategy,
            seed=image_seed(seed, image_id),
        )
        return unit_square_maps(raw[0])

    return maps


def unit_square_maps(maps: np.ndarray, size: int = SQUARE) -> np.ndarray:
    """Resizes square maps to size x size and min-max normalises each to [0, 1].

    A constant map carries no location and becomes all zeros (as
    wsolevaluation's `normalize_scoremap` does): it predicts no box at any
    threshold.

    Args:
        maps: float [K, s, s], finite, on a centre square of side s.
        size: the side of the result.

    Returns:
        float32 [K, size, size] in [0, 1]; bilinear resizing with pixel
        centres aligned (`map_to_image`).

    Raises:
        InputError: for maps that are not a finite [K, s, s] array.
    """
    arr = np.asarray(maps, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2] or arr.shape[1] == 0:
        raise InputError(f"maps: expected square maps [K, s, s], found shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError("maps: expected finite values, found NaN or inf")
    if arr.shape[1] != size:
        arr = map_to_image(arr, (size, size)).astype(np.float64)
    low = arr.min(axis=(1, 2), keepdims=True)
    span = arr.max(axis=(1, 2), keepdims=True) - low
    safe = np.where(span > 0, span, 1.0)
    return np.where(span > 0, (arr - low) / safe, 0.0).astype(np.float32)


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
# Resumable result logs


class ResultLog:
    """Per-item results of a long evaluation, appended to a JSON-lines file as they come.

    The first line is `{"settings": {...}}`, every other line one item's
    result, a JSON object with a string "key". A rerun opens the same file:
    items already there are done. Settings must match the file's, so that
    results made with different models or options never mix. A last line cut
    short by a crash is dropped (that item is simply done again).

    Args:
        path: the JSON-lines file (created with its folder when missing).
        settings: JSON-able description of everything the results depend on.
        restart: discard the file's results and start afresh.

    Raises:
        InputError: when the file was written with other settings, or is not
            a result log (the message says which and how to start afresh).
    """

    def __init__(self, path: str | Path, settings: dict, *, restart: bool = False):
        self.path = Path(path)
        self.settings = json.loads(json.dumps(settings))
        self._records: dict[str, dict] = {}
        if restart and self.path.exists():
            self.path.unlink()
        if self.path.exists():
            self._read()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"settings": self.settings}) + "\n", encoding="utf-8")

    def _read(self) -> None:
        raw = self.path.read_bytes()
        if not raw:  # created, then nothing written: no results to keep
            self.path.write_text(json.dumps({"settings": self.settings}) + "\n", encoding="utf-8")
            return
        lines = raw.split(b"\n")
        # Everything after the last newline is a line a crash cut short.
        complete, tail = lines[:-1], lines[-1]
        if not complete:
            raise InputError(f"{self.path}: expected a result log, found a file cut inside "
                             f"its first line; delete it or start afresh (--restart)")
        try:
            header = json.loads(complete[0])
        except json.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or "settings" not in header:
            raise InputError(f"{self.path}: expected a result log starting with its settings, "
                             f"found {complete[0][:80]!r}; pass another file or --restart")
        if header["settings"] != self.settings:
            differ = sorted(
                k for k in set(header["settings"]) | set(self.settings)
                if header["settings"].get(k) != self.settings.get(k)
            )
            raise InputError(
                f"{self.path}: expected results made with the same settings, found different "
                f"{', '.join(differ)}; pass another output file or --restart"
            )
        for number, line in enumerate(complete[1:], start=2):
            try:
                record = json.loads(line)
                key = record["key"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise InputError(f"{self.path}:{number}: expected a result record, found "
                                 f"{line[:80]!r}; pass another file or --restart") from None
            self._records[key] = record
        if tail:
            with self.path.open("r+b") as f:
                f.truncate(len(raw) - len(tail))

    def __contains__(self, key: str) -> bool:
        return key in self._records

    def __len__(self) -> int:
        return len(self._records)

    def get(self, key: str) -> dict:
        """The record of a done item.

        Raises:
            KeyError: when the item is not done.
        """
        return self._records[key]

    def append(self, key: str, record: dict) -> None:
        """Writes one item's result (a JSON-able dict) and flushes it to disk."""
        record = {"key": key, **record}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._records[key] = json.loads(json.dumps(record))


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


# ---------------------------------------------------------------------------
# wsolevaluation export


def wsolevaluation_path(out_dir: str | Path, image_id: str) -> Path:
    """Where wsolevaluation looks for an image's score map: `<out_dir>/<image_id>.npy`.

    wsolevaluation saves and loads `os.path.join(scoremap_root, image_id +
    '.npy')`, with image ids such as "001.Black_footed_Albatross/x.jpg", so
    the file keeps the image's extension: ".../x.jpg.npy".

    Args:
        out_dir: the score-map root.
        image_id: a relative path with "/" separators.

    Returns:
        The file's path.

    Raises:
        InputError: for an empty or absolute id, or one that climbs out of
            `out_dir` with "..".
    """
    rel = PurePosixPath(image_id)
    if not image_id or rel.is_absolute() or ".." in rel.parts:
        raise InputError(
            f"image_id: expected a relative path inside the output folder, found {image_id!r}"
        )
    return Path(out_dir).joinpath(*rel.parts[:-1], rel.name + ".npy")


def export_wsolevaluation(
    out_dir: str | Path, image_ids: Sequence[str], maps_on_photo: Iterable[np.ndarray]
) -> list[Path]:
    """Writes score maps in the layout of Choe et al.'s wsolevaluation code.

    One float32 `.npy` per image at `wsolevaluation_path(out_dir, image_id)`
    (folders created), holding the map at the photo's own size, values in
    [0, 1]. `convis_jax.core.windows.map_to_image` puts a 224 map back on its
    photo (zero where the centre crop cut the photo). Note: wsolevaluation's
    BoxEvaluator compares maps with boxes of the photo resized to 224 x 224
    (no crop), so resize these maps to 224 x 224 before feeding it. Files are
    written atomically: a crash never leaves half a map.

    Args:
        out_dir: the score-map root.
        image_ids: N relative image paths, e.g. CUB's "<class>/<file>.jpg".
        maps_on_photo: N float arrays [H_n, W_n], finite, in [0, 1] (rounding
            overshoot up to 1e-6 is clipped).

    Returns:
        The N files written.

    Raises:
        InputError: for a count mismatch, a bad id, or a map that is not 2-D,
            finite and within [0, 1].
    """
    image_ids = list(image_ids)
    maps = list(maps_on_photo)
    if len(image_ids) != len(maps):
        raise InputError(
            f"expected one map per image id, found {len(maps)} maps for {len(image_ids)} ids"
        )
    written = []
    for image_id, saliency in zip(image_ids, maps):
        target = wsolevaluation_path(out_dir, image_id)
        arr = np.asarray(saliency, dtype=np.float32)
        if arr.ndim != 2 or arr.size == 0 or not np.isfinite(arr).all():
            raise InputError(
                f"{image_id}: expected a finite 2-D map [H, W], found shape {arr.shape}"
            )
        if arr.min() < -1e-6 or arr.max() > 1 + 1e-6:
            raise InputError(
                f"{image_id}: expected a map in [0, 1], found [{arr.min():g}, {arr.max():g}]"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        with temporary.open("wb") as f:
            np.save(f, np.clip(arr, 0.0, 1.0))
        os.replace(temporary, target)
        written.append(target)
    return written


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
    """Scores whole-image embeddings against an ID synset (METHOD.md section 5).

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
                auroc_naive=metrics.auroc(naive_id, naive_ood),
                auroc_hierarchy=metrics.auroc(hier_id, hier_ood),
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
# Files of the evaluation scripts


def default_log_path(out: str | Path) -> Path:
    """The per-image log beside a results file: results.json -> results.images.jsonl."""
    out = Path(out)
    return out.with_name(f"{out.stem if out.suffix == '.json' else out.name}.images.jsonl")


def write_json(path: str | Path, document: dict) -> Path:
    """Writes a JSON document atomically (folders created): a crash leaves the old file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return path


def script_parser(prog: str, description: str):
    """The evaluation scripts' argument parser, with the options they share.

    Its errors raise `ConvisError` (one line, no usage block), like the
    `convis-jax` command line's.
    """
    from convis_jax.cli import OneLineParser

    parser = OneLineParser(prog=prog, description=description)
    parser.add_argument("--model", default=None,
                        help="model folder or Hugging Face hub id (default: the bundled model)")
    parser.add_argument("--text", default="definition",
                        help='concept texts: definition, lemmas, or a template like '
                             '"a photo of a {}"')
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--log", default=None,
                        help="per-image results file (default: <out>.images.jsonl)")
    parser.add_argument("--restart", action="store_true",
                        help="discard earlier per-image results instead of resuming")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def script_main(parser, run: Callable, argv: Sequence[str] | None = None) -> int:
    """Parses `argv` and calls `run(args)`; user mistakes become one line on stderr.

    Returns:
        0 on success, 2 for a user mistake (`ConvisError`, or an `OSError`
        such as an unwritable output folder), 130 when interrupted.
    """
    import sys

    try:
        run(parser.parse_args(argv))
    except ConvisError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        where = f": {err.filename}" if err.filename else ""
        print(f"error: {err.strerror or err}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0
