"""Asking an atlas: maps, cells, top images and concept scores from stored embeddings.

Every answer is the rest of Algorithm 1 after the encoder (ranks against a
concept bank, subtree minima, accumulation into cells, normalisation), run
on the stored window embeddings through the atlas's `Sweep`; a new
vocabulary or text mode needs only a new concept bank, never the images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convis_jax.atlas.store import MANIFEST, Reader, read_manifest, read_records
from convis_jax.errors import InputError


@dataclass(frozen=True)
class TopImages:
    """The images of an atlas that show one concept most.

    Attributes:
        concept: the synset name.
        by: "image" (the concept's hierarchical score of the whole image: the best cosine
            similarity in its subtree, as `ConVis.top_concepts`) or "map_peak" (its map
            before min-max at the best cell: the mean rank similarity 1 - r / T of the
            windows covering that cell).
        image_ids: the best images' ids, best first (ties: atlas order).
        scores: float32 [k], their scores.
        cells: int32 [k] row-major index of each image's best cell (by="map_peak"), or
            -1 (by="image").
    """

    concept: str
    by: str
    image_ids: tuple[str, ...]
    scores: np.ndarray
    cells: np.ndarray


@dataclass(frozen=True)
class ImageConceptScores:
    """Every concept's score for some whole images, as `ConVis.top_concepts` ranks them.

    Attributes:
        image_ids: N ids.
        concepts: the vocabulary's T names.
        flat: float32 [N, T] cosine similarity of each image to each concept.
        hierarchical: float32 [N, T] the best flat score in each concept's subtree.
    """

    image_ids: tuple[str, ...]
    concepts: tuple[str, ...]
    flat: np.ndarray
    hierarchical: np.ndarray


class Atlas:
    """A built atlas with one concept vocabulary: maps and rankings without the image encoder.

    Open one with `Atlas.open`.

    Attributes:
        root: the atlas folder.
        manifest: its manifest (`convis_jax.atlas.store`).
        model: the `ClipModel` it was built with (its text tower embeds the concepts).
        vocabulary: the `ConceptVocabulary` asked about.
        bank: the `ConceptBank` of that vocabulary and text mode.
        sweep: the `Sweep` the windows were cut by (its grid, padding and seed).
        grid: the `WindowGrid` the windows were cut on.
        image_ids: the finished images' ids, in atlas order.
        pending_ids: images listed by the manifest but not finished (a build was
            interrupted, or runs now); they are not read.
    """

    def __init__(self, root, manifest, records, model, vocabulary, bank, batch: int,
                 progress: bool = True):
        from convis_jax.kernels.sweep import Sweep

        self.root = Path(root)
        self.manifest = manifest
        self.model = model
        self.vocabulary = vocabulary
        self.bank = bank
        grid = manifest["grid"]
        self.sweep = Sweep.create(model.encoder, config=model.config, num_rows=len(vocabulary),
                                  window_sizes=tuple(grid["window_sizes"]),
                                  stride=grid["stride"], padding=manifest["padding"],
                                  seed=manifest["seed"], batch=batch)
        self.grid = self.sweep.grid
        if (self.grid.n_windows, list(self.grid.image_size), self.grid.padding) != (
                grid["n_windows"], list(grid["image_size"]), grid["padding"]):
            raise InputError(f"{str(self.root / MANIFEST)!r} says {grid['n_windows']} windows "
                             f"but its grid has {self.grid.n_windows}; the manifest is damaged")
        self._records = records
        self._reader = Reader(self.root, manifest, records)
        order = sorted(records)
        self.image_ids = tuple(records[i].image_id for i in order)
        self.pending_ids = tuple(image_id for i, image_id in enumerate(manifest["images"])
                                 if i not in records)
        self._number = {records[i].image_id: i for i in order}
        self.progress = progress
        self._levels = None  # the hierarchy's levels, for host_cells

    @classmethod
    def open(cls, root, *, model=None, vocabulary=None, text: str = "definition",
             cache: bool = True, progress: bool = True, batch: int = 4) -> Atlas:
        """Opens an atlas for questions about one vocabulary.

        Args:
            root: the atlas folder (`build_atlas`, `convis-jax atlas build`).
            model: a `ClipModel`, a folder or hub id, or None for the model the atlas
                names (its source when built, else the bundled model); its weights
                must be the atlas's (their fingerprint is checked).
            vocabulary: as `convis_jax.api.resolve_vocabulary`.
            text: the concept texts ("definition", "lemmas" or a template).
            cache: reuse the concept-bank cache.
            progress: show progress bars.
            batch: images per compiled query call.

        Raises:
            InputError: not an atlas, a damaged or mismatched store (naming the file),
                or a model with other weights than the atlas's.
        """
        from convis_jax.api import resolve_vocabulary
        from convis_jax.kernels.bank import build_bank
        from convis_jax.models.loading import load_clip
        from convis_jax.models.model import ClipModel

        root = Path(root)
        manifest = read_manifest(root)
        if manifest is None:
            raise InputError(f"expected an atlas folder with {MANIFEST}, found none at "
                             f"{str(root)!r}")
        records = read_records(root, manifest)
        if not isinstance(model, ClipModel):
            model = load_clip(model if model is not None else manifest["model"]["source"])
        want = manifest["model"]
        if model.fingerprint != want["fingerprint"] or model.embedding_dim != want[
                "embedding_dim"]:
            raise InputError(f"{str(root / MANIFEST)!r} was built with model "
                             f"{want['name']!r} (fingerprint {want['fingerprint']}), found "
                             f"{model.name!r} (fingerprint {model.fingerprint}); open it with "
                             f"the model it was built with")
        vocabulary = resolve_vocabulary(vocabulary, model)
        bank = build_bank(model, vocabulary, text=text, cache=cache, progress=progress)
        return cls(root, manifest, records, model, vocabulary, bank, batch, progress)

    def __repr__(self) -> str:
        return (f"Atlas({str(self.root)!r}, images={len(self.image_ids)}, "
                f"pending={len(self.pending_ids)}, concepts={len(self.vocabulary)}, "
                f"dtype={self.manifest['dtype']})")

    def __len__(self) -> int:
        return len(self.image_ids)

    # ------------------------------------------------------------------ lookups

    def _numbers(self, image_ids) -> list[int]:
        if image_ids is None:
            return sorted(self._records)
        if isinstance(image_ids, str):
            image_ids = [image_ids]
        numbers = []
        for image_id in image_ids:
            if image_id not in self._number:
                state = ("listed but not built yet" if image_id in self.pending_ids
                         else "not in this atlas")
                raise InputError(f"image {image_id!r} is {state} ({str(self.root)!r} holds "
                                 f"{len(self.image_ids)} built images)")
            numbers.append(self._number[image_id])
        return numbers

    def records(self, image_ids=None) -> list:
        """The stored records (`ImageRecord`: number, id, size, square crop) of images, in order."""
        return [self._records[n] for n in self._numbers(image_ids)]

    def window_embeddings(self, image_ids=None) -> np.ndarray:
        """The stored window embeddings [N, n_windows, d] (the stored dtype) of images."""
        return self._reader.read("windows", self._numbers(image_ids))

    def image_embeddings(self, image_ids=None) -> np.ndarray:
        """The stored whole-image unit embeddings float32 [N, d] of images."""
        return self._reader.read("image", self._numbers(image_ids))

    # ------------------------------------------------------------------ maps

    def _stored(self, operation, numbers, request):
        """`operation(windows, bank, request)` of the sweep over images in batches of one
        shape (a short last batch is filled with repeats); NumPy outputs."""
        import jax.numpy as jnp

        from convis_jax.core.batches import pad_to_multiple

        bank = jnp.asarray(self.bank.embeddings)
        batch = min(self.sweep.batch, len(numbers))
        outs = []
        for start in range(0, len(numbers), batch):
            windows, n = pad_to_multiple(self._reader.read("windows",
                                                           numbers[start:start + batch]), batch)
            result = operation(jnp.asarray(windows), bank, request)
            outs.append(tuple(r[:n] for r in (result if isinstance(result, tuple)
                                             else (result,))))
        return tuple(np.concatenate(parts) for parts in zip(*outs))

    def cells(self, image_ids=None, concepts=None) -> np.ndarray:
        """Algorithm 1's maps in cell form, from the stored embeddings.

        Equal to `ConVis.occlusion_cells(photos, concepts, image_numbers=numbers)` on
        the same photos (image i padded with noise from (seed, i), i its atlas number:
        the atlas's images in its order): exactly for a float32 atlas, to float16
        rounding of the embeddings for a float16 one.

        Args:
            image_ids: ids (`image_ids`), one id, or None for every built image.
            concepts: synset names or words; None for every concept of the vocabulary
                (one sort per window serves them all).

        Returns:
            float32 [N, K, cy, cx] in [0, 1], high where the concept is.
        """
        import jax

        from convis_jax.core.ranks import hierarchy_levels
        from convis_jax.kernels.stored_windows import (
            COUNT_CONCEPTS,
            host_cells,
            stored_similarities,
        )
        from convis_jax.kernels.sweep import ConceptRequest

        request = ConceptRequest.of(self.vocabulary, concepts)
        numbers = self._numbers(image_ids)
        if len(request) <= COUNT_CONCEPTS or jax.default_backend() != "cpu":
            return self._stored(self.sweep.stored_cells, numbers, request)[0]
        # Many concepts on a CPU: NumPy sorts faster than XLA there (stored_windows).
        if self._levels is None:
            self._levels = hierarchy_levels(self.vocabulary)
        bank = jax.numpy.asarray(self.bank.embeddings)
        cells = []
        for start in range(0, len(numbers), self.sweep.batch):
            windows = self._reader.read("windows", numbers[start:start + self.sweep.batch])
            cells.append(host_cells(stored_similarities(windows, bank), self.grid,
                                    self._levels, request.index))
        return np.concatenate(cells)

    def maps(self, image_ids=None, concepts=None) -> np.ndarray:
        """`cells` repeated over their pixels: float32 [N, K, 224, 224] in [0, 1], as
        `ConVis.occlusion_maps`."""
        from convis_jax.core.cells import cells_to_pixels

        return cells_to_pixels(self.cells(image_ids, concepts), self.grid)

    # ------------------------------------------------------------------ rankings

    def concept_scores(self, image_ids=None) -> ImageConceptScores:
        """Every concept's flat and hierarchical score for whole images (as `top_concepts`).

        Args:
            image_ids: ids, one id, or None for every built image.
        """
        from convis_jax.core.ranks import subtree_max

        numbers = self._numbers(image_ids)
        flat = self._reader.read("image", numbers) @ self.bank.embeddings.T
        vocab = self.vocabulary
        hierarchical = subtree_max(flat, vocab.subtree_offsets, vocab.subtree_members)
        return ImageConceptScores(tuple(self._records[n].image_id for n in numbers),
                                  tuple(vocab.names), flat.astype(np.float32),
                                  hierarchical.astype(np.float32))

    def top_images(self, concept: str, k: int = 20, *, by: str = "image",
                   image_ids=None) -> TopImages:
        """The k images that show `concept` most.

        Args:
            concept: a synset name or word.
            k: how many images.
            by: "image": the concept's hierarchical whole-image score (a matrix product
                over the stored image embeddings); "map_peak": the peak of its map before
                min-max (the concept's rank in every window of every image, counted
                without sorting; see `TopImages`).
            image_ids: the images to rank (default: every built image).

        Returns:
            The `TopImages`, best first; ties keep atlas order.
        """
        if by not in ("image", "map_peak"):
            raise InputError(f"by must be 'image' or 'map_peak', found {by!r}")
        if int(k) < 1:
            raise InputError(f"k must be a positive number of images, found {k}")
        from convis_jax.kernels.sweep import ConceptRequest

        request = ConceptRequest.of(self.vocabulary, concept)
        if len(request) != 1:
            raise InputError(f"expected one concept, found {list(request.names)}")
        numbers = self._numbers(image_ids)
        if by == "image":
            scores = (self._reader.read("image", numbers)
                      @ self.bank.embeddings[request.members].T).max(axis=1)
            cells = np.full(len(numbers), -1, np.int32)
        else:
            peaks, cells = self._stored(self.sweep.stored_peaks, numbers, request)
            scores, cells = peaks[:, 0], cells[:, 0]
        order = np.argsort(-scores, kind="stable")[: int(k)]
        return TopImages(request.names[0], by, tuple(self._records[numbers[i]].image_id for i in order),
                         scores[order].astype(np.float32), cells[order].astype(np.int32))

    # ------------------------------------------------------------------ page

    def photo_paths(self, images=None) -> dict[str, Path]:
        """Where each built image's photo is: {id: path}, from `images` or the build's sources.

        Args:
            images: a folder or list file (`list_images`) holding the photos now; None
                looks where the atlas was built from.

        Raises:
            InputError: a built image found in none of them.
        """
        from convis_jax.core.images import list_images

        sources = [images] if images is not None else self.manifest.get("sources", [])
        found: dict[str, Path] = {}
        for source in sources:
            if Path(source).exists():
                for image_id, path in list_images(source):
                    found.setdefault(image_id, path)
        missing = [i for i in self.image_ids if i not in found]
        if missing:
            where = ", ".join(repr(str(s)) for s in sources) or "nowhere (built from a list)"
            raise InputError(f"expected the atlas's photos in {where}, found {len(missing)} "
                             f"missing (first: {missing[0]!r}); pass the folder that holds "
                             f"them now (--images)")
        return {i: found[i] for i in self.image_ids}

    def explore(self, out_dir, *, k: int = 8, images=None) -> Path:
        """Writes the atlas page: search a concept, see the k images that show it most.

        Images are ranked by the concept's hierarchical whole-image score
        (`top_images(by="image")`); each is shown with the concept's map, and
        opens the concept explorer of all its maps. Every shown image's maps of
        every concept are computed once (one sort per window).

        Args:
            out_dir: the page's folder.
            k: images per concept.
            images: where the photos are now (default: where the atlas was built from).

        Returns:
            The path of the page's index.html.
        """
        from tqdm.auto import tqdm

        from convis_jax.core.images import load_image
        from convis_jax.pictures.atlas_page import EXPLORER_FOLDER, write_atlas_page
        from convis_jax.pictures.explorer import (
            ExplorerImage,
            ExplorerVocabulary,
            write_explorer,
        )

        if int(k) < 1:
            raise InputError(f"k must be a positive number of images, found {k}")
        if not self.image_ids:
            raise InputError(f"{str(self.root)!r} holds no built image yet")
        paths = self.photo_paths(images)
        scores = self.concept_scores()
        hierarchical = scores.hierarchical  # [N, T]
        k = min(int(k), len(self.image_ids))
        # Best first; ties in atlas order.
        top = np.argsort(-hierarchical, axis=0, kind="stable")[:k].T  # [T, k]
        top_scores = np.take_along_axis(hierarchical.T, top, axis=1)
        top_cells = np.zeros(top.shape + self.grid.cells_shape, np.float32)
        squares, pages = {}, []
        shown = sorted(set(top.ravel().tolist()))
        for position in tqdm(shown, desc="atlas page", unit="image",
                             disable=not self.progress):
            image_id = self.image_ids[position]
            cells = self.cells(image_id)[0]  # [T, cy, cx]
            concepts, slots = np.nonzero(top == position)
            top_cells[concepts, slots] = cells[concepts]
            page = ExplorerImage.from_photo(image_id, load_image(paths[image_id]),
                                            cells.astype(np.float16), scores.flat[position],
                                            hierarchical[position])
            squares[position] = page.image
            pages.append(page)
        vocab = self.vocabulary
        note = (f"{self.model.name} · {len(self.image_ids)} images · {len(vocab)} concepts · "
                f"text: {self.bank.text}")
        write_explorer(Path(out_dir) / EXPLORER_FOLDER, pages,
                       ExplorerVocabulary.from_mapping(vocab.to_dict()), note=note,
                       single_file=False)
        # Open on the concept whose best image scores highest.
        start = int(np.argmax(top_scores[:, 0]))
        return write_atlas_page(out_dir, names=list(vocab.names),
                                definitions=[vocab.definition(n) for n in vocab.names],
                                image_names=list(self.image_ids), squares=squares,
                                top_images=top, top_scores=top_scores, top_cells=top_cells,
                                start=start, note=note)
