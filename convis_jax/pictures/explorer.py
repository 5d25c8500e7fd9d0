"""The concept explorer: one offline HTML page to walk an image's concept maps.

The paper's user study showed the maps of every synset of an image in a web
app backed by a server and gigabytes of per-pixel data. An all-concept
occlusion sweep in cell form (docs/method.md, section 3: one 14 x 14 grid of cells
per concept) is a few megabytes, so the whole exploration fits in a page
that opens from disk with no network: the image, the concepts ranked by how
strongly CLIP sees them, a collapsible WordNet tree with a search box, each
concept's map over the image (the paper's white-blend overlay, or a heat
map) and a side-by-side view of a concept's parents and children.

Layout of what `write_explorer` writes:
* `index.html`: the page, its script and style inlined (no CDN), and the
  vocabulary. With `single_file=True` (the default) every image's data is
  inlined too, so the page can be attached to a bug report or a paper.
* With `single_file=False`, one `explorer-data/image-NNNN.js` per image
  beside it, loaded only when the image is selected. They are scripts that
  hand their data to the page, not JSON: a page opened from `file://` may
  load scripts from its folder but may not fetch files.

Data per image: the centre crop as a PNG data URL (a data URL, because a
canvas that drew an image read from `file://` can no longer be read back,
and the page reads pixels to blend the maps), the cells quantised to uint8
and base64-encoded (a step of 1/255 is below what an 8-bit screen shows),
and the flat and hierarchical scores as little-endian float32, base64.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from convis_jax.core.cache import atomic_write_bytes
from convis_jax.errors import ConceptError, InputError

# Largest side, in pixels, of the image stored in the page. The page shows
# the image at 448 CSS pixels (up to twice that on high-density screens);
# a larger crop would only make the file bigger.
MAX_IMAGE_SIDE = 896

# Folder, beside index.html, of the per-image scripts when single_file=False.
DATA_FOLDER = "explorer-data"

# Name of the function the per-image scripts call; defined by explorer.js.
_RECEIVE_FUNCTION = "convisExplorerReceive"

_TEMPLATE_FILES = ("explorer.html", "explorer.css", "explorer.js")


@dataclass(frozen=True, eq=False)
class ExplorerImage:
    """One image of the explorer and its all-concept maps.

    Attributes:
        name: Label shown in the image selector; unique within a page.
        image: uint8 [S, S, 3], the square centre crop the maps refer to.
        cells: float [K, cy, cx] in [0, 1], every concept's map in cell form
            (docs/method.md, section 3; cy = cx = 14 for 16-pixel cells of a 224
            crop); high means the concept is there. Row k belongs to the
            vocabulary's k-th name.
        flat: float [K], how strongly CLIP sees each concept in the whole
            image (cosine similarity, about -1 to 1).
        hierarchical: float [K], the maximum of `flat` over each concept's
            subtree.
    """

    name: str
    image: np.ndarray
    cells: np.ndarray
    flat: np.ndarray
    hierarchical: np.ndarray

    @classmethod
    def from_photo(cls, name: str, photo: np.ndarray, cells, flat, hierarchical,
                   largest: int = 448) -> ExplorerImage:
        """The page's image of a photo: its centre square (the one the maps refer to), at
        most `largest` pixels wide so that pages stay small."""
        from convis_jax.core.windows import center_crop_square

        square = center_crop_square(photo)
        if square.shape[0] > largest:
            square = np.asarray(Image.fromarray(square).resize((largest, largest),
                                                               Image.BICUBIC))
        return cls(name, square, cells, flat, hierarchical)


@dataclass(frozen=True)
class ExplorerVocabulary:
    """The concepts of an explorer page and their hierarchy.

    Attributes:
        names: K unique synset names, e.g. `dog.n.01`, in the order of the
            rows of every image's `cells`, `flat` and `hierarchical`.
        definitions: K WordNet glosses.
        lemmas: K tuples of lemma names (e.g. `("dog", "domestic_dog")`);
            the search box matches them, underscores read as spaces.
        edges: (parent, child) pairs of names, hypernym to hyponym, forming
            a DAG; a concept may have several parents.
    """

    names: tuple[str, ...]
    definitions: tuple[str, ...]
    lemmas: tuple[tuple[str, ...], ...]
    edges: tuple[tuple[str, str], ...]

    @classmethod
    def from_mapping(cls, mapping: Mapping) -> ExplorerVocabulary:
        """Builds a vocabulary from a dict with the attributes' names as keys.

        Args:
            mapping: `names`, `definitions` and `edges` as above; `lemmas`
                with, per concept, either a sequence of lemma names or one
                string; `edges` may give (parent, child) as names or as
                integer positions in `names`.

        Returns:
            The vocabulary, its fields converted to tuples.

        Raises:
            InputError: a key is missing, or an edge is not a pair.
        """
        missing = [key for key in ("names", "definitions", "lemmas", "edges") if key not in mapping]
        if missing:
            raise InputError(
                f"a vocabulary mapping needs names, definitions, lemmas and edges; "
                f"missing {missing}, found keys {sorted(mapping)}"
            )
        names = tuple(str(name) for name in mapping["names"])
        lemmas = tuple(
            (entry,) if isinstance(entry, str) else tuple(str(lemma) for lemma in entry)
            for entry in mapping["lemmas"]
        )
        edges = []
        for edge in mapping["edges"]:
            if len(edge) != 2:
                raise InputError(f"an edge must be a (parent, child) pair; found {edge!r}")
            edges.append(tuple(_edge_end(end, names) for end in edge))
        return cls(
            names=names,
            definitions=tuple(str(text) for text in mapping["definitions"]),
            lemmas=lemmas,
            edges=tuple(edges),
        )


def _edge_end(end: str | int, names: tuple[str, ...]) -> str:
    """The name at one end of an edge given as a name or a position in `names`."""
    if not isinstance(end, (int, np.integer)):
        return str(end)
    if not 0 <= end < len(names):
        raise InputError(f"an edge position must lie in [0, {len(names)}); found {end}")
    return names[end]


def quantise_cells(cells: np.ndarray) -> np.ndarray:
    """Rounds maps in [0, 1] to the nearest of 256 levels k / 255.

    Args:
        cells: float [...] in [0, 1], e.g. [K, cy, cx] maps in cell form.

    Returns:
        uint8 [...], round(255 * cells); the page reads level k as k / 255,
        within 1/510 of the input.

    Raises:
        InputError: a value is not finite or lies outside [0, 1].
    """
    values = np.asarray(cells, dtype=np.float64)
    if values.size and not (np.all(np.isfinite(values)) and values.min() >= 0.0 and values.max() <= 1.0):
        bad = values[~(np.isfinite(values) & (values >= 0.0) & (values <= 1.0))]
        raise InputError(f"cells must be finite values in [0, 1]; found {bad.size} values that are not, e.g. {bad.flat[0]!r}")
    return np.rint(values * 255.0).astype(np.uint8)


def write_explorer(
    out_dir: str | Path,
    images: Sequence[ExplorerImage],
    vocabulary: ExplorerVocabulary | Mapping,
    *,
    title: str = "ConVis concept explorer",
    note: str = "",
    single_file: bool = True,
) -> Path:
    """Writes the concept explorer page of some images to `out_dir/index.html`.

    The page works offline from `file://`: nothing is fetched from a network.

    Args:
        out_dir: Folder to write into; created if missing.
        images: One or more images with their maps over `vocabulary`.
        vocabulary: The K concepts, as an `ExplorerVocabulary` or a mapping
            that `ExplorerVocabulary.from_mapping` accepts.
        title: Heading and window title of the page.
        note: One line shown under the title, e.g. the model and vocabulary.
        single_file: Inline every image's data in index.html (one file to
            share); if False, write one script per image under
            `out_dir/explorer-data/`, loaded when the image is selected
            (better for many images).

    Returns:
        The path of index.html.

    Raises:
        InputError: an image, its maps or scores, or the vocabulary is
            malformed or inconsistent (shapes, ranges, duplicate names, a
            cycle in the edges).
        ConceptError: an edge names a concept outside the vocabulary.
    """
    if not isinstance(vocabulary, ExplorerVocabulary):
        vocabulary = ExplorerVocabulary.from_mapping(vocabulary)
    edge_pairs = _check_vocabulary(vocabulary)
    if not images:
        raise InputError("write_explorer needs at least one image; found none")
    image_names = [image.name for image in images]
    if len(set(image_names)) != len(image_names):
        raise InputError(f"image names must be unique; found {image_names}")
    for image in images:
        _check_image(image, len(vocabulary.names))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    image_entries = []
    inline_blocks = []
    for index, image in enumerate(images):
        payload = _image_payload(image)
        entry = {"name": image.name, "script": None}
        if single_file:
            inline_blocks.append(
                f'<script type="application/json" id="convis-image-{index}">{_json_for_html(payload)}</script>'
            )
        else:
            relative = f"{DATA_FOLDER}/image-{index:04d}.js"
            (out_dir / DATA_FOLDER).mkdir(exist_ok=True)
            atomic_write_bytes(out_dir / relative, (
                f"window.{_RECEIVE_FUNCTION}({index}, {_json_for_html(payload)});\n").encode())
            entry["script"] = relative
        image_entries.append(entry)

    meta = {
        "title": title,
        "note": note,
        "names": list(vocabulary.names),
        "definitions": list(vocabulary.definitions),
        "lemmas": [list(entry) for entry in vocabulary.lemmas],
        # Flat [parent0, child0, parent1, child1, ...] positions in `names`.
        "edges": edge_pairs.reshape(-1).tolist(),
        "images": image_entries,
    }
    parts = _template_parts()
    parts["TITLE"] = html.escape(title)
    parts["META"] = _json_for_html(meta)
    parts["IMAGES"] = "\n".join(inline_blocks)
    # One pass over the template, so that text inside the data that happens
    # to look like a placeholder is left alone.
    page = re.sub(r"\{\{([A-Z]+)\}\}", lambda match: parts[match.group(1)], parts.pop("PAGE"))
    path = out_dir / "index.html"
    atomic_write_bytes(path, page.encode("utf-8"))
    return path


def _check_vocabulary(vocabulary: ExplorerVocabulary) -> np.ndarray:
    """Validates a vocabulary; returns its edges as int64 [E, 2] positions."""
    count = len(vocabulary.names)
    if count == 0:
        raise InputError("the vocabulary has no concepts")
    if len(set(vocabulary.names)) != count:
        repeated = sorted(name for name, times in Counter(vocabulary.names).items() if times > 1)
        raise InputError(f"vocabulary names must be unique; found repeated {repeated[:5]}")
    for field in ("definitions", "lemmas"):
        found = len(getattr(vocabulary, field))
        if found != count:
            raise InputError(f"the vocabulary has {count} names but {found} {field}")
    position = {name: index for index, name in enumerate(vocabulary.names)}
    pairs = np.zeros((len(vocabulary.edges), 2), dtype=np.int64)
    for row, edge in enumerate(vocabulary.edges):
        if len(edge) != 2:
            raise InputError(f"an edge must be a (parent, child) pair; found {edge!r}")
        for column, name in enumerate(edge):
            if name not in position:
                raise ConceptError(f"edge {tuple(edge)!r} names {name!r}, which is not in the vocabulary")
            pairs[row, column] = position[name]
    _check_acyclic(pairs, vocabulary.names)
    return pairs


def _check_acyclic(pairs: np.ndarray, names: Sequence[str]) -> None:
    """Raises InputError when the (parent, child) edges contain a cycle."""
    # Kahn's algorithm: whatever cannot be peeled off from the roots lies on
    # or below a cycle.
    count = len(names)
    children = [[] for _ in range(count)]
    in_degree = np.zeros(count, dtype=np.int64)
    for parent, child in pairs:
        if parent == child:
            raise InputError(f"the edges must form a DAG; {names[parent]!r} is its own parent")
        children[parent].append(child)
        in_degree[child] += 1
    ready = [node for node in range(count) if in_degree[node] == 0]
    peeled = 0
    while ready:
        node = ready.pop()
        peeled += 1
        for child in children[node]:
            in_degree[child] -= 1
            if in_degree[child] == 0:
                ready.append(child)
    if peeled != count:
        stuck = [names[node] for node in np.flatnonzero(in_degree > 0)[:5]]
        raise InputError(f"the edges must form a DAG; found a cycle through or above {stuck}")


def _check_image(image: ExplorerImage, count: int) -> None:
    """Validates one image against a vocabulary of `count` concepts."""
    pixels = np.asarray(image.image)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.shape[0] != pixels.shape[1]:
        raise InputError(
            f"image {image.name!r} must be uint8 [S, S, 3] (the square crop the maps refer to); "
            f"found {pixels.dtype} {pixels.shape}"
        )
    try:
        cells = np.asarray(image.cells, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InputError(f"image {image.name!r}: cells must be real numbers; found {error}") from error
    if cells.ndim != 3 or cells.shape[0] != count or min(cells.shape[1:]) < 1:
        raise InputError(f"image {image.name!r}: cells must be [K={count}, cy, cx]; found {cells.shape}")
    outside = ~((cells >= 0) & (cells <= 1))  # NaN counts as outside
    if np.any(outside):
        raise InputError(
            f"image {image.name!r}: cells must be finite values in [0, 1]; "
            f"found {np.sum(outside)} values that are not, e.g. {cells[outside][0]!r}"
        )
    for field in ("flat", "hierarchical"):
        scores = np.asarray(getattr(image, field))
        if scores.shape != (count,):
            raise InputError(f"image {image.name!r}: {field} must be [K={count}]; found {scores.shape}")
        if not np.all(np.isfinite(scores)):
            raise InputError(f"image {image.name!r}: {field} must be finite; found {np.sum(~np.isfinite(scores))} values that are not")


def _image_payload(image: ExplorerImage) -> dict:
    """The JSON-ready data of one image: PNG data URL, base64 cells and scores."""
    pixels = Image.fromarray(np.asarray(image.image))
    if pixels.width > MAX_IMAGE_SIDE:
        pixels = pixels.resize((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    pixels.save(buffer, format="PNG", optimize=True)
    cells = quantise_cells(image.cells)
    return {
        "name": image.name,
        "image": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"),
        "cy": int(cells.shape[1]),
        "cx": int(cells.shape[2]),
        "cells": _b64(cells.tobytes()),
        "flat": _b64(np.asarray(image.flat, dtype="<f4").tobytes()),
        "hierarchical": _b64(np.asarray(image.hierarchical, dtype="<f4").tobytes()),
    }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _json_for_html(value) -> str:
    """JSON that is safe inside a <script> element.

    `<`, `>` and `&` are written as \\u escapes (still valid JSON and
    JavaScript), so that no text in a definition can close the element.
    """
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _template_parts() -> dict[str, str]:
    """The page template and its inlined style and script, by placeholder."""
    folder = resources.files("convis_jax.pictures") / "assets"
    page, style, script = (folder.joinpath(name).read_text(encoding="utf-8") for name in _TEMPLATE_FILES)
    return {"PAGE": page, "CSS": style, "JS": script}
