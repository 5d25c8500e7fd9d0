"""What a user would otherwise run: Algorithm 1 re-created in PyTorch, two ways.

* The authors' approach (`authors_window`, `authors_map`): for one concept,
  every window of the stride lattice over the padded image (1,800 for a
  224 image, truncated at the padded border) is cropped, preprocessed with
  PIL (resize of the shortest side, bicubic, centre crop, normalise), encoded
  ONE AT A TIME, all synsets ranked, the concept's subtree minimum taken and
  added to every pixel the window covers; the next concept starts over.
  The authors round the resized crop to uint8 (PIL "RGB" images); here the
  crop stays float (PIL mode "F", one channel at a time) so that the result
  can be compared with convis_jax, which resizes in float. The cost is the
  same kind: one PIL resize and one batch-of-one forward per window.
* The batched 730-crop algorithm (`batched_sweep`), as lean as a careful
  PyTorch user would write it: only the windows that overlap the image, cut
  as strided views and resized as two matrix products (PIL's bicubic
  weights), encoded in batches under `inference_mode` with SDPA attention,
  ranks from one sort, the subtree minimum of every requested concept at
  once (`scatter_reduce`), per-cell sums through a 0/1 coverage matrix; one
  pass serves all concepts.
* PyTorch's bare encoding of the same crops (`encode_pixels` on
  `window_pixel_values`): the floor under any PyTorch version of the sweep.

The window geometry, resize weights, ranks, subtree minima and accumulation
are written here from the definitions (docs/method.md, section 3), not imported
from convis_jax, so that agreement with convis_jax is evidence.
torch is imported inside the functions (benchmarks only).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


def pil_resize(channel: np.ndarray, width: int, height: int) -> np.ndarray:
    """PIL's bicubic resize of one float32 channel [h, w] to [height, width] (mode "F")."""
    image = Image.fromarray(np.ascontiguousarray(channel, np.float32))
    return np.asarray(image.resize((width, height), Image.BICUBIC), np.float32)


def pil_resize_matrix(source: int, target: int) -> np.ndarray:
    """The weights of PIL's bicubic resize along one axis, float32 [target, source].

    PIL resizes separably, so resizing a 1-pixel-high image of each unit
    vector gives the matrix: resize(x) = R @ x @ R.T for a square channel x.
    """
    eye = np.eye(source, dtype=np.float32)
    return np.stack([pil_resize(eye[i:i + 1], target, 1)[0] for i in range(source)], axis=1)


def authors_preprocess(crop: np.ndarray, size: int, mean, std) -> np.ndarray:
    """The CLIP processor on one crop, in float: resize the short side to `size`, centre crop.

    Args:
        crop: float [h, w, 3] in [0, 255] (h != w for windows truncated by the border).
        size: the model's input side.
        mean, std: the model's normalisation (3 floats each, for [0, 1] pixels).

    Returns:
        float32 pixel_values [3, size, size].
    """
    height, width = crop.shape[:2]
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    channels = [pil_resize(crop[..., c], new_w, new_h)[top:top + size, left:left + size]
                for c in range(3)]
    pixels = np.stack(channels) / 255.0
    return ((pixels - np.asarray(mean, np.float32)[:, None, None])
            / np.asarray(std, np.float32)[:, None, None]).astype(np.float32)


def lattice_windows(image_size: int, window_sizes, stride: int, padding: int) -> list[tuple]:
    """Every window of the authors' lattice: (size, y0, x0) in padded pixels.

    Origins run over range(0, padded side, stride) on both axes for every
    size; windows reaching past the padded border are truncated when cut
    (2 x 30 x 30 = 1,800 for a 224 image, sizes (128, 64), stride 16).
    """
    padded = image_size + 2 * padding
    return [(size, y, x) for size in window_sizes
            for y in range(0, padded, stride) for x in range(0, padded, stride)]


def overlapping_origins(image_size: int, size: int, stride: int, padding: int) -> list[int]:
    """Lattice origins (padded pixels, one axis) of whole windows that overlap the image."""
    return [o for o in range(0, image_size + 2 * padding - size + 1, stride)
            if o < padding + image_size and o + size > padding]


