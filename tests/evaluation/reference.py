"""Plain references of the evaluation metrics: loops over pixels, written to be obviously correct.

Tests only.
"""

import sys

import numpy as np


def flood_fill_labels(mask):
    """Raster-order recursive flood fill, 4-connectivity."""
    h, w = mask.shape
    labels = np.zeros((h, w), dtype=np.int64)

    def fill(y, x, label):
        if y < 0 or y >= h or x < 0 or x >= w or not mask[y, x] or labels[y, x]:
            return
        labels[y, x] = label
        fill(y + 1, x, label)
        fill(y - 1, x, label)
        fill(y, x + 1, label)
        fill(y, x - 1, label)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * h * w + 100))
    try:
        count = 0
        for y in range(h):
            for x in range(w):
                if mask[y, x] and not labels[y, x]:
                    count += 1
                    fill(y, x, count)
    finally:
        sys.setrecursionlimit(limit)
    return labels


def boxes_of_labels(labels):
    boxes = []
    for label in range(1, labels.max() + 1):
        ys, xs = np.nonzero(labels == label)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return np.array(boxes, dtype=np.int64).reshape(-1, 4)


def pixel_iou(a, b, size=64):
    """IoU of two integer boxes by counting pixels (exclusive ends)."""
    ma = np.zeros((size, size), dtype=bool)
    mb = np.zeros((size, size), dtype=bool)
    ma[a[1] : a[3], a[0] : a[2]] = True
    mb[b[1] : b[3], b[0] : b[2]] = True
    union = np.count_nonzero(ma | mb)
    return np.count_nonzero(ma & mb) / union if union else 0.0
