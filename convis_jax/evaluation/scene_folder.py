"""Folders of synthetic scenes (`convis_jax.scenes`): written, and read back with their ground truth.

A scene folder holds `images/*.png`, one mask PNG per object under
`masks/`, and `scenes.json` with every image's concepts and boxes, so that
localisation can be scored against exact ground truth. Boxes follow
`convis_jax.evaluation.boxes`: (x0, y0, x1, y1) in pixels, x1 and y1 exclusive.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from convis_jax.core.cache import atomic_write_bytes
from convis_jax.errors import InputError
from convis_jax.evaluation.datasets import first_few

if TYPE_CHECKING:
    from convis_jax.scenes import Scene

#: The annotation file of a scene folder.
SCENES_FILE = "scenes.json"

# Written into the annotation file so that a reader can tell a scene folder
# (and its layout version) from any other JSON.
_SCENES_FORMAT = "convis_jax.scenes"
_SCENES_VERSION = 1


@dataclasses.dataclass(frozen=True)
class SceneRecord:
    """One image of a scene folder and its ground truth.

    Attributes:
      image_id: the image's path relative to the folder's `images/`, e.g.
        "scene_00000.png" (the id of result logs and exported maps).
      path: the image file.
      concepts: synset name of each object, in drawing order, all different.
      boxes: one box per object, (x0, y0, x1, y1) in pixels with exclusive
        ends: the tight box of the object's whole shape, hidden parts included.
      masks: one PNG per object, white where the object is visible
        (`read_scene_masks` reads them).
      captions: texts that describe the scene (`convis_jax.scenes`).
    """

    image_id: str
    path: Path
    concepts: tuple[str, ...]
    boxes: tuple[tuple[float, float, float, float], ...]
    masks: tuple[Path, ...]
    captions: tuple[str, ...]


def write_scene_folder(root: str | Path, scenes: Sequence[Scene]) -> list[SceneRecord]:
    """Saves generated scenes as a folder of images with their ground truth.

    Layout: `images/scene_00000.png` (RGB, lossless), `masks/scene_00000_0.png`
    (one 8-bit mask per object, 255 where the object is visible) and
    `scenes.json`, which lists for every image its file, concepts, boxes, mask
    files and captions. `scenes.json` is written last and atomically, so a
    folder that has one is complete. `read_scene_folder` reads it back.

    Args:
      root: the folder to write (created when missing); it must not hold a
        `scenes.json` already.
      scenes: `Scene`s from `convis_jax.scenes.render_scene` or
        `make_dataset`; at least one.

    Returns:
      The records of the written images, as `read_scene_folder` returns them.

    Raises:
      InputError: when there is no scene, the folder already holds scenes,
        or a scene's arrays do not fit together.
    """
    root = Path(root)
    scenes = list(scenes)
    if not scenes:
        raise InputError("expected at least one scene to write, found none")
    if (root / SCENES_FILE).exists():
        raise InputError(
            f"expected a folder without {SCENES_FILE}, found one in {str(root)!r}; "
            f"write the scenes to a new folder"
        )
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    entries = []
    for n, scene in enumerate(scenes):
        image = np.asarray(scene.image)
        masks = np.asarray(scene.masks)
        boxes = np.asarray(scene.boxes, dtype=np.float64)
        count = len(scene.concepts)
        if (
            image.dtype != np.uint8
            or image.ndim != 3
            or image.shape[2] != 3
            or masks.shape != (count,) + image.shape[:2]
            or boxes.shape != (count, 4)
        ):
            raise InputError(
                f"scenes[{n}]: expected a uint8 image [H, W, 3], masks [n, H, W] and boxes "
                f"[n, 4] for its n = {count} concepts, found image {image.dtype} "
                f"{image.shape}, masks {masks.shape}, boxes {boxes.shape}"
            )
        stem = f"scene_{n:05d}"
        _write_png(Image.fromarray(image, mode="RGB"), root / "images" / f"{stem}.png")
        mask_names = []
        for k, mask in enumerate(masks):
            name = f"{stem}_{k}.png"
            _write_png(Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L"),
                       root / "masks" / name)
            mask_names.append(name)
        entries.append(
            {
                "image": f"{stem}.png",
                "concepts": list(scene.concepts),
                "boxes": boxes.tolist(),
                "masks": mask_names,
                "captions": list(scene.captions),
            }
        )
    document = {"format": _SCENES_FORMAT, "version": _SCENES_VERSION, "scenes": entries}
    atomic_write_bytes(root / SCENES_FILE, json.dumps(document, indent=1).encode("utf-8"))
    return read_scene_folder(root)


def _write_png(image: Image.Image, path: Path) -> None:
    """Writes a PNG whole or not at all (an interrupted run leaves no truncated file)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def read_scene_folder(root: str | Path) -> list[SceneRecord]:
    """Lists the images and ground truth of a folder written by `write_scene_folder`.

    Args:
      root: the folder holding `scenes.json`, `images/` and `masks/`.

    Returns:
      One `SceneRecord` per image, in the order of `scenes.json`.

    Raises:
      InputError: when the folder or `scenes.json` is missing or malformed
        (the message names the entry), or an image or mask file is missing.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"expected a scene folder, found no folder at {str(root)!r}")
    annotations = root / SCENES_FILE
    if not annotations.is_file():
        raise InputError(f"expected {SCENES_FILE} in the scene folder {str(root)!r}, found none")
    try:
        document = json.loads(annotations.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{SCENES_FILE}: expected readable JSON, found {err}") from None
    if not isinstance(document, dict) or document.get("format") != _SCENES_FORMAT:
        raise InputError(
            f"{SCENES_FILE}: expected format {_SCENES_FORMAT!r}, found "
            f"{document.get('format') if isinstance(document, dict) else type(document).__name__!r}"
        )
    if document.get("version") != _SCENES_VERSION:
        raise InputError(
            f"{SCENES_FILE}: expected version {_SCENES_VERSION}, found {document.get('version')!r}"
        )
    entries = document.get("scenes")
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{SCENES_FILE}: expected a non-empty list 'scenes', found {entries!r}")
    records = []
    seen: set[str] = set()
    for n, entry in enumerate(entries):
        records.append(_scene_record(root, entry, f"{SCENES_FILE}: scenes[{n}]"))
        if records[-1].image_id in seen:
            raise InputError(
                f"{SCENES_FILE}: scenes[{n}]: expected each image once, found "
                f"{records[-1].image_id!r} again"
            )
        seen.add(records[-1].image_id)
    return records


def _scene_record(root: Path, entry, where: str) -> SceneRecord:
    """Checks one entry of scenes.json and turns it into a record."""
    keys = ("image", "concepts", "boxes", "masks", "captions")
    if not isinstance(entry, dict) or any(key not in entry for key in keys):
        raise InputError(f"{where}: expected the keys {', '.join(keys)}, found {entry!r:.200}")
    image_id = entry["image"]
    concepts = entry["concepts"]
    if not isinstance(image_id, str) or not image_id:
        raise InputError(f"{where}: expected an image file name, found {image_id!r}")
    if (
        not isinstance(concepts, list)
        or not concepts
        or not all(isinstance(c, str) for c in concepts)
        or len(set(concepts)) != len(concepts)
    ):
        raise InputError(f"{where}: expected a list of distinct synset names, found {concepts!r}")
    try:
        boxes = np.asarray(entry["boxes"], dtype=np.float64)
    except (TypeError, ValueError):
        boxes = np.zeros((0,))
    if boxes.shape != (len(concepts), 4) or not np.isfinite(boxes).all():
        raise InputError(
            f"{where}: expected one finite box (x0, y0, x1, y1) per concept, "
            f"shape ({len(concepts)}, 4), found {entry['boxes']!r:.200}"
        )
    masks = entry["masks"]
    if not isinstance(masks, list) or len(masks) != len(concepts):
        raise InputError(f"{where}: expected one mask file per concept, found {masks!r:.200}")
    path = root / "images" / image_id
    mask_paths = tuple(root / "masks" / str(m) for m in masks)
    absent = [str(p.relative_to(root)) for p in (path, *mask_paths) if not p.is_file()]
    if absent:
        raise InputError(f"{where}: expected the files {first_few(absent)}, found them missing")
    return SceneRecord(
        image_id=image_id,
        path=path,
        concepts=tuple(concepts),
        boxes=tuple(tuple(float(v) for v in box) for box in boxes),
        masks=mask_paths,
        captions=tuple(str(c) for c in entry["captions"]),
    )


def read_scene_masks(record: SceneRecord) -> np.ndarray:
    """The visible-pixel masks of a scene's objects.

    Args:
      record: from `read_scene_folder`.

    Returns:
      bool array [n, H, W], one mask per object in `record.concepts` order.

    Raises:
      InputError: when a mask file is unreadable or the masks differ in size.
    """
    masks = []
    for path in record.masks:
        try:
            with Image.open(path) as image:
                masks.append(np.asarray(image.convert("L")) >= 128)
        except OSError as err:
            raise InputError(f"expected a readable mask PNG at {str(path)!r}: {err}") from None
    if len({m.shape for m in masks}) != 1:
        raise InputError(
            f"expected masks of one size for {record.image_id!r}, found "
            f"{sorted({m.shape for m in masks})}"
        )
    return np.stack(masks)
