"""Tests of convis_jax.evaluation.perturbation against analytic curves and a plain loop."""

import math

import numpy as np
import pytest

from convis_jax.errors import InputError
from convis_jax.evaluation import perturbation


def region_mean_score(region):
    """score(batch) = mean of each image over `region` (all channels)."""

    def score(batch):
        assert batch.dtype == np.float32 and batch.ndim == 4
        return batch[:, region].mean(axis=(1, 2))

    return score


REGION = np.zeros((10, 10), dtype=bool)
REGION[2:6, 3:8] = True  # 20 of 100 pixels


@pytest.mark.parametrize("steps", [100, 10, 5])
def test_deletion_and_insertion_analytic(steps):
    image = np.ones((10, 10, 3))
    score = region_mean_score(REGION)
    good = REGION.astype(float)
    # Deleting the region first: the score falls linearly to 0 over the first
    # 20% of pixels, area 0.2 / 2. Inserting it first: area 1 - 0.1.
    deletion = perturbation.deletion_auc(image, good, score, steps=steps)
    insertion = perturbation.insertion_auc(image, good, score, steps=steps)
    assert deletion.auc == pytest.approx(0.1)
    assert insertion.auc == pytest.approx(0.9)
    # The inverted map touches the region only in the last 20%.
    assert perturbation.deletion_auc(image, 1 - good, score, steps=steps).auc == pytest.approx(0.9)
    assert perturbation.insertion_auc(image, 1 - good, score, steps=steps).auc == pytest.approx(0.1)
    np.testing.assert_allclose(deletion.fractions, np.linspace(0, 1, steps + 1))
    np.testing.assert_allclose(deletion.scores, np.clip(1 - deletion.fractions / 0.2, 0, 1))


def test_baseline_array_and_value():
    image = np.full((10, 10, 3), 2.0)
    score = region_mean_score(REGION)
    # Deleting to 0.5 instead of 0: the curve runs from 2 down to 0.5.
    result = perturbation.deletion_auc(image, REGION.astype(float), score, steps=10, baseline=0.5)
    assert result.auc == pytest.approx(0.5 + 1.5 * 0.1)
    per_pixel = np.full((10, 10, 1), 0.5)
    same = perturbation.deletion_auc(image, REGION.astype(float), score, steps=10, baseline=per_pixel)
    assert same.auc == pytest.approx(result.auc)
    with pytest.raises(InputError, match="baseline"):
        perturbation.deletion_auc(image, REGION.astype(float), score, baseline=np.zeros((3, 3)))


def reference_curve(image, saliency, score_fn, steps, baseline, insert):
    """One perturbed image at a time, pixels ordered with a Python sort."""
    h, w, _ = image.shape
    n = h * w
    flat = saliency.reshape(-1)
    order = sorted(range(n), key=lambda i: (-flat[i], i))
    scores = []
    for k in range(steps + 1):
        count = int(round(k * n / steps))
        current = (np.full_like(image, baseline) if insert else image.copy()).reshape(n, -1)
        for i in order[:count]:
            current[i] = image.reshape(n, -1)[i] if insert else baseline
        scores.append(float(score_fn(current.reshape(1, h, w, -1).astype(np.float32))[0]))
    return np.array(scores)


def test_curves_match_plain_loop_and_do_not_depend_on_batching():
    rng = np.random.default_rng(9)
    image = rng.random((6, 7, 3))
    saliency = rng.integers(0, 4, size=(6, 7)).astype(float)  # ties: raster order
    weights = rng.random((6, 7, 3))

    def score(batch):
        return (batch * weights).sum(axis=(1, 2, 3))

    for insert, fn in ((False, perturbation.deletion_auc), (True, perturbation.insertion_auc)):
        expected = reference_curve(image, saliency, score, 9, 0.25, insert)
        calls = []

        def counted(batch):
            calls.append(batch.shape[0])
            return score(batch)

        for batch_size in (1, 4, 64):
            calls.clear()
            got = fn(image, saliency, counted, steps=9, baseline=0.25, batch_size=batch_size)
            np.testing.assert_allclose(got.scores, expected, rtol=1e-5)
            assert len(calls) == math.ceil(10 / batch_size)
            fractions = np.rint(np.arange(10) * 42 / 9) / 42
            expected_auc = np.sum((expected[1:] + expected[:-1]) / 2 * np.diff(fractions))
            assert got.auc == pytest.approx(expected_auc, rel=1e-5)


def test_score_fn_must_return_one_score_per_image():
    with pytest.raises(InputError, match="score_fn"):
        perturbation.deletion_auc(np.ones((4, 4, 3)), np.ones((4, 4)), lambda b: b.mean(axis=(1, 2)))
    with pytest.raises(InputError, match="saliency"):
        perturbation.insertion_auc(np.ones((4, 4, 3)), np.ones((4, 5)), lambda b: b.mean(axis=(1, 2, 3)))
