"""The occlusion sweep (Algorithm 1) side by side with what a PyTorch user would run.

One ViT-B/32-shaped CLIP (full depth, random weights, one transformers
checkpoint read by both frameworks), 224 x 224 images, every concept of
`ConceptVocabulary.physical_objects()` (7,080). Contenders:

* convis_jax: the jitted sweep `occlusion_cells` (730 crops, all concepts at
  once), for one concept and for all; its parts (the 730 crops encoded
  alone, the same crops cut and resized and encoded) to see where time goes;
  the `ConVis.occlusion_cells` API around it;
* (a) the authors' approach re-created in PyTorch (`torch_reference`):
  1,800 crops encoded one at a time and ranked, per concept; a sample of
  windows is timed one by one and extrapolated to 1,800 per image per
  concept;
* (b) the batched 730-crop algorithm in PyTorch, all concepts in one pass.

Before anything is timed, the warm-up outputs are cross-checked (see
`check_maps`, `check_authors`, `check_geometry`): the same windows, the same
embeddings within a float tolerance, and maps that agree within a bound
derived from that tolerance (constant padding). Peak host memory of a
4-image all-concept sweep is measured in a fresh subprocess.

Run alone: `python benchmarks/bench_occlusion.py [--quick] [--dtype bfloat16]`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

# Sibling modules: the script's folder is first on sys.path.
import common
import jax
import jax.numpy as jnp
import numpy as np
import torch_reference

from convis_jax.core.batches import pad_to_multiple
from convis_jax.kernels import occlusion
from convis_jax.models import clip

__all__ = ["Settings", "FULL", "QUICK", "replace", "run", "main"]


@dataclass(frozen=True)
class Settings:
    """What one occlusion benchmark run measures.

    Attributes:
        stride: window lattice step (the paper's 16; `QUICK` uses 32: 164 crops
            instead of 730, every ratio still comparing like with like).
        window_sizes: window sides.
        chunk: convis_jax windows per compiled step; None: the library's default on
            this device (`occlusion.sweep_sizes`), resolved by `make_setup`.
        torch_chunk: PyTorch crops per forward batch (64, the best batch measured
            in issue 9).
        repeats: timed rounds of the one-image contenders.
        scaling_repeats: timed rounds of each extra point of the scaling curves.
        image_counts: N of the images curve (all concepts).
        concept_counts: K of the concepts curve (one image); None means all.
        authors_sample: windows of (a) timed one by one (0 skips (a)).
        memory_images: images of the peak-memory subprocess (0 skips it).
        matmul_n: side of the reference matmul; None: 4096 on CPUs (a few seconds,
            long enough to time on a shared machine), 16384 on accelerators.
        parts: also time the sweep's crops cut, resized and encoded without ranking.
        api: also time `ConVis.occlusion_cells` around the sweep.
        torch_threads: PyTorch intra-op threads for (a) and (b); None tries 1 and all
            cores and keeps the faster for each (on a loaded machine, PyTorch's
            threads waiting for each other can cost more than they bring).
    """

    stride: int = 16
    window_sizes: tuple = (128, 64)
    chunk: int | None = None
    torch_chunk: int = 64
    repeats: int = 5
    scaling_repeats: int = 1
    image_counts: tuple = (1, 2, 4)
    concept_counts: tuple = (1, 64, None)
    authors_sample: int = 24
    memory_images: int = 4
    matmul_n: int | None = None
    parts: bool = True
    api: bool = True
    torch_threads: int | None = None


FULL = Settings()
QUICK = Settings(stride=32, repeats=1, image_counts=(1, 4), concept_counts=(1, None),
                 authors_sample=6, parts=True, api=False)

# Largest distance between the unit window embeddings of convis_jax and of
# PyTorch that the cross-check accepts. float32: two implementations of the
# same 12-layer network differ by summation order only (7e-7 measured on the
# ViT-B/32 benchmark model); 1e-3 leaves room for other CPUs and GPUs and
# still catches any real difference (a wrong resize or normalisation moves
# embeddings by > 1e-2). bfloat16 keeps 8 mantissa bits per layer: 0.0105
# measured (either framework against its own float32 likewise).
EMBEDDING_TOLERANCE = {"float32": 1e-3, "bfloat16": 0.05}
# In bfloat16 the rank intervals that embedding differences allow are too
# wide to constrain most maps, so the cross-check asks instead that the two
# frameworks' maps correlate (Pearson, over cells, per concept): the median
# concept at or above this. Measured on the benchmark model, 7,080 concepts,
# stride 32: median 0.99994, 10th percentile 0.9996 (float32: 1.0).
MAP_CORRELATION_MEDIAN = 0.99


@dataclass(frozen=True)
class Concepts:
    """The concept bank and subtree index the sweeps rank against.

    Attributes:
        bank: float32 [T, d] unit text embeddings.
        offsets: int [T + 1] CSR offsets of every concept's subtree.
        members: int [M] CSR members (vocabulary indices).
        one: the concept of the one-concept measurements.
        one_name: its name.
    """

    bank: np.ndarray
    offsets: np.ndarray
    members: np.ndarray
    one: int
    one_name: str

    @property
    def count(self) -> int:
        return len(self.offsets) - 1

    def subset(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """CSR (offsets [K + 1], members) of the concepts `index`, in that order."""
        parts = [self.members[self.offsets[c]:self.offsets[c + 1]] for c in index]
        offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])])
        return offsets, np.concatenate(parts)


def concepts_from(vocabulary, bank: np.ndarray, one: str = "bird.n.01") -> Concepts:
    """Concepts of a `ConceptVocabulary` and its bank; `one` falls back to the first name."""
    name = one if one in vocabulary else vocabulary.names[0]
    return Concepts(np.asarray(bank, np.float32), np.asarray(vocabulary.subtree_offsets),
                    np.asarray(vocabulary.subtree_members), vocabulary.index(name), name)


def benchmark_images(count: int, size: int = 224, seed: int = 0) -> np.ndarray:
    """Synthetic photos: smooth backgrounds with a few coloured shapes, uint8 [count, size, size, 3]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    images = []
    for _ in range(count):
        colours = rng.uniform(0, 255, (3, 3))
        image = colours[0] * (1 - yy[..., None]) + colours[1] * xx[..., None]
        for _ in range(4):
            cy, cx, radius = rng.uniform(0.15, 0.85, 2).tolist() + [rng.uniform(0.05, 0.2)]
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2
            image[inside] = rng.uniform(0, 255, 3)
        image += rng.normal(0, 6, image.shape)
        images.append(np.clip(image, 0, 255).astype(np.uint8))
    return np.stack(images)


