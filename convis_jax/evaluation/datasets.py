"""Readers for the paper's evaluation data, and its ID/OOD presets.

* CUB-200-2011 (Wah et al., 2011) in the layout its archive unpacks to,
  for weakly supervised localisation of `bird.n.01`.
* ImageNet-style class folders named by WordNet id (`n02084071/...`), for
  the out-of-distribution experiment; a WordNet id is "n" plus the synset's
  8-digit offset in WordNet 3.0's noun database (ImageNet was built on it).

Folders of synthetic scenes are written and read in `scene_folder`.
Readers only list files and parse annotations; images are loaded later
(`convis_jax.core.images`). Boxes follow the convention of
`convis_jax.evaluation.boxes`: (x0, y0, x1, y1) in pixels, x1 and y1 exclusive.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from convis_jax.core.images import IMAGE_SUFFIXES
from convis_jax.errors import ConceptError, InputError

if TYPE_CHECKING:
    from nltk.corpus.reader.wordnet import WordNetCorpusReader


# ---------------------------------------------------------------------------
# CUB-200-2011


@dataclasses.dataclass(frozen=True)
class CubRecord:
    """One image of CUB-200-2011.

    Attributes:
      image_id: the id of `images.txt` (1-based in the official release).
      path: the image file.
      boxes: ground-truth boxes in the original image's pixels, each
        (x0, y0, x1, y1) with exclusive ends, converted from CUB's
        (x, y, width, height) as (x, y, x + width, y + height). CUB has one
        box per image; several lines for an id give several boxes.
      class_name: the image's folder, e.g. "001.Black_footed_Albatross".
      is_train: CUB's train/test flag, or None without `train_test_split.txt`.
    """

    image_id: int
    path: Path
    boxes: tuple[tuple[float, float, float, float], ...]
    class_name: str
    is_train: bool | None


def read_cub(root: str | Path, *, split: str | None = None) -> list[CubRecord]:
    """Lists the images and boxes of a CUB-200-2011 folder.

    Expected layout (the official archive's `CUB_200_2011/` folder):
    `images.txt` ("<id> <class folder>/<file>" per line), `bounding_boxes.txt`
    ("<id> <x> <y> <width> <height>"), `images/` with the files, and
    optionally `train_test_split.txt` ("<id> <1 train | 0 test>").

    Args:
      root: the folder holding those files.
      split: None for every image, or "train" / "test" (needs
        `train_test_split.txt`).

    Returns:
      One `CubRecord` per image, sorted by image id.

    Raises:
      InputError: when the folder, a file or an image is missing, a line is
        malformed, an id is repeated or has no box, or a box is not positive.
    """
    if split not in (None, "train", "test"):
        raise InputError(f"split: expected None, 'train' or 'test', found {split!r}")
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"expected a CUB-200-2011 folder, found no folder at {str(root)!r}")
    for name in ("images.txt", "bounding_boxes.txt"):
        if not (root / name).is_file():
            raise InputError(f"expected {name} in the CUB folder {str(root)!r}, found none")
    image_dir = root / "images"
    if not image_dir.is_dir():
        raise InputError(f"expected an images/ folder in the CUB folder {str(root)!r}, found none")

    names: dict[int, str] = {}
    for where, (image_id, name) in _table(root / "images.txt", "<id> <image path>", 2):
        key = _parse_id(image_id, where)
        if key in names:
            raise InputError(f"{where}: expected each image id once, found id {key} again")
        names[key] = name

    boxes: dict[int, list[tuple[float, float, float, float]]] = {}
    for where, fields in _table(root / "bounding_boxes.txt", "<id> <x> <y> <width> <height>", 5):
        key = _parse_id(fields[0], where)
        if key not in names:
            raise InputError(f"{where}: expected an image id of images.txt, found {key}")
        x, y, w, h = (_parse_float(f, where) for f in fields[1:])
        if not (w > 0 and h > 0):
            raise InputError(f"{where}: expected a positive width and height, found {w:g} x {h:g}")
        boxes.setdefault(key, []).append((x, y, x + w, y + h))
    unboxed = sorted(set(names) - set(boxes))
    if unboxed:
        raise InputError(
            f"bounding_boxes.txt: expected a box for every image, found none for ids "
            f"{first_few(unboxed)}"
        )

    is_train: dict[int, bool] = {}
    split_file = root / "train_test_split.txt"
    if split_file.is_file():
        for where, (image_id, flag) in _table(split_file, "<id> <1 or 0>", 2):
            key = _parse_id(image_id, where)
            if flag not in ("0", "1"):
                raise InputError(f"{where}: expected the flag 1 (train) or 0 (test), found {flag!r}")
            is_train[key] = flag == "1"
        missing = sorted(set(names) - set(is_train))
        if missing:
            raise InputError(
                f"train_test_split.txt: expected a flag for every image, found none for ids "
                f"{first_few(missing)}"
            )
    elif split is not None:
        raise InputError(
            f"split={split!r} needs train_test_split.txt in {str(root)!r}, found none"
        )

    records = []
    for key in sorted(names):
        flag = is_train.get(key)
        if split is not None and flag != (split == "train"):
            continue
        rel = Path(names[key])
        records.append(
            CubRecord(
                image_id=key,
                path=image_dir / rel,
                boxes=tuple(boxes[key]),
                class_name=rel.parent.name,
                is_train=flag,
            )
        )
    absent = [str(r.path.relative_to(image_dir)) for r in records if not r.path.is_file()]
    if absent:
        raise InputError(
            f"expected every image of images.txt under {str(image_dir)!r}, found "
            f"{len(absent)} missing: {first_few(absent)}"
        )
    return records


def _table(path: Path, form: str, n_fields: int) -> Iterable[tuple[str, list[str]]]:
    """Yields ("file:line", fields) for every non-blank line of a text table.

    The last field takes the rest of the line, so image paths may hold spaces.
    """
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            fields = line.split(maxsplit=n_fields - 1)
            where = f"{path.name}:{number}"
            if len(fields) != n_fields:
                raise InputError(f"{where}: expected {form!r}, found {line.strip()!r}")
            fields[-1] = fields[-1].rstrip()
            yield where, fields


def _parse_id(text: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InputError(f"{where}: expected an integer image id, found {text!r}") from None


def _parse_float(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise InputError(f"{where}: expected a finite number, found {text!r}")
    return value


def first_few(items: Sequence, limit: int = 5) -> str:
    """The first `limit` items, comma-separated, and how many more there are."""
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


# ---------------------------------------------------------------------------
# ImageNet-style class folders


@dataclasses.dataclass(frozen=True)
class ImageNetRecord:
    """One image of a folder-per-class dataset named by WordNet id.

    Attributes:
      path: the image file.
      wnid: its class folder's name, e.g. "n02084071".
      synset: the WordNet 3.0 synset name of that id, e.g. "dog.n.01".
    """

    path: Path
    wnid: str
    synset: str


# The image suffixes read from class folders (compared in lower case).

_WNID = re.compile(r"n\d{8}")


def read_imagenet_folders(
    root: str | Path, wordnet: WordNetCorpusReader | None = None
) -> list[ImageNetRecord]:
    """Lists the images of class folders named by WordNet id.

    Every non-hidden sub-folder of `root` must be named like `n02084071`; its
    image files (suffixes `IMAGE_SUFFIXES`, any case, not recursive) are its
    members. Files directly in `root` (ImageNet's mapping files, say) and
    hidden entries are ignored. The id's digits are the offset of a noun
    synset in WordNet 3.0: n02084071 -> `dog.n.01`.

    Args:
      root: the folder holding the class folders.
      wordnet: an nltk WordNet reader; None opens the bundled WordNet 3.0
        (`convis_jax.core.wordnet.load_wordnet`).

    Returns:
      One `ImageNetRecord` per image, sorted by WordNet id, then file name.

    Raises:
      InputError: when `root` is not a folder, has no class folder, or a
        folder's name is not the WordNet id of a noun synset.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"expected a folder of class folders, found no folder at {str(root)!r}")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise InputError(f"expected class folders named like n02084071 in {str(root)!r}, found none")
    bad = [p.name for p in folders if not _WNID.fullmatch(p.name)]
    if bad:
        raise InputError(
            f"expected class folders named by WordNet id like n02084071 in {str(root)!r}, "
            f"found {first_few(bad)}"
        )
    if wordnet is None:
        from convis_jax.core.wordnet import load_wordnet

        wordnet = load_wordnet()
    records = []
    for folder in folders:
        synset = synset_of_wnid(folder.name, wordnet)
        files = sorted(
            p
            for p in folder.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
        )
        records.extend(ImageNetRecord(path=p, wnid=folder.name, synset=synset) for p in files)
    return records


def synset_of_wnid(wnid: str, wordnet: WordNetCorpusReader) -> str:
    """The synset name of a WordNet id, e.g. "n02084071" -> "dog.n.01".

    Args:
      wnid: "n" followed by the 8-digit offset of a WordNet 3.0 noun synset.
      wordnet: an nltk WordNet reader (WordNet 3.0 for ImageNet's ids).

    Returns:
      The synset's name.

    Raises:
      InputError: when `wnid` is malformed or no noun synset has that offset.
    """
    if not _WNID.fullmatch(wnid):
        raise InputError(f"expected a WordNet id like n02084071, found {wnid!r}")
    with warnings.catch_warnings():
        # nltk warns and returns None for an offset that starts no synset;
        # the error below says so instead.
        warnings.simplefilter("ignore", UserWarning)
        try:
            synset = wordnet.synset_from_pos_and_offset("n", int(wnid[1:]))
        except Exception:  # nltk's WordNetError for an offset mid-line or past the end
            synset = None
    if synset is None:
        raise InputError(
            f"expected the WordNet id of a WordNet 3.0 noun synset, found {wnid!r}, "
            f"whose offset starts no noun synset"
        )
    return synset.name()


def is_in_distribution(
    synset_name: str, id_synset: str, wordnet: WordNetCorpusReader | None = None
) -> bool:
    """Whether a class lies under the in-distribution synset.

    True when a chain of ordinary hypernyms (not instance hypernyms, as in
    the vocabulary, docs/method.md, section 1) leads from `synset_name` up to
    `id_synset`; a synset is in its own distribution.

    Args:
      synset_name: the class, e.g. "dog.n.01".
      id_synset: the in-distribution concept, e.g. "bird.n.01".
      wordnet: an nltk WordNet reader; None opens the bundled WordNet 3.0.
        Pass one when calling in a loop.

    Returns:
      Whether `synset_name` is `id_synset` or one of its hyponyms.

    Raises:
      ConceptError: when either name is not a WordNet synset.
    """
    if wordnet is None:
        from convis_jax.core.wordnet import load_wordnet

        wordnet = load_wordnet()
    synset = _synset(synset_name, wordnet)
    target = _synset(id_synset, wordnet)
    if synset == target:
        return True
    return any(s == target for s in synset.closure(lambda s: s.hypernyms()))


def _synset(name: str, wordnet: WordNetCorpusReader):
    try:
        return wordnet.synset(name)
    except Exception as err:  # WordNetError / ValueError for a bad or unknown name
        raise ConceptError(
            f"expected a WordNet synset name like 'dog.n.01', found {name!r} ({err})"
        ) from None


# ---------------------------------------------------------------------------
# The paper's ID/OOD pairs


@dataclasses.dataclass(frozen=True)
class OodPair:
    """An out-of-distribution experiment: which classes are ID, which OOD.

    Attributes:
      id_synset: ImageNet classes under it are in-distribution.
      ood_synset: ImageNet classes under it are out-of-distribution.
    """

    id_synset: str
    ood_synset: str


#: The six ID/OOD pairs of Giulivi and Boracchi (2024), docs/method.md, section 5.
OOD_PRESETS = (
    OodPair("garment.n.01", "furniture.n.01"),
    OodPair("bird.n.01", "hunting_dog.n.01"),
    OodPair("spider.n.01", "butterfly.n.01"),
    OodPair("ungulate.n.01", "bear.n.01"),
    OodPair("edible_fruit.n.01", "musical_instrument.n.01"),
    OodPair("aircraft.n.01", "vessel.n.02"),
)


@dataclasses.dataclass(frozen=True)
class OodSplit:
    """The images of one ID/OOD experiment.

    Attributes:
      in_distribution: records whose class lies under the ID synset.
      out_of_distribution: records whose class lies under the OOD synset.
    """

    in_distribution: tuple[ImageNetRecord, ...]
    out_of_distribution: tuple[ImageNetRecord, ...]


def split_ood(
    records: Iterable[ImageNetRecord],
    pair: OodPair,
    wordnet: WordNetCorpusReader | None = None,
) -> OodSplit:
    """Sorts records into the ID and OOD sides of a pair; drops the rest.

    Args:
      records: from `read_imagenet_folders`.
      pair: the experiment, e.g. `OOD_PRESETS[1]`.
      wordnet: an nltk WordNet reader; None opens the bundled WordNet 3.0.

    Returns:
      `OodSplit`, records in their input order.

    Raises:
      ConceptError: for a synset name WordNet does not know.
      InputError: when a class lies under both synsets (the pair overlaps).
    """
    if wordnet is None:
        from convis_jax.core.wordnet import load_wordnet

        wordnet = load_wordnet()
    side: dict[str, tuple[bool, bool]] = {}  # per class, computed once
    inside, outside = [], []
    for record in records:
        if record.synset not in side:
            side[record.synset] = (
                is_in_distribution(record.synset, pair.id_synset, wordnet),
                is_in_distribution(record.synset, pair.ood_synset, wordnet),
            )
        is_id, is_ood = side[record.synset]
        if is_id and is_ood:
            raise InputError(
                f"expected disjoint ID and OOD synsets, found {record.synset} under both "
                f"{pair.id_synset} and {pair.ood_synset}"
            )
        if is_id:
            inside.append(record)
        elif is_ood:
            outside.append(record)
    return OodSplit(in_distribution=tuple(inside), out_of_distribution=tuple(outside))
