"""Deletion and insertion curves (RISE) of saliency maps: faithfulness to the model's score."""

import dataclasses
from typing import Callable

import numpy as np

from convis_jax.errors import InputError
from convis_jax.evaluation.protocols import PERTURBATION_PROTOCOLS, check_protocol

#: RISE's pixels per step (its notebooks use 224 on 224 x 224 images).
RISE_PIXELS_PER_STEP = 224


@dataclasses.dataclass(frozen=True)
class PerturbationCurve:
    """A deletion or insertion curve and its area.

    Attributes:
      auc: area under `scores` over `fractions` (trapezoid rule).
      fractions: float array [S + 1], the curve's x axis from 0 to 1: the
        share of pixels changed ("uniform"), or step / S ("rise", whose last
        step may be shorter).
      scores: float array [S + 1], the model's score at each step.
      protocol: "uniform" or "rise".
    """

    auc: float
    fractions: np.ndarray
    scores: np.ndarray
    protocol: str


def deletion_auc(
    image: np.ndarray,
    saliency: np.ndarray,
    score_fn: Callable[[np.ndarray], np.ndarray],
    *,
    protocol: str = "uniform",
    steps: int | None = None,
    pixels_per_step: int | None = None,
    baseline: float | np.ndarray | None = None,
    batch_size: int = 32,
) -> PerturbationCurve:
    """Deletion metric of Petsiuk et al., "RISE: Randomized input sampling
    for explanation of black-box models", BMVC 2018.

    Pixels are replaced by `baseline` in order of decreasing saliency and
    the model's score is recorded after every step; the area under that
    curve over the share of pixels removed is the metric (lower is better:
    a faithful map removes what the model needs first).

    * "uniform" (default): `steps` steps (default 100), the k-th after
      round(k H W / S) pixels; tied saliencies are removed in raster order;
      the area is the trapezoid rule over the true shares; the default
      baseline is 0 (black for an image in [0, 1]).
    * "rise" (RISE's `CausalMetric`): `pixels_per_step` pixels per step
      (default 224), so ceil(H W / p) steps, the last one shorter; pixels in
      the order `np.flip(np.argsort(saliency.ravel()))`, NumPy's default
      sort on the map's own dtype, reversed, which is how RISE orders ties;
      the area is RISE's `auc`, (sum - first / 2 - last / 2) / S, i.e. the
      trapezoid rule over step / S. The default substrate is 0 *in the
      space `image` is given in*: RISE zeroes the normalised tensor, which
      is the mean colour, not black. Pass the image as the model's
      normalised input (`score_fn` taking it as is) to get RISE's
      substrate, or pass the mean colour as `baseline`.

    Args:
      image: float array [H, W, C], in whatever range `score_fn` expects.
      saliency: float array [H, W], any finite values, high = important.
      score_fn: maps a batch of images, float32 [B, H, W, C], to their
        scores [B] (the model's score for the concept being explained).
      protocol: "uniform" or "rise".
      steps: "uniform" only: number of steps S >= 1; the curve has S + 1 points.
      pixels_per_step: "rise" only: pixels changed per step, >= 1.
      baseline: value of deleted pixels: a number, or an array that
        broadcasts to [H, W, C] (e.g. a blurred copy of the image); None is 0.
      batch_size: images per `score_fn` call.

    Returns:
      `PerturbationCurve`.

    Raises:
      InputError: for mismatched shapes, bad steps or batch size, an option
        of the other protocol, an unknown protocol, or a `score_fn` that
        does not return one finite score per image.
    """
    return _perturbation_curve(
        image, saliency, score_fn, protocol=protocol, steps=steps,
        pixels_per_step=pixels_per_step, baseline=baseline, batch_size=batch_size, insert=False,
    )


def insertion_auc(
    image: np.ndarray,
    saliency: np.ndarray,
    score_fn: Callable[[np.ndarray], np.ndarray],
    *,
    protocol: str = "uniform",
    steps: int | None = None,
    pixels_per_step: int | None = None,
    baseline: float | np.ndarray | None = None,
    batch_size: int = 32,
) -> PerturbationCurve:
    """Insertion metric of Petsiuk et al., "RISE", BMVC 2018.

    Starts from `baseline` and puts the image's pixels back in order of
    decreasing saliency, recording the model's score after every step; the
    area under that curve is the metric (higher is better). Steps, order of
    ties and area follow the protocol as in `deletion_auc`. The default
    starting image: "uniform", 0 (black for an image in [0, 1]); "rise",
    RISE's blurred copy of the image, `rise_blur(image)` (an 11 x 11
    Gaussian of sigma 5, zero padding, applied in the space `image` is given
    in, RISE's normalised tensor when the image is given normalised).

    Args:
      image: float array [H, W, C], in whatever range `score_fn` expects.
      saliency: float array [H, W], any finite values, high = important.
      score_fn: maps a batch of images, float32 [B, H, W, C], to scores [B].
      protocol: "uniform" or "rise".
      steps: "uniform" only: number of steps S >= 1.
      pixels_per_step: "rise" only: pixels inserted per step, >= 1 (default 224).
      baseline: the starting image: a number, or an array that broadcasts
        to [H, W, C]; None is the protocol's default above.
      batch_size: images per `score_fn` call.

    Returns:
      `PerturbationCurve`.

    Raises:
      InputError: as for `deletion_auc`.
    """
    return _perturbation_curve(
        image, saliency, score_fn, protocol=protocol, steps=steps,
        pixels_per_step=pixels_per_step, baseline=baseline, batch_size=batch_size, insert=True,
    )


