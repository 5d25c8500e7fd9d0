"""Fixed-size batches: the one rule for padding a short last batch, for positive counts,
and for preparing the next batch while the current one is swept.

Compiled sweeps keep one shape per batch size, so a batch that comes up short
is filled with copies of its last row and the results of those copies are cut
away again. Repeating a real row (rather than zeros) keeps the filler inside
the domain of every kernel: a valid image, window or token sequence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

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


def seed_value(seed) -> int:
    """`seed` as an int when it is an integer in [0, 2**63) (what jax.random.key takes)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not (
            0 <= int(seed) < 2**63):
        raise InputError(f"seed must be an integer in [0, 2**63), found {seed!r}")
    return int(seed)


def image_numbers(numbers, count: int) -> list[int]:
    """Each image's number in its collection (its noise seed): the given `count` ints >= 0,
    or, for None, the positions 0 .. count - 1."""
    if numbers is None:
        return list(range(count))
    numbers = list(numbers)
    if len(numbers) != count or any(isinstance(n, bool) or not isinstance(n, (int, np.integer))
                                    or n < 0 for n in numbers):
        raise InputError(f"expected one image number (an integer >= 0) per image, {count} in "
                         f"all, found {len(numbers)}: {numbers[:5]}"
                         f"{' ...' if len(numbers) > 5 else ''}")
    return [int(n) for n in numbers]


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


T = TypeVar("T")


def prefetched(make: Callable[[int], T], count: int) -> Iterator[T]:
    """make(0), make(1), ..., make(count - 1), each made in a background thread while the
    caller works on the one before.

    The host's part of a sweep (decoding, square crops, padding) then runs while
    the device sweeps the previous batch; compiled calls release Python's lock
    while they run, so the two overlap even on one core's worth of Python.
    Batches come in order; an exception raised by `make` is raised here, at the
    batch that failed.

    Args:
        make: batch number -> batch; called once per number, in order, from one
            background thread.
        count: how many batches, >= 0.

    Yields:
        The batches, in order.
    """
    if count <= 0:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="convis-batches") as pool:
        pending = pool.submit(make, 0)
        for number in range(count):
            ready = pending.result()
            if number + 1 < count:
                pending = pool.submit(make, number + 1)
            yield ready
