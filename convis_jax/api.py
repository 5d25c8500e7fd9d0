"""The NumPy-facing API: `ConVis`, which explains one CLIP with one concept vocabulary."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from convis_jax.errors import InputError

# Algorithm 1's defaults (METHOD.md section 3).
IMAGE_SIZE = 224
WINDOW_SIZES = (128, 64)
STRIDE = 16


@dataclass(frozen=True)
class ConceptScores:
    """Concepts ranked for one image.

    Attributes:
        names: synset names, best first.
        definitions: their WordNet glosses.
        scores: float32 cosine similarities (flat) or subtree maxima (hierarchical).
    """

    names: tuple[str, ...]
    definitions: tuple[str, ...]
    scores: np.ndarray


@dataclass(frozen=True)
class TopConcepts:
    """What CLIP sees in one image: its top concepts, flat and through the hierarchy.

    Attributes:
        flat: concepts ranked by their own cosine similarity to the image.
        hierarchical: concepts ranked by the best similarity in their subtree
            (a concept scores high when any of its descendants does).
    """

    flat: ConceptScores
    hierarchical: ConceptScores


def resolve_vocabulary(vocabulary, model=None):
    """A `ConceptVocabulary` from an instance, a preset name, a file, or the model's own.

    Args:
        vocabulary: a ConceptVocabulary; "physical_objects" or "all_nouns"; a path to a
            vocabulary JSON (`ConceptVocabulary.to_dict`) or to a text file of words or
            synset names; or None: the model's own vocabulary when it ships one, else
            "physical_objects".
        model: the ClipModel, for its shipped vocabulary.
    """
    from convis_jax.core.vocabulary import ConceptVocabulary

    if isinstance(vocabulary, ConceptVocabulary):
        return vocabulary
    if vocabulary is None:
        shipped = getattr(model, "vocabulary_path", None)
        vocabulary = shipped if shipped is not None else "physical_objects"
    if vocabulary in ("physical_objects", "all_nouns"):
        return ConceptVocabulary.preset(vocabulary)
    path = Path(vocabulary)
    if not path.is_file():
        raise InputError(f"vocabulary must be 'physical_objects', 'all_nouns' or a file, "
                         f"found {str(vocabulary)!r} (no such file)")
    if path.suffix == ".json":
        import json

        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError(f"expected a vocabulary JSON file (ConceptVocabulary.to_dict) at "
                             f"{str(path)!r}, found unreadable JSON: {err}") from None
        return ConceptVocabulary.from_dict(data)
    return ConceptVocabulary.from_file(path)


class ConVis:
    """Explains a CLIP's image embeddings with the concepts of a WordNet vocabulary.

    Building it embeds every concept's text once (the concept bank, cached
    on disk); every method then reuses that bank.

    Args:
        model: a `ClipModel` from `load_clip`, a folder or hub id, or None for the bundled model.
        vocabulary: see `resolve_vocabulary`.
        text: the concept texts: "definition" (WordNet glosses, the paper's choice),
            "lemmas", or a template such as "a photo of a {}".
        cache: reuse and write the concept-bank cache.
        progress: show progress bars.
    """

    def __init__(self, model=None, vocabulary=None, *, text: str = "definition",
                 cache: bool = True, progress: bool = True):
        from convis_jax.jax_backend.bank import build_bank
        from convis_jax.jax_backend.loading import load_clip
        from convis_jax.jax_backend.model import ClipModel

        self.model = model if isinstance(model, ClipModel) else load_clip(model)
        self.vocabulary = resolve_vocabulary(vocabulary, self.model)
        self.progress = progress
        self.bank = build_bank(self.model, self.vocabulary, text=text, cache=cache,
                               progress=progress)

    def __repr__(self) -> str:
        return (f"ConVis(model={self.model.name!r}, concepts={len(self.vocabulary)}, "
                f"text={self.bank.text!r})")

    def _device_arrays(self):
        """(params, bank) on the devices, copied once: replicated over every local device
        when there are several, so that no sweep copies them again."""
        if getattr(self, "_placed", None) is None:
            import jax
            import jax.numpy as jnp

            placed = (self.model.params, jnp.asarray(self.bank.embeddings))
            if jax.local_device_count() > 1:
                from convis_jax.jax_backend.sharding import local_mesh, replicate

                placed = replicate(placed, local_mesh())
            self._placed = placed
        return self._placed

    def _concept_index(self, concepts) -> tuple[list[str], np.ndarray]:
        if concepts is None:
            names = list(self.vocabulary.names)
        else:
            if isinstance(concepts, str):
                concepts = [concepts]
            names = self.vocabulary.resolve(list(concepts))
        return names, np.array([self.vocabulary.index(n) for n in names], np.int64)

    def occlusion_maps(self, images, concepts, *, padding: str = "noise", seed: int = 0,
                       window_sizes: tuple[int, ...] = WINDOW_SIZES, stride: int = STRIDE,
                       aggregation: str = "window", chunk: int = 32) -> np.ndarray:
        """ConVis occlusion maps (the paper's Algorithm 1) of named concepts, in pixels.

        `occlusion_cells` repeated over each cell's pixels: every map is constant on
        the cells of the window lattice (16-pixel cells for the default windows).
        Each image is centre-cropped to a square and resized to 224 x 224; the maps
        refer to that square (`convis_jax.map_to_image` puts them back on the photo).

        Args:
            images: a path, PIL image, array (HWC or NHWC, uint8 or float in [0, 1]), or a list.
            concepts: synset names or words (see `ConceptVocabulary.resolve`), at least one.
                For every concept of the vocabulary, use `occlusion_cells`.
            padding, seed, window_sizes, stride, aggregation, chunk: as `occlusion_cells`.

        Returns:
            float32 [N, K, 224, 224] in [0, 1], high where the concept is.

        Raises:
            InputError: bad images or options, or concepts=None. ConceptError: unknown
                concepts.
        """
        from convis_jax.core.cells import cells_to_pixels

        if concepts is None:
            raise InputError("occlusion_maps needs named concepts, found None; "
                             "occlusion_cells maps every concept of the vocabulary")
        cells = self.occlusion_cells(images, concepts, padding=padding, seed=seed,
                                     window_sizes=window_sizes, stride=stride,
                                     aggregation=aggregation, chunk=chunk)
        return cells_to_pixels(cells, _occlusion_grid(window_sizes, stride, aggregation))

    def occlusion_cells(self, images, concepts=None, *, padding: str = "noise", seed: int = 0,
                        window_sizes: tuple[int, ...] = WINDOW_SIZES, stride: int = STRIDE,
                        aggregation: str = "window", chunk: int = 32, batch: int = 1,
                        image_numbers=None) -> np.ndarray:
        """ConVis occlusion maps (the paper's Algorithm 1) as cell maps, for every image and concept.

        The one pipeline from photos to maps: each image is centre-cropped to a
        square and resized to 224 x 224 (the maps refer to that square), padded
        with noise from (seed, its number), and swept in batches of `batch` images
        on every local device (`jax_backend.occlusion`). One sweep of the windows
        serves every concept.

        Args:
            images: a path, PIL image, array (HWC or NHWC, uint8 or float in [0, 1]), or a list.
            concepts: synset names or words (see `ConceptVocabulary.resolve`); None means
                every concept of the vocabulary.
            padding: "noise" (the paper: uniform noise) or "constant" (black).
            seed: seed of the padding noise, >= 0.
            window_sizes: window sides in pixels.
            stride: window lattice step in pixels.
            aggregation: "window" (Algorithm 1: sum of window scores, min-max normalised,
                inverted) or "webapp" (the authors' web app: per cell mean of rank
                similarities, subtree maximum, exp(-10 (1 - x)); unpadded image).
            chunk: windows encoded per compiled step (memory grows with it).
            batch: images per sweep call, >= 1; the last batch is filled with copies of
                its last image, so one compiled sweep serves every call. Larger batches
                share the windows better over many devices.
            image_numbers: each image's number in a larger collection, N ints >= 0: image i's
                padding noise comes from (seed, image_numbers[i]). Default: the images'
                positions 0 .. N-1.

        Returns:
            float32 [N, K, cy, cx] in [0, 1] ((cy, cx) = (14, 14) for the default
            windows), high where the concept is. A concept scoring the same in every
            window (the root, say) has nothing to normalise: its Algorithm-1 map is all
            ones.

        Raises:
            InputError: bad images or options. ConceptError: unknown concepts.
        """
        import jax.numpy as jnp

        from convis_jax.core.batches import pad_to_multiple, positive_int
        from convis_jax.core.cells import webapp_cell_maps
        from convis_jax.core.images import load_images
        from convis_jax.core.windows import pad_squares
        from convis_jax.jax_backend import occlusion

        if padding not in ("noise", "constant"):
            raise InputError(f"padding must be 'noise' or 'constant', found {padding!r}")
        from convis_jax.jax_backend.memory import check_chunk, window_bytes

        chunk = check_chunk(chunk, window_bytes(self.model.config), "windows")
        batch = positive_int(batch, "batch")
        grid = _occlusion_grid(window_sizes, stride, aggregation)
        _, index = self._concept_index(concepts)
        photos = load_images(images)
        numbers = _image_numbers(image_numbers, len(photos))
        vocab = self.vocabulary
        params, bank = self._device_arrays()
        pre = self.model.preprocess_config
        static = dict(config=self.model.config, grid=grid, chunk=chunk,
                      mean=tuple(pre.image_mean), std=tuple(pre.image_std))
        if aggregation == "window":
            members, segments, k_padded = occlusion.subtree_request(
                vocab.subtree_offsets, vocab.subtree_members, index)
            members, segments = jnp.asarray(members), jnp.asarray(segments)

            def sweep(padded, n):
                cells = occlusion.occlusion_cells(params, padded, bank, members, segments,
                                                  num_concepts=k_padded, **static)
                return np.asarray(cells)[:n, : len(index)]
        else:
            sub_offsets = np.concatenate([[0], np.cumsum(
                vocab.subtree_offsets[index + 1] - vocab.subtree_offsets[index])])
            sub_members = np.concatenate([vocab.subtree_members[
                vocab.subtree_offsets[c]:vocab.subtree_offsets[c + 1]] for c in index])

            def sweep(padded, n):
                sims = occlusion.window_rank_similarities(params, padded, bank, **static)
                return webapp_cell_maps(np.asarray(sims)[:n], grid, sub_offsets, sub_members)

        cells = []
        for start in tqdm(range(0, len(photos), batch), desc="occlusion maps", unit="batch",
                          disable=not self.progress or len(photos) <= batch):
            # One noise draw per image, from (seed, its number): the same however the
            # images are batched or shared out.
            padded = pad_squares(photos[start:start + batch], numbers[start:start + batch],
                                 grid.padding, padding, seed, IMAGE_SIZE)
            full, n = pad_to_multiple(padded, batch)
            cells.append(sweep(jnp.asarray(full), n))
        return np.concatenate(cells).astype(np.float32)

    def gradient_maps(self, images, concepts, *, score: str = "cosine", kind: str = "gradient",
                      reduce: str | None = "absmax", strategy: str = "auto",
                      chunk: int | None = None,
                      layer: int | None = None, smoothgrad_samples: int = 16,
                      smoothgrad_sigma: float = 0.15, seed: int = 0, batch: int | None = None,
                      image_numbers=None) -> np.ndarray:
        """Gradient maps of concept scores w.r.t. the model input, many concepts per backward sweep.

        Every score is a function of the unit image embedding, so one forward
        pass per image serves every concept: the pullback is vmapped over the
        concepts' cotangents, or (K >= d) the embedding's Jacobian is pulled
        back once and each concept's map is a matrix product (METHOD.md section 4).
        The images of a batch are split over every local device.

        Args:
            images: anything `load_images` accepts; each is preprocessed as the model's
                processor does (shortest-edge resize, centre crop), so maps refer to that
                centre square (`convis_jax.map_to_image` puts them back on the photo).
            concepts: synset names or words; None means every concept (use the
                "jacobian" strategy for thousands).
            score: "cosine", "subtree_cosine", "probability" (softmax over the whole bank
                with the model's logit scale) or "subtree_probability".
            kind: "gradient", "grad_x_input", "smoothgrad" or "tokens" (gradient x
                activation of the patch tokens of vision layer `layer`).
            reduce: channel reduction, "absmax", "l2" or None (keep the 3 channels).
            strategy: "auto", "vmap" or "jacobian".
            chunk: concepts per vectorised pullback (default: the backend's choice for K).
            layer: the vision layer of the token maps (default: the last useful one).
            smoothgrad_samples, smoothgrad_sigma: SmoothGrad's noise.
            seed: seed of SmoothGrad's noise: image i's comes from (seed, its number).
            batch: images per call, >= 1 (the last batch filled with copies of its last
                image); default the local device count. SmoothGrad, whose noise is drawn
                per call, always goes one image at a time.
            image_numbers: each image's number in a larger collection (N ints >= 0), for
                SmoothGrad's noise; default the images' positions 0 .. N-1.

        Returns:
            float32 [N, K, S, S] (S = the model's input size), or [N, K, 3, S, S] with
            reduce=None; raw gradients, not normalised.
        """
        import jax

        from convis_jax.core.batches import pad_to_multiple, positive_int
        from convis_jax.jax_backend.gradients import concept_gradient_maps

        _check_gradient_options(self.model.config, kind, chunk, smoothgrad_samples,
                                smoothgrad_sigma, seed)
        _, index = self._concept_index(concepts)
        vocab = self.vocabulary
        pixel_values = self.model.preprocess(images)
        numbers = _image_numbers(image_numbers, len(pixel_values))
        subtree = (vocab.subtree_offsets, vocab.subtree_members, vocab.subtree_segment_ids)
        if kind == "smoothgrad":
            batch = 1
        else:
            batch = jax.local_device_count() if batch is None else positive_int(batch, "batch")
        params, bank = self._device_arrays()
        maps = []
        for start in tqdm(range(0, len(pixel_values), batch), desc="gradient maps", unit="batch",
                          disable=not self.progress or len(pixel_values) <= batch):
            part, n = pad_to_multiple(pixel_values[start:start + batch], batch)
            out = concept_gradient_maps(
                params, self.model.config, part, bank, index, subtree, self.model.logit_scale,
                score=score, kind=kind, reduce=reduce, strategy=strategy, chunk=chunk,
                layer=layer, smoothgrad_samples=smoothgrad_samples,
                smoothgrad_sigma=smoothgrad_sigma,
                key=jax.random.fold_in(jax.random.key(seed), numbers[start]))
            maps.append(np.asarray(out)[:n])
        return np.concatenate(maps).astype(np.float32)

    def similarity(self, images, concepts=None) -> np.ndarray:
        """Cosine similarity of each whole image to each concept: float32 [N, K].

        Args:
            images: anything `load_images` accepts.
            concepts: names or words (see `ConceptVocabulary.resolve`); None means all.
        """
        _, index = self._concept_index(concepts)
        return self.model.embed_images(images) @ self.bank.embeddings[index].T

    def top_concepts(self, images, k: int = 10) -> list[TopConcepts]:
        """What CLIP sees in each whole image: its k best concepts, flat and hierarchical.

        The hierarchical score of a concept is the best similarity in its
        subtree, so `animal.n.01` ranks high when any animal of the
        vocabulary does.

        Args:
            images: anything `load_images` accepts.
            k: how many concepts to return per ranking.

        Returns:
            One `TopConcepts` per image.
        """
        from convis_jax.core.batches import positive_int
        from convis_jax.core.ranks import subtree_max

        k = positive_int(k, "k")
        vocab = self.vocabulary
        flat = self.similarity(images)
        hierarchical = subtree_max(flat, vocab.subtree_offsets, vocab.subtree_members)

        sizes = np.diff(vocab.subtree_offsets)

        def ranked(scores):
            # Equal scores: the more specific concept (smaller subtree) first, so that a
            # hierarchical ranking does not open with every ancestor of the best synset.
            order = np.lexsort((sizes, -scores))[: int(k)]
            names = tuple(vocab.names[i] for i in order)
            return ConceptScores(names, tuple(vocab.definition(n) for n in names),
                                 scores[order].astype(np.float32))

        return [TopConcepts(ranked(f), ranked(h)) for f, h in zip(flat, hierarchical)]

    def explore(self, images, out_dir, *, names=None, padding: str = "noise", seed: int = 0,
                single_file: bool = True) -> Path:
        """Writes the concept explorer: one self-contained HTML page of all-concept maps.

        One all-concept occlusion sweep per image, kept in cell form and
        quantised to 8 bits; the page needs no network to open.

        Args:
            images: anything `load_images` accepts.
            out_dir: folder to write `index.html` into.
            names: a display name per image (default: file names, or "image N").
            padding, seed: as in `occlusion_cells`.
            single_file: inline every image's data (else one data file per image beside it).

        Returns:
            The path of `index.html`.
        """
        from convis_jax.core.images import load_images
        from convis_jax.core.ranks import subtree_max
        from convis_jax.core.windows import center_crop_square
        from convis_jax.pictures.explorer import (
            ExplorerImage,
            ExplorerVocabulary,
            write_explorer,
        )

        sources = images if isinstance(images, (list, tuple)) else [images]
        photos = load_images(sources)
        if names is None:
            names = [Path(s).name if isinstance(s, (str, Path)) else f"image {i + 1}"
                     for i, s in enumerate(sources)]
        cells = self.occlusion_cells(photos, None, padding=padding, seed=seed)
        flat = self.similarity(photos)
        vocab = self.vocabulary
        hierarchical = subtree_max(flat, vocab.subtree_offsets, vocab.subtree_members)
        pages = [ExplorerImage(name, _display_square(center_crop_square(photo)), c, f, h)
                 for name, photo, c, f, h in zip(names, photos, cells, flat, hierarchical)]
        note = f"{self.model.name} · {len(vocab)} concepts · occlusion grid · text: {self.bank.text}"
        return write_explorer(out_dir, pages, ExplorerVocabulary.from_mapping(vocab.to_dict()),
                              note=note, single_file=single_file)


def _occlusion_grid(window_sizes, stride: int, aggregation: str):
    """The window grid of an occlusion sweep on the 224 square (the web app pads nothing)."""
    from convis_jax.core.windows import window_grid

    if aggregation not in ("window", "webapp"):
        raise InputError(f"aggregation must be 'window' or 'webapp', found {aggregation!r}")
    return window_grid((IMAGE_SIZE, IMAGE_SIZE), tuple(window_sizes), stride,
                       padding=0 if aggregation == "webapp" else None)


def _image_numbers(image_numbers, count: int) -> list[int]:
    """Each image's number (noise seeds): the given N ints >= 0, or the positions 0 .. N-1."""
    if image_numbers is None:
        return list(range(count))
    numbers = list(image_numbers)
    if len(numbers) != count or any(isinstance(n, bool) or not isinstance(n, (int, np.integer))
                                    or n < 0 for n in numbers):
        raise InputError(f"expected one image number (an integer >= 0) per image, {count} in "
                         f"all, found {len(numbers)}: {numbers[:5]}"
                         f"{' ...' if len(numbers) > 5 else ''}")
    return [int(n) for n in numbers]


def _check_gradient_options(config, kind, chunk, samples, sigma, seed) -> None:
    """Refuses gradient options that would fail or give -inf/NaN maps only after tracing.

    Raises:
        InputError: one line naming the option.
    """
    import math

    from convis_jax.jax_backend.memory import check_chunk, pullback_bytes

    if chunk is not None:
        check_chunk(chunk, pullback_bytes(config), "concepts")
    if kind == "smoothgrad" and not (
            isinstance(samples, int) and not isinstance(samples, bool) and samples >= 1
            and isinstance(sigma, (int, float)) and not isinstance(sigma, bool)
            and math.isfinite(sigma) and sigma >= 0):
        raise InputError(f"smoothgrad needs samples >= 1 and a finite sigma >= 0, found "
                         f"{samples!r} and {sigma!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not (
            0 <= int(seed) < 2**63):
        raise InputError(f"seed must be an integer in [0, 2**63), found {seed!r}")


def _display_square(square: np.ndarray, largest: int = 448) -> np.ndarray:
    """The crop the maps refer to, at most `largest` pixels wide (pages stay small)."""
    if square.shape[0] <= largest:
        return square
    from PIL import Image

    return np.asarray(Image.fromarray(square).resize((largest, largest), Image.BICUBIC))
