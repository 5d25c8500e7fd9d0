"""Fixed-size batches: the one rule for padding a short last batch, and for positive counts.

Compiled sweeps keep one shape per batch size, so a batch that comes up short
is filled with copies of its last row and the results of those copies are cut
away again. Repeating a real row (rather than zeros) keeps the filler inside
the domain of every kernel: a valid image, window or token sequence.
"""

from __future__ import annotations

import numpy as np

from convis_jax.errors import InputError


def positive_int(value, name: str) -> int:
    """`value` as an int when it is a positive integer (bools excluded).

    Args:
        value: the value to check (int or NumPy integer).
        name: what the value is, for the message (e.g. "chunk").

    Returns:
        int(value), >= 1.

    Raises:
        InputError: anything else, as "<name> must be a positive integer, found <value>".
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise InputError(f"{name} must be a positive integer, found {value!r}")
    return int(value)


def pad_to_multiple(array, multiple: int) -> tuple[np.ndarray, int]:
    """Pads axis 0 to a multiple of `multiple` rows by repeating the last row.

    Args:
        array: [n, ...] with n >= 1 (anything `np.asarray` accepts).
        multiple: the row count of the result is the smallest multiple of this >= n, >= 1.

    Returns:
        (padded [ceil(n / multiple) * multiple, ...], n): `padded[:n]` is `array`; cut the
        results of the filler rows away with `[:n]`.

    Raises:
        InputError: an empty or 0-d array, or a multiple that is not a positive integer.
    """
    multiple = positive_int(multiple, "multiple")
    array = np.asarray(array)
    if array.ndim == 0 or array.shape[0] == 0:
        raise InputError(f"expected at least one row to pad, found shape {list(array.shape)}")
    n = array.shape[0]
    fill = -n % multiple
    if fill == 0:
        return array, n
    return np.concatenate([array, np.repeat(array[-1:], fill, axis=0)]), n
