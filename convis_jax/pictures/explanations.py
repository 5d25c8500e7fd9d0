"""The files `explain` and `demo` write: per image a folder of overlays and a grid,
then the maps file and the summary.

Every file is written whole or not at all (`convis_jax.core.cache.atomic_write_bytes`),
with the mode the umask gives, under a file name made safe from the concept's name
(`concept_file_names`); an image's folder replaces an earlier one of that name whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np


# Characters never written into a file name: path separators, NUL and other controls,
# and those Windows refuses; each becomes %XX (and "%" itself %25, so that the mapping
# stays one-to-one).
_UNSAFE_CHARACTERS = set('%/\\:*?"<>|') | {chr(c) for c in range(32)} | {"\x7f"}
# Longest file-name stem, in UTF-8 bytes (file systems allow 255; room for suffixes).
_MAX_STEM_BYTES = 200


def concept_file_name(concept: str) -> str:
    """The overlay file of one concept: its name with unsafe characters escaped, + ".png".

    "/" (as in `24/7.n.01`), "\\", NUL and other control characters become %XX,
    a leading "." becomes %2E (so "." and ".." are ordinary names, not folders or
    hidden files), and a name too long for a file system is shortened with a hash of
    the whole name. Different concepts can still map to names that differ only in
    case; `concept_file_names` makes a list unique.
    """
    stem = "".join(f"%{ord(c):02X}" if c in _UNSAFE_CHARACTERS else c for c in str(concept))
    if not stem or stem.startswith("."):
        stem = "%2E" + stem[1:]
    if len(stem.encode("utf-8", "surrogatepass")) > _MAX_STEM_BYTES:
        digest = hashlib.sha256(str(concept).encode("utf-8", "surrogatepass")).hexdigest()[:16]
        cut = stem.encode("utf-8", "surrogatepass")[:_MAX_STEM_BYTES - 17]
        stem = cut.decode("utf-8", "ignore") + "-" + digest
    return stem + ".png"


def concept_file_names(concepts: list[str], reserved: tuple[str, ...] = ("grid.png",)) -> list[str]:
    """Safe (see `concept_file_name`) and unique file names, one per concept.

    Names that would clash on a case-insensitive file system, or with a file in
    `reserved`, get "~2", "~3", ... before ".png".
    """
    taken = {name.lower() for name in reserved}
    names = []
    for concept in concepts:
        name = concept_file_name(concept)
        stem, count = name[:-4], 1
        while name.lower() in taken:
            count += 1
            name = f"{stem}~{count}.png"
        taken.add(name.lower())
        names.append(name)
    return names


def write_explanations(convis, images: list, names: list[str], concepts: list[str], out: Path, *,
                       method: str = "occlusion", gamma: float = 1.0, padding: str = "noise",
                       seed: int = 0, score: str = "cosine", kind: str = "gradient",
                       strategy: str = "auto",
                       sources: list[str] | None = None,
                       export_wsol: Path | None = None,
                       maps_file: str = "maps.npz", summary_file: str = "summary.json",
                       on_maps: Callable[[], object] | None = None) -> dict:
    """Maps, overlays, grids, the maps file and the summary for images and concepts.

    Args:
        convis: the `ConVis` to explain with.
        images: anything `load_images` accepts, N images.
        names: N folder names, one per image.
        concepts: synset names or words (see `ConceptVocabulary.resolve`).
        out: the output folder; gets `<name>/<concept>.png` overlays at each photo's
            size, `<name>/grid.png`, `maps_file` (`maps` float32 [N, K, S, S] in [0, 1]
            on the centre square the model saw, `concepts` [K]) and `summary_file`.
            An image's folder replaces any earlier one of that name, whole (files
            another run left in it go too); other images' folders stay.
        method: "occlusion" or "gradient" (gradient maps are min-max normalised per map).
        gamma: the overlay exponent.
        padding, seed: the occlusion padding and its noise seed (SmoothGrad's seed too).
        score, kind: the gradient method's score and kind of map.
        sources: how the summary names the images (default: `names`).
        export_wsol: also write each map as wsolevaluation scores it
            (`convis_jax.evaluation.export_wsolevaluation`) to
            `<export_wsol>/<concept>/<image id>.npy`, the image id being the file
            name of its source (None: nothing).
        maps_file, summary_file: the file names of the maps and the summary in `out`.
        on_maps: called once the maps are computed, before any file is written.

    Returns:
        The summary written to `summary_file`.
    """
    from convis_jax.core.cache import atomic_write_bytes
    from convis_jax.core.cells import min_max
    from convis_jax.core.images import load_images
    from convis_jax.core.windows import map_to_image
    from convis_jax.pictures.overlays import concept_grid, save_png, white_overlay

    photos = load_images(images)
    resolved = convis.vocabulary.resolve(concepts)
    if method == "occlusion":
        maps = convis.occlusion_maps(photos, resolved, padding=padding, seed=seed)
    else:
        maps = min_max(convis.gradient_maps(photos, resolved, score=score, kind=kind,
                                                strategy=strategy, seed=seed))
    if on_maps is not None:
        on_maps()
    out.mkdir(parents=True, exist_ok=True)
    summary = {"model": convis.model.name,
               "precision": getattr(convis.model, "precision", "") or "the encoder's own",
               "method": method, "concepts": resolved,
               "vocabulary_size": len(convis.vocabulary), "text": convis.bank.text,
               "maps": f"{maps_file}: maps [N, K, S, S] float32 in [0, 1] on the centre "
                       f"square the model saw; concepts [K]", "images": []}
    file_names = concept_file_names(resolved)
    # Titles drawn in the grid: control characters (a NUL, say) shown as escapes.
    titles = ["".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in concept)
              for concept in resolved]
    for n, (photo, name) in enumerate(zip(photos, names)):
        on_photo = map_to_image(maps[n], photo.shape[:2])
        files = {}
        with _replacing_folder(out / name) as folder:
            for concept, file_name, m in zip(resolved, file_names, on_photo):
                files[concept] = save_png(white_overlay(photo, m, gamma), folder / file_name).name
            grid = concept_grid(photo, on_photo, titles, folder / "grid.png", gamma=gamma)
        if export_wsol is not None:
            from convis_jax.evaluation.export import export_wsolevaluation

            for file_name, m in zip(file_names, on_photo):
                export_wsolevaluation(export_wsol / file_name.removesuffix(".png"),
                                      [Path((sources or names)[n]).name], [m])
        peaks = {c: [int(v) for v in np.unravel_index(np.argmax(m), m.shape)[::-1]]
                 for c, m in zip(resolved, on_photo)}
        summary["images"].append({"image": (sources or names)[n], "size": list(photo.shape[1::-1]),
                                  "folder": name, "overlays": files, "grid": grid.name,
                                  "peak_xy": peaks})
    buffer = io.BytesIO()
    np.savez_compressed(buffer, maps=maps.astype(np.float32), concepts=np.array(resolved))
    atomic_write_bytes(out / maps_file, buffer.getvalue())
    atomic_write_bytes(out / summary_file, json.dumps(summary, indent=2).encode())
    return summary


@contextlib.contextmanager
def _replacing_folder(folder: Path):
    """Yields a new hidden folder beside `folder`, which then takes `folder`'s place whole.

    Stopped at any point (an error, Ctrl-C), the new folder and any half-removed earlier
    one are cleaned away and `folder` is as it was, or already the new one.
    """
    for _ in range(100):
        new = folder.parent / f".{folder.name}.{secrets.token_hex(4)}.new"
        try:
            new.mkdir()  # the mode a plain mkdir gives, as every file written here
            break
        except FileExistsError:
            continue
    old = new.with_suffix(".old")
    try:
        yield new
        if folder.is_dir() and not folder.is_symlink():
            folder.rename(old)
        new.rename(folder)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        if old.exists() and not folder.exists():
            old.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
        raise
