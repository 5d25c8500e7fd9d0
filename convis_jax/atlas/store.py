"""The atlas in storage: a manifest, and one part per building process of zarr v3 arrays.

An atlas lives in a local folder or under an object-storage prefix
(`s3://BUCKET/PREFIX`, `gs://BUCKET/PREFIX`); `storage.Storage` is the one
interface to both, and every object below goes through it. Layout:
    atlas.json                    the manifest: format version, the model's fingerprint,
                                  the window grid, the padding and its seed, the stored
                                  dtype, the image ids in atlas order (image i's
                                  padding noise is drawn from (seed, i)) and the parts
    part-P/windows/               zarr v3 array float16|float32 [N, n_windows, d]: the unit
                                  embedding of every window of image i at [i] (one chunk
                                  per image)
    part-P/image/                 zarr v3 array float32 [N, d]: the unit embedding of the
                                  whole image, as `ClipModel.embed_images` gives it
    part-P/done/NNNNNNNNN.json    one record per finished batch of images: for each, its
                                  number, id, (height, width) and square crop

Why zarr v3 through tensorstore: tensorstore already comes with orbax (no new
dependency), is the JAX ecosystem's array store (orbax checkpoints are zarr
through tensorstore), reads and writes chunks concurrently from C++, and
zarr v3's crc32c codec makes every damaged chunk a read error naming its
file rather than wrong numbers. One chunk per image makes writing an image
one file and reading any image one file; chunks never written take no space,
so a part's arrays span every image number but hold only its own images.

Why parts: each process writes only its own folder, so processes on hosts
sharing a file system or a bucket never write the same file or object. The
manifest, which every process updates, is only ever replaced over the
version that process read (a conditional write: S3's `If-Match`), so
concurrent claims merge instead of overwriting each other; it lists the parts,
since object storage has no folders to look for them in. A rerun with another
number of processes simply adds chunks to the parts it uses; an image is
read from whichever part recorded it.

Completion: a batch's record is written (whole, and only where no record is)
only after its chunks are written, so a build killed at any moment leaves
every recorded image complete, and loses at most the batch in flight, which
a rerun redoes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np

from convis_jax.atlas.storage import Storage, as_storage, is_unreachable
from convis_jax.errors import InputError, one_line

MANIFEST = "atlas.json"
FORMAT = "convis-atlas"
# The layout's version; a reader refuses any other.
VERSION = 1
DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class ImageRecord:
    """What the atlas keeps about one image besides its embeddings.

    Attributes:
        index: the image's number in the atlas (its padding noise comes from (seed, index)).
        image_id: its id: a folder's file by its "/"-separated path relative to the folder,
            or a list file's line.
        size: (height, width) of the photo in pixels.
        crop: (top, left, side) of the centred square the maps refer to.
        part: the part folder holding its embeddings.
    """

    index: int
    image_id: str
    size: tuple[int, int]
    crop: tuple[int, int, int]
    part: str


def _ts():
    import tensorstore

    return tensorstore


def read_manifest(storage: Storage) -> dict | None:
    """The manifest of an atlas, checked; None when the place has none.

    Raises:
        InputError: the manifest is unreadable or not an atlas manifest of this version,
            or the storage cannot be reached.
    """
    return _read_manifest(storage)[0]


def _read_manifest(storage: Storage) -> tuple[dict | None, bytes]:
    """(the checked manifest or None, its generation for `Storage.replace`)."""
    storage = as_storage(storage)
    where = storage.where(MANIFEST)
    data, generation = storage.read(MANIFEST)
    if data is None:
        return None, generation
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"expected an atlas manifest at {where!r}, found unreadable "
                         f"JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InputError(f"expected an atlas manifest (format {FORMAT!r}) at {where!r}, "
                         f"found another file")
    if manifest.get("version") != VERSION:
        raise InputError(f"expected atlas layout version {VERSION} in {where!r}, found "
                         f"{manifest.get('version')!r}; rebuild the atlas with this version")
    missing = [key for key in ("model", "grid", "padding", "seed", "dtype", "images")
               if key not in manifest]
    if missing or manifest["dtype"] not in DTYPES or not isinstance(manifest["images"], list):
        raise InputError(f"expected a complete atlas manifest at {where!r}, found "
                         f"{'missing ' + ', '.join(missing) if missing else 'bad values'}")
    return manifest, generation


def parts(storage: Storage, manifest: dict) -> list[str]:
    """The part folders of an atlas: those its manifest lists, and (for atlases written
    before manifests listed them) the part-* folders of a local atlas."""
    found = set(manifest.get("parts", [])) | set(storage.folders("part-*"))
    return sorted(found, key=lambda name: (len(name), name))


def new_manifest(model, grid, *, padding: str, seed: int, dtype: str, images: list[str],
                 sources: list[str], source: str | None = None) -> dict:
    """The manifest of an atlas of `images` built with `model` on `grid`.

    Args:
        model: the `ClipModel` (recorded by its weights' fingerprint; where it was loaded
            from may differ between hosts, so `source` is only a hint for `Atlas.open`).
        grid: the `WindowGrid`.
        padding, seed: the padding mode and the seed of its noise.
        dtype: the stored window embeddings' dtype, one of `DTYPES`.
        images: the image ids, in atlas order.
        sources: where the photos were (folders or list files), for pages that show them.
        source: the model's folder or hub id; None for the bundled model.
    """
    return {"format": FORMAT, "version": VERSION,
            "model": {"fingerprint": model.fingerprint, "source": source, "name": model.name,
                      "embedding_dim": model.embedding_dim},
            "grid": {"image_size": list(grid.image_size),
                     "window_sizes": list(grid.window_sizes), "stride": grid.stride,
                     "padding": grid.padding, "n_windows": grid.n_windows},
            "padding": padding, "seed": int(seed), "dtype": dtype, "images": list(images),
            "sources": list(sources)}


def claim(storage: Storage, manifest: dict, part: str | None = None) -> dict:
    """Creates the atlas manifest, or checks that the stored one matches and adds new images.

    Every process calls this; each replaces the manifest only over the version it
    read (a conditional write), and reads and merges again when another process
    got there first, so no claim is lost.

    Args:
        storage: the atlas's place.
        manifest: the settings (everything but "images" must match an existing atlas) and
            "images": the ids this build wants, in order.
        part: the part folder this process will write, recorded in the manifest.

    Returns:
        The manifest now stored: an existing atlas keeps its images in their order and
        gets the new ids appended, in the order given.

    Raises:
        InputError: the place holds an atlas built with another model, grid, padding,
            seed or dtype (naming the manifest and the difference).
    """
    storage = as_storage(storage)
    while True:
        found, generation = _read_manifest(storage)
        if found is None:
            merged = dict(manifest, parts=[part] if part else [])
        else:
            for key in ("model", "grid", "padding", "seed", "dtype"):
                mine, theirs = manifest[key], found[key]
                if key == "model":  # the weights decide; where they were loaded from may differ
                    mine, theirs = mine["fingerprint"], theirs["fingerprint"]
                if mine != theirs:
                    raise InputError(f"{storage.where(MANIFEST)!r} holds an atlas built with "
                                     f"another {key} ({theirs!r}, this build: {mine!r}); use a "
                                     f"new --out, or build with the atlas's settings")
            known = set(found["images"])
            known_parts = parts(storage, found)
            merged = dict(found, images=found["images"] + [i for i in manifest["images"]
                                                             if i not in known],
                          sources=found.get("sources", []) + [
                              s for s in manifest.get("sources", [])
                              if s not in found.get("sources", [])],
                          parts=known_parts + ([part] if part and part not in known_parts
                                               else []))
            if merged == found:
                return found
        if storage.replace(MANIFEST, json.dumps(merged, indent=1).encode(), generation):
            return merged


def _array_spec(storage: Storage, key: str, shape, dtype: str, chunk) -> dict:
    return {"driver": "zarr3", "kvstore": storage.spec(key + "/"),
            "metadata": {"shape": list(shape), "data_type": dtype,
                         "chunk_grid": {"name": "regular",
                                        "configuration": {"chunk_shape": list(chunk)}},
                         "codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                                    {"name": "crc32c"}]}}


def open_array(storage: Storage, key: str, *, spec: dict | None = None, create=False):
    """Opens one zarr v3 array at `key`, or creates it from `spec` (`_array_spec`); a
    damaged one is an InputError naming it, a storage failure one naming the place."""
    ts = _ts()
    try:
        if create:
            return ts.open(spec, create=True, open=True, context=storage.context).result()
        return ts.open({"driver": "zarr3", "kvstore": storage.spec(key + "/")}, open=True,
                       context=storage.context).result()
    except ValueError as err:
        if is_unreachable(err):
            raise storage.error(err, "open", key) from None
        raise InputError(f"expected an atlas array at {storage.where(key + '/zarr.json')!r}, "
                         f"found it missing or damaged ({one_line(err)[:300]})") from None


class Part:
    """One process's folder of an atlas, for writing.

    Args:
        storage: the atlas's place.
        process_id: this process's number.
        n_images: the atlas's image count (the arrays grow to it).
        n_windows, dim: the window count and embedding width.
        dtype: "float16" or "float32", the stored window embeddings' type.
    """

    def __init__(self, storage: Storage, process_id: int, *, n_images: int, n_windows: int,
                 dim: int, dtype: str):
        self.storage = storage = as_storage(storage)
        self.name = part_name(process_id)
        self.windows = self._grow("windows", (n_images, n_windows, dim), dtype,
                                  (1, n_windows, dim))
        self.image = self._grow("image", (n_images, dim), "float32", (1, dim))

    def _grow(self, name: str, shape, dtype: str, chunk):
        storage, key = self.storage, f"{self.name}/{name}"
        exists = storage.read(key + "/zarr.json")[0] is not None
        array = open_array(storage, key, spec=_array_spec(storage, key, shape, dtype, chunk),
                           create=not exists)
        found = tuple(array.shape)
        if found[1:] != tuple(shape[1:]) or str(array.dtype.name) != dtype:
            raise InputError(f"expected {dtype} {list(shape[1:])} rows in "
                             f"{storage.where(key + '/zarr.json')!r}, found {array.dtype.name} "
                             f"{list(found[1:])}")
        if found[0] < shape[0]:
            array = array.resize(exclusive_max=list(shape), expand_only=True,
                                 resize_metadata_only=True).result()
        return array

    def write(self, records: list[ImageRecord], windows: np.ndarray, image: np.ndarray) -> None:
        """Writes a batch's embeddings, then (only then) its record.

        Args:
            records: the batch's images.
            windows: float [B, n_windows, d] their window embeddings.
            image: float [B, d] their whole-image embeddings.

        Raises:
            InputError: the record exists already: another process writes this part.
        """
        futures = []
        for n, record in enumerate(records):
            futures.append(self.windows[record.index].write(
                windows[n].astype(self.windows.dtype.numpy_dtype)))
            futures.append(self.image[record.index].write(image[n].astype(np.float32)))
        for future in futures:
            try:
                future.result()
            except ValueError as err:
                raise self.storage.error(err, "write", self.name) from None
        body = [{"index": r.index, "id": r.image_id, "size": list(r.size), "crop": list(r.crop)}
                for r in records]
        key = f"{self.name}/done/{records[0].index:09d}.json"
        if not self.storage.create(key, json.dumps({"images": body}).encode()):
            raise InputError(f"{self.storage.where(key)!r} exists already: another process "
                             f"writes {self.name} (two processes with the same process id?)")


def part_name(process_id: int) -> str:
    """The folder of process `process_id`'s part."""
    return f"part-{process_id}"


