"""NF4 (QLoRA's 4-bit NormalFloat) and bitsandbytes' own FP4, with double quantization of the scales.

Trained weights are roughly normally distributed. An integer grid spends its 16 levels evenly over the range,
so most levels sit where few weights are. NF4 places them at *quantiles* of a standard normal distribution
instead, scaled to [-1, 1], so each level is used about equally often (Dettmers et al., QLoRA, 2023):

    q_i = Phi^-1(p_i) / Phi^-1(p_max)      8 positive levels, 7 negative levels and an exact 0

(the exact float32 values are those bitsandbytes ships; regenerating them with SciPy differs in the 7th digit,
so they are written out below). Quantizing a block of 64 weights (bitsandbytes' default block):

    absmax = max |w|                  (float32, one per block)
    y      = w * (1 / absmax)         (a multiply by the reciprocal, as bitsandbytes' kernels do)
    code   = the nearest level to y   (a tie between two levels goes to the lower one)
    w_hat  = NF4[code] * absmax

Two codes share a byte, the *first* in the high nibble. That is 4 + 32/64 = 4.5 bits per weight.

**Double quantization** (QLoRA, ``double_quant=True``) stores the absmax values themselves in 8 bits: subtract
their mean, then quantize them in blocks of 256 with bitsandbytes' 8-bit "dynamic" code (a sign, a run of
leading zeros standing for a decimal exponent, then linear fraction bits), keeping one float32 absmax per
256 blocks and the mean:

    absmax_hat = DYNAMIC[c] * absmax2 + mean         4 + 8/64 + 32/(64*256) = 4.127 bits per weight

**bitsandbytes FP4** (``bnb_fp4``) is a 4-bit float of bitsandbytes' own: 1 sign, 2 exponent, 1 mantissa bit,
divided by 12, with a subnormal of 0.0625/12 — it is *not* OCP FP4 E2M1 (whose smallest value is 0.5/6).

Oracle: bitsandbytes' ``quantize_4bit`` / ``dequantize_4bit`` on CPU (tests). Groups run along rows; the group
size must divide the row (bitsandbytes also accepts a short last block of the flattened tensor).
"""
from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from qtutor.backend import array_namespace, is_cupy
from qtutor.formats.base import Format, as_float32, check_finite, check_group_size, groups_shape, to_groups
from qtutor.tensor import QuantizedTensor

NF4_TABLE = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
], dtype=np.float32)

# code -> value in bit-pattern order: bit 3 is the sign, bits 2-1 the exponent, bit 0 the mantissa
BNB_FP4_TABLE = (np.array([0, 0.0625, 8, 12, 4, 6, 2, 3, -0.0, -0.0625, -8, -12, -4, -6, -2, -3]) / 12).astype(np.float32)

ALLOWED_BLOCKS = (32, 64, 128, 256, 512, 1024, 2048, 4096)
DOUBLE_QUANT_BLOCK = 256


@functools.lru_cache(maxsize=None)
def dynamic_map() -> np.ndarray:
    """bitsandbytes' signed 8-bit dynamic code (256 values in [-1, 1], ascending).

    For i = 0..6, the interval [0.1, 1] is cut into 2^i equal pieces; the midpoints of the pieces, times
    10^(i - 6), are the positive values with i + 1 "exponent" digits (so small magnitudes get few, coarse
    levels and magnitudes near 1 get many fine ones). With their negatives, 0 and 1: 127 + 127 + 2 = 256.
    The arithmetic is float32 with torch's ``linspace``, whose rounding bitsandbytes' stored codes refer to
    (NumPy's float64 ``linspace`` differs in the last bit of 20 of the 256 values).
    """
    import torch

    values = [np.float32(0.0), np.float32(1.0)]
    for i in range(7):
        boundaries = torch.linspace(0.1, 1.0, 2**i + 1, dtype=torch.float32).numpy()
        midpoints = (boundaries[:-1] + boundaries[1:]) / np.float32(2)
        level = midpoints * np.float32(10.0 ** (i - 6))
        values += list(level) + list(-level)
    return np.sort(np.array(values, dtype=np.float32))


def nearest_code(y: Any, table: np.ndarray) -> Any:
    """Index into ``table`` of the value nearest to each ``y``; a tie goes to the lower value.

    With the table sorted, the code is the number of midpoints strictly below y (a binary search)."""
    xp = array_namespace(y)
    order = np.argsort(table, kind="stable")
    ascending = table[order]
    midpoints = xp.asarray((ascending[:-1] + ascending[1:]) / np.float32(2))
    rank = xp.searchsorted(midpoints, y, side="left")  # number of midpoints < y
    return xp.asarray(order.astype(np.uint8))[rank]


