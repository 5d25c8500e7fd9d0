"""The concept index of an atlas: every concept's ranking values for every image, concept-major.

`Atlas.top_images` ranks images by a concept's hierarchical whole-image
score (`by="image"`) or by the peak of its map (`by="map_peak"`, which needs
the concept's rank in every window of every image: a full pass over the
stored windows per question). The ranks a window gives are the same for
every concept, so one pass over an image's windows yields all of them at
once (`index_rows`); the index stores them, so that a later question reads
one concept's values for every image instead of recomputing them.

Layout, under the atlas (`storage.Storage`), one index per concept bank
(model, vocabulary and text mode: a bank that changes is another index,
never mixed with this one):

    index/KEY/index.json          what the index holds: the bank's and the vocabulary's
                                  digests (KEY is made from them), the text mode, T, the
                                  block size S
    index/KEY/values/             zarr v3 float32 [T, 3, CAPACITY]: for concept c and image
                                  i, [c, 0, i] the hierarchical whole-image score, [c, 1, i]
                                  the map's peak, [c, 2, i] its cell (row-major index);
                                  one shard per block of S images, holding one inner chunk
                                  [1, 3, S] per concept: one concept across all images is
                                  one small read per block
    index/KEY/done/BBBBBBBBB.json the images of block B the index covers, written after the
                                  block's values

Blocks are the unit of work: process p of P indexes blocks p, p + P, ...
(images not built yet are left for a later run), writes each block's shard
whole, then its record: created where there was none, or replaced over the
version it read when the block has grown, so a run killed at any moment
loses at most the blocks in flight, and two processes never write the
same object. A rerun indexes only the images its records lack.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from dataclasses import dataclass

import numpy as np

from convis_jax.atlas.storage import Storage, is_unreachable
from convis_jax.errors import InputError, one_line

FORMAT = "convis-atlas-index"
VERSION = 1
SCORE, PEAK, CELL = 0, 1, 2
# Image numbers an index can hold: its arrays never grow (no metadata to rewrite when
# an atlas grows); blocks never written take no space.
CAPACITY = 2**40
# Bytes of values a block holds in memory while it is indexed ([T, 3, S] float32).
BLOCK_BYTES = 2**27
_RECORD = re.compile(r"[0-9]{9}\.json")


def block_size(num_concepts: int) -> int:
    """Images per block: the largest power of two whose [T, 3, S] values fit BLOCK_BYTES,
    between 4 and 4096."""
    fit = BLOCK_BYTES // (12 * max(int(num_concepts), 1))
    return int(min(4096, max(4, 2 ** int(np.floor(np.log2(max(fit, 1)))))))


def index_key(bank_embeddings: np.ndarray, vocabulary) -> tuple[str, str, str]:
    """(key, bank digest, vocabulary digest): the index of this bank and hierarchy."""
    bank = hashlib.sha256(np.ascontiguousarray(bank_embeddings, np.float32).tobytes())
    vocab = hashlib.sha256(json.dumps([list(vocabulary.names),
                                       sorted(map(list, vocabulary.edges))]).encode())
    key = hashlib.sha256((bank.hexdigest() + vocab.hexdigest()).encode()).hexdigest()[:24]
    return key, bank.hexdigest(), vocab.hexdigest()


# ---------------------------------------------------------------------- computing


def image_scores(image_rows: np.ndarray, bank_rows: np.ndarray) -> np.ndarray:
    """Cosine similarities float32 [N, K] of whole-image embeddings [N, d] to bank rows [K, d].

    Accumulated in float64 and rounded once, so that a score is the same float32
    number whichever other images or concepts are asked with it (a float32 product's
    rounding depends on the shapes the BLAS library is given).
    """
    return (np.asarray(image_rows, np.float64) @ np.asarray(bank_rows, np.float64).T
            ).astype(np.float32)


@dataclass(frozen=True)
class IndexRows:
    """Every concept's ranking values for B images.

    Attributes:
        score: float32 [B, T] hierarchical whole-image score (`top_images(by="image")`).
        peak: float32 [B, T] the map's peak before min-max (`top_images(by="map_peak")`).
        cell: int32 [B, T] the row-major index of the cell where the peak is reached.
    """

    score: np.ndarray
    peak: np.ndarray
    cell: np.ndarray


def index_rows(windows: np.ndarray, image: np.ndarray, bank: np.ndarray, vocabulary, sweep,
               levels=None) -> IndexRows:
    """Every concept's whole-image score, map peak and peak cell, in one pass over the windows.

    The peaks are the sweep's `stored_peaks` for all T concepts (one rank per synset
    and window serves them all); on a CPU the ranks come from NumPy's sort, as
    `Atlas.cells` takes them (`stored_windows.host_cells`), and the cell values from
    the same compiled expression as `stored_peaks` (`host_mean_rank_similarity`).

    Args:
        windows: float16|float32 [B, n_windows, d] stored window embeddings.
        image: float32 [B, d] stored whole-image embeddings.
        bank: float32 [T, d] the concept bank.
        vocabulary: its `ConceptVocabulary`.
        sweep: the atlas's `Sweep` (its grid; its kernels off the CPU).
        levels: `core.ranks.hierarchy_levels(vocabulary)`, computed when None.

    Returns:
        The `IndexRows` of the B images.
    """
    import jax
    import jax.numpy as jnp

    from convis_jax.core.cells import accumulate_cells, window_lattices
    from convis_jax.core.ranks import hierarchy_levels, ranks, subtree_max, subtree_min_all
    from convis_jax.kernels.stored_windows import host_mean_rank_similarity, stored_similarities
    from convis_jax.kernels.sweep import ConceptRequest

    t = len(vocabulary)
    score = subtree_max(image_scores(image, bank), vocabulary.subtree_offsets,
                        vocabulary.subtree_members).astype(np.float32)
    if jax.default_backend() != "cpu":
        peak, cell = sweep.stored_peaks(jnp.asarray(windows), jnp.asarray(bank),
                                        ConceptRequest.of(vocabulary))
        return IndexRows(score, np.asarray(peak), np.asarray(cell))
    levels = hierarchy_levels(vocabulary) if levels is None else levels
    z = np.asarray(stored_similarities(jnp.asarray(windows), jnp.asarray(bank)))
    best = subtree_min_all(ranks(z), levels)  # [B, n_windows, T]
    sums = accumulate_cells(window_lattices(best, sweep.grid), sweep.grid)  # [B, T, cy, cx]
    mean = np.asarray(host_mean_rank_similarity(jnp.asarray(sums.astype(np.int32)),
                                                grid=sweep.grid, num_synsets=t))
    flat = mean.reshape(mean.shape[:2] + (-1,))  # [B, T, cells]
    return IndexRows(score, flat.max(axis=-1), flat.argmax(axis=-1).astype(np.int32))


# ---------------------------------------------------------------------- storing


def _values_spec(storage: Storage, key: str, num_concepts: int, block: int) -> dict:
    inner = [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}]
    return {"driver": "zarr3", "kvstore": storage.spec(key + "/"),
            "metadata": {"shape": [num_concepts, 3, CAPACITY], "data_type": "float32",
                         "fill_value": "NaN",
                         "chunk_grid": {"name": "regular", "configuration": {
                             "chunk_shape": [num_concepts, 3, block]}},
                         "codecs": [{"name": "sharding_indexed", "configuration": {
                             "chunk_shape": [1, 3, block], "codecs": inner,
                             "index_codecs": inner, "index_location": "end"}}]}}


def _open_values(storage: Storage, key: str, *, num_concepts: int, block: int, create: bool):
    import tensorstore as ts

    spec = _values_spec(storage, key, num_concepts, block)
    # Shard indices are cached: a second question about the atlas reads only the values.
    spec["context"] = {"cache_pool": {"total_bytes_limit": 2**28}}
    try:
        array = ts.open(spec, create=create, open=True, context=storage.context).result()
    except ValueError as err:
        if is_unreachable(err):
            raise storage.error(err, "open", key) from None
        raise InputError(f"expected a concept index array at "
                         f"{storage.where(key + '/zarr.json')!r}, found it missing or damaged "
                         f"({one_line(err)[:300]})") from None
    if tuple(array.shape[:2]) != (num_concepts, 3):
        raise InputError(f"expected [{num_concepts}, 3, ...] values in "
                         f"{storage.where(key + '/zarr.json')!r}, found {list(array.shape)}")
    return array


class ConceptIndex:
    """An atlas's stored index for one concept bank, for reading.

    Args:
        storage: the atlas's place.
        key: the index's key (`index_key`).
        meta: its index.json.
        coverage: {block: set of image numbers it covers}.
    """

    def __init__(self, storage: Storage, key: str, meta: dict, coverage: dict[int, set[int]]):
        self.storage, self.key, self.meta = storage, key, meta
        self.block = int(meta["block"])
        self.num_concepts = int(meta["concepts"])
        self.coverage = coverage
        self.covered = set().union(*coverage.values()) if coverage else set()
        self._mask = np.zeros(max(self.covered, default=-1) + 1, bool)
        self._mask[list(self.covered)] = True
        self._values = None

    def covers(self, numbers) -> np.ndarray:
        """bool [N]: which of the image `numbers` the index holds."""
        numbers = np.asarray(numbers, np.int64)
        inside = numbers < len(self._mask)
        return inside & self._mask[np.where(inside, numbers, 0)]

    def _array(self):
        if self._values is None:
            self._values = _open_values(self.storage, f"index/{self.key}/values",
                                        num_concepts=self.num_concepts, block=self.block,
                                        create=False)
        return self._values

    def concept(self, concept: int, numbers) -> tuple[np.ndarray, np.ndarray]:
        """(values float32 [3, N], covered bool [N]) of one concept for image `numbers`.

        One read: the concept's inner chunk in each block up to the largest number.
        """
        numbers = np.asarray(numbers, np.int64)
        covered = self.covers(numbers)
        if not covered.any():
            return np.full((3, len(numbers)), np.nan, np.float32), covered
        stop = int(numbers[covered].max()) + 1
        try:
            row = self._array()[int(concept), :, :stop].read().result()
        except ValueError as err:
            raise self._damaged(err) from None
        values = np.full((3, len(numbers)), np.nan, np.float32)
        values[:, covered] = row[:, numbers[covered]]
        return values, covered

    def scores(self, numbers) -> tuple[np.ndarray, np.ndarray]:
        """(hierarchical whole-image scores float32 [N, T], covered bool [N]) of images."""
        numbers = np.asarray(numbers, np.int64)
        covered = self.covers(numbers)
        out = np.full((len(numbers), self.num_concepts), np.nan, np.float32)
        if covered.any():
            stop = int(numbers[covered].max()) + 1
            try:
                table = self._array()[:, SCORE, :stop].read().result()  # [T, stop]
            except ValueError as err:
                raise self._damaged(err) from None
            out[covered] = table[:, numbers[covered]].T
        return out, covered

    def _damaged(self, err) -> InputError:
        if is_unreachable(err):
            return self.storage.error(err, "read", f"index/{self.key}/values")
        return InputError(f"the concept index in "
                          f"{self.storage.where(f'index/{self.key}/values')!r} is damaged "
                          f"({one_line(err)[:300]}); delete index/{self.key} and index again")


def _read_coverage(storage: Storage, key: str, block: int,
                   n_images: int) -> tuple[dict[int, set[int]], dict[int, bytes]]:
    """({block: covered image numbers}, {block: record generation}) of an index."""
    coverage, generations = {}, {}
    for name in storage.list(f"index/{key}/done/"):
        if not _RECORD.fullmatch(name.rsplit("/", 1)[-1]):
            continue
        data, generation = storage.read(name)
        if data is None:
            continue
        try:
            record = json.loads(data.decode("utf-8"))
            b = int(record["block"])
            images = {int(i) for i in record["images"]}
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError,
                ValueError) as err:
            raise InputError(f"expected a concept index record at {storage.where(name)!r}, "
                             f"found a damaged file ({type(err).__name__})") from None
        if any(not b * block <= i < min((b + 1) * block, n_images) for i in images):
            raise InputError(f"{storage.where(name)!r} lists images outside block {b} of "
                             f"{block} images; the index belongs to another atlas")
        coverage[b], generations[b] = images, generation
    return coverage, generations


def _meta(bank_digest: str, vocabulary_digest: str, text: str, num_concepts: int,
          model_fingerprint: str) -> dict:
    return {"format": FORMAT, "version": VERSION, "bank": bank_digest,
            "vocabulary": vocabulary_digest, "text": text, "concepts": num_concepts,
            "model": model_fingerprint, "block": block_size(num_concepts),
            "values": "float32 [T, 3, images]: hierarchical whole-image score, map peak, "
                      "peak cell (row-major)"}


def _check_meta(storage: Storage, key: str, found, want: dict) -> dict:
    where = storage.where(f"index/{key}/index.json")
    if not isinstance(found, dict) or found.get("format") != FORMAT:
        raise InputError(f"expected a concept index description at {where!r}, found another "
                         f"file")
    if found.get("version") != VERSION:
        raise InputError(f"expected concept index version {VERSION} at {where!r}, found "
                         f"{found.get('version')!r}; delete index/{key} and index again")
    if not isinstance(found.get("block"), int) or found["block"] < 1:
        raise InputError(f"expected a positive block size in {where!r}, found "
                         f"{found.get('block')!r}; delete index/{key} and index again")
    for name in ("bank", "vocabulary", "concepts", "model"):  # the block size is the index's
        if found.get(name) != want[name]:
            raise InputError(f"{where!r} indexes another {name} ({found.get(name)!r}, this "
                             f"atlas asks for {want[name]!r}); delete index/{key} and index "
                             f"again")
    return found


def open_index(atlas) -> ConceptIndex | None:
    """The stored index of an open atlas's concept bank, or None when it has none."""
    key, bank_digest, vocab_digest = index_key(atlas.bank.embeddings, atlas.vocabulary)
    storage = atlas.storage
    found = storage.read_json(f"index/{key}/index.json")
    if found is None:
        return None
    meta = _check_meta(storage, key, found, _meta(bank_digest, vocab_digest, atlas.bank.text,
                                                  len(atlas.vocabulary),
                                                  atlas.manifest["model"]["fingerprint"]))
    coverage, _ = _read_coverage(storage, key, int(meta["block"]), len(atlas.manifest["images"]))
    return ConceptIndex(storage, key, meta, coverage)


