"""`core.batches`: the one batch-padding rule and the one positive-integer rule."""

import numpy as np
import pytest

from convis_jax.core.batches import pad_to_multiple, positive_int
from convis_jax.errors import InputError


@pytest.mark.parametrize("n,multiple", [(1, 1), (5, 1), (5, 8), (8, 8), (9, 8), (3, 2)])
def test_pad_to_multiple_repeats_the_last_row(n, multiple):
    rows = np.arange(n * 6).reshape(n, 2, 3)
    padded, count = pad_to_multiple(rows, multiple)
    assert count == n
    # Written out: the smallest multiple >= n rows, the extra ones copies of the last.
    want = list(rows) + [rows[-1]] * (-(-n // multiple) * multiple - n)
    np.testing.assert_array_equal(padded, np.stack(want))
    assert padded.dtype == rows.dtype


@pytest.mark.parametrize("array,multiple,message", [
    (np.zeros((0, 3)), 4, r"at least one row to pad, found shape \[0, 3\]"),
    (np.float32(1), 4, r"at least one row to pad, found shape \[\]"),
    (np.zeros((2, 3)), 0, "multiple must be a positive integer, found 0"),
])
def test_pad_to_multiple_refuses(array, multiple, message):
    with pytest.raises(InputError, match=message):
        pad_to_multiple(array, multiple)


def test_positive_int():
    assert positive_int(3, "chunk") == 3 and type(positive_int(np.int64(3), "chunk")) is int
    for bad in (0, -2, 2.0, "3", True, None):
        with pytest.raises(InputError, match=f"^chunk must be a positive integer, found {bad!r}$"):
            positive_int(bad, "chunk")