def rise_blur(image: np.ndarray, *, size: int = 11, sigma: float = 5.0) -> np.ndarray:
    """RISE's insertion substrate: every channel blurred by its `gkern` kernel.

    The kernel is `scipy.ndimage.gaussian_filter` of a size x size unit
    impulse at the centre (sigma 5, scipy's default reflecting border), and
    the blur a per-channel correlation with it, padded with zeros (RISE's
    `conv2d(x, kern, padding=size // 2)`).

    Args:
      image: float array [H, W, C].
      size: the kernel's odd side (RISE: 11).
      sigma: the Gaussian's standard deviation in pixels (RISE: 5).

    Returns:
      float32 [H, W, C].

    Raises:
      InputError: for an image that is not [H, W, C] or an even size.
    """
    from scipy import ndimage  # scipy comes with jax

    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 3:
        raise InputError(f"image: expected [H, W, C], found shape {image.shape}")
    if not (isinstance(size, int) and size >= 1 and size % 2 == 1):
        raise InputError(f"size: expected an odd integer >= 1, found {size!r}")
    impulse = np.zeros((size, size))
    impulse[size // 2, size // 2] = 1.0
    kernel = ndimage.gaussian_filter(impulse, sigma).astype(np.float32).astype(np.float64)
    out = np.stack(
        [ndimage.correlate(image[..., c], kernel, mode="constant", cval=0.0)
         for c in range(image.shape[-1])],
        axis=-1,
    )
    return out.astype(np.float32)


def _perturbation_curve(image, saliency, score_fn, *, protocol, steps, pixels_per_step,
                        baseline, batch_size, insert):
    check_protocol(protocol, PERTURBATION_PROTOCOLS)
    image = np.asarray(image, dtype=np.float32)
    saliency = np.asarray(saliency)
    if image.ndim != 3:
        raise InputError(f"image: expected [H, W, C], found shape {image.shape}")
    if saliency.shape != image.shape[:2]:
        raise InputError(
            f"saliency: expected the image's height and width {image.shape[:2]}, "
            f"found shape {saliency.shape}"
        )
    if not np.issubdtype(saliency.dtype, np.number) or not np.isfinite(saliency).all():
        raise InputError("saliency: expected finite values, found NaN or inf")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise InputError(f"batch_size: expected an integer >= 1, found {batch_size!r}")
    h, w = saliency.shape
    n = h * w
    if protocol == "uniform":
        if pixels_per_step is not None:
            raise InputError('pixels_per_step: only for protocol="rise"; "uniform" takes steps')
        steps = 100 if steps is None else steps
        if not (isinstance(steps, int) and steps >= 1):
            raise InputError(f"steps: expected an integer >= 1, found {steps!r}")
        order = np.argsort(-saliency.reshape(-1).astype(np.float64), kind="stable")
        counts = np.rint(np.arange(steps + 1) * (n / steps)).astype(np.int64)
    else:
        if steps is not None:
            raise InputError('steps: only for protocol="uniform"; "rise" takes pixels_per_step')
        step = RISE_PIXELS_PER_STEP if pixels_per_step is None else pixels_per_step
        if not (isinstance(step, int) and step >= 1):
            raise InputError(f"pixels_per_step: expected an integer >= 1, found {step!r}")
        steps = (n + step - 1) // step
        order = np.flip(np.argsort(saliency.reshape(-1)))
        counts = np.minimum(np.arange(steps + 1) * step, n)
    if baseline is None:
        baseline = rise_blur(image) if (insert and protocol == "rise") else 0.0
    try:
        filler = np.broadcast_to(np.asarray(baseline, dtype=np.float32), image.shape)
    except ValueError:
        raise InputError(
            f"baseline: expected a number or an array that broadcasts to {image.shape}, "
            f"found shape {np.shape(baseline)}"
        ) from None

    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    rank = rank.reshape(h, w)
    first, second = (filler, image) if insert else (image, filler)

    scores = []
    for lo in range(0, steps + 1, batch_size):
        chunk = counts[lo : lo + batch_size]
        changed = rank[None] < chunk[:, None, None]  # [B, H, W]
        batch = np.where(changed[..., None], second[None], first[None])
        out = np.asarray(score_fn(batch), dtype=np.float64)
        if out.shape != (chunk.size,) or not np.isfinite(out).all():
            raise InputError(
                f"score_fn: expected {chunk.size} finite scores, shape ({chunk.size},), "
                f"found shape {out.shape}"
            )
        scores.append(out)
    scores = np.concatenate(scores)
    if protocol == "uniform":
        fractions = counts / n
        auc = float(np.sum((scores[1:] + scores[:-1]) * 0.5 * np.diff(fractions)))
    else:
        fractions = np.arange(steps + 1) / steps
        auc = float((scores.sum() - scores[0] / 2 - scores[-1] / 2) / steps)
    return PerturbationCurve(auc=auc, fractions=fractions, scores=scores, protocol=protocol)