_RECORD = re.compile(r"[0-9]{9}\.json")


def read_records(storage: Storage, manifest: dict) -> dict[int, ImageRecord]:
    """{image number: record} of every finished image, from every part's records.

    Raises:
        InputError: a record file that is unreadable, or that names an image the
            manifest does not hold at that number (naming the file).
    """
    storage = as_storage(storage)
    ids = manifest["images"]
    done: dict[int, ImageRecord] = {}
    for part in parts(storage, manifest):
        for key in storage.list(f"{part}/done/"):
            if not _RECORD.fullmatch(key.rsplit("/", 1)[-1]):
                continue  # not a record (a temporary or lock file)
            where = storage.where(key)
            data, _ = storage.read(key)
            if data is None:
                continue
            try:
                entries = json.loads(data.decode("utf-8"))["images"]
                records = [ImageRecord(int(e["index"]), str(e["id"]), tuple(e["size"]),
                                       tuple(e["crop"]), part) for e in entries]
            except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError,
                    ValueError) as err:
                raise InputError(f"expected an atlas record at {where!r}, found a damaged "
                                 f"file ({type(err).__name__}: {one_line(err)[:300]})") from None
            for record in records:
                if not 0 <= record.index < len(ids) or ids[record.index] != record.image_id:
                    raise InputError(f"{where!r} records image {record.image_id!r} as number "
                                     f"{record.index}, but {storage.where(MANIFEST)!r} does not "
                                     f"list it there; this part belongs to another atlas")
                done.setdefault(record.index, record)
    return done


