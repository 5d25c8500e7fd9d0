"""Map functions of the evaluation runners: one photo and its concepts -> maps on the 224 square."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence

import numpy as np

from convis_jax.core.cells import min_max
from convis_jax.core.windows import (
    SQUARE,  # the square every map lives on
    map_to_image,
)
from convis_jax.errors import InputError

# ---------------------------------------------------------------------------
# Localisation: maps

#: A map function: (photo uint8 [H, W, 3], K concepts, image id) -> float
#: maps [K, 224, 224] in [0, 1] on the photo's centre square.
MapFn = Callable[[np.ndarray, Sequence[str], str], np.ndarray]


def image_seed(seed: int, image_id: str) -> int:
    """The seed of one image's randomness (padding noise, SmoothGrad).

    Drawn from (run seed, CRC-32 of the image id), so an image gets the same
    noise whatever the order of the images and whichever of them a resumed
    run still has to do, and different images get different noise.

    Args:
        seed: the run's seed, >= 0.
        image_id: the image's id.

    Returns:
        An int in [0, 2**32).

    Raises:
        InputError: for a negative or non-integer seed.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed: expected an integer >= 0, found {seed!r}")
    sequence = np.random.SeedSequence([int(seed), zlib.crc32(image_id.encode("utf-8"))])
    return int(sequence.generate_state(1)[0])


def occlusion_map_fn(
    convis, *, padding: str = "noise", seed: int = 0, aggregation: str = "window"
) -> MapFn:
    """Map function of ConVis occlusion maps (Algorithm 1 by default).

    Args:
        convis: a `convis_jax.api.ConVis`.
        padding: "noise" (the paper) or "constant".
        seed: the run's seed; each image's noise comes from `image_seed`.
        aggregation: "window" (Algorithm 1) or "webapp" (the authors' web app).

    Returns:
        A `MapFn` giving the API's maps as they are ([0, 1] by construction).
    """

    def maps(photo: np.ndarray, concepts: Sequence[str], image_id: str) -> np.ndarray:
        out = convis.occlusion_maps(
            photo,
            list(concepts),
            padding=padding,
            seed=image_seed(seed, image_id),
            aggregation=aggregation,
        )
        return out[0]

    return maps


def gradient_map_fn(
    convis,
    *,
    score: str = "cosine",
    kind: str = "gradient",
    reduce: str = "absmax",
    strategy: str = "auto",
    seed: int = 0,
) -> MapFn:
    """Map function of gradient maps, made comparable with occlusion maps.

    The API's gradient maps are raw, at the model's input size, on the centre
    square of the model's preprocessing; each is resized to 224 x 224 and
    min-max normalised (`unit_square_maps`).

    Args:
        convis: a `convis_jax.api.ConVis` with `gradient_maps`.
        score: the differentiated concept score (see `ConVis.gradient_maps`).
        kind: the kind of map.
        reduce: channel reduction, "absmax" or "l2" (localisation needs one
            value per pixel).
        strategy: "auto", "vmap" or "jacobian".
        seed: the run's seed; each image's SmoothGrad noise comes from `image_seed`.

    Returns:
        A `MapFn`.

    Raises:
        InputError: when `convis` has no `gradient_maps`, or `reduce` keeps
            the channels.
    """
    if not callable(getattr(convis, "gradient_maps", None)):
        raise InputError(
            "expected a ConVis with gradient_maps for the gradient method, found none in "
            "this version; use the occlusion method"
        )
    if reduce not in ("absmax", "l2"):
        raise InputError(f"reduce: expected 'absmax' or 'l2' for localisation, found {reduce!r}")

    def maps(photo: np.ndarray, concepts: Sequence[str], image_id: str) -> np.ndarray:
        raw = convis.gradient_maps(
            photo,
            list(concepts),
            score=score,
            kind=kind,
            reduce=reduce,
            strategy=strategy,
            seed=image_seed(seed, image_id),
        )
        return unit_square_maps(raw[0])

    return maps


def unit_square_maps(maps: np.ndarray, size: int = SQUARE) -> np.ndarray:
    """Resizes square maps to size x size and min-max normalises each to [0, 1].

    A constant map carries no location and becomes all zeros (`core.cells.min_max`):
    it predicts no box at any threshold.

    Args:
        maps: float [K, s, s], finite, on a centre square of side s.
        size: the side of the result.

    Returns:
        float32 [K, size, size] in [0, 1]; bilinear resizing with pixel
        centres aligned (`map_to_image`).

    Raises:
        InputError: for maps that are not a finite [K, s, s] array.
    """
    arr = np.asarray(maps, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2] or arr.shape[1] == 0:
        raise InputError(f"maps: expected square maps [K, s, s], found shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError("maps: expected finite values, found NaN or inf")
    if arr.shape[1] != size:
        arr = map_to_image(arr, (size, size)).astype(np.float64)
    return min_max(arr)