class NormalFloat(Format):
    """A 16-entry lookup-table format with a float32 absmax per block (NF4, or bitsandbytes' FP4)."""

    family = "normalfloat"
    bits = 4
    symmetric_only = True
    default_group_size = 64
    scale_bits = 32

    def __init__(self, name: str, table: np.ndarray, description: str):
        self.name, self.table, self.description = name, table, description

    @property
    def grid(self) -> np.ndarray:
        return np.unique(self.table)

    def cast(self, y: Any) -> Any:
        if is_cupy(y):
            return _gpu_nearest_code(self, y)
        return nearest_code(np.asarray(y, dtype=np.float32), self.table)

    def values(self, codes: Any) -> Any:
        xp = array_namespace(codes)
        return xp.asarray(self.table)[codes.astype(np.int64)]

    def find_params(self, G: Any, sym: bool = True) -> tuple[Any, Any]:
        """absmax of each block (an all-zero block gets 1, so that it divides to zeros rather than NaN)."""
        xp = array_namespace(G)
        absmax = xp.abs(G).max(axis=1, keepdims=True)
        return xp.where(absmax == 0, np.float32(1.0), absmax).astype(np.float32), None

    def quantize(self, G: Any, scale: Any, zero: Any = None) -> Any:
        return self.cast(G * (np.float32(1.0) / scale))  # reciprocal, then multiply: bitsandbytes' rounding

    def encode(self, x: Any, group_size: int | None = "default", sym: bool | None = None,
               double_quant: bool = False) -> QuantizedTensor:
        """Codes (uint8, one per element) and the absmax of each block; ``double_quant`` also stores the absmax
        values in 8 bits (QLoRA). Blocks of ``group_size`` along the rows (default 64)."""
        if group_size in ("default", None):
            group_size = self.default_group_size
        if group_size not in ALLOWED_BLOCKS:
            raise ValueError(f"{self.name}: block size {group_size!r} is not one of bitsandbytes' "
                             f"{ALLOWED_BLOCKS}; the QLoRA default is 64")
        self.resolve_sym(sym)
        x = as_float32(x, self.name)
        check_group_size(group_size, tuple(x.shape), self.name)
        check_finite(x, self.name, "a NaN or Inf would poison the absmax of its whole block")
        G = to_groups(x, group_size)
        absmax, _ = self.find_params(G)
        codes = self.quantize(G, absmax).reshape(x.shape)
        extra = {}
        if double_quant:
            state = quantize_absmax(absmax.reshape(-1))
            absmax = dequantize_absmax(state)[:, None]
            extra["double_quant"] = state
        return QuantizedTensor(codes, absmax.reshape(groups_shape(tuple(x.shape), group_size)), None, self.name,
                               group_size, True, tuple(x.shape), "rtn", extra)

    def group_overhead_bits(self, sym: bool) -> int:
        return self.scale_bits

    def storage_bits(self, q: QuantizedTensor) -> int:
        numel = math.prod(q.shape)
        n_blocks = numel // q.group_size
        if "double_quant" not in q.extra:
            return numel * self.bits + n_blocks * self.scale_bits
        n_blocks2 = -(-n_blocks // DOUBLE_QUANT_BLOCK)
        return numel * self.bits + n_blocks * 8 + n_blocks2 * 32 + 32  # + the float32 mean

    # ---- bitsandbytes' byte layout ------------------------------------------------------------------------
    def pack(self, q: QuantizedTensor) -> Any:
        """Two codes per byte, the first element in the high nibble (bitsandbytes' layout)."""
        codes = q.codes.reshape(-1).astype(np.uint8)
        xp = array_namespace(codes)
        if codes.size % 2:
            codes = xp.concatenate([codes, xp.zeros(1, np.uint8)])
        return ((codes[0::2] << 4) | codes[1::2]).astype(np.uint8)

    def unpack(self, packed: Any, shape: tuple[int, ...]) -> Any:
        xp = array_namespace(packed)
        codes = xp.stack([packed >> 4, packed & 0x0F], axis=1).reshape(-1)
        return codes[: math.prod(shape)].reshape(shape).astype(np.uint8)


def quantize_absmax(absmax: Any) -> dict:
    """Double quantization: absmax - mean, in blocks of 256, onto the 8-bit dynamic code."""
    xp = array_namespace(absmax)
    offset = absmax.mean(dtype=np.float32).astype(np.float32)
    centred = absmax - offset
    n = centred.size
    padded = xp.concatenate([centred, xp.zeros((-n) % DOUBLE_QUANT_BLOCK, np.float32)])
    blocks = padded.reshape(-1, DOUBLE_QUANT_BLOCK)
    absmax2 = xp.abs(blocks).max(axis=1, keepdims=True)
    absmax2 = xp.where(absmax2 == 0, np.float32(1.0), absmax2).astype(np.float32)
    codes = nearest_code(blocks * (np.float32(1.0) / absmax2), dynamic_map()).reshape(-1)[:n]
    return {"codes": codes, "absmax2": absmax2.reshape(-1), "offset": offset}


def dequantize_absmax(state: dict) -> Any:
    codes, absmax2 = state["codes"], state["absmax2"]
    xp = array_namespace(codes)
    per_code_scale = xp.repeat(absmax2, DOUBLE_QUANT_BLOCK)[: codes.size]
    return (xp.asarray(dynamic_map())[codes.astype(np.int64)] * per_code_scale + state["offset"]).astype(np.float32)


@functools.lru_cache(maxsize=None)
def make(name: str) -> NormalFloat:
    if name == "nf4":
        return NormalFloat("nf4", NF4_TABLE, "NF4: 16 normal quantiles in [-1, 1], absmax per 64 (QLoRA)")
    if name == "bnb_fp4":
        return NormalFloat("bnb_fp4", BNB_FP4_TABLE, "bitsandbytes FP4 (not OCP E2M1), absmax per 64")
    raise KeyError(name)


# ---- GPU path (kernels/normalfloat.cu) -------------------------------------------------------------------------
def _gpu_nearest_code(fmt: NormalFloat, y: Any) -> Any:
    import cupy

    from qtutor.kernels import THREADS, blocks_for, function

    y = cupy.ascontiguousarray(y, dtype=cupy.float32)
    order = np.argsort(fmt.table, kind="stable")
    ascending = fmt.table[order]
    midpoints = cupy.asarray((ascending[:-1] + ascending[1:]) / np.float32(2))
    codes = cupy.empty(y.shape, dtype=cupy.uint8)
    function("normalfloat", "lut4_nearest_code")((blocks_for(y.size),), (THREADS,),
                                                  (y, np.int64(y.size), midpoints,
                                                   cupy.asarray(order.astype(np.uint8)), codes))
    return codes