@dataclass
class Setup:
    """Everything the timed functions close over."""

    model: object
    torch_model: object
    concepts: Concepts
    grid: object
    photos: np.ndarray  # uint8 [N, 224, 224, 3]
    padded: np.ndarray  # float32 [N, Hp, Wp, 3], constant (black) padding
    settings: Settings
    dtype: str

    @property
    def preprocessing(self) -> dict:
        pre = self.model.preprocess_config
        return dict(size=self.model.image_size, mean=tuple(pre.image_mean),
                    std=tuple(pre.image_std))


def make_setup(model, torch_model, concepts: Concepts, settings: Settings, dtype: str,
               n_images: int) -> Setup:
    from convis_jax.core.windows import pad_images, prepare_image, window_grid

    grid = window_grid((224, 224), tuple(settings.window_sizes), settings.stride)
    if settings.chunk is None:
        settings = replace(settings, chunk=occlusion.sweep_sizes(model.config, grid,
                                                                 concepts.count)[0])
    photos = benchmark_images(n_images)
    prepared = np.stack([prepare_image(p, 224) for p in photos])
    padded = pad_images(prepared, grid.padding, "constant")
    return Setup(model, torch_model, concepts, grid, photos, padded, settings, dtype)


def load_models(checkpoint: Path, dtype: str):
    """(convis_jax ClipModel, transformers CLIPModel) of one checkpoint, in `dtype`.

    The PyTorch model goes to the GPU when torch sees one (as JAX does by itself).
    """
    from convis_jax.models.loading import load_clip

    return load_clip(checkpoint, dtype=dtype), torch_reference.torch_model_of(checkpoint, dtype)


def _concept_index(setup: Setup, k: int | None) -> np.ndarray:
    """K concepts: all (None), the one concept (1), else K spread evenly over the vocabulary."""
    total = setup.concepts.count
    if k is None:
        return np.arange(total)
    if k == 1:
        return np.array([setup.concepts.one])
    return np.unique(np.linspace(0, total - 1, k).round().astype(np.int64))


def jax_sweep(setup: Setup, index: np.ndarray, n_images: int):
    """The convis_jax sweep of the first n_images for the concepts `index` -> cells [N, K, cy, cx]."""
    c = setup.concepts
    members, segments, k_padded = request(c, index)
    # Inputs on the device before the clock starts, as `torch_batched` has its own.
    device = jax.local_devices()[0]
    padded, bank, members, segments = jax.device_put(
        (setup.padded[:n_images], c.bank, members, segments), device)

    def run():
        cells = common.sweep_cells(setup.model, padded, bank, members, segments,
                                   grid=setup.grid, chunk=setup.settings.chunk,
                                   num_concepts=k_padded, devices=[device])
        return np.asarray(cells)[:, :len(index)]

    return run


def jax_transfer(setup: Setup, n_images: int):
    """Copying n padded images from the host to JAX's device (not in the sweep's time)."""
    images = setup.padded[:n_images]

    def run():
        return np.asarray(jax.device_put(images).block_until_ready()[0, 0, 0])

    return run


