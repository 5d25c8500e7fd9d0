"""The atlas page: search a concept of a collection, see the images that show it most, with maps.

An offline folder that opens from `file://`:
* `index.html`: the page, its script and style inlined, and the vocabulary
  (names and definitions) and image list.
* `atlas-data/concepts-NNNN.js`: per block of concepts, each concept's top
  images (their numbers, int32), scores (float32) and maps in cell form
  (uint8, `explorer.quantise_cells`), base64; a block is loaded when one of
  its concepts is first shown. Scripts, not JSON: a page opened from
  `file://` may load scripts from its folder but may not fetch files.
* `atlas-data/images/NNNNNN.jpg`: the centre squares the maps refer to. The
  page never reads their pixels: the white blend image x m + white x (1 - m)
  is a white layer of opacity 1 - m drawn over the picture.
* `explorer/`: the concept explorer (`pictures.explorer`) of every image
  shown, one data file per image; each tile links to it.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from convis_jax.core.cache import atomic_write_bytes
from convis_jax.errors import InputError
from convis_jax.pictures.explorer import _json_for_html, quantise_cells

DATA_FOLDER = "atlas-data"
EXPLORER_FOLDER = "explorer"
# Concepts per data script: 256 x 8 images x 196 cells is about 0.4 MB of map data.
BLOCK_SIZE = 256
THUMBNAIL_SIDE = 224


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def write_atlas_page(out_dir, *, names: Sequence[str], definitions: Sequence[str],
                     image_names: Sequence[str], squares: dict[int, np.ndarray],
                     top_images: np.ndarray, top_scores: np.ndarray, top_cells: np.ndarray,
                     start: int = 0, note: str = "",
                     title: str = "ConVis concept atlas") -> Path:
    """Writes the atlas page to `out_dir/index.html` (the explorer is written beside it).

    Args:
        out_dir: the page's folder; created if missing.
        names, definitions: the T concepts' synset names and glosses.
        image_names: the N images' ids.
        squares: {image number: uint8 [S, S, 3] centre square} of every image that some
            concept shows.
        top_images: int [T, k] image numbers of each concept's best images, best first;
            -1 where a concept has fewer.
        top_scores: float [T, k] their scores.
        top_cells: float [T, k, cy, cx] in [0, 1], the concept's map on each image.
        start: the concept shown on opening.
        note: one line under the title.
        title: the page's heading.

    Returns:
        The path of index.html.

    Raises:
        InputError: inconsistent shapes, or a shown image without its square.
    """
    top_images = np.asarray(top_images, np.int32)
    count, k = top_images.shape
    if (len(names) != count or len(definitions) != count
            or np.shape(top_scores) != (count, k) or np.shape(top_cells)[:2] != (count, k)):
        raise InputError(f"expected [T={len(names)}, k] top images, scores and cells, found "
                         f"{top_images.shape}, {np.shape(top_scores)}, {np.shape(top_cells)}")
    missing = sorted(set(top_images[top_images >= 0].tolist()) - set(squares))
    if missing:
        raise InputError(f"images {missing[:5]} are shown but have no square picture")
    out_dir = Path(out_dir)
    thumbs = {}
    for number, square in squares.items():
        picture = Image.fromarray(np.asarray(square, np.uint8))
        if picture.width != THUMBNAIL_SIDE:
            picture = picture.resize((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=88)
        relative = f"{DATA_FOLDER}/images/{number:06d}.jpg"
        atomic_write_bytes(out_dir / relative, buffer.getvalue())
        thumbs[number] = relative
    quantised = quantise_cells(np.asarray(top_cells))
    cy, cx = quantised.shape[2:]
    blocks = []
    for block, first in enumerate(range(0, count, BLOCK_SIZE)):
        rows = slice(first, first + BLOCK_SIZE)
        data = {"images": _b64(top_images[rows].astype("<i4")),
                "scores": _b64(np.asarray(top_scores[rows], "<f4")),
                "cells": _b64(quantised[rows])}
        relative = f"{DATA_FOLDER}/concepts-{block:04d}.js"
        atomic_write_bytes(out_dir / relative, f"window.convisAtlasReceive({block}, "
                           f"{_json_for_html(data)});\n".encode())
        blocks.append(relative)
    meta = {"note": note, "names": list(names), "definitions": list(definitions),
            "images": list(image_names), "thumbs": {str(n): t for n, t in thumbs.items()},
            "k": int(k), "cy": int(cy), "cx": int(cx), "block_size": BLOCK_SIZE,
            "blocks": blocks, "start": int(start),
            "explorer": f"{EXPLORER_FOLDER}/index.html"}
    folder = resources.files("convis_jax.pictures") / "assets"
    parts = {"PAGE": folder.joinpath("atlas.html").read_text(encoding="utf-8"),
             "CSS": folder.joinpath("atlas.css").read_text(encoding="utf-8"),
             "JS": folder.joinpath("atlas.js").read_text(encoding="utf-8"),
             "TITLE": html.escape(title), "META": _json_for_html(meta)}
    page = re.sub(r"\{\{([A-Z]+)\}\}", lambda match: parts[match.group(1)], parts.pop("PAGE"))
    path = out_dir / "index.html"
    atomic_write_bytes(path, page.encode("utf-8"))
    return path