def cell_coverage(image_size: int, cell: int, windows: list[tuple], padding: int) -> np.ndarray:
    """float32 [cells, windows]: 1 where a window covers a cell (cells row-major, side `cell`)."""
    n_cells = -(-image_size // cell)
    edges = [(c * cell, min((c + 1) * cell, image_size)) for c in range(n_cells)]
    coverage = np.zeros((n_cells * n_cells, len(windows)), np.float32)
    for w, (size, y0, x0) in enumerate(windows):
        top, left = y0 - padding, x0 - padding
        for i, (y_start, y_end) in enumerate(edges):
            for j, (x_start, x_end) in enumerate(edges):
                if top < y_end and y_start < top + size and left < x_end and x_start < left + size:
                    coverage[i * n_cells + j, w] = 1.0
    return coverage


def authors_window(model, padded: np.ndarray, window: tuple, bank, subtree, size: int,
                   mean, std):
    """One window of the authors' loop for one concept: (score, unit embedding [d]).

    Args:
        model: transformers' CLIPModel (eval mode).
        padded: float [Hp, Wp, 3] padded image in [0, 255].
        window: (side, y0, x0) in padded pixels.
        bank: torch float32 [T, d] unit text embeddings, on the model's device.
        subtree: torch int64 [m] vocabulary indices of the concept's subtree (same device).
        size: the model's input side.
        mean, std: the model's normalisation.
    """
    import torch

    side, y0, x0 = window
    crop = padded[y0:y0 + side, x0:x0 + side]
    pixels = torch.from_numpy(authors_preprocess(crop, size, mean, std))[None]
    embedding = encode_pixels(model, pixels)[0]
    rank = ranks_one_sort((bank @ embedding)[None])[0]
    return int(rank[subtree].min()), embedding.cpu().numpy()


def authors_map(model, image: np.ndarray, bank: np.ndarray, subtree: np.ndarray, *,
                window_sizes=(128, 64), stride: int = 16, size: int, mean, std) -> np.ndarray:
    """The authors' Algorithm 1 for one image and one concept, every lattice window.

    Args:
        model: transformers' CLIPModel.
        image: float [H, H, 3] in [0, 255], the prepared square image.
        bank: float32 [T, d] unit text embeddings.
        subtree: int [m] vocabulary indices of the concept's subtree.
        window_sizes, stride: the lattice.
        size, mean, std: the model's preprocessing.

    Returns:
        float64 [H, H] in [0, 1], high where the concept is; all ones when flat.
    """
    import torch

    pad = max(window_sizes)
    height = image.shape[0]
    padded = np.zeros((height + 2 * pad,) * 2 + (3,), np.float32)
    padded[pad:pad + height, pad:pad + height] = image
    device = next(model.parameters()).device
    bank_t = torch.from_numpy(np.asarray(bank, np.float32)).to(device)
    subtree_t = torch.from_numpy(np.asarray(subtree, np.int64)).to(device)
    accumulator = np.zeros(padded.shape[:2])
    for window in lattice_windows(height, window_sizes, stride, pad):
        score, _ = authors_window(model, padded, window, bank_t, subtree_t, size, mean, std)
        side, y0, x0 = window
        accumulator[y0:y0 + side, x0:x0 + side] += score
    accumulator = accumulator[pad:pad + height, pad:pad + height]
    low, high = accumulator.min(), accumulator.max()
    if high == low:
        return np.ones_like(accumulator)
    return 1.0 - (accumulator - low) / (high - low)


@dataclass(frozen=True)
class TorchSweep:
    """The batched PyTorch sweep's results.

    Attributes:
        cells: float32 [N, K, cy, cx] maps in [0, 1], high where the concept is.
        sums: float32 [N, K, cy * cx] per-cell sums of window scores (before step 5).
        embeddings: float32 [N, W, d] unit embeddings of the windows.
        similarities: float32 [N, W, T] window-synset cosine similarities (empty [0]
            unless asked for).
        windows: the W windows, (side, y0, x0) in padded pixels, sizes in the
            given order, each row-major.
        coverage: float32 [cy * cx, W] which window covers which cell.
    """

    cells: np.ndarray
    sums: np.ndarray
    embeddings: np.ndarray
    similarities: np.ndarray
    windows: list
    coverage: np.ndarray


def sweep_windows(image_size: int, window_sizes, stride: int, padding: int) -> list[tuple]:
    """The windows of the batched algorithm: whole, overlapping the image (730 for 224)."""
    windows = []
    for side in window_sizes:
        origins = overlapping_origins(image_size, side, stride, padding)
        windows += [(side, y, x) for y in origins for x in origins]
    return windows


def torch_model_of(checkpoint, dtype: str = "float32", device: str | None = None):
    """transformers' CLIPModel of a checkpoint folder, eval mode, SDPA attention, in `dtype`.

    Args:
        checkpoint: a transformers CLIP folder.
        dtype: "float32" or "bfloat16" (parameters and compute).
        device: default "cuda" when torch sees a GPU, else "cpu".
    """
    import torch
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(str(checkpoint), attn_implementation="sdpa").eval()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device, torch.bfloat16 if dtype == "bfloat16" else torch.float32)


