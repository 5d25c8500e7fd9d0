"""The one occlusion sweep that `ConVis` and the atlas share: settings, batches, kernels.

A `Sweep` holds what every caller of Algorithm 1 needs fixed once: the encoder
and its parameters on the devices, the window grid, the chunk and batch sizes,
the padding and its seed. Its operations are the only way the package reaches
the jitted kernels of `kernels.occlusion` and `kernels.stored_windows`:

* `batches`: photos -> padded, prefetched batches of a fixed size;
* `window_embeddings`, `cells`, `rank_similarities`: one batch through the encoder;
* `stored_cells`, `stored_peaks`: the same maps from stored window embeddings.

A `ConceptRequest` is the requested concepts: their names, vocabulary indices
and subtrees, padded to the static sizes the kernels compile for.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convis_jax.core.batches import pad_to_multiple, positive_int, prefetched
from convis_jax.core.windows import (
    SQUARE,
    STRIDE,
    WINDOW_SIZES,
    WindowGrid,
    pad_squares,
    padding_mode,
    window_grid,
)
from convis_jax.errors import InputError

AGGREGATIONS = ("window", "webapp")


@dataclass(frozen=True, eq=False)
class ConceptRequest:
    """Some concepts of a vocabulary, as the kernels take them.

    Attributes:
        names: K synset names, in the order asked.
        index: int64 [K] their vocabulary indices.
        offsets, members: their subtrees as CSR: concept k's subtree (itself included)
            is members[offsets[k]:offsets[k + 1]], vocabulary indices.
    """

    names: tuple[str, ...]
    index: np.ndarray
    offsets: np.ndarray
    members: np.ndarray

    @classmethod
    def of(cls, vocabulary, concepts=None) -> ConceptRequest:
        """The request for synset names or words (`ConceptVocabulary.resolve`), one name,
        or None for every concept of the vocabulary.

        Raises:
            ConceptError: an unknown concept.
        """
        if concepts is None:
            names = list(vocabulary.names)
        else:
            names = vocabulary.resolve([concepts] if isinstance(concepts, str)
                                       else list(concepts))
        index = [vocabulary.index(n) for n in names]
        return cls.from_subtrees(names, index, vocabulary.subtree_offsets,
                                 vocabulary.subtree_members)

    @classmethod
    def from_subtrees(cls, names, index, offsets, members) -> ConceptRequest:
        """The request for concepts `index` of a vocabulary whose subtrees are the CSR
        (offsets [T + 1], members [M]) (`ConceptVocabulary.subtree_offsets`, `subtree_members`)."""
        index = np.asarray(index, np.int64)
        sizes = offsets[index + 1] - offsets[index]
        parts = [members[offsets[c]:offsets[c + 1]] for c in index]
        return cls(tuple(names), index, np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
                   np.concatenate(parts or [np.zeros(0, np.int64)]).astype(np.int64))

    def __len__(self) -> int:
        return len(self.names)

    def padded(self, bucket: int = 8) -> tuple[np.ndarray, np.ndarray, int]:
        """(members int32 [M'], segment_ids int32 [M'], K'), padded to static sizes.

        K is rounded up to a multiple of `bucket` and M to a power of two, so that
        requests of similar size reuse one compiled kernel. Padding entries point at
        synset 0 and at the dropped segment K'.
        """
        k_padded = -(-len(self) // bucket) * bucket
        segments = np.repeat(np.arange(len(self), dtype=np.int32), np.diff(self.offsets))
        m_padded = 1 << int(np.ceil(np.log2(max(len(self.members), 1))))
        extra = m_padded - len(self.members)
        return (np.concatenate([self.members, np.zeros(extra, np.int64)]).astype(np.int32),
                np.concatenate([segments, np.full(extra, k_padded, np.int32)]), k_padded)


@dataclass(frozen=True, eq=False)
class Sweep:
    """Algorithm 1's sweep of one encoder over one window grid, with its sizes and padding.

    Build one with `Sweep.create`. Attributes:
        encoder: the `Encoder` whose `embed_images` encodes the windows.
        params: its parameters, on the devices (replicated when there are several).
        grid: the window grid on the 224 square.
        aggregation: "window" (Algorithm 1) or "webapp" (the authors' web app).
        chunk: windows encoded per compiled step.
        batch: images per compiled call; a short last batch is filled with repeats.
        padding: "noise" or "constant".
        seed: the padding noise's seed: image n's noise comes from (seed, n).
    """

    encoder: Any
    params: Any = field(repr=False)
    grid: WindowGrid
    aggregation: str
    chunk: int
    batch: int
    padding: str
    seed: int

    @classmethod
    def create(cls, encoder, *, num_rows: int, params=None, config=None,
               window_sizes: Sequence[int] = WINDOW_SIZES, stride: int = STRIDE,
               aggregation: str = "window", padding: str = "noise", seed: int = 0,
               chunk: int | None = None, batch: int | None = None) -> Sweep:
        """Checks the settings and fills the device's defaults.

        Args:
            encoder: an `Encoder`.
            num_rows: what each window keeps: the bank's rows T (a sweep to maps) or the
                embedding width d (the atlas); sizes the default chunk and batch.
            params: the encoder's parameters already on the devices; default
                `encoder.params`, replicated over the local devices when there are several.
            config: the model's config, for the memory estimate (None for a bare `Encoder`).
            window_sizes, stride: the window grid on the 224 square.
            aggregation: "window" or "webapp" (which pads nothing).
            padding, seed: the padding mode and its seed (>= 0).
            chunk, batch: windows per step and images per call; None: the device's
                defaults (`occlusion.sweep_sizes`: 32 and 1 on CPUs).

        Raises:
            InputError: a bad option, or a chunk that clearly cannot fit in memory.
        """
        from convis_jax.core.batches import seed_value
        from convis_jax.kernels.memory import check_chunk, window_bytes
        from convis_jax.kernels.occlusion import sweep_sizes

        if aggregation not in AGGREGATIONS:
            raise InputError(f"aggregation must be 'window' or 'webapp', found {aggregation!r}")
        grid = window_grid((SQUARE, SQUARE), tuple(window_sizes), stride,
                           padding=0 if aggregation == "webapp" else None)
        default_chunk, default_batch = sweep_sizes(config, grid, num_rows)
        if chunk is None:
            chunk = default_chunk
        else:
            chunk = check_chunk(chunk, window_bytes(
                config, image_size=encoder.image_size, window_side=max(grid.window_sizes),
                num_synsets=num_rows), "windows")
        batch = default_batch if batch is None else positive_int(batch, "batch")
        if params is None:
            params = placed(encoder.params)
        return cls(encoder, params, grid, aggregation, chunk, batch, padding_mode(padding),
                   seed_value(seed))

    @property
    def spec(self):
        """The static settings the kernels compile for (`occlusion.SweepSpec`)."""
        from convis_jax.kernels.occlusion import SweepSpec

        return SweepSpec.of(self.encoder, self.grid, self.chunk)

    def batches(self, photos: Sequence, numbers: Sequence[int],
                extra=None) -> Iterator[tuple[Any, int, Any]]:
        """Padded batches of `batch` images, each made in a background thread while the
        device sweeps the one before.

        Args:
            photos: N image sources: entries of `core.images.image_sources`, or callables
                () -> uint8 [H, W, 3] photo.
            numbers: N ints >= 0, each image's number in its collection (its noise seed).
            extra: None, or a function (photos of a batch) -> more host work for that
                batch, made in the same background thread.

        Yields:
            (padded float32 [batch, Hp, Wp, 3] on the device, how many are real images,
            extra's result or the batch's photos).
        """
        import jax.numpy as jnp

        from convis_jax.core.images import load_source

        def load(entry):
            return entry() if callable(entry) else load_source(entry)

        def make(number: int):
            part = slice(number * self.batch, (number + 1) * self.batch)
            images = [load(entry) for entry in photos[part]]
            padded = pad_squares(images, numbers[part], self.grid.padding, self.padding,
                                 self.seed, SQUARE)
            full, n = pad_to_multiple(padded, self.batch)
            return full, n, images if extra is None else extra(images)

        for full, n, more in prefetched(make, -(-len(photos) // self.batch)):
            yield jnp.asarray(full), n, more

    def window_embeddings(self, padded) -> np.ndarray:
        """Unit window embeddings float32 [batch, n_windows, d] of one padded batch."""
        from convis_jax.kernels.occlusion import window_embeddings

        return np.asarray(window_embeddings(self.params, padded, spec=self.spec))

    def cells(self, padded, bank, request: ConceptRequest, padded_request=None) -> np.ndarray:
        """Algorithm 1's normalised cell maps float32 [batch, K, cy, cx] of one padded batch.

        Args:
            padded: a batch from `batches`.
            bank: float32 [T, d] the whole vocabulary's unit text embeddings, on the device.
            request: the concepts.
            padded_request: `request.padded()` as device arrays, when the caller sweeps
                many batches (made here otherwise).
        """
        from convis_jax.core.cells import webapp_cell_maps
        from convis_jax.kernels import occlusion

        if self.aggregation == "webapp":
            sims = occlusion.window_rank_similarities(self.params, padded, bank, spec=self.spec)
            return webapp_cell_maps(np.asarray(sims), self.grid, request.offsets,
                                    request.members)
        members, segments, k_padded = padded_request or device_request(request)
        cells = occlusion.occlusion_cells(self.params, padded, bank, members, segments,
                                          spec=self.spec, num_concepts=k_padded)
        return np.asarray(cells)[:, :len(request)]

    def stored_cells(self, windows, bank, request: ConceptRequest) -> np.ndarray:
        """`cells` from stored window embeddings [N, n_windows, d] of this grid."""
        from convis_jax.kernels.stored_windows import stored_cells

        members, segments, k_padded = device_request(request)
        return np.asarray(stored_cells(windows, bank, members, segments, grid=self.grid,
                                       num_concepts=k_padded))[:, :len(request)]

    def stored_peaks(self, windows, bank, request: ConceptRequest):
        """Each concept's map peak before min-max and its cell, from stored windows
        (`stored_windows.stored_peaks`): (float32 [N, K], int32 [N, K])."""
        from convis_jax.kernels.stored_windows import stored_peaks

        members, segments, k_padded = device_request(request)
        peaks, cells = stored_peaks(windows, bank, members, segments, grid=self.grid,
                                    num_concepts=k_padded)
        return np.asarray(peaks)[:, :len(request)], np.asarray(cells)[:, :len(request)]


def device_request(request: ConceptRequest):
    """`request.padded()` with its arrays on the device."""
    import jax.numpy as jnp

    members, segments, k_padded = request.padded()
    return jnp.asarray(members), jnp.asarray(segments), k_padded


def placed(tree):
    """A parameter tree (or any tree of arrays) on the devices, copied once: replicated over
    every local device when there are several, so that no sweep copies it again."""
    import jax

    if jax.local_device_count() > 1:
        from convis_jax.kernels.sharding import local_mesh, replicate

        return replicate(tree, local_mesh())
    return jax.device_put(tree)
