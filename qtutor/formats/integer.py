"""Affine integer formats INT2 .. INT8: the uniform grid every other method starts from.

A b-bit integer code q stands for the real number  x_hat = s * (q - z):

    symmetric  (no zero point, z = 0):   s = max|x| / (2^(b-1) - 1),   q = clamp(round(x / s), -(2^(b-1)-1), 2^(b-1)-1)
    asymmetric (zero point z):           s = (max x - min x) / (2^b - 1),  z = round(-min x / s),
                                         q = clamp(round(x / s) + z, 0, 2^b - 1)

Symmetric leaves the most negative code (-2^(b-1)) unused so that w and -w get opposite codes (the
convention of LLM.int8(), SmoothQuant and LLM-QAT). Asymmetric follows GPTQ's quantizer: the range
[min x, max x] is first widened to contain 0, so zero is always exactly representable (padding stays padding),
and z is an integer in [0, 2^b - 1]. Rounding is half-to-even (NumPy's and torch's ``round``).

Storage: each scale is a float16 (what GPTQ/AWQ checkpoints store) and each zero point takes b bits, so INT4
with groups of 128 costs 4 + 16/128 = 4.125 bits per weight symmetric, 4 + 20/128 = 4.156 asymmetric.
The float16 scale is rounded *up* (never down): then max|x| / s never exceeds the largest code and no weight
is clipped by the storage rounding, so every element's error stays within s / 2.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from qtutor.backend import array_namespace, is_cupy
from qtutor.formats.base import Format, groups_shape, round_half_even
from qtutor.formats.packing import pack_bits, unpack_bits
from qtutor.tensor import QuantizedTensor

FLOAT16_MAX = 65504.0


def store_scale_float16(scale: Any) -> Any:
    """Round positive float32 scales to float16, upwards, and return them as float32.

    Rounding up keeps |x| / s <= the largest code for the largest |x| of the group. A scale beyond the float16
    range is an error (weights that large are not what this format is for).
    """
    xp = array_namespace(scale)
    if bool((scale > FLOAT16_MAX).any()):
        raise ValueError(
            f"a group needs scale {float(scale.max()):.4g}, beyond float16's range ({FLOAT16_MAX}); "
            "the tensor's values are too large for float16 scales: rescale the tensor first"
        )
    as_half = scale.astype(np.float16)
    rounded_down = as_half.astype(np.float32) < scale
    as_half = xp.where(rounded_down, xp.nextafter(as_half, np.float16(np.inf)), as_half)
    return as_half.astype(np.float32)


class IntegerFormat(Format):
    """INT{bits}: symmetric or asymmetric affine integers with float16 scales."""

    family = "integer"
    symmetric_only = False
    scale_bits = 16
    has_nan = False
    has_inf = False

    def __init__(self, bits: int):
        if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 8:
            raise ValueError(f"integer formats have 2..8 bits, got bits={bits!r}")
        self.bits = int(bits)
        self.name = f"int{self.bits}"
        self.qmax_sym = 2 ** (self.bits - 1) - 1  # largest symmetric code: 7 for INT4, 127 for INT8
        self.maxq = 2**self.bits - 1  # largest asymmetric code: 15 for INT4
        self.description = f"{self.bits}-bit integers, scale (+ zero point) per group"

    def resolve_sym(self, sym: bool | None) -> bool:
        return False if sym is None else bool(sym)  # GPTQ's and AWQ's default is asymmetric

    @property
    def grid(self) -> np.ndarray:
        """Every two's-complement code, -2^(b-1) .. 2^(b-1)-1 (the plain-cast range)."""
        return np.arange(-(2 ** (self.bits - 1)), 2 ** (self.bits - 1), dtype=np.float32)

    # plain cast: round and saturate to the signed range, like a saturating float -> intN conversion
    def cast(self, x: Any) -> Any:
        low, high = -(2 ** (self.bits - 1)), 2 ** (self.bits - 1) - 1
        xp = array_namespace(x)
        return xp.clip(round_half_even(x), low, high).astype(np.int8)

    def values(self, codes: Any) -> Any:
        return codes.astype(np.float32)

    def find_params(self, G: Any, sym: bool) -> tuple[Any, Any]:
        if is_cupy(G):
            return _gpu_find_params(self, G, sym)
        if sym:
            absmax = np.abs(G).max(axis=1, keepdims=True)
            scale = absmax / np.float32(self.qmax_sym)
            scale = np.where(scale == 0, np.float32(1.0), scale)
            return store_scale_float16(scale.astype(np.float32)), None
        low = np.minimum(G.min(axis=1, keepdims=True), 0)  # widen the range to contain 0
        high = np.maximum(G.max(axis=1, keepdims=True), 0)
        scale = ((high - low) / np.float32(self.maxq)).astype(np.float32)
        scale = store_scale_float16(np.where(scale == 0, np.float32(1.0), scale))
        zero = np.clip(round_half_even(-low / scale), 0, self.maxq)
        return scale, zero.astype(np.float32)

    def quantize(self, G: Any, scale: Any, zero: Any = None) -> Any:
        if is_cupy(G):
            return _gpu_quantize(self, G, scale, zero)
        if zero is None:
            return np.clip(round_half_even(G / scale), -self.qmax_sym, self.qmax_sym).astype(np.int8)
        return np.clip(round_half_even(G / scale) + zero, 0, self.maxq).astype(np.uint8)

    def dequantize(self, codes: Any, scale: Any, zero: Any = None) -> Any:
        if is_cupy(codes):
            return _gpu_dequantize(codes, scale, zero)
        q = codes.astype(np.float32)
        if zero is not None:
            q = q - zero
        return (q * scale).astype(np.float32)

    def group_overhead_bits(self, sym: bool) -> int:
        return self.scale_bits + (0 if sym else self.bits)

    def storage_bits(self, q: QuantizedTensor) -> int:
        """Codes, scales and zero points; a zero point that is a real number rather than a code (HQQ's) is
        stored wider, at ``q.extra["zero_bits"]`` bits, by whoever made it."""
        bits = super().storage_bits(q)
        zero_bits = q.extra.get("zero_bits")
        if zero_bits is None or q.sym or q.group_size is None:
            return bits
        return bits + math.prod(groups_shape(q.shape, q.group_size)) * (int(zero_bits) - self.bits)

    # ---- packing ------------------------------------------------------------------------------------------
    def pack(self, q: QuantizedTensor) -> Any:
        """The codes as packed bytes (see :mod:`qtutor.formats.packing`; symmetric codes in two's complement)."""
        return pack_bits(q.codes, self.bits)

    def unpack(self, packed: Any, shape: tuple[int, ...], sym: bool) -> Any:
        """Codes from packed bytes: int8 (symmetric, sign-extended) or uint8 (asymmetric)."""
        count = int(np.prod(shape))
        codes = unpack_bits(packed, self.bits, count, signed=sym)
        return codes.astype(np.int8 if sym else np.uint8).reshape(shape)