def encode_pixels(model, pixel_values, chunk: int = 64):
    """PyTorch's bare encoding: unit embeddings float32 [B, d] of pixel_values [B, 3, S, S].

    Only the vision tower and its projection, in batches of `chunk`, under
    `inference_mode`: the floor under any PyTorch version of the sweep, which
    must at least encode its crops. The pixels should already be on the
    model's device and in its dtype (the conversion is then free).
    """
    import torch

    parameter = next(model.parameters())
    out = []
    with torch.inference_mode():
        for start in range(0, len(pixel_values), chunk):
            batch = pixel_values[start:start + chunk].to(parameter.device, parameter.dtype)
            pooled = model.vision_model(pixel_values=batch).pooler_output
            features = model.visual_projection(pooled).float()
            out.append(features / features.norm(dim=-1, keepdim=True))
    return torch.cat(out)


def window_pixel_values(padded: np.ndarray, windows: list[tuple], *, size: int, mean,
                        std) -> np.ndarray:
    """The preprocessed crops of windows of one image, float32 [W, 3, size, size] (CPU).

    The input of `encode_pixels` when the bare encoding is timed: the same
    crops, resized and normalised as `batched_sweep` does.

    Args:
        padded: float [Hp, Wp, 3] padded image in [0, 255].
        windows: (side, y0, x0) in padded pixels.
        size, mean, std: the model's preprocessing.
    """
    import torch

    out = []
    image = torch.from_numpy(np.ascontiguousarray(padded, np.float32)).permute(2, 0, 1)
    with torch.inference_mode():
        for side, y, x in windows:
            left, right = _resize_operators(side, size, mean, std, torch.device("cpu"))
            crop = image[:, y:y + side, x:x + side]
            out.append((left @ crop @ right - _offset(mean, std, torch.device("cpu")))[None])
    return torch.cat(out).numpy()


def _resize_operators(side: int, size: int, mean, std, device):
    """(left [3, size, side], right [side, size]): crop [3, side, side] in [0, 255] ->
    left @ crop @ right = the resized crop already scaled by 1 / (255 std) per channel.

    PIL's bicubic weights of each row sum to one, so the per-channel scale of
    the normalisation can ride on the left matrix and only the offset
    mean / std remains to subtract (`_offset`).
    """
    import torch

    weights = torch.from_numpy(pil_resize_matrix(side, size)).to(device)
    scale = 1.0 / (255.0 * torch.tensor(std, dtype=torch.float32, device=device))
    return scale[:, None, None] * weights, weights.T.contiguous()


def _offset(mean, std, device):
    """float32 [3, 1, 1]: mean / std, what normalisation subtracts after scaling."""
    import torch

    return (torch.tensor(mean, dtype=torch.float32, device=device)
            / torch.tensor(std, dtype=torch.float32, device=device))[:, None, None]


