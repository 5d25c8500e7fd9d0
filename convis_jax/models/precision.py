"""The models' precision: which dtype a load gets, and the form of every product in it.

Two precisions (`DTYPES`):

* "float32": parameters and every operation in float32, the exact path that
  matches PyTorch's float32 CLIP to 1e-5;
* "bfloat16": parameters stored in bfloat16, and every matrix and attention
  product of the towers takes bfloat16 operands with a float32 result
  (`matmul`, `einsum`, `dot_general`: `preferred_element_type=float32`);
  everything else (layer norms, softmax, activations, residual sums, the
  final normalisation) is float32.

Why this form (docs/guides/precision.md has the measurements): bfloat16 units (GPU
tensor cores, TPU MXUs, and CPUs with `avx512_bf16` or `amx_bf16`) multiply
bfloat16 and accumulate in float32 natively. A product with a bfloat16
*result* is not that form: XLA's CPU backend compiles it as float32
conversions around a float32 product, slower than plain float32. The
elementwise work is a few percent of the arithmetic and gains nothing from
bfloat16 on a CPU, while a float32 residual stream keeps the rounding of
12 blocks from adding up.

`resolve_dtype(None)` picks the precision for the device JAX uses: bfloat16
on GPUs and TPUs and on CPUs whose flags include a bfloat16 unit, float32
elsewhere; `$CONVIS_JAX_DTYPE` ("float32" or "bfloat16") overrides that
choice (the test suite sets it to float32, so that every comparison with
PyTorch runs the exact path).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp

from convis_jax.errors import InputError

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# What `load_model(dtype=...)` and `--dtype` accept: a precision, or the device's choice.
CHOICES = ("auto", "float32", "bfloat16")
ENV_VAR = "CONVIS_JAX_DTYPE"
# CPU flags (Linux /proc/cpuinfo) of bfloat16 matrix units that XLA's CPU backend uses.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class Precision:
    """A resolved precision and why it was chosen.

    Attributes:
        dtype: "float32" or "bfloat16".
        reason: how it was chosen, e.g. "asked", "$CONVIS_JAX_DTYPE", "auto: gpu",
            "auto: cpu with avx512_bf16", "auto: cpu without bfloat16 units".
    """

    dtype: str
    reason: str

    def __str__(self) -> str:
        return f"{self.dtype} ({self.reason})"


def cpu_bf16_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> tuple[str, ...]:
    """The bfloat16 unit flags (`BF16_CPU_FLAGS`) this CPU reports; () where unknown (not Linux)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return ()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            return tuple(flag for flag in BF16_CPU_FLAGS if flag in flags)
    return ()


def device_precision(platform: str | None = None,
                     cpuinfo: str | Path = "/proc/cpuinfo") -> Precision:
    """The precision measured faster with maps that agree, on this kind of device.

    Args:
        platform: "cpu", "gpu", "tpu", ...; default the platform of JAX's first device.
        cpuinfo: where a CPU's flags are read.
    """
    platform = platform or jax.devices()[0].platform
    if platform != "cpu":
        return Precision("bfloat16", f"auto: {platform}")
    flags = cpu_bf16_flags(cpuinfo)
    if flags:
        return Precision("bfloat16", f"auto: cpu with {' '.join(flags)}")
    return Precision("float32", "auto: cpu without bfloat16 units")


def resolve_dtype(dtype: str | None = None) -> Precision:
    """The precision a load gets for `dtype`.

    Args:
        dtype: "float32" or "bfloat16" (taken as asked); None or "auto": `$CONVIS_JAX_DTYPE`
            when set, else the device's choice (`device_precision`).

    Raises:
        InputError: an unknown dtype, here or in `$CONVIS_JAX_DTYPE`.
    """
    if dtype is not None and dtype not in CHOICES:
        raise InputError(f"dtype must be one of {sorted(DTYPES)}, found {dtype!r} (or None / "
                         f"'auto': the device's choice)")
    if dtype in DTYPES:
        return Precision(dtype, "asked")
    forced = os.environ.get(ENV_VAR, "").strip()
    if forced and forced != "auto":
        if forced not in DTYPES:
            raise InputError(f"${ENV_VAR} must be one of {sorted(DTYPES)}, found {forced!r} "
                             f"(or 'auto', or unset: the device's choice)")
        return Precision(forced, f"${ENV_VAR}")
    return device_precision()


# ------------------------------------------------------------------ products


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """`lax.dot_general` with a float32 result, for `nn.Dense(dot_general=...)`.

    Dense has already cast both operands to its dtype; float32 operands give
    the plain float32 product.
    """
    del preferred_element_type
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                               preferred_element_type=jnp.float32)


def matmul(x, w, dtype):
    """x @ w with both operands cast to `dtype`, the result float32."""
    return jnp.matmul(x.astype(dtype), w.astype(dtype), preferred_element_type=jnp.float32)


def einsum(spec: str, a, b, dtype):
    """jnp.einsum(spec, a, b) with both operands cast to `dtype`, the result float32."""
    return jnp.einsum(spec, a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)
