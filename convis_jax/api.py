"""The NumPy-facing API: `ConVis`, which explains one image encoder (CLIP, SigLIP, any
`Encoder`) with one concept vocabulary."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from convis_jax.core.windows import STRIDE, WINDOW_SIZES
from convis_jax.errors import InputError


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
    """Explains an image encoder's embeddings with the concepts of a WordNet vocabulary.

    Building it embeds every concept's text once (the concept bank, cached
    on disk); every method then reuses that bank. The sweeps and gradient maps
    call only the model's `Encoder` (`self.encoder`).

    Args:
        model: a folder or hub id of any family `load_model` reads (CLIP, OpenCLIP,
            SigLIP), a loaded model (`ClipModel`, `SiglipModel`), an `Encoder` (its concept
            bank comes from `embed_texts`; its images are centre-cropped, resized to its
            image_size and normalised with its mean and std), or None for the bundled model.
        vocabulary: see `resolve_vocabulary`.
        text: the concept texts: "definition" (WordNet glosses, the paper's choice),
            "lemmas", or a template such as "a photo of a {}".
        cache: reuse and write the concept-bank cache.
        progress: show progress bars.
    """

    def __init__(self, model=None, vocabulary=None, *, text: str = "definition",
                 cache: bool = True, progress: bool = True):
        from convis_jax.kernels.bank import build_bank
        from convis_jax.models.encoder import Encoder
        from convis_jax.models.loading import load_model
        from convis_jax.models.model import LoadedModel

        self.model = model if isinstance(model, (LoadedModel, Encoder)) else load_model(model)
        self.encoder = self.model if isinstance(self.model, Encoder) else self.model.encoder
        self.vocabulary = resolve_vocabulary(vocabulary, self.model)
        self.progress = progress
        self.bank = build_bank(self.model, self.vocabulary, text=text, cache=cache,
                               progress=progress)

    def __repr__(self) -> str:
        return (f"ConVis(model={self.encoder.name!r}, concepts={len(self.vocabulary)}, "
                f"text={self.bank.text!r})")

    def _device_arrays(self):
        """(params, bank) on the devices, copied once (`sweep.placed`)."""
        if getattr(self, "_placed", None) is None:
            import jax.numpy as jnp

            from convis_jax.kernels.sweep import placed

            self._placed = placed((self.encoder.params, jnp.asarray(self.bank.embeddings)))
        return self._placed

    def sweep(self, *, window_sizes: tuple[int, ...] = WINDOW_SIZES, stride: int = STRIDE,
              aggregation: str = "window", padding: str = "noise", seed: int = 0,
              chunk: int | None = None, batch: int | None = None):
        """This model's occlusion `Sweep` (`kernels.sweep`) with these settings (see
        `occlusion_cells`)."""
        from convis_jax.kernels.sweep import Sweep

        params, _ = self._device_arrays()
        return Sweep.create(self.encoder, params=params, config=getattr(self.model, "config", None),
                            num_rows=len(self.vocabulary), window_sizes=window_sizes,
                            stride=stride, aggregation=aggregation, padding=padding, seed=seed,
                            chunk=chunk, batch=batch)

    def _cells(self, sweep, images, request, numbers=None) -> np.ndarray:
        """The sweep's cell maps [N, K, cy, cx] of every image, batch by batch."""
        from convis_jax.core.batches import image_numbers
        from convis_jax.core.images import image_sources
        from convis_jax.kernels.sweep import device_request

        sources = image_sources(images)
        numbers = image_numbers(numbers, len(sources))
        _, bank = self._device_arrays()
        padded_request = device_request(request) if sweep.aggregation == "window" else None
        count = -(-len(sources) // sweep.batch)
        cells = [sweep.cells(padded, bank, request, padded_request)[:n]
                 for padded, n, _ in tqdm(sweep.batches(sources, numbers), total=count,
                                          desc="occlusion maps", unit="batch",
                                          disable=not self.progress or count < 2)]
        return np.concatenate(cells).astype(np.float32)

    def _pixel_values(self, images) -> np.ndarray:
        """Images -> the encoder's pixel_values [N, 3, S, S]: a loaded model's own
        preprocessing, else the centre square resized to S and normalised."""
        from convis_jax.core.images import load_images
        from convis_jax.core.windows import prepare_image

        if self.model is not self.encoder:  # a loaded model
            return self.model.preprocess(images)
        e = self.encoder
        squares = np.stack([prepare_image(photo, e.image_size) for photo in load_images(images)])
        pixels = (squares / 255.0 - np.asarray(e.image_mean)) / np.asarray(e.image_std)
        return np.moveaxis(pixels, -1, 1).astype(np.float32)

    def _image_embeddings(self, images) -> np.ndarray:
        """Unit embeddings [N, d] of whole images."""
        if self.model is not self.encoder:
            return self.model.embed_images(images)
        import jax

        from convis_jax.models.model import in_chunks

        pixels = self._pixel_values(images)
        embed = jax.jit(self.encoder.embed_images)
        return in_chunks(lambda x: embed(self.encoder.params, x), pixels, min(32, len(pixels)))

    def occlusion_maps(self, images, concepts, *, padding: str = "noise", seed: int = 0,
                       window_sizes: tuple[int, ...] = WINDOW_SIZES, stride: int = STRIDE,
                       aggregation: str = "window", chunk: int | None = None,
                       batch: int | None = None) -> np.ndarray:
        """ConVis occlusion maps (the paper's Algorithm 1) of named concepts, in pixels.

        `occlusion_cells` repeated over each cell's pixels: every map is constant on
        the cells of the window lattice (16-pixel cells for the default windows).
        Each image is centre-cropped to a square and resized to 224 x 224; the maps
        refer to that square (`convis_jax.map_to_image` puts them back on the photo).

        Args:
            images: a path, PIL image, array (HWC or NHWC, uint8 or float in [0, 1]), or a list.
            concepts: synset names or words (see `ConceptVocabulary.resolve`), at least one.
                For every concept of the vocabulary, use `occlusion_cells`.
            padding, seed, window_sizes, stride, aggregation, chunk, batch: as
                `occlusion_cells`.

        Returns:
            float32 [N, K, 224, 224] in [0, 1], high where the concept is.

        Raises:
            InputError: bad images or options, or concepts=None. ConceptError: unknown
                concepts.
        """
        from convis_jax.core.cells import cells_to_pixels
        from convis_jax.kernels.sweep import ConceptRequest

        if concepts is None:
            raise InputError("occlusion_maps needs named concepts, found None; "
                             "occlusion_cells maps every concept of the vocabulary")
        sweep = self.sweep(window_sizes=window_sizes, stride=stride, aggregation=aggregation,
                           padding=padding, seed=seed, chunk=chunk, batch=batch)
        cells = self._cells(sweep, images, ConceptRequest.of(self.vocabulary, concepts))
        return cells_to_pixels(cells, sweep.grid)

    def occlusion_cells(self, images, concepts=None, *, padding: str = "noise", seed: int = 0,
                        window_sizes: tuple[int, ...] = WINDOW_SIZES, stride: int = STRIDE,
                        aggregation: str = "window", chunk: int | None = None,
                        batch: int | None = None, image_numbers=None) -> np.ndarray:
        """ConVis occlusion maps (the paper's Algorithm 1) as cell maps, for every image and concept.

        The one pipeline from photos to maps: each image is centre-cropped to a
        square and resized to 224 x 224 (the maps refer to that square), padded
        with noise from (seed, its number), and swept in batches of `batch` images
        on every local device (`kernels.occlusion`); a background thread decodes
        and pads the next batch while the device sweeps the current one. One sweep
        of the windows serves every concept.

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
            chunk: windows encoded per compiled step (memory grows with it); default
                from the device (`occlusion.sweep_sizes`: 32 on CPUs, sized to the
                memory of GPUs and TPUs).
            batch: images per sweep call, >= 1; the last batch is filled with copies of
                its last image, so one compiled sweep serves every call. Default from the
                device (`occlusion.sweep_sizes`: 1 on CPUs; on accelerators enough images
                to keep every device busy for several steps per call).
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
        from convis_jax.kernels.sweep import ConceptRequest

        sweep = self.sweep(window_sizes=window_sizes, stride=stride, aggregation=aggregation,
                           padding=padding, seed=seed, chunk=chunk, batch=batch)
        return self._cells(sweep, images, ConceptRequest.of(self.vocabulary, concepts),
                           image_numbers)

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
        back once and each concept's map is a matrix product (docs/method.md, section 4).
        The images of a batch are split over every local device.

        Args:
            images: anything `load_images` accepts; each is preprocessed as the model's
                processor does (shortest-edge resize, centre crop), so maps refer to that
                centre square (`convis_jax.map_to_image` puts them back on the photo).
            concepts: synset names or words; None means every concept (use the
                "jacobian" strategy for thousands).
            score: "cosine", "subtree_cosine", "probability" (softmax over the whole bank
                with the model's logit scale; for SigLIP, or any encoder with a logit_bias,
                the concept's own sigmoid(logit_scale * cos + logit_bias)) or
                "subtree_probability" (see `gradients.concept_scores`).
            kind: "gradient", "grad_x_input", "smoothgrad" or "tokens" (gradient x
                activation of the patch tokens of vision layer `layer`).
            reduce: channel reduction, "absmax", "l2" or None (keep the 3 channels).
            strategy: "auto", "vmap" or "jacobian".
            chunk: concepts per vectorised pullback (default: the backend's choice for K).
            layer: the vision layer of the token maps (default: the last useful one).
            smoothgrad_samples, smoothgrad_sigma: SmoothGrad's noise.
            seed: seed of SmoothGrad's noise: image i's comes from (seed, its number).
            batch: images per call, >= 1 (the last batch filled with copies of its last
                image; the next batch is decoded and preprocessed in a background thread
                meanwhile); default the local device count. SmoothGrad, whose noise is drawn
                per call, always goes one image at a time.
            image_numbers: each image's number in a larger collection (N ints >= 0), for
                SmoothGrad's noise; default the images' positions 0 .. N-1.

        Returns:
            float32 [N, K, S, S] (S = the model's input size), or [N, K, 3, S, S] with
            reduce=None; raw gradients, not normalised.
        """
        import jax

        from convis_jax.core.batches import image_numbers as numbered
        from convis_jax.core.batches import pad_to_multiple, positive_int, prefetched
        from convis_jax.core.images import image_sources, load_source
        from convis_jax.kernels.gradients import concept_gradient_maps
        from convis_jax.kernels.sweep import ConceptRequest

        _check_gradient_options(self.model, kind, chunk, smoothgrad_samples, smoothgrad_sigma,
                                seed)
        index = ConceptRequest.of(self.vocabulary, concepts).index
        vocab = self.vocabulary
        sources = image_sources(images)
        numbers = numbered(image_numbers, len(sources))
        subtree = (vocab.subtree_offsets, vocab.subtree_members, vocab.subtree_segment_ids)
        if kind == "smoothgrad":
            batch = 1
        else:
            batch = jax.local_device_count() if batch is None else positive_int(batch, "batch")
        params, bank = self._device_arrays()

        def prepare(number: int) -> tuple[np.ndarray, int]:
            # Decoded and preprocessed in a background thread while the device works.
            part = sources[number * batch:(number + 1) * batch]
            return pad_to_multiple(self._pixel_values([load_source(e) for e in part]), batch)

        maps = []
        count = -(-len(sources) // batch)
        for number, (part, n) in enumerate(tqdm(
                prefetched(prepare, count), total=count, desc="gradient maps", unit="batch",
                disable=not self.progress or count < 2)):
            out = concept_gradient_maps(
                self.encoder, part, bank, index, subtree, params=params, score=score,
                kind=kind, reduce=reduce, strategy=strategy, chunk=chunk,
                layer=layer, smoothgrad_samples=smoothgrad_samples,
                smoothgrad_sigma=smoothgrad_sigma,
                key=jax.random.fold_in(jax.random.key(seed), numbers[number * batch]))
            maps.append(np.asarray(out)[:n])
        return np.concatenate(maps).astype(np.float32)

    def similarity(self, images, concepts=None) -> np.ndarray:
        """Cosine similarity of each whole image to each concept: float32 [N, K].

        Args:
            images: anything `load_images` accepts.
            concepts: names or words (see `ConceptVocabulary.resolve`); None means all.
        """
        from convis_jax.kernels.sweep import ConceptRequest

        index = ConceptRequest.of(self.vocabulary, concepts).index
        return self._image_embeddings(images) @ self.bank.embeddings[index].T

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
        pages = [ExplorerImage.from_photo(name, photo, c, f, h)
                 for name, photo, c, f, h in zip(names, photos, cells, flat, hierarchical)]
        note = f"{self.encoder.name} · {len(vocab)} concepts · occlusion grid · text: {self.bank.text}"
        return write_explorer(out_dir, pages, ExplorerVocabulary.from_mapping(vocab.to_dict()),
                              note=note, single_file=single_file)


def _check_gradient_options(model, kind, chunk, samples, sigma, seed) -> None:
    """Refuses gradient options that would fail or give -inf/NaN maps only after tracing.

    Raises:
        InputError: one line naming the option.
    """
    import math

    from convis_jax.core.batches import seed_value
    from convis_jax.kernels.memory import check_chunk, pullback_bytes

    if chunk is not None:
        check_chunk(chunk, pullback_bytes(getattr(model, "config", None), model.image_size),
                    "concepts")
    if kind == "smoothgrad" and not (
            isinstance(samples, int) and not isinstance(samples, bool) and samples >= 1
            and isinstance(sigma, (int, float)) and not isinstance(sigma, bool)
            and math.isfinite(sigma) and sigma >= 0):
        raise InputError(f"smoothgrad needs samples >= 1 and a finite sigma >= 0, found "
                         f"{samples!r} and {sigma!r}")
    seed_value(seed)
