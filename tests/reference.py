"""Deliberately plain references of Algorithm 1 (docs/method.md, section 3).

Tests only. Everything here is written to be obviously correct, not fast:
Python loops over every window of the lattice, one crop and one encoding at
a time, ranks counted pair by pair, scores added to pixels of a
full-resolution accumulator. The fast paths (cells, summed-area tables,
batched sweeps) must reproduce these numbers.
"""

from __future__ import annotations

import numpy as np


def plain_ranks(similarities) -> np.ndarray:
    """Rank of each synset by counting, for one embedding.

    Args:
        similarities: float [T].

    Returns:
        int64 [T]: rank[s] = number of synsets t with z[t] > z[s], or with
        z[t] == z[s] and t < s (ties keep vocabulary order).
    """
    z = [float(value) for value in similarities]
    rank = np.zeros(len(z), np.int64)
    for s in range(len(z)):
        for t in range(len(z)):
            if z[t] > z[s] or (z[t] == z[s] and t < s):
                rank[s] += 1
    return rank


def plain_subtree_index(n_synsets: int, edges) -> tuple[np.ndarray, np.ndarray]:
    """CSR subtree index of a small DAG, by walking it.

    Args:
        n_synsets: T; synsets are 0..T-1 and every synset is a concept.
        edges: iterable of (parent, child) pairs.

    Returns:
        (offsets int64 [T + 1], members int32 [M]): the subtree of concept k
        (k and all its descendants, sorted) is members[offsets[k]:offsets[k+1]].
    """
    children = {s: [] for s in range(n_synsets)}
    for parent, child in edges:
        children[parent].append(child)

    def descendants(s):
        found = {s}
        for child in children[s]:
            found |= descendants(child)
        return found

    subtrees = [sorted(descendants(s)) for s in range(n_synsets)]
    offsets = np.cumsum([0] + [len(tree) for tree in subtrees])
    members = np.array([m for tree in subtrees for m in tree], np.int32)
    return offsets, members


def _subtree(offsets, members, concept_index):
    return [int(m) for m in members[offsets[concept_index] : offsets[concept_index + 1]]]


def _normalise_and_invert(accumulator: np.ndarray) -> np.ndarray:
    low, high = accumulator.min(), accumulator.max()
    if high == low:
        return np.ones_like(accumulator, dtype=np.float64)
    return 1.0 - (accumulator - low) / (high - low)


def plain_window_ranks(
    image,
    encode,
    bank,
    *,
    window_sizes=(128, 64),
    stride=16,
    pad_value=0.0,
) -> dict:
    """Ranks of every synset in every window of the padded lattice.

    The image is padded by the largest window size with `pad_value`; window
    origins run over range(0, padded side, stride) along each axis, for each
    size (for 224 and stride 16: 30 x 30 per size). Windows reaching past the
    padded border are truncated, as the reference code does; `encode` must
    therefore accept crops of any shape.

    Args:
        image: float [H, W, 3] in [0, 255].
        encode: crop float [h, w, 3] -> embedding [d], called once per crop.
        bank: [T, d] synset embeddings.
        window_sizes: window sides in pixels.
        stride: lattice step in pixels.
        pad_value: the constant padding.

    Returns:
        {(size, y0, x0): int64 ranks [T]}, origins in padded pixels.
    """
    image = np.asarray(image, np.float64)
    pad = max(window_sizes)
    height, width, _ = image.shape
    padded = np.full((height + 2 * pad, width + 2 * pad, 3), pad_value, np.float64)
    padded[pad : pad + height, pad : pad + width] = image
    bank = np.asarray(bank)
    result = {}
    for size in window_sizes:
        for y0 in range(0, padded.shape[0], stride):
            for x0 in range(0, padded.shape[1], stride):
                crop = padded[y0 : y0 + size, x0 : x0 + size]
                embedding = np.asarray(encode(crop))
                similarities = [float(np.dot(row, embedding)) for row in bank]
                result[(size, y0, x0)] = plain_ranks(similarities)
    return result


