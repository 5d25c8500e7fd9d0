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


def window_bytes(config, *, image_size: int = 224, window_side: int = 128,
                 num_synsets: int = 0) -> int:
    """Device memory one window of a chunk needs at its peak, roughly (float32 bytes).

    Its block of pixels and the resized crop, the activations live in one vision
    layer (tokens x (3 hidden for q, k, v + the MLP's width + hidden) plus the
    attention weights), and its row of similarities with the ranks' temporaries
    (about 4 per synset); doubled for what XLA keeps live between ops.

    Args:
        config: the model's config (with a `.vision` tower), or None for an `Encoder`
            of unknown architecture: then its layers are not counted (a lower bound).
        image_size: the encoder's input size, used when config is None.
        window_side: the largest window side in pixels.
        num_synsets: T, the bank's rows (0: similarities not counted).
    """
    layer = 0
    if config is not None:
        v = config.vision
        image_size = v.image_size
        tokens = (v.image_size // v.patch_size) ** 2 + 1
        layer = (tokens * (4 * v.hidden_size + v.intermediate_size)
                 + v.num_attention_heads * tokens ** 2)
    pixels = 3 * (window_side ** 2 + 2 * image_size ** 2)
    return 2 * _FLOAT * (layer + pixels + 4 * num_synsets)


def pullback_bytes(config, image_size: int = 224) -> int:
    """Rough memory of one concept's pullback (the backward pass keeps every layer).

    config None (an `Encoder` of unknown architecture): its input alone, a lower bound.
    """
    layers = 1 if config is None else config.vision.num_hidden_layers + 1
    return window_bytes(config, image_size=image_size) * layers


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
