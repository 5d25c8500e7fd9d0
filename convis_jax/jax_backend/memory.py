"""Memory estimates that refuse an absurd batch option before anything is traced.

A `chunk` of a million windows would otherwise reach XLA, which tries to
allocate hundreds of gigabytes and fails with a `JaxRuntimeError` after
compiling; the estimates here are rough (within a small factor) but enough to
turn that into a one-line `InputError` at once.
"""

from __future__ import annotations

import os

from convis_jax.core.batches import positive_int
from convis_jax.errors import InputError

_FLOAT = 4  # bytes; bfloat16 halves this, the estimate stays on the safe side


def available_bytes() -> int:
    """Memory of the first device (its allocator's limit) or, on CPU, the host's RAM."""
    import jax

    device = jax.devices()[0]
    stats = getattr(device, "memory_stats", lambda: None)() if device.platform != "cpu" else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: no estimate, no refusal
        return 1 << 62


def window_bytes(config) -> int:
    """Rough working memory of encoding one window (crop, its tokens, one layer's activations)."""
    v = config.vision
    tokens = (v.image_size // v.patch_size) ** 2 + 1
    pixels = 2 * 3 * v.image_size ** 2 * _FLOAT
    layer = tokens * (4 * v.hidden_size + v.intermediate_size) * _FLOAT
    attention = v.num_attention_heads * tokens ** 2 * _FLOAT
    return pixels + layer + attention


def pullback_bytes(config) -> int:
    """Rough memory of one concept's pullback (the backward pass keeps every layer)."""
    v = config.vision
    return window_bytes(config) * (v.num_hidden_layers + 1)


def check_chunk(chunk, per_item: int, what: str) -> int:
    """`chunk` as an int, refused when it is not positive or clearly cannot fit in memory.

    Args:
        chunk: the option's value.
        per_item: estimated bytes per item of the chunk (`window_bytes`, `pullback_bytes`).
        what: the items, for the message ("windows", "concepts").

    Raises:
        InputError: not a positive integer, or chunk x per_item exceeds the memory available.
    """
    chunk = positive_int(chunk, "chunk")
    need, have = chunk * per_item, available_bytes()
    if need > have:
        raise InputError(f"chunk={chunk} {what} needs about {need / 2**30:.0f} GiB, more than "
                         f"the {have / 2**30:.0f} GiB available; use at most "
                         f"{max(1, have // per_item)}")
    return chunk
