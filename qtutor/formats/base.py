"""What every number format shares: the scaled-grid recipe, granularity, input checks.

A format is a *grid* of representable numbers (INT4: the integers -8..7; FP4 E2M1: ±{0, 0.5, 1, 1.5, 2, 3,
4, 6}; NF4: 16 quantiles of a normal distribution). Quantizing a tensor to it takes three steps:

    1. cut the tensor into groups (granularity): the whole tensor, one row, or N consecutive elements of a row;
    2. choose a scale s (and for asymmetric integers a zero point z) per group so that the group fits the grid:
       s = max|x| / max(grid)  (symmetric),  s = (max x - min x) / (2^b - 1),  z = round(-min x / s)  (asymmetric);
    3. round every x / s (+ z) to the nearest grid point: that is the code. Decoding is  x_hat = s * (code - z).

With no granularity argument, ``encode`` skips steps 1 and 2 (s = 1, z = 0): it is a plain cast, so
``decode(encode(x))`` is ``x`` rounded to the format. Formats that are blocked by definition (MX, NVFP4,
NF4) always scale, with their own block size.

Granularity (``group_size``), the same convention everywhere in qtutor:
    None   plain cast, no scale;
    0      one scale for the whole tensor (per-tensor);
    -1     one scale per row, i.e. per output channel of a weight ``W (out_features, in_features)``;
    N > 0  one scale per N consecutive elements of a row (groups run along the input dimension).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from qtutor.backend import array_namespace
from qtutor.tensor import QuantizedTensor

_FLOAT_KINDS = ("float16", "float32", "float64", "bfloat16")


def as_float32(x: Any, fmt_name: str, *, xp=None) -> Any:
    """Validate a tensor for quantization and return it as a contiguous float32 array.

    float16/bfloat16/float32 are widened exactly; float64 is rounded to float32 first (documented: every
    format in qtutor is narrower than float32, and the reference implementations all start from float32).
    Integer, boolean and complex input is an error rather than a silent conversion, and so is an empty tensor.
    Torch tensors are accepted and converted at this boundary.
    """
    if type(x).__module__.startswith("torch"):
        from qtutor.backend import from_torch

        x = from_torch(x)
    xp = xp or array_namespace(x)
    if not hasattr(x, "dtype"):
        x = xp.asarray(x)
        if x.dtype.kind in "iu" or x.dtype == bool:
            x = x.astype(np.float32)  # a Python list of numbers written by hand: 1 means 1.0
    dtype_name = str(x.dtype)
    if dtype_name not in _FLOAT_KINDS:
        raise TypeError(
            f"{fmt_name}: expected a floating-point tensor, got dtype {dtype_name}; "
            f"convert it first, e.g. x.astype(np.float32)"
        )
    if x.size == 0:
        raise ValueError(f"{fmt_name}: the tensor is empty (shape {tuple(x.shape)}); there is nothing to quantize")
    return xp.ascontiguousarray(x.astype(np.float32))


def check_finite(x: Any, fmt_name: str, why: str) -> None:
    """Raise a ValueError naming how many NaN/Inf values there are and where the first one sits."""
    xp = array_namespace(x)
    bad = ~xp.isfinite(x)
    count = int(bad.sum())
    if count:
        first = tuple(int(i) for i in np.unravel_index(int(xp.argmax(bad.ravel())), x.shape))
        raise ValueError(
            f"{fmt_name}: {count} NaN/Inf value(s) in the input (first at index {first}); {why}. "
            f"Replace them first (e.g. np.nan_to_num) or find where they come from."
        )


def check_group_size(group_size: int | None, shape: tuple[int, ...], fmt_name: str) -> int | None:
    """Validate ``group_size`` against the tensor's row length (its last axis)."""
    if group_size is None:
        return None
    if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)):
        raise TypeError(f"{fmt_name}: group_size must be an int (N > 0, -1 per-channel, 0 per-tensor), got {group_size!r}")
    group_size = int(group_size)
    if group_size < -1:
        raise ValueError(f"{fmt_name}: group_size={group_size} is invalid; use N > 0, -1 (per-channel) or 0 (per-tensor)")
    row = shape[-1] if len(shape) else 1
    if group_size > 0 and row % group_size:
        divisors = [d for d in (32, 64, 128, 256) if row % d == 0] or [d for d in range(1, row + 1) if row % d == 0][-3:]
        raise ValueError(
            f"{fmt_name}: group_size={group_size} does not divide the row length {row} (in_features); "
            f"use a divisor of {row} (e.g. {', '.join(map(str, divisors))}) or group_size=-1 (per-channel)"
        )
    return group_size