def plain_map_from_ranks(
    window_ranks: dict, image_size, offsets, members, concept_index: int, *, padding: int
) -> np.ndarray:
    """Algorithm 1 steps 4-5 for one concept, pixel by pixel.

    Args:
        window_ranks: output of `plain_window_ranks`.
        image_size: (H, W) of the unpadded image.
        offsets: int [K + 1] subtree CSR offsets.
        members: int [M] subtree members.
        concept_index: k in [0, K).
        padding: the padding used for the window origins.

    Returns:
        float64 [H, W] in [0, 1], high where the concept ranks well; all ones
        when every pixel got the same total.
    """
    height, width = image_size
    accumulator = np.zeros((height + 2 * padding, width + 2 * padding))
    subtree = _subtree(offsets, members, concept_index)
    for (size, y0, x0), rank in window_ranks.items():
        score = min(rank[s] for s in subtree)
        accumulator[y0 : y0 + size, x0 : x0 + size] += score
    return _normalise_and_invert(accumulator[padding : padding + height, padding : padding + width])


def plain_occlusion_map(
    image_224_float,
    encode,
    bank,
    offsets,
    members,
    concept_index: int,
    *,
    window_sizes=(128, 64),
    stride=16,
    pad_value=0.0,
) -> np.ndarray:
    """Algorithm 1 as the paper describes it, for one image and one concept.

    Pads by the largest window with a constant, encodes every window of the
    lattice (all of them, 1,800 for 224) one at a time, ranks every synset,
    takes the concept's subtree minimum, adds it to every pixel the window
    covers, cuts the padding, min-max normalises and inverts.

    Args:
        image_224_float: float [H, W, 3] in [0, 255] (the prepared image).
        encode: crop float [h, w, 3] -> embedding [d].
        bank: [T, d] synset embeddings.
        offsets: int [K + 1] subtree CSR offsets.
        members: int [M] subtree members.
        concept_index: k in [0, K).
        window_sizes: window sides in pixels.
        stride: lattice step in pixels.
        pad_value: the constant padding.

    Returns:
        float64 [H, W] in [0, 1].
    """
    window_ranks = plain_window_ranks(
        image_224_float,
        encode,
        bank,
        window_sizes=window_sizes,
        stride=stride,
        pad_value=pad_value,
    )
    return plain_map_from_ranks(
        window_ranks,
        np.shape(image_224_float)[:2],
        offsets,
        members,
        concept_index,
        padding=max(window_sizes),
    )


def plain_accumulate(window_scores, grid) -> np.ndarray:
    """Add every window's score to every pixel it covers, window by window.

    Args:
        window_scores: one array [..., ny, nx] per window size of `grid`.
        grid: a `convis_jax.core.windows.WindowGrid`.

    Returns:
        [..., H, W] pixel sums over the unpadded image (int64 for integer
        scores, float64 otherwise).
    """
    height, width = grid.image_size
    pad = grid.padding
    leading = np.shape(window_scores[0])[:-2]
    integer = all(np.issubdtype(np.asarray(s).dtype, np.integer) for s in window_scores)
    accumulator = np.zeros(leading + grid.padded_size, np.int64 if integer else np.float64)
    for size, scores, (origins_y, origins_x) in zip(
        grid.window_sizes, window_scores, grid.origins
    ):
        scores = np.asarray(scores)
        for k, y0 in enumerate(origins_y):
            for l, x0 in enumerate(origins_x):
                accumulator[..., y0 : y0 + size, x0 : x0 + size] += scores[..., k, l, None, None]
    return accumulator[..., pad : pad + height, pad : pad + width]


def plain_subtree_min(values, offsets, members) -> np.ndarray:
    """Each concept's minimum over its subtree members, by a loop: [..., T] -> [..., K]."""
    values = np.asarray(values)
    return np.stack([values[..., members[offsets[k]:offsets[k + 1]]].min(axis=-1)
                     for k in range(len(offsets) - 1)], axis=-1)