def prepare_index(atlas) -> tuple[str, dict, object]:
    """(key, description, values array) of the index of an open atlas's bank, created
    where there is none (by whichever process comes first), checked where there is one."""
    storage, vocabulary = atlas.storage, atlas.vocabulary
    key, bank_digest, vocab_digest = index_key(atlas.bank.embeddings, vocabulary)
    want = _meta(bank_digest, vocab_digest, atlas.bank.text, len(vocabulary),
                 atlas.manifest["model"]["fingerprint"])
    meta_key = f"index/{key}/index.json"
    found = storage.read_json(meta_key)
    if found is None:
        if not storage.create(meta_key, json.dumps(want, indent=1).encode()):
            found = storage.read_json(meta_key)  # another process created it just now
    if found is not None:
        want = _check_meta(storage, key, found, want)
    values = _open_values(storage, f"index/{key}/values", num_concepts=len(vocabulary),
                          block=int(want["block"]), create=True)
    return key, want, values


def write_block(storage: Storage, key: str, values, b: int, block: int, data: np.ndarray,
                numbers, generation: bytes | None) -> None:
    """Writes block b's values (one shard), then (only then) its record.

    Args:
        storage, key: the atlas's place and the index's key.
        values: the index's values array (`_open_values`).
        b, block: the block's number and the index's block size.
        data: float32 [T, 3, block] the block's values (NaN where not indexed).
        numbers: the image numbers the block now covers.
        generation: the version of the block's record read before, or None where there
            was none (the record is then created, else replaced over that version).

    Raises:
        InputError: another process wrote the record meanwhile, or storage failed.
    """
    try:
        values[:, :, b * block:(b + 1) * block].write(data).result()
    except ValueError as err:
        raise storage.error(err, "write", f"index/{key}/values") from None
    record = json.dumps({"block": b, "images": [int(n) for n in numbers]}).encode()
    name = f"index/{key}/done/{b:09d}.json"
    written = (storage.create(name, record) if generation is None
               else storage.replace(name, record, generation))
    if not written:
        raise InputError(f"{storage.where(name)!r} was written by another process while this "
                         f"one indexed block {b}; run one index per atlas at a time")


