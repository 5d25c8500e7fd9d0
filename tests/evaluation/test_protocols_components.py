"""The 4-connected components of the "convis" box protocol against a flood fill.

`protocols.connected_components` labels a stack of masks at once by a
vectorised union-find over horizontal runs; the helpers below read its
result back as one mask's labels and boxes, the way the protocol uses them.
"""

import numpy as np

from convis_jax.evaluation import protocols
from tests.evaluation.reference import boxes_of_labels, flood_fill_labels


def label_components(mask):
    """int64 [H, W]: 0 on background, 1..C on the components in raster order."""
    h, w = mask.shape
    comps = protocols.connected_components(mask[None])
    row, x0, x1 = comps.runs.T
    # Paint every run with its component number via a difference array.
    diff = np.zeros(h * w + 1, dtype=np.int64)
    value = comps.run_component + 1
    np.add.at(diff, row * w + x0, value)
    np.add.at(diff, row * w + x1, -value)
    return np.cumsum(diff[:-1]).reshape(h, w)


def component_boxes(mask):
    """int64 [C, 4], the components' boxes (x0, y0, x1, y1) with exclusive ends."""
    return protocols.connected_components(mask[None]).boxes


def largest_component_box(mask):
    """The box of the largest component as the protocol picks it; (0, 0, 0, 0) for none."""
    comps = protocols.connected_components(mask[None])
    keep = protocols.largest_per_slice(comps.slice_index, comps.area)
    if keep.size == 0:
        return np.zeros(4, dtype=np.int64)
    return comps.boxes[keep[0]]


def spiral_mask(n):
    """A one-pixel-wide spiral: one long component that snakes inwards."""
    mask = np.zeros((n, n), dtype=bool)
    top, left, bottom, right = 0, 0, n - 1, n - 1
    while top <= bottom and left <= right:
        mask[top, left : right + 1] = True
        mask[top : bottom + 1, right] = True
        mask[bottom, left : right + 1] = True
        if top + 2 <= bottom:
            mask[top + 2 : bottom + 1, left] = True
            mask[top + 2, left : left + 2] = True
        top, left, bottom, right = top + 2, left + 2, bottom - 2, right - 2
    return mask


def test_labels_match_flood_fill_on_random_masks():
    rng = np.random.default_rng(1)
    shapes = [(1, 1), (1, 17), (17, 1), (9, 13), (24, 24), (31, 20)]
    for shape in shapes:
        for density in (0.0, 0.3, 0.5, 0.6, 0.8, 1.0):
            mask = rng.random(shape) < density
            expected = flood_fill_labels(mask)
            np.testing.assert_array_equal(label_components(mask), expected)
            np.testing.assert_array_equal(component_boxes(mask), boxes_of_labels(expected))


def test_labels_of_a_spiral_and_a_comb():
    spiral = spiral_mask(29)
    labels = label_components(spiral)
    np.testing.assert_array_equal(labels, flood_fill_labels(spiral))
    # Teeth hanging from a bar at the bottom: each tooth starts as its own
    # run, and they join only at the last row.
    comb = np.zeros((10, 21), dtype=bool)
    comb[:, ::2] = True
    comb[-1] = True
    assert label_components(comb).max() == 1
    np.testing.assert_array_equal(component_boxes(comb), [[0, 0, 21, 10]])


def test_diagonal_pixels_are_separate_components():
    mask = np.eye(4, dtype=bool)
    np.testing.assert_array_equal(label_components(mask), np.diag([1, 2, 3, 4]))


def test_largest_component_box():
    rng = np.random.default_rng(2)
    for _ in range(30):
        mask = rng.random((15, 18)) < 0.55
        labels = flood_fill_labels(mask)
        areas = np.bincount(labels.ravel())[1:]
        expected = boxes_of_labels(labels)[int(np.argmax(areas))]  # first of ties
        np.testing.assert_array_equal(largest_component_box(mask), expected)
    empty = np.zeros((5, 5), dtype=bool)
    np.testing.assert_array_equal(largest_component_box(empty), [0, 0, 0, 0])
    assert component_boxes(empty).shape == (0, 4)
    # Two components of equal size: the first in raster order wins.
    tie = np.zeros((6, 6), dtype=bool)
    tie[4:6, 0:2] = True
    tie[0:2, 4:6] = True
    np.testing.assert_array_equal(largest_component_box(tie), [4, 0, 6, 2])