def groups_shape(shape: tuple[int, ...], group_size: int) -> tuple[int, ...]:
    """Shape of the scale array: () per tensor, shape[:-1] per channel, shape[:-1] + (row/N,) per group."""
    if group_size == 0 or len(shape) == 0:
        return ()
    if group_size == -1:
        return tuple(shape[:-1])
    return tuple(shape[:-1]) + (shape[-1] // group_size,)


def to_groups(x: Any, group_size: int) -> Any:
    """View ``x`` as a 2-D array (number of groups, group length): every row of the result shares one scale."""
    if group_size == 0 or x.ndim == 0:
        return x.reshape(1, -1)
    if group_size == -1:
        return x.reshape(-1, x.shape[-1])
    return x.reshape(-1, group_size)


def round_half_even(x: Any) -> Any:
    """Round to the nearest integer, ties to the even one (NumPy's and torch's ``round``; IEEE's default)."""
    return array_namespace(x).rint(x)


def round_half_away(x: Any) -> Any:
    """Round to the nearest integer, ties away from zero (C's ``roundf`` / ``lroundf``; ggml's ternary types).

    Not floor(|x| + 0.5): for the float32 just below 0.5 (0.49999997) that sum rounds up to 1.0 and gives 1
    where C gives 0. The fraction x - trunc(x) is exact, so comparing it with 0.5 is."""
    xp = array_namespace(x)
    whole = xp.trunc(x)
    return whole + xp.sign(x) * (xp.abs(x - whole) >= 0.5)


class Format:
    """A number format: a grid of values, a way to scale groups onto it, and honest storage accounting.

    Subclasses implement the element level (``cast``/``values``: the format's own number line) and may
    override the scale rule (``find_params``) and the grouped ``quantize``/``dequantize``.
    Everything else (granularity, input checks, the QuantizedTensor) is shared here.
    """

    name: str = "format"
    family: str = "format"
    bits: int = 0  # width of one element code
    symmetric_only: bool = True
    default_group_size: int | None = None  # None: plain cast unless a group size is asked for
    scale_bits: int = 32  # storage width of one scale
    has_nan: bool = False
    has_inf: bool = False
    description: str = ""

    # ---- the element level: the format's own number line -------------------------------------------------
    @property
    def grid(self) -> np.ndarray:
        """Every representable element value (no scale), ascending, float32, NaN/Inf left out."""
        raise NotImplementedError

    @property
    def weight_group_size(self) -> int | None:
        """Granularity used to quantize a weight when none is given: the format's own block if it has one,
        groups of 128 for integers (the GPTQ/AWQ default), one scale per output channel for FP8/FP6/FP4,
        and a plain cast for the 16-bit floats (they need no scale)."""
        if self.default_group_size is not None:
            return self.default_group_size
        if self.family == "integer":
            return 128
        return -1 if self.bits < 16 else None

    @property
    def max_value(self) -> float:
        return float(np.max(np.abs(self.grid)))

    def cast(self, x: Any) -> Any:
        """Codes of the values nearest to ``x`` (no scaling)."""
        raise NotImplementedError

    def values(self, codes: Any) -> Any:
        """Float32 values of ``codes`` (no scaling): the inverse of ``cast`` on the grid."""
        raise NotImplementedError

    # ---- the group level: scale, quantize, dequantize -----------------------------------------------------
    def for_tensor(self, W: Any) -> "Format":
        """The format as it rounds the groups of this whole tensor ``W``: itself, unless its groups' scales depend
        on a state of the whole tensor (NVFP4's per-tensor scale). A method that finds each group's scale as it
        goes (GPTQ, with :meth:`find_params`) asks for it once, before the first group."""
        return self

    def tensor_from_params(self, codes: Any, scales: Any, zeros: Any, group_size: Any, sym: bool,
                           shape: tuple[int, ...], method: str, extra: dict | None = None,
                           column_order: Any = None) -> QuantizedTensor:
        """The QuantizedTensor of codes whose group scales (and zero points) a method found with
        :meth:`find_params`; a format that stores its scales as codes of their own (MX's E8M0 byte, NVFP4's
        E4M3) adds those to ``extra``."""
        return QuantizedTensor(codes, scales, zeros, self.name, group_size, sym, tuple(shape), method,
                               dict(extra or {}), column_order=column_order)

    def find_params(self, G: Any, sym: bool) -> tuple[Any, Any]:
        """Scale (and zero point) per row of ``G`` (groups, group length): shapes (groups, 1).

        Symmetric default: s = max|x| / max(grid), so the largest magnitude lands on the largest grid value.
        An all-zero group gets s = 1 (any scale reconstructs zeros exactly; this avoids 0/0).
        """
        xp = array_namespace(G)
        absmax = xp.abs(G).max(axis=1, keepdims=True)
        scale = absmax / np.float32(self.max_value)
        scale = xp.where(scale == 0, np.float32(1.0), scale).astype(np.float32)
        return scale, None

    def quantize(self, G: Any, scale: Any, zero: Any = None) -> Any:
        """Codes of ``G / scale`` on the grid."""
        return self.cast(G / scale)

    def dequantize(self, codes: Any, scale: Any, zero: Any = None) -> Any:
        """``scale * value(code)`` (float32)."""
        return self.values(codes) * scale

    def fake_quantize(self, G: Any, scale: Any, zero: Any = None) -> Any:
        """Quantize then dequantize: the float32 value each element becomes (what methods like GPTQ need)."""
        return self.dequantize(self.quantize(G, scale, zero), scale, zero)

    # encode takes CuPy arrays and runs kernels (or CuPy's own operations) on the device; ggml's block types
    # encode on the host only
    encodes_on_device: bool = True

    # ---- whole tensors ------------------------------------------------------------------------------------
    def resolve_sym(self, sym: bool | None) -> bool:
        if sym is None:
            return self.symmetric_only
        if not sym and self.symmetric_only:
            raise ValueError(
                f"{self.name} is symmetric by construction; sym=False (zero points) only applies to integer formats"
            )
        return bool(sym)

    def encode(self, x: Any, group_size: int | None = "default", sym: bool | None = None) -> QuantizedTensor:
        """Quantize ``x``: codes plus a scale (and zero point) per group. See the module docstring."""
        if group_size == "default":
            group_size = self.default_group_size
        sym = self.resolve_sym(sym)
        x = as_float32(x, self.name)
        group_size = check_group_size(group_size, tuple(x.shape), self.name)
        if group_size is None:
            self.check_cast_input(x)
            return QuantizedTensor(self.cast(x), None, None, self.name, None, True, tuple(x.shape), "cast")
        check_finite(x, self.name, "a NaN or Inf would poison the shared scale of its whole group")
        G = to_groups(x, group_size)
        scale, zero = self.find_params(G, sym)
        codes = self.quantize(G, scale, zero).reshape(x.shape)
        shape_of_groups = groups_shape(tuple(x.shape), group_size)
        return QuantizedTensor(
            codes=codes,
            scales=scale.reshape(shape_of_groups),
            zeros=None if zero is None else zero.reshape(shape_of_groups),
            fmt=self.name,
            group_size=group_size,
            sym=sym,
            shape=tuple(x.shape),
            method="rtn",
        )

    def check_cast_input(self, x: Any) -> None:
        """Plain casts keep NaN/Inf where the format can represent them and refuse them where it cannot."""
        if not (self.has_nan and self.has_inf):
            xp = array_namespace(x)
            if not self.has_nan and bool(xp.isnan(x).any()):
                check_finite(x, self.name, f"{self.name} has no NaN encoding")
            if not self.has_inf and not self.saturates_inf and bool(xp.isinf(x).any()):
                check_finite(x, self.name, f"{self.name} has no infinity")

    saturates_inf: bool = False  # a format without Inf that clamps ±Inf to ±max instead of refusing it

    def decode(self, q: QuantizedTensor) -> Any:
        """Float32 values of a QuantizedTensor made by this format's ``encode`` (or a method using its grid)."""
        if q.fmt != self.name:
            raise ValueError(f"this QuantizedTensor is {q.fmt}, not {self.name}; call q.dequantize() instead")
        if q.group_size is None:
            values = self.values(q.codes).reshape(q.shape)
        else:
            G = to_groups(q.codes, q.group_size)
            scale = q.scales.reshape(G.shape[0], 1)
            zero = None if q.zeros is None else q.zeros.reshape(G.shape[0], 1)
            values = self.dequantize(G, scale, zero).reshape(q.shape).astype(np.float32)
        if q.column_order is not None:  # stored with the columns reordered: put them back
            values = values[..., array_namespace(values).argsort(q.column_order)]
        return values

    # ---- storage ------------------------------------------------------------------------------------------
    def storage_bits(self, q: QuantizedTensor) -> int:
        """Bits to store ``q``: every code at ``bits`` plus every scale (and zero point) at its width."""
        numel = math.prod(q.shape)
        n_groups = 0 if q.group_size is None else math.prod(groups_shape(q.shape, q.group_size))
        return numel * self.bits + n_groups * self.group_overhead_bits(q.sym)

    def group_overhead_bits(self, sym: bool) -> int:
        """Bits stored once per group: the scale, plus the zero point for asymmetric formats."""
        return self.scale_bits

    def bits_per_weight(self, shape: tuple[int, ...] = (4096, 4096), group_size: int | None = "default",
                        sym: bool | None = None) -> float:
        """Bits per weight for a tensor of ``shape`` at this granularity, scales and zero points included."""
        if group_size == "default":
            group_size = self.default_group_size
        sym = self.resolve_sym(sym)
        numel = math.prod(shape)
        n_groups = 0 if group_size is None else math.prod(groups_shape(tuple(shape), group_size))
        return (numel * self.bits + n_groups * self.group_overhead_bits(sym)) / numel

    def __repr__(self) -> str:
        return f"<format {self.name}: {self.description}>"