@dataclass(frozen=True)
class IndexSummary:
    """What one process's `build_index` did.

    Attributes:
        key: the index's key (its folder is index/KEY).
        process_id, num_processes: this process and how many shared the work.
        blocks: blocks this process wrote now.
        indexed: images this process indexed now.
        covered: images the index covered when this process finished (all processes'
            records read again).
        built: images of the atlas that are built (what a complete index covers).
        seconds: time spent indexing (reads, computation and writes).
    """

    key: str
    process_id: int
    num_processes: int
    blocks: int
    indexed: int
    covered: int
    built: int
    seconds: float


def build_index(atlas, *, batch: int | None = None, progress: bool = True) -> IndexSummary:
    """Indexes every built image of an atlas not yet in its index for the atlas's bank.

    Every process (`atlas.init_processes`) calls this with the same atlas; block b goes
    to process b mod P.

    Args:
        atlas: an open `Atlas` (its vocabulary and text mode choose the index).
        batch: images per pass (default: the atlas's query batch).
        progress: show a progress bar.

    Returns:
        This process's `IndexSummary`.

    Raises:
        InputError: an index of the same key describing something else, a damaged
            record, storage that cannot be used, or another process writing the same block.
    """
    import jax
    from tqdm.auto import tqdm

    from convis_jax.core.ranks import hierarchy_levels

    storage, vocabulary = atlas.storage, atlas.vocabulary
    key, want, values = prepare_index(atlas)
    block = int(want["block"])
    process_id, num_processes = jax.process_index(), jax.process_count()
    n_images = len(atlas.manifest["images"])
    coverage, generations = _read_coverage(storage, key, block, n_images)
    built = {r.index: r for r in atlas.records()}
    todo = []
    for b in range(-(-n_images // block)):
        if b % num_processes != process_id:
            continue
        numbers = {n for n in range(b * block, min((b + 1) * block, n_images)) if n in built}
        if numbers - coverage.get(b, set()):
            todo.append((b, sorted(numbers)))
    missing = sum(len(set(n) - coverage.get(b, set())) for b, n in todo)
    print(f"index {key} of {storage}: process {process_id} of {num_processes}, {missing} "
          f"image(s) in {len(todo)} block(s) to index", file=sys.stderr)
    levels = hierarchy_levels(vocabulary)
    batch = int(batch or atlas.sweep.batch)
    bar = tqdm(total=missing, unit="image", desc=f"atlas index (process {process_id})",
               disable=not progress)
    start, indexed = time.perf_counter(), 0
    for b, numbers in todo:
        have = coverage.get(b, set())
        fresh = [n for n in numbers if n not in have]
        if have:
            try:
                data = values[:, :, b * block:(b + 1) * block].read().result()
            except ValueError as err:
                raise ConceptIndex(storage, key, want, {})._damaged(err) from None
        else:
            data = np.full((len(vocabulary), 3, block), np.nan, np.float32)
        for first in range(0, len(fresh), batch):
            part = fresh[first:first + batch]
            ids = [built[n].image_id for n in part]
            rows = index_rows(atlas.window_embeddings(ids), atlas.image_embeddings(ids),
                              atlas.bank.embeddings, vocabulary, atlas.sweep, levels)
            columns = np.asarray(part) - b * block
            data[:, SCORE, columns] = rows.score.T
            data[:, PEAK, columns] = rows.peak.T
            data[:, CELL, columns] = rows.cell.T.astype(np.float32)
            bar.update(len(part))
        write_block(storage, key, values, b, block, data, numbers, generations.get(b))
        indexed += len(fresh)
    bar.close()
    seconds = time.perf_counter() - start
    coverage, _ = _read_coverage(storage, key, block, n_images)
    return IndexSummary(key, process_id, num_processes, len(todo), indexed,
                        sum(map(len, coverage.values())), len(built), seconds)