class Reader:
    """Reads the embeddings of finished images from whichever part holds them.

    Args:
        storage: the atlas's place.
        manifest: its manifest.
        records: its finished images (`read_records`).
    """

    def __init__(self, storage: Storage, manifest: dict, records: dict[int, ImageRecord]):
        self.storage = storage = as_storage(storage)
        n_windows, dim = manifest["grid"]["n_windows"], manifest["model"]["embedding_dim"]
        self.windows, self.image = {}, {}
        for part in sorted({r.part for r in records.values()}):
            for name, rows, dtype, store in (("windows", (n_windows, dim), manifest["dtype"],
                                              self.windows),
                                             ("image", (dim,), "float32", self.image)):
                key = f"{part}/{name}"
                array = open_array(storage, key)
                if tuple(array.shape[1:]) != rows or array.dtype.name != dtype:
                    raise InputError(f"expected {dtype} {list(rows)} rows in "
                                     f"{storage.where(key + '/zarr.json')!r} (as {MANIFEST} "
                                     f"says), found "
                                     f"{array.dtype.name} {list(array.shape[1:])}")
                store[part] = array
        self.records = records

    def read(self, name: str, indices) -> np.ndarray:
        """The stored rows of images `indices` (finished ones) of array `name`.

        Returns:
            "windows": [B, n_windows, d] in the stored dtype; "image": float32 [B, d].

        Raises:
            InputError: a damaged chunk (its checksum fails), naming the file.
        """
        arrays = self.windows if name == "windows" else self.image
        futures = [arrays[self.records[i].part][int(i)].read() for i in indices]
        out = []
        for i, future in zip(indices, futures):
            try:
                out.append(future.result())
            except ValueError as err:
                part = self.records[i].part
                if is_unreachable(err):
                    raise self.storage.error(err, "read", f"{part}/{name}") from None
                raise InputError(f"atlas data of image {self.records[i].image_id!r} in "
                                 f"{self.storage.where(f'{part}/{name}')!r} is damaged "
                                 f"({one_line(err)[:300]}); delete {part}/done and rebuild to "
                                 f"redo that part") from None
        return np.stack(out)