def ranks_one_sort(similarities):
    """Ranks of torch similarities [B, T] with one sort: 0 = most similar, ties by index.

    The stable descending sort gives each position's synset; scattering the
    positions back to the synsets inverts the permutation without a second sort.
    """
    import torch

    order = torch.sort(similarities, dim=-1, descending=True, stable=True).indices
    positions = torch.arange(similarities.shape[-1], device=similarities.device)
    return torch.empty_like(order).scatter_(-1, order, positions.expand_as(order))


@dataclass(frozen=True)
class SweepInputs:
    """Everything `run_sweep` reads, already on the model's device (`sweep_inputs`).

    Built once, outside any timed call, so that a timed PyTorch sweep starts
    with its inputs where convis_jax's start: on the device.
    """

    images: object  # torch float32 [N, 3, Hp, Wp]
    bank: object  # torch float32 [T, d]
    members: object  # torch int64 [M]
    segments: object  # torch int64 [M]
    num_concepts: int
    coverage: object  # torch float32 [cells, W]
    operators: dict  # side -> (left [3, size, side], right [side, size])
    offset: object  # torch float32 [3, 1, 1]
    windows: list
    window_sizes: tuple
    stride: int
    image_size: int
    side_cells: int


def sweep_inputs(model, padded: np.ndarray, bank: np.ndarray, members: np.ndarray,
                 segment_ids: np.ndarray, num_concepts: int, *, window_sizes=(128, 64),
                 stride: int = 16, cell: int = 16, size: int, mean, std) -> SweepInputs:
    """Copies a sweep's inputs to the model's device and builds its fixed operators there.

    Args: as `batched_sweep`.
    """
    import torch

    pad = max(window_sizes)
    image_size = padded.shape[1] - 2 * pad
    windows = sweep_windows(image_size, window_sizes, stride, pad)
    device = next(model.parameters()).device
    to_device = lambda a, dtype=np.float32: torch.from_numpy(
        np.ascontiguousarray(a, dtype)).to(device)
    return SweepInputs(
        images=to_device(padded).permute(0, 3, 1, 2), bank=to_device(bank),
        members=to_device(members, np.int64), segments=to_device(segment_ids, np.int64),
        num_concepts=num_concepts,
        coverage=to_device(cell_coverage(image_size, cell, windows, pad)),
        operators={side: _resize_operators(side, size, mean, std, device)
                   for side in window_sizes},
        offset=_offset(mean, std, device), windows=windows, window_sizes=tuple(window_sizes),
        stride=stride, image_size=image_size, side_cells=-(-image_size // cell))


def run_sweep(model, inputs: SweepInputs, chunk: int = 64,
              keep_similarities: bool = False) -> dict:
    """Algorithm 1 for N images and K concepts in one batched PyTorch pass, on the device.

    Written as a careful PyTorch user would: the crops are strided views of
    the padded images (`unfold`), gathered a batch at a time; the bicubic
    resize is two matrix products with PIL's weights (the normalisation's
    scale folded in); the model runs under `inference_mode` with SDPA
    attention (`torch_model_of`); each batch's ranks come from one sort
    (`ranks_one_sort`), every requested concept's subtree minimum from one
    `scatter_reduce`; cells are sums through a 0/1 coverage matrix.
    Similarities, ranks and sums stay float32 whatever the model's dtype.

    Args:
        model: transformers' CLIPModel (eval mode; float32 or bfloat16).
        inputs: `sweep_inputs` of the images and concepts.
        chunk: windows per forward batch (batches never mix window sizes).
        keep_similarities: also return the [N, W, T] similarities (for cross-checks).

    Returns:
        Device tensors {"cells" [N, K, cy, cx], "sums" [N, K, cells], "embeddings"
        [N, W, d], "similarities" [N, W, T] or None}.
    """
    import torch

    parameter = next(model.parameters())
    device = parameter.device
    images, k = inputs.images, inputs.num_concepts
    n_images, n_windows = images.shape[0], len(inputs.windows)
    pad = max(inputs.window_sizes)
    with torch.inference_mode():
        scores = torch.empty((n_images, n_windows, k), device=device)
        embeddings = torch.empty((n_images, n_windows, inputs.bank.shape[1]), device=device)
        similarities = (torch.empty((n_images, n_windows, len(inputs.bank)), device=device)
                        if keep_similarities else None)
        first = 0  # index of this size's first window in `windows`
        for side in inputs.window_sizes:
            origins = overlapping_origins(inputs.image_size, side, inputs.stride, pad)
            # [N, 3, ny_all, nx_all, side, side], strided views; origins are multiples of stride.
            views = images.unfold(2, side, inputs.stride).unfold(3, side, inputs.stride)
            lattice = torch.tensor([o // inputs.stride for o in origins], device=device)
            count = len(origins) ** 2
            jobs_n = torch.arange(n_images, device=device).repeat_interleave(count)
            jobs_w = torch.arange(count, device=device).repeat(n_images)
            left, right = inputs.operators[side]
            for start in range(0, len(jobs_n), chunk):
                n, w = jobs_n[start:start + chunk], jobs_w[start:start + chunk]
                iy, ix = lattice[w // len(origins)], lattice[w % len(origins)]
                crops = views[n, :, iy, ix]  # [B, 3, side, side]
                pixels = (left @ crops @ right - inputs.offset).to(parameter.dtype)
                pooled = model.vision_model(pixel_values=pixels).pooler_output
                v = model.visual_projection(pooled).float()
                v = v / v.norm(dim=-1, keepdim=True)
                sims = v @ inputs.bank.T
                rank = ranks_one_sort(sims).float()
                best = torch.full((len(n), k), float("inf"), device=device)
                best.scatter_reduce_(1, inputs.segments.expand(len(n), -1),
                                     rank[:, inputs.members], "amin", include_self=True)
                scores[n, first + w] = best
                embeddings[n, first + w] = v
                if keep_similarities:
                    similarities[n, first + w] = sims
            first += count
        sums = torch.einsum("cw,nwk->nkc", inputs.coverage, scores)
        low = sums.min(dim=-1, keepdim=True).values
        high = sums.max(dim=-1, keepdim=True).values
        span = high - low
        maps = torch.where(span > 0, 1 - (sums - low) / torch.where(span > 0, span, 1), 1.0)
    cells = maps.reshape(n_images, k, inputs.side_cells, inputs.side_cells)
    return {"cells": cells, "sums": sums, "embeddings": embeddings,
            "similarities": similarities}


def batched_sweep(model, padded: np.ndarray, bank: np.ndarray, members: np.ndarray,
                  segment_ids: np.ndarray, num_concepts: int, *, window_sizes=(128, 64),
                  stride: int = 16, cell: int = 16, size: int, mean, std,
                  chunk: int = 64, keep_similarities: bool = False) -> TorchSweep:
    """`sweep_inputs` then `run_sweep`, everything copied back to the host.

    Args:
        model: transformers' CLIPModel (eval mode; float32 or bfloat16).
        padded: float [N, Hp, Wp, 3] images padded by max(window_sizes), in [0, 255].
        bank: float32 [T, d] unit text embeddings.
        members: int [M] vocabulary indices of the requested concepts' subtrees.
        segment_ids: int [M] the concept (0..K-1) each member belongs to.
        num_concepts: K.
        window_sizes, stride, cell: the lattice and the map's cell side.
        size, mean, std: the model's preprocessing.
        chunk: windows per forward batch (batches never mix window sizes).
        keep_similarities: also return the [N, W, T] similarities (for cross-checks).

    Returns:
        A `TorchSweep`.
    """
    inputs = sweep_inputs(model, padded, bank, members, segment_ids, num_concepts,
                          window_sizes=window_sizes, stride=stride, cell=cell, size=size,
                          mean=mean, std=std)
    out = run_sweep(model, inputs, chunk, keep_similarities)
    host = lambda t: t.cpu().numpy()
    return TorchSweep(cells=host(out["cells"]), sums=host(out["sums"]),
                      embeddings=host(out["embeddings"]),
                      similarities=(host(out["similarities"]) if keep_similarities
                                    else np.zeros((0,), np.float32)),
                      windows=inputs.windows, coverage=host(inputs.coverage))
