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
* The batched 730-crop algorithm (`batched_sweep`): only the windows that
  overlap the image, cut and resized as tensors (the PIL bicubic weights as
  two matrices), encoded in batches, ranks and the subtree minimum of every
  requested concept at once (`scatter_reduce`), per-cell sums through a 0/1
  coverage matrix; one pass serves all concepts.

The window geometry, resize weights, ranks, subtree minima and accumulation
are written here from the definitions (METHOD.md section 3), not imported
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


def torch_ranks(similarities):
    """Ranks of a torch [..., T] similarity tensor: 0 = most similar, ties by index."""
    import torch

    order = torch.argsort(-similarities, dim=-1, stable=True)
    return torch.argsort(order, dim=-1, stable=True)


def unit_image_features(model, pixel_values):
    """Unit image embeddings, float32 [B, d], of a torch pixel tensor [B, 3, S, S].

    The pixels are moved to the model's device and dtype; the result stays there.
    """
    import torch

    parameter = next(model.parameters())
    with torch.inference_mode():
        out = model.get_image_features(pixel_values=pixel_values.to(parameter.device,
                                                                    parameter.dtype))
        out = getattr(out, "pooler_output", out).float()
    return out / out.norm(dim=-1, keepdim=True)


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
    embedding = unit_image_features(model, pixels)[0]
    rank = torch_ranks(bank @ embedding)
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
        similarities: float32 [N, W, T] window-synset cosine similarities.
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


def batched_sweep(model, padded: np.ndarray, bank: np.ndarray, members: np.ndarray,
                  segment_ids: np.ndarray, num_concepts: int, *, window_sizes=(128, 64),
                  stride: int = 16, cell: int = 16, size: int, mean, std,
                  chunk: int = 64, keep_similarities: bool = False) -> TorchSweep:
    """Algorithm 1 for N images and K concepts in one batched PyTorch pass.

    Everything runs on the model's device (a GPU when the model is there).

    Args:
        model: transformers' CLIPModel (eval mode; float32 or bfloat16).
        padded: float [N, Hp, Wp, 3] images padded by max(window_sizes), in [0, 255].
        bank: float32 [T, d] unit text embeddings.
        members: int [M] vocabulary indices of the requested concepts' subtrees.
        segment_ids: int [M] the concept (0..K-1) each member belongs to.
        num_concepts: K.
        window_sizes, stride, cell: the lattice and the map's cell side.
        size, mean, std: the model's preprocessing.
        chunk: windows per forward batch.
        keep_similarities: also return the [N, W, T] similarities (for cross-checks).

    Returns:
        A `TorchSweep`.
    """
    import torch

    pad = max(window_sizes)
    image_size = padded.shape[1] - 2 * pad
    windows = sweep_windows(image_size, window_sizes, stride, pad)
    device = next(model.parameters()).device
    to_device = lambda a, dtype=np.float32: torch.from_numpy(np.asarray(a, dtype)).to(device)
    images = to_device(padded)
    bank_t = to_device(bank)
    members_t = to_device(members, np.int64)
    segments_t = to_device(segment_ids, np.int64)
    mean_t, std_t = to_device(mean), to_device(std)
    resize = {side: to_device(pil_resize_matrix(side, size)) for side in window_sizes}
    n_images = len(padded)
    scores = torch.empty((n_images, len(windows), num_concepts), device=device)
    embeddings = torch.empty((n_images, len(windows), bank.shape[1]), device=device)
    sims_all = [] if keep_similarities else None
    with torch.inference_mode():
        jobs = [(n, w) for n in range(n_images) for w in range(len(windows))]
        # Batches never mix window sizes (a crop batch needs one shape).
        start = 0
        while start < len(jobs):
            side = windows[jobs[start][1]][0]
            stop = start
            while stop < len(jobs) and stop - start < chunk and windows[jobs[stop][1]][0] == side:
                stop += 1
            batch = jobs[start:stop]
            crops = torch.stack([images[n, y:y + side, x:x + side]
                                 for n, (_, y, x) in ((n, windows[w]) for n, w in batch)])
            resized = torch.einsum("ij,bjkc,lk->bilc", resize[side], crops, resize[side])
            pixels = ((resized / 255.0 - mean_t) / std_t).permute(0, 3, 1, 2)
            v = unit_image_features(model, pixels)
            sims = v @ bank_t.T
            rank = torch_ranks(sims).float()
            best = torch.full((len(batch), num_concepts), float("inf"), device=device)
            best.scatter_reduce_(1, segments_t.expand(len(batch), -1), rank[:, members_t],
                                 "amin", include_self=True)
            rows_n = torch.tensor([n for n, _ in batch], device=device)
            rows_w = torch.tensor([w for _, w in batch], device=device)
            scores[rows_n, rows_w] = best
            embeddings[rows_n, rows_w] = v
            if keep_similarities:
                sims_all.append(sims)
            start = stop
        coverage = to_device(cell_coverage(image_size, cell, windows, pad))
        sums = torch.einsum("cw,nwk->nkc", coverage, scores)
        low = sums.min(dim=-1, keepdim=True).values
        high = sums.max(dim=-1, keepdim=True).values
        span = high - low
        maps = torch.where(span > 0, 1 - (sums - low) / torch.where(span > 0, span, 1), 1.0)
    side_cells = -(-image_size // cell)
    host = lambda t: t.cpu().numpy()
    similarities = (host(torch.cat(sims_all).reshape(n_images, len(windows), -1))
                    if keep_similarities else np.zeros((0,), np.float32))
    return TorchSweep(cells=host(maps.reshape(n_images, num_concepts, side_cells, side_cells)),
                      sums=host(sums), embeddings=host(embeddings), similarities=similarities,
                      windows=windows, coverage=host(coverage))
