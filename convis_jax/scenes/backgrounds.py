"""Backgrounds (flat, gradient or noise) and object colours that stand out from them."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

_COLOUR_TRIES = 32

# Least Euclidean RGB distance between an object's colour and the mean colour
# of what lies under it, so that every object stands out from its background.
_MIN_CONTRAST = 110.0


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 255.0, size=3)


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Returns a float32 [size, size, 3] background in [0, 255]: flat, gradient or noise."""
    kind = rng.integers(3)
    if kind == 0:
        return np.broadcast_to(_random_colour(rng).astype(np.float32), (size, size, 3)).copy()
    if kind == 1:
        start, end = _random_colour(rng), _random_colour(rng)
        angle = rng.uniform(0.0, 2 * math.pi)
        steps = np.arange(size) / max(size - 1, 1)
        ramp = math.cos(angle) * steps[None, :] + math.sin(angle) * steps[:, None]
        ramp = (ramp - ramp.min()) / max(ramp.max() - ramp.min(), 1e-9)
        return ramp.astype(np.float32)[..., None] * (end - start).astype(np.float32) + start.astype(np.float32)
    # Smooth value noise: a coarse grid of colours around a base colour,
    # bilinearly enlarged, plus a little per-pixel grain.
    cells = int(rng.integers(3, 9))
    base = _random_colour(rng)
    coarse = np.clip(base + rng.normal(0.0, 40.0, size=(cells, cells, 3)), 0, 255)
    smooth = Image.fromarray(coarse.astype(np.uint8)).resize((size, size), Image.Resampling.BILINEAR)
    grain = rng.standard_normal(size=(size, size, 3), dtype=np.float32)
    grain *= np.float32(rng.uniform(2.0, 12.0))
    grain += np.asarray(smooth, dtype=np.float32)
    return np.clip(grain, 0, 255, out=grain)


def contrasting_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """Picks a random colour far from `under` (an RGB mean); falls back to the farthest tried."""
    best, best_distance = None, -1.0
    for _ in range(_COLOUR_TRIES):
        colour = _random_colour(rng)
        distance = float(np.linalg.norm(colour - under))
        if distance >= _MIN_CONTRAST:
            return colour
        if distance > best_distance:
            best, best_distance = colour, distance
    return best