def torch_transfer(setup: Setup, n_images: int):
    """Copying n padded images from the host to the PyTorch model's device (not in (b)'s time)."""
    import torch

    images = setup.padded[:n_images]
    device = next(setup.torch_model.parameters()).device

    def run():
        moved = torch.from_numpy(np.ascontiguousarray(images)).to(device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return moved[0, 0, 0].cpu().numpy()

    return run


def request(concepts: Concepts, index: np.ndarray):
    """(members, segment_ids, K padded) of concepts `index` (`sweep.ConceptRequest`)."""
    from convis_jax.kernels.sweep import ConceptRequest

    return ConceptRequest.from_subtrees(index, index, concepts.offsets,
                                        concepts.members).padded()


_window_pixel_values = jax.jit(occlusion.window_pixel_values, static_argnums=(1, 2, 3))


def window_pixels(setup: Setup) -> np.ndarray:
    """The pixel_values [W, 3, S, S] of the first image's windows, computed by convis_jax."""
    from convis_jax.core.windows import crop_windows

    pre = setup.preprocessing
    out = []
    for size_index in range(len(setup.grid.window_sizes)):
        crops = crop_windows(setup.padded[:1], setup.grid, size_index)
        crops = crops.reshape((-1,) + crops.shape[-3:])
        for start in range(0, len(crops), 64):
            out.append(np.asarray(_window_pixel_values(jnp.asarray(crops[start:start + 64]), pre["size"],
                                            pre["mean"], pre["std"])))
    return np.concatenate(out)


@partial(jax.jit, static_argnames=("config",))
def encode_chunks(params, chunks, *, config):
    """Unit embeddings [n_chunks, chunk, d] of pixel_values chunks [n_chunks, chunk, 3, S, S]."""
    return jax.lax.map(lambda c: clip.encode_images(params, config, c), chunks)


def jax_encode_alone(setup: Setup, pixels: np.ndarray):
    """Encodes the sweep's crops (already preprocessed) in chunks -> unit embeddings [W, d].

    The same chunk size and `lax.map` as the sweep, over exactly the W
    windows (the last chunk padded by repeating): what "encoding its crops
    alone" costs.
    """
    n_chunks, size = table_chunks(setup.grid, setup.settings.chunk)
    padded, count = pad_to_multiple(pixels, n_chunks * size)
    chunks = jnp.asarray(padded.reshape((n_chunks, size) + pixels.shape[1:]))

    def run():
        out = np.asarray(encode_chunks(setup.model.params, chunks, config=setup.model.config))
        return out.reshape(-1, out.shape[-1])[:count]

    return run


@partial(jax.jit, static_argnames=("num_concepts",))
def rank_chunks(v_chunks, bank, members, segment_ids, *, num_concepts):
    """The sweep's work after encoding, alone: similarities, ranks and subtree minima.

    Args:
        v_chunks: float32 [n_chunks, chunk, d] unit window embeddings.
        bank, members, segment_ids, num_concepts: as `occlusion.occlusion_cells`.

    Returns:
        int32 [n_chunks, chunk, K] subtree-minimum ranks.
    """
    finish = partial(occlusion.subtree_min_ranks, members=members, segment_ids=segment_ids,
                     num_concepts=num_concepts)
    return jax.lax.map(lambda v: finish(occlusion.dense_similarities(v, bank)), v_chunks)


def table_chunks(grid, chunk: int, n_images: int = 1) -> tuple[int, int]:
    """(chunks, windows per chunk) of the sweep's one window table (`occlusion.window_tables`)."""
    n_chunks, size = occlusion.window_tables(grid, n_images, chunk).shape[:2]
    return int(n_chunks), int(size)


def encoded_crops(grid, chunk: int, n_images: int = 1) -> dict:
    """Crops the sweep encodes (its one window table filled to whole chunks);
    `jax_encode_alone` encodes the same table."""
    count = int(np.prod(table_chunks(grid, chunk, n_images)))
    return {"windows": n_images * grid.n_windows, "sweep": count, "encode_alone": count}


def jax_rank_alone(setup: Setup, embeddings: np.ndarray):
    """`rank_chunks` over as many chunks as the sweep runs, all concepts -> host ranks."""
    c = setup.concepts
    members, segments, k_padded = request(c, np.arange(c.count))
    n_chunks, size = table_chunks(setup.grid, setup.settings.chunk)
    rows = np.resize(embeddings, (n_chunks * size, embeddings.shape[1]))  # repeats rows to fill
    args = (jnp.asarray(rows.reshape(n_chunks, size, rows.shape[1])),
            jnp.asarray(c.bank), jnp.asarray(members), jnp.asarray(segments))

    def run():
        return np.asarray(rank_chunks(*args, num_concepts=k_padded))

    return run


def jax_cut_and_encode(setup: Setup):
    """The sweep's own crop cutting, resizing and chunked encoding of the first image,
    without ranks (`common.sweep_embeddings_function`) -> unit embeddings [W, d]."""
    padded = jnp.asarray(setup.padded[:1])
    encode = common.sweep_embeddings_function(setup.model, setup.grid, setup.settings.chunk)

    def run():
        return np.asarray(encode(setup.model.params, padded))[0]

    return run


def pick_torch_threads(setup: Setup, batch: int, log=print) -> int:
    """`settings.torch_threads`, or the faster of 1 and all cores for forwards of `batch` crops."""
    import torch

    if setup.settings.torch_threads is not None:
        return setup.settings.torch_threads
    size = setup.model.image_size
    pixels = torch.zeros((batch, 3, size, size))
    run = lambda: torch_reference.encode_pixels(setup.torch_model, pixels).cpu()
    return common.faster_torch_threads(run, log, f"batches of {batch}")


def torch_request(setup: Setup, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(members, segment ids, K) of the concepts `index` for the PyTorch sweep."""
    offsets, members = setup.concepts.subset(index)
    return members, np.repeat(np.arange(len(index)), np.diff(offsets)), len(index)


def torch_batched(setup: Setup, index: np.ndarray, n_images: int, threads: int | None):
    """(b): the batched PyTorch sweep of the first n_images for the concepts `index`.

    Its inputs (images, bank, subtree request, coverage and resize matrices) go
    to the model's device once, here, as `jax_sweep`'s do; each call sweeps and
    copies the cells [N, K, cy, cx] to the host, as `jax_sweep`'s does.
    """
    import torch

    s = setup.settings
    inputs = torch_reference.sweep_inputs(
        setup.torch_model, setup.padded[:n_images], setup.concepts.bank,
        *torch_request(setup, index), window_sizes=s.window_sizes, stride=s.stride,
        cell=setup.grid.cell, **setup.preprocessing)

    def run():
        if threads is not None:
            torch.set_num_threads(threads)
        return torch_reference.run_sweep(setup.torch_model, inputs, s.torch_chunk)["cells"] \
            .cpu().numpy()

    return run


def torch_checked_sweep(setup: Setup, index: np.ndarray):
    """(b) of the first image with everything the cross-checks read (`TorchSweep`)."""
    s = setup.settings
    return torch_reference.batched_sweep(
        setup.torch_model, setup.padded[:1], setup.concepts.bank, *torch_request(setup, index),
        window_sizes=s.window_sizes, stride=s.stride, cell=setup.grid.cell, chunk=s.torch_chunk,
        keep_similarities=True, **setup.preprocessing)


def torch_encode_alone(setup: Setup, threads: int):
    """PyTorch's bare encoding of the first image's sweep crops, preprocessed beforehand.

    The floor of any PyTorch version of the sweep: the same crops as (b),
    already cut, resized and normalised (and on the model's device), only
    encoded, in (b)'s batches.
    """
    import torch

    s = setup.settings
    windows = torch_reference.sweep_windows(224, s.window_sizes, s.stride, setup.grid.padding)
    parameter = next(setup.torch_model.parameters())
    pixels = torch.from_numpy(torch_reference.window_pixel_values(
        setup.padded[0], windows, **setup.preprocessing)).to(parameter.device, parameter.dtype)

    def run():
        torch.set_num_threads(threads)
        return torch_reference.encode_pixels(setup.torch_model, pixels, s.torch_chunk).cpu().numpy()

    return run


def api_sweep(setup: Setup, convis):
    """`ConVis.occlusion_cells` for the first image and every concept."""
    s = setup.settings

    def run():
        return convis.occlusion_cells(setup.photos[0], None, padding="constant",
                                      window_sizes=tuple(s.window_sizes), stride=s.stride,
                                      chunk=s.chunk)

    return run


def authors_sample(setup: Setup, count: int, threads: int):
    """(a) on `count` windows spread over the lattice, for the one concept, one at a time.

    Returns:
        A zero-argument callable; each call encodes and ranks the sample again
        and returns {"windows": [(side, y0, x0)], "times_s" (per window), "scores",
        "embeddings" [n, d], "lattice_windows" (1,800 for the paper's grid)}.
    """
    import torch

    s = setup.settings
    pad = setup.grid.padding
    lattice = torch_reference.lattice_windows(224, s.window_sizes, s.stride, pad)
    # Half the sample from the windows the sweep also encodes (for the cross-check),
    # half from the rest; every window costs one resize to the input size and one
    # forward, so the mix does not bias the extrapolation.
    kept = set(torch_reference.sweep_windows(224, s.window_sizes, s.stride, pad))
    inside = [i for i, w in enumerate(lattice) if w in kept]
    outside = [i for i, w in enumerate(lattice) if w not in kept]
    spread = lambda items, n: [items[int(j)] for j in
                               np.unique(np.linspace(0, len(items) - 1, n).round())]
    picks = sorted(spread(inside, -(-count // 2)) + spread(outside, count // 2))
    c = setup.concepts
    device = next(setup.torch_model.parameters()).device
    bank = torch.from_numpy(c.bank).to(device)
    subtree = torch.from_numpy(c.members[c.offsets[c.one]:c.offsets[c.one + 1]].astype(np.int64))
    subtree = subtree.to(device)
    call = partial(torch_reference.authors_window, setup.torch_model, setup.padded[0],
                   bank=bank, subtree=subtree, **setup.preprocessing)

    def run():
        torch.set_num_threads(threads)
        times, scores, embeddings = [], [], []
        for p in picks:
            seconds, (score, embedding) = common.timed(call, lattice[p])
            times.append(seconds)
            scores.append(score)
            embeddings.append(embedding)
        return {"windows": [lattice[p] for p in picks], "times_s": times, "scores": scores,
                "embeddings": np.stack(embeddings), "lattice_windows": len(lattice)}

    return run


def check_geometry(setup: Setup) -> dict:
    """convis_jax's windows are torch_reference's, and the rest of the lattice misses the image."""
    grid, s = setup.grid, setup.settings
    ours = [(side, int(y), int(x)) for side, (oy, ox) in zip(grid.window_sizes, grid.origins)
            for y in oy for x in ox]
    theirs = torch_reference.sweep_windows(224, s.window_sizes, s.stride, grid.padding)
    assert ours == theirs, "convis_jax and the PyTorch re-creation cut different windows"
    lattice = torch_reference.lattice_windows(224, s.window_sizes, s.stride, grid.padding)
    kept = set(theirs)
    for side, y, x in lattice:
        if (side, y, x) in kept:
            continue
        # A window the sweep drops must not reach the image [pad, pad + 224).
        y_end, x_end = min(y + side, grid.padded_size[0]), min(x + side, grid.padded_size[1])
        overlaps = y < grid.padding + 224 and y_end > grid.padding and \
            x < grid.padding + 224 and x_end > grid.padding
        assert not overlaps, f"lattice window {(side, y, x)} overlaps the image but is dropped"
    return {"sweep_windows": len(ours), "lattice_windows": len(lattice)}


def rank_intervals(similarities: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Bounds on ranks computed by another implementation whose similarities differ by <= delta.

    If |z'(s) - z(s)| <= delta for every synset s, the rank of s under z'
    (number of synsets more similar, ties by index) lies in [lo, hi] with
    lo = #{t : z(t) > z(s) + 2 delta} and hi = #{t != s : z(t) >= z(s) - 2 delta}.

    Args:
        similarities: float [W, T] similarities z of W embeddings to T synsets.
        delta: the bound on |z' - z|.

    Returns:
        (lo, hi) int64 [W, T].
    """
    total = similarities.shape[1]
    lo = np.empty(similarities.shape, np.int64)
    hi = np.empty(similarities.shape, np.int64)
    for w, row in enumerate(similarities.astype(np.float64)):
        ascending = np.sort(row)
        lo[w] = total - np.searchsorted(ascending, row + 2 * delta, side="right")
        hi[w] = total - np.searchsorted(ascending, row - 2 * delta, side="left") - 1
    return lo, hi


def map_correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation over cells of each pair of maps [K, ...]; 1 where both are flat,
    0 where only one is."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    a, b = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
    norms = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    flat_a, flat_b = (a == 0).all(axis=1), (b == 0).all(axis=1)
    r = np.where(norms > 0, (a * b).sum(axis=1) / np.where(norms > 0, norms, 1), 0.0)
    return np.where(flat_a & flat_b, 1.0, r)


def map_agreement(reference: np.ndarray, other: np.ndarray) -> dict:
    """How closely maps `other` follow maps `reference` (e.g. bfloat16 against float32).

    Per map (image, concept), over cells: the Pearson correlation
    (`map_correlations`) and whether the arg-max cell moved, i.e. whether
    the cell where `other` peaks is not one where `reference` peaks (ties
    count as agreement). Maps flat in both (the root, all ones) are left out.

    Args:
        reference, other: float [N, K, cy, cx] maps in [0, 1].

    Returns:
        {"maps", "flat_maps_left_out", "correlation_median", "correlation_p10",
         "correlation_min", "argmax_moved_fraction", "argmax_moved_cells_median"
         (distance in cells, over the maps whose arg-max moved)}.
    """
    a = reference.reshape(-1, reference.shape[-2] * reference.shape[-1]).astype(np.float64)
    b = other.reshape(a.shape).astype(np.float64)
    flat = (np.ptp(a, axis=1) == 0) & (np.ptp(b, axis=1) == 0)
    a, b = a[~flat], b[~flat]
    correlation = map_correlations(a, b)
    peak = b.argmax(axis=1)
    moved = a[np.arange(len(a)), peak] < a.max(axis=1)
    width = reference.shape[-1]

    def distance(row, q):  # cells from `other`'s peak q to the nearest peak of `reference`
        ys, xs = np.divmod(np.flatnonzero(row == row.max()), width)
        return float(np.hypot(ys - q // width, xs - q % width).min())

    nearest = [distance(row, int(q)) for row, q in zip(a[moved], peak[moved])]
    return {"maps": int(len(a)), "flat_maps_left_out": int(flat.sum()),
            "correlation_median": float(np.median(correlation)) if len(a) else 1.0,
            "correlation_p10": float(np.percentile(correlation, 10)) if len(a) else 1.0,
            "correlation_min": float(correlation.min()) if len(a) else 1.0,
            "argmax_moved_fraction": float(moved.mean()) if len(a) else 0.0,
            "argmax_moved_cells_median": float(np.median(nearest)) if nearest else 0.0}


def check_maps(jax_cells: np.ndarray, sweep, jax_embeddings: np.ndarray, concepts: Concepts,
               index: np.ndarray, tolerance: float, dtype: str = "float32") -> dict:
    """convis_jax's maps against the batched PyTorch sweep's, within what float error allows.

    Window embeddings must agree within `tolerance`. Near-ties between
    synsets can then still swap ranks, so exact map equality is not
    expected; instead every map must lie within a bound derived from the
    embedding difference alone: with delta = max ||v_jax - v_torch|| (a bound
    on every similarity difference, as bank rows are unit vectors), each
    rank lies in an interval (`rank_intervals`), each window's subtree
    minimum in [min lo, min hi], each cell sum within W_c = sum over covering
    windows of (min hi - min lo) of PyTorch's sum. With W = max_c W_c and
    r = max - min of PyTorch's sums, min-max normalisation moves a map value
    by at most 4 W / (r - 2 W) (when r > 2 W). Concepts with r <= 2 W are
    not constrained (near-flat maps whose normalisation float error can
    flip); they are counted, and must be a minority in float32. In bfloat16
    they are the majority (embeddings differ by ~1e-2, far more than the
    gaps between synsets' similarities); the constrained ones must still lie
    within their bound, and the median per-concept correlation of the two
    frameworks' maps must reach MAP_CORRELATION_MEDIAN.

    Args:
        jax_cells: float32 [K, cy, cx] convis_jax maps of the first image.
        sweep: the `TorchSweep` of the first image for the same concepts.
        jax_embeddings: float32 [W, d] convis_jax unit embeddings of the windows.
        concepts: the concepts; `index` picks the K compared.
        tolerance: the largest embedding distance accepted.
        dtype: the compute dtype ("float32" or "bfloat16").

    Returns:
        Figures of the comparison (JSON-able).

    Raises:
        AssertionError: embeddings or maps disagree beyond what is allowed.
    """
    torch_embeddings = sweep.embeddings[0]
    distance = float(np.linalg.norm(jax_embeddings - torch_embeddings, axis=1).max())
    assert distance <= tolerance, (
        f"window embeddings differ by {distance:.2e} (> {tolerance:.0e}) between convis_jax and "
        "PyTorch")
    # + float32 rounding of the two similarity computations themselves.
    delta = distance + 1e-6
    lo, hi = rank_intervals(sweep.similarities[0], delta)
    offsets, members = concepts.subset(index)
    starts = offsets[:-1]
    widths = np.empty((lo.shape[0], len(index)))
    for w in range(lo.shape[0]):
        widths[w] = (np.minimum.reduceat(hi[w, members], starts)
                     - np.minimum.reduceat(lo[w, members], starts))
    cell_width = (sweep.coverage.astype(np.float64) @ widths).max(axis=0)  # [K]
    sums = sweep.sums[0].astype(np.float64)  # [K, cells]
    span = sums.max(axis=1) - sums.min(axis=1)
    got = jax_cells.reshape(len(index), -1).astype(np.float64)
    want = sweep.cells[0].reshape(len(index), -1).astype(np.float64)
    difference = np.abs(got - want).max(axis=1)
    flat = (span == 0) & (cell_width == 0)
    constrained = span > 2 * cell_width
    bound = np.where(constrained, 4 * cell_width / np.where(constrained, span - 2 * cell_width,
                                                            1), np.inf)
    bound[flat] = 0.0
    # 1e-5: the float32 rounding of two min-max normalisations.
    violations = np.flatnonzero((constrained | flat) & (difference > bound + 1e-5))
    assert len(violations) == 0, (
        f"{len(violations)} maps differ beyond the bound; first: concept {index[violations[0]]}, "
        f"difference {difference[violations[0]]:.3g} > bound {bound[violations[0]]:.3g}")
    checked = constrained | flat
    correlation = map_correlations(got, want)
    if dtype == "float32":
        assert checked.mean() >= 0.5, (
            f"only {checked.sum()} of {len(index)} maps are constrained by the embedding "
            "tolerance: the comparison says too little")
    else:
        assert np.median(correlation) >= MAP_CORRELATION_MEDIAN, (
            f"{dtype} maps of convis_jax and PyTorch correlate with median "
            f"{np.median(correlation):.3f} < {MAP_CORRELATION_MEDIAN}")
    return {
        "concepts": len(index),
        "embedding_max_distance": distance,
        "embedding_tolerance": tolerance,
        "maps_checked": int(checked.sum()),
        "maps_unconstrained": int((~checked).sum()),
        "maps_identical": int((difference < 1e-6).sum()),
        "map_max_abs_difference": float(difference.max()),
        "map_max_abs_difference_checked": (float(difference[checked].max()) if checked.any()
                                           else None),
        "bound_median": float(np.median(bound[checked])) if checked.any() else None,
        "map_correlation_median": float(np.median(correlation)),
        "map_correlation_p10": float(np.percentile(correlation, 10)),
        "synset_ranks_pinned_fraction": float((lo == hi).mean()),
    }


def check_authors(sample: dict, sweep, concepts: Concepts, tolerance: float) -> dict:
    """(a)'s windows against (b)'s: the same embeddings, and scores inside (b)'s rank intervals."""
    positions = {window: w for w, window in enumerate(sweep.windows)}
    shared = [(i, positions[tuple(window)]) for i, window in enumerate(sample["windows"])
              if tuple(window) in positions]
    assert shared, "no sampled window of (a) is one of the sweep's windows"
    rows, columns = zip(*shared)
    a = sample["embeddings"][list(rows)]
    b = sweep.embeddings[0][list(columns)]
    distance = float(np.linalg.norm(a - b, axis=1).max())
    assert distance <= tolerance, f"(a) and (b) embeddings differ by {distance:.2e}"
    lo, hi = rank_intervals(sweep.similarities[0][list(columns)], distance + 1e-6)
    subtree = concepts.members[concepts.offsets[concepts.one]:concepts.offsets[concepts.one + 1]]
    low, high = lo[:, subtree].min(axis=1), hi[:, subtree].min(axis=1)
    scores = np.asarray(sample["scores"])[list(rows)]
    assert np.all((low <= scores) & (scores <= high)), "(a)'s window scores are not (b)'s"
    return {"windows_compared": len(shared), "embedding_max_distance": distance,
            "scores_exact": int((low == high).sum())}


def memory_probe(checkpoint: Path, concepts: Concepts, settings: Settings, dtype: str,
                 n_images: int, log=print) -> dict:
    """Peak host memory (RSS) of a fresh process that loads the model and sweeps n_images.

    A subprocess, because a process's peak RSS only grows: measured here it
    would include PyTorch and every earlier benchmark.
    """
    with tempfile.TemporaryDirectory() as folder:
        arrays = Path(folder) / "concepts.npz"
        np.savez(arrays, bank=concepts.bank, offsets=concepts.offsets, members=concepts.members)
        command = [sys.executable, str(Path(__file__).resolve()), "--memory-probe", str(arrays),
                   "--checkpoint", str(checkpoint), "--dtype", dtype,
                   "--images", str(n_images), "--stride", str(settings.stride),
                   "--chunk", str(settings.chunk)]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - started
    log(f"  peak RSS of a {n_images}-image all-concept sweep: "
        f"{result['peak_rss_bytes'] / 2**30:.2f} GiB")
    return result


def _probe(args) -> None:
    """The memory-probe subprocess: load, sweep, print peak RSS as one JSON line."""
    from convis_jax.core.windows import pad_images, prepare_image, window_grid
    from convis_jax.models.loading import load_clip

    arrays = np.load(args.memory_probe)
    rss_start = common.peak_rss_bytes()
    model = load_clip(args.checkpoint, dtype=args.dtype)
    rss_loaded = common.peak_rss_bytes()
    grid = window_grid((224, 224), (128, 64), args.stride)
    photos = benchmark_images(args.images)
    padded = pad_images(np.stack([prepare_image(p, 224) for p in photos]), grid.padding,
                        "constant")
    index = np.arange(len(arrays["offsets"]) - 1)
    from convis_jax.kernels.sweep import ConceptRequest

    members, segments, k_padded = ConceptRequest.from_subtrees(
        index, index, arrays["offsets"], arrays["members"]).padded()
    start = time.perf_counter()
    cells = np.asarray(common.sweep_cells(
        model, jnp.asarray(padded), jnp.asarray(arrays["bank"]), jnp.asarray(members),
        jnp.asarray(segments), grid=grid, chunk=args.chunk, num_concepts=k_padded))
    cells = cells[:, :len(index)]
    print(json.dumps({
        "images": args.images, "concepts": len(index), "stride": args.stride,
        "sweep_with_compile_s": time.perf_counter() - start,
        "rss_at_start_bytes": rss_start, "peak_rss_after_load_bytes": rss_loaded,
        "peak_rss_bytes": common.peak_rss_bytes(), "cells_bytes": int(cells.nbytes)}))


def run(checkpoint: Path, settings: Settings = FULL, *, dtype: str = "float32", vocabulary=None,
        bank: np.ndarray | None = None, log=print) -> dict:
    """The whole occlusion benchmark (and the hardware comparison, from the same rounds).

    Args:
        checkpoint: a transformers CLIP checkpoint folder.
        settings: what to measure.
        dtype: "float32" or "bfloat16" (both frameworks).
        vocabulary: a ConceptVocabulary; default `physical_objects()`.
        bank: float32 [T, d] its unit text embeddings; default `build_bank` (the cache
            under $CONVIS_JAX_CACHE; run_all's bank benchmark fills it).
        log: progress printer.

    Returns:
        {"occlusion": {...}, "hardware": {...}}, each with "timings".
    """
    from convis_jax.api import ConVis
    from convis_jax.core.vocabulary import ConceptVocabulary
    from convis_jax.kernels.bank import build_bank

    s = settings
    vocabulary = vocabulary if vocabulary is not None else ConceptVocabulary.physical_objects()
    model, torch_model = load_models(checkpoint, dtype)
    if bank is None:
        bank = build_bank(model, vocabulary, cache=True, progress=False).embeddings
    concepts = concepts_from(vocabulary, bank)
    n_max = max(s.image_counts)
    setup = make_setup(model, torch_model, concepts, s, dtype, n_max)
    s = setup.settings  # the chunk resolved on this device
    everything, one = _concept_index(setup, None), _concept_index(setup, 1)
    geometry = check_geometry(setup)
    log(f"occlusion: {geometry['sweep_windows']} crops per image "
        f"({geometry['lattice_windows']} in the authors' lattice), {concepts.count} concepts")

    threads = {"batched": pick_torch_threads(setup, 8, log),
               "one_at_a_time": pick_torch_threads(setup, 1, log)}
    matmul_n = s.matmul_n or (4096 if jax.devices()[0].platform == "cpu" else 16384)
    # Rounds run these in this order; every ratio is taken within a round and the
    # median over rounds reported, so that load changing between rounds (a shared
    # machine) cancels. The matmul runs right after the sweep it is compared with.
    functions = {
        "convis_all": jax_sweep(setup, everything, 1),
        "matmul_float32": common.matmul_function(matmul_n, "float32"),
        "convis_one": jax_sweep(setup, one, 1),
        "encode_alone": jax_encode_alone(setup, window_pixels(setup)),
        "torch_batched": torch_batched(setup, everything, 1, threads["batched"]),
        "torch_encode_alone": torch_encode_alone(setup, threads["batched"]),
        "torch_matmul_float32": common.torch_matmul_function(matmul_n, threads["batched"]),
        # Host-to-device copies of the image, reported apart from the sweeps' times.
        "convis_transfer": jax_transfer(setup, 1),
        "torch_transfer": torch_transfer(setup, 1),
    }
    if dtype != "float32":
        functions[f"matmul_{dtype}"] = common.matmul_function(matmul_n, dtype)
    if s.authors_sample:
        functions["authors_sample"] = authors_sample(setup, s.authors_sample,
                                                     threads["one_at_a_time"])
    if s.parts:
        functions["cut_and_encode"] = jax_cut_and_encode(setup)

    tolerance = EMBEDDING_TOLERANCE[dtype]
    checks = {"geometry": geometry}
    timings, outputs = common.warm_up(functions, log=log)
    # Cross-checks on the warm-up outputs, before any timed round. The cross-checks read
    # (b)'s similarities, which its timed calls do not keep: the same sweep once more.
    sweep = torch_checked_sweep(setup, everything)
    assert np.array_equal(sweep.cells, outputs["torch_batched"]), \
        "(b)'s timed sweep and the sweep it is checked with differ"
    checks["maps_all_concepts"] = check_maps(outputs["convis_all"][0], sweep,
                                             outputs["encode_alone"], concepts, everything,
                                             tolerance, dtype)
    one_in_all = outputs["convis_all"][0, one]
    assert np.abs(outputs["convis_one"][0] - one_in_all).max() < 1e-6, \
        "the one-concept sweep differs from the same concept in the all-concept sweep"
    if s.authors_sample:
        checks["authors"] = check_authors(outputs["authors_sample"], sweep, concepts, tolerance)
    if s.parts:
        parts_distance = np.abs(outputs["cut_and_encode"] - outputs["encode_alone"]).max()
        assert parts_distance < 1e-5, f"the sweep's crops encode differently: {parts_distance}"
        # Ranking alone needs the embeddings, so it is warmed up here.
        functions["rank_alone"] = jax_rank_alone(setup, outputs["encode_alone"])
        t, _ = common.warm_up({"rank_alone": functions["rank_alone"]}, log=log)
        timings.update(t)
    bare = np.abs(outputs["torch_encode_alone"] - sweep.embeddings[0]).max()
    assert bare < 1e-5 if dtype == "float32" else bare < tolerance, \
        f"PyTorch's bare encoding differs from (b)'s embeddings of the same crops: {bare:.2e}"
    log(f"  cross-check passed: {json.dumps(checks['maps_all_concepts'])}")

    def authors_clock(outs):
        # (a)'s time: the sum of its per-window clocks, not the Python loop around them.
        if "authors_sample" in outs:
            timings["authors_sample"].times[-1] = sum(outs["authors_sample"]["times_s"])

    common.rounds(functions, timings, s.repeats, log=log, after_round=authors_clock)

    if s.api:
        # The API may route through another compiled function (device sharding), so it
        # gets its own warm-up, then one round.
        convis = ConVis(model, vocabulary, cache=True, progress=False)
        assert np.array_equal(convis.bank.embeddings, concepts.bank)
        api = {"api_all": api_sweep(setup, convis)}
        t, api_out = common.warm_up(api, log=log)
        assert np.abs(api_out["api_all"] - outputs["convis_all"]).max() < 1e-6, \
            "ConVis.occlusion_cells differs from the sweep it wraps"
        common.rounds(api, t, 1, log=log)
        timings.update(t)

    # The scaling curves in rounds of their own (one image, all concepts, again in
    # each, so that every point of a curve comes from the same stretch of time).
    scaling = {"n1_kall": functions["convis_all"], "n1_k1": functions["convis_one"]}
    for n in s.image_counts:
        if n > 1:
            scaling[f"n{n}_kall"] = jax_sweep(setup, everything, n)
    for k in s.concept_counts:
        if k not in (None, 1):
            scaling[f"n1_k{k}"] = jax_sweep(setup, _concept_index(setup, k), 1)
    images_curve, concepts_curve = {}, {}
    if len(scaling) > 2:
        # The two one-image points are compiled already: no warm-up for them.
        new = {name: fn for name, fn in scaling.items() if name not in ("n1_kall", "n1_k1")}
        curve_timings, _ = common.warm_up(new, log=log)
        curve_timings["n1_kall"] = common.Timing(timings["convis_all"].first_call_s)
        curve_timings["n1_k1"] = common.Timing(timings["convis_one"].first_call_s)
        common.rounds(scaling, curve_timings, s.scaling_repeats, log=log)
        for name, timing in curve_timings.items():
            timings[f"scaling_{name}"] = timing
            n, k = name[1:].split("_k")
            if k == "all":
                images_curve[int(n)] = timing
            if n == "1":
                concepts_curve[concepts.count if k == "all" else int(k)] = timing
    else:
        images_curve = {1: timings["convis_all"]}
        concepts_curve = {1: timings["convis_one"], concepts.count: timings["convis_all"]}

    memory = None
    if s.memory_images:
        memory = memory_probe(checkpoint, concepts, s, dtype, s.memory_images, log=log)

    occlusion = summarise(setup, timings, outputs.get("authors_sample"), images_curve,
                          concepts_curve, memory, outputs["convis_all"], checks)
    occlusion["torch_threads"] = threads
    matmul = {name[len("matmul_"):]: timings[name].median_s for name in timings
              if name.startswith("matmul_")}
    hardware = common.hardware_report(timings["convis_all"].median_s, geometry["sweep_windows"],
                                     model.config.vision, model.config.projection_dim, matmul,
                                     matmul_n, timings["torch_batched"].median_s,
                                     paired_ratio(timings, "matmul_float32", "convis_all"),
                                     timings["torch_matmul_float32"].median_s,
                                     timings["torch_encode_alone"].median_s)
    log("  forward-equivalent GFLOP/s: sweep {:.0f}, PyTorch bare encoding {:.0f}; float32 "
        "matmul: JAX {:.0f}, PyTorch {:.0f}".format(
            hardware["sweep_flop_per_s"] / 1e9, hardware["torch_encode_alone_flop_per_s"] / 1e9,
            hardware["matmul_flop_per_s"]["float32"] / 1e9,
            hardware["torch_matmul_flop_per_s"] / 1e9))
    hardware["timings"] = {name: timings[name].to_dict() for name in timings
                           if name.startswith("matmul_")}
    return {"occlusion": occlusion, "hardware": hardware}


def paired_ratio(timings: dict, a: str, b: str) -> float:
    """Median over rounds of (a's time / b's time in the same round)."""
    return float(np.median(np.asarray(timings[a].times) / np.asarray(timings[b].times)))


def summarise(setup: Setup, timings: dict, authors: dict | None, images_curve: dict,
              concepts_curve: dict, memory: dict | None, cells: np.ndarray, checks: dict) -> dict:
    """The occlusion figures: timings, derived rates and ratios, curves, memory, checks.

    Ratios are medians of per-round ratios (`paired_ratio`); `ratios_of_medians`
    divides the medians instead, for comparison.
    """
    s = setup.settings
    all_s = timings["convis_all"].median_s
    one_s = timings["convis_one"].median_s
    pairs = {"all_over_one_concept": ("convis_all", "convis_one"),
             "sweep_over_encode_alone": ("convis_all", "encode_alone"),
             "torch_batched_over_convis_all": ("torch_batched", "convis_all"),
             "torch_encode_alone_over_convis_all": ("torch_encode_alone", "convis_all"),
             "torch_batched_over_torch_encode_alone": ("torch_batched", "torch_encode_alone")}
    if "cut_and_encode" in timings:
        pairs["sweep_over_cut_and_encode"] = ("convis_all", "cut_and_encode")
    out = {
        "settings": {key: (list(value) if isinstance(value, tuple) else value)
                     for key, value in vars(s).items()},
        "concepts": setup.concepts.count,
        "one_concept": setup.concepts.one_name,
        "crops_per_image": setup.grid.n_windows,
        "encoded_crops_one_image": encoded_crops(setup.grid, s.chunk),
        "timings": {name: t.to_dict() for name, t in timings.items()
                    if not name.startswith("matmul_")},
        "images_per_s": {"convis_all_concepts": 1 / all_s, "convis_one_concept": 1 / one_s,
                         "torch_batched_all_concepts": 1 / timings["torch_batched"].median_s,
                         "torch_encode_alone": 1 / timings["torch_encode_alone"].median_s},
        "ratios": {name: paired_ratio(timings, a, b) for name, (a, b) in pairs.items()},
        "ratios_of_medians": {name: timings[a].median_s / timings[b].median_s
                              for name, (a, b) in pairs.items()},
        "images_curve_s": {str(n): t.median_s for n, t in sorted(images_curve.items())},
        "images_per_s_by_images_per_call": {str(n): n / t.median_s
                                            for n, t in sorted(images_curve.items())},
        "chunk": s.chunk,
        "library_defaults": dict(zip(("chunk", "images_per_call"), occlusion.sweep_sizes(
            setup.model.config, setup.grid, setup.concepts.count))),
        "concepts_curve_s": {str(k): t.median_s for k, t in sorted(concepts_curve.items())},
        "cells_bytes_one_image_all_concepts": int(cells[0].nbytes),
        # Both sweeps' times start with their inputs on the device; copying the image
        # there is timed apart (0 on a CPU, where there is nothing to copy to).
        "transfer_s": {"convis_jax": timings["convis_transfer"].median_s,
                       "pytorch": timings["torch_transfer"].median_s,
                       "images": 1, "device": jax.devices()[0].platform},
        "checks": checks,
    }
    if "cut_and_encode" in timings:
        encode = timings["encode_alone"].median_s
        cut = timings["cut_and_encode"].median_s
        out["parts_s"] = {
            "encode_alone": encode,
            "cut_resize_and_chunk_padding": cut - encode,
            "similarities_ranks_subtree_min_alone": timings["rank_alone"].median_s,
            "rest_of_sweep_after_encoding": all_s - cut,
        }
    if "api_all" in timings:
        out["ratios_of_medians"]["api_over_sweep"] = timings["api_all"].median_s / all_s
    if authors is not None:
        windows, lattice = len(authors["times_s"]), authors["lattice_windows"]
        per_concept = np.asarray(timings["authors_sample"].times) / windows * lattice
        per_concept_s = float(np.median(per_concept))
        out["authors"] = {
            "windows_timed": windows,
            "per_window_s": per_concept_s / lattice,
            "per_window_times_s_last_round": authors["times_s"],
            "per_image_per_concept_s": per_concept_s,
            "per_image_all_concepts_s": per_concept_s * setup.concepts.count,
            "extrapolated_from": f"{windows} of {lattice} windows per round, "
                                 "time per window x lattice windows",
        }
        one_rounds = np.asarray(timings["convis_one"].times)
        all_rounds = np.asarray(timings["convis_all"].times)
        out["ratios"]["authors_over_convis_one"] = float(np.median(per_concept / one_rounds))
        out["ratios"]["authors_all_over_convis_all"] = float(
            np.median(per_concept * setup.concepts.count / all_rounds))
    if memory is not None:
        out["memory"] = memory
    return out


def targets(occlusion: dict, hardware: dict) -> list[dict]:
    """The acceptance targets of issues 4 and 9 that these figures decide."""
    r = occlusion["ratios"]
    out = []
    if "authors_over_convis_one" in r:
        out.append(common.target("occlusion one concept: speed-up over (a) authors' loop",
                                 r["authors_over_convis_one"], ">=", 3.5, "x"))
    out += [
        common.target("occlusion all concepts / one concept", r["all_over_one_concept"], "<=",
                      1.1, "x"),
        common.target("occlusion: (b) batched PyTorch time / convis_jax time",
                      r["torch_batched_over_convis_all"], ">=", 1.0, "x"),
        common.target("occlusion: PyTorch's bare encoding of the crops / convis_jax sweep",
                      r["torch_encode_alone_over_convis_all"], ">=", 1.2, "x"),
        common.target("occlusion sweep / encoding its crops alone", r["sweep_over_encode_alone"],
                      "<=", 1.15, "x"),
        common.target("cell maps of one image, all concepts",
                      occlusion["cells_bytes_one_image_all_concepts"] / 1e6, "<=", 6.0, "MB"),
        common.target("sweep FLOP/s / float32 matmul FLOP/s",
                      hardware["sweep_fraction_of_matmul"], ">=", 0.6, ""),
    ]
    if "memory" in occlusion:
        m = occlusion["memory"]
        out.append(common.target(f"peak RSS, {m['images']}-image all-concept sweep",
                                 m["peak_rss_bytes"] / 2**30, "<=", 4.0, "GiB"))
    return out


def plot(occlusion: dict, folder: Path, prefix: str) -> list[str]:
    """PNG plots: time per image by method, and the images/concepts scaling curves."""
    paths = []
    labels, values = [], []
    if "authors" in occlusion:
        labels.append("(a) authors, 1 concept")
        values.append(occlusion["authors"]["per_image_per_concept_s"])
    t = occlusion["timings"]
    labels += ["(b) PyTorch batched, all", "convis_jax, 1 concept", "convis_jax, all",
               "encode crops alone"]
    values += [t["torch_batched"]["median_s"], t["convis_one"]["median_s"],
               t["convis_all"]["median_s"], t["encode_alone"]["median_s"]]
    fig, (ax,) = common.new_figure(f"Occlusion maps of one 224 image "
                                   f"({occlusion['crops_per_image']} crops)")
    common.bar_chart(ax, labels, values, "seconds per image", log=True)
    paths.append(common.save_figure(fig, folder / f"{prefix}occlusion_methods.png"))

    fig, (left, right) = common.new_figure("convis_jax sweep scaling", panels=2)
    for ax, curve, xlabel, log in (
            (left, occlusion["images_curve_s"], "images per call (all concepts)", False),
            (right, occlusion["concepts_curve_s"], "concepts (one image)", True)):
        xs = [int(k) for k in curve]
        ax.plot(xs, list(curve.values()), "o-")
        if log:
            ax.set_xscale("log")
        ax.set_xticks(xs, [f"{x:,}" for x in xs])
        ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.set_ylabel("seconds per call")
        ax.set_ylim(bottom=0)
    paths.append(common.save_figure(fig, folder / f"{prefix}occlusion_scaling.png"))
    return paths


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--memory-probe", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--images", type=int, default=4, help=argparse.SUPPRESS)
    parser.add_argument("--stride", type=int, default=16, help=argparse.SUPPRESS)
    parser.add_argument("--chunk", type=int, default=32, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_probe is not None:
        _probe(args)
        return
    checkpoint = args.checkpoint or common.benchmark_checkpoint()
    result = run(checkpoint, QUICK if args.quick else FULL, dtype=args.dtype)
    print(json.dumps({k: v for k, v in result["occlusion"].items() if k != "timings"}, indent=1))


if __name__ == "__main__":
    main()