# ---- GPU path: the same steps as the NumPy methods above, as kernels/affine.cu ----------------------------------
def _gpu_find_params(fmt: IntegerFormat, G: Any, sym: bool) -> tuple[Any, Any]:
    import cupy

    from qtutor.kernels import THREADS, function, optional

    G = cupy.ascontiguousarray(G, dtype=cupy.float32)
    groups, group_len = G.shape
    scale = cupy.empty((groups, 1), dtype=cupy.float32)
    zero = None if sym else cupy.empty((groups, 1), dtype=cupy.float32)
    code_max = np.float32(fmt.qmax_sym if sym else fmt.maxq)
    function("affine", "affine_find_params")((groups,), (THREADS,),
                                             (G, np.int64(group_len), code_max, scale, optional(zero)))
    if bool((scale > FLOAT16_MAX).any()):
        raise ValueError("a group needs a scale beyond float16's range (65504); rescale the tensor first")
    return scale, zero


def _gpu_quantize(fmt: IntegerFormat, G: Any, scale: Any, zero: Any) -> Any:
    import cupy

    from qtutor.kernels import THREADS, blocks_for, function, optional

    G = cupy.ascontiguousarray(G, dtype=cupy.float32)
    groups, group_len = G.shape
    low, high = (-fmt.qmax_sym, fmt.qmax_sym) if zero is None else (0, fmt.maxq)
    codes = cupy.empty(G.shape, dtype=cupy.int8 if zero is None else cupy.uint8)
    scale = cupy.ascontiguousarray(cupy.broadcast_to(scale, (groups, 1)), dtype=cupy.float32)
    if zero is not None:
        zero = cupy.ascontiguousarray(cupy.broadcast_to(zero, (groups, 1)), dtype=cupy.float32)
    function("affine", "affine_quantize")(
        (blocks_for(G.size),), (THREADS,),
        (G, scale, optional(zero), np.int64(groups), np.int64(group_len), np.float32(low), np.float32(high), codes),
    )
    return codes


def _gpu_dequantize(codes: Any, scale: Any, zero: Any) -> Any:
    import cupy

    from qtutor.kernels import THREADS, blocks_for, function, optional

    codes2d = cupy.ascontiguousarray(codes.reshape(codes.shape[0], -1))
    groups, group_len = codes2d.shape
    out = cupy.empty(codes2d.shape, dtype=cupy.float32)
    scale = cupy.ascontiguousarray(cupy.broadcast_to(scale, (groups, 1)), dtype=cupy.float32)
    if zero is not None:
        zero = cupy.ascontiguousarray(cupy.broadcast_to(zero, (groups, 1)), dtype=cupy.float32)
    is_signed = np.int32(codes.dtype == cupy.int8)
    function("affine", "affine_dequantize")(
        (blocks_for(codes2d.size),), (THREADS,),
        (codes2d.view(cupy.int8), scale, optional(zero), np.int64(groups), np.int64(group_len), is_signed, out),
    )
    return out.reshape(codes.shape)
