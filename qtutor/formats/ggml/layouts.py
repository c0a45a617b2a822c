"""The byte layout of every ggml block type, declared once as NumPy structured dtypes: this *is* the spec.

A ggml tensor row is a sequence of blocks; each block holds its scales and its packed codes, in the order
below (little-endian, no padding). ``np.frombuffer(row_bytes, BLOCK["Q4_K"])`` gives named fields.

Legacy types (32 weights per block; "split halves": byte j holds weight j in its low nibble and weight
j + 16 in its high nibble):

    Q4_0  d:f16 | qs[16]                       w = d * (q - 8)                     4.5 bits/weight
    Q4_1  d:f16 m:f16 | qs[16]                 w = d * q + m                       5.0
    Q5_0  d:f16 | qh[4] | qs[16]               w = d * (q - 16), bit 4 in qh       5.5
    Q5_1  d:f16 m:f16 | qh[4] | qs[16]         w = d * q + m                       6.0
    Q8_0  d:f16 | qs:int8[32]                  w = d * q                           8.5
    MXFP4 e:E8M0 | qs[16]                      w = 2^(e-127) * E2M1(q)             4.25

K-quants (a super-block of 256 weights cut into sub-blocks that have their own small integer scales,
themselves scaled by the fp16 super-block scales d and dmin):

    Q2_K  scales[16] (4-bit scale | 4-bit min << 4) | qs[64] | d:f16 dmin:f16       16 x 16, 2.625
    Q3_K  hmask[32] | qs[64] | scales[12] (16 x 6-bit) | d:f16                      16 x 16, 3.4375
    Q4_K  d:f16 dmin:f16 | scales[12] (8 x 6-bit scale + 8 x 6-bit min) | qs[128]    8 x 32, 4.5
    Q5_K  d:f16 dmin:f16 | scales[12] | qh[32] | qs[128]                              8 x 32, 5.5
    Q6_K  ql[128] | qh[64] | scales:int8[16] | d:f16                                16 x 16, 6.5625

Non-linear and ternary types (:mod:`iquants`: codes index a table of 16 levels, or are trits -1, 0, +1):

    IQ4_NL  d:f16 | qs[16]                                  w = d * kvalues[q]           32 weights, 4.5
    IQ4_XS  d:f16 | scales_h:u16 | scales_l[4] | qs[128]    w = d * (l - 32) * kvalues[q]  8 x 32, 4.25
    TQ1_0   qs[48] (5 trits a byte) | qh[4] (4 trits) | d:f16     w = d * (t - 1)       256, 1.6875
    TQ2_0   qs[64] (4 trits a byte) | d:f16                       w = d * (t - 1)       256, 2.0625

Lattice types (codes index a grid of points of 8 or 4 values, the signs stored apart; :mod:`lattice`):

    IQ3_XXS  d:f16 | qs[96] (64 grid indices, then 8 x 32 bits of 4 x 7-bit signs + 4-bit scale)   256, 3.0625
    IQ3_S    d:f16 | qs[64] | qh[8] (9th index bit) | signs[32] | scales[4] (8 x 4-bit)           256, 3.4375
    IQ2_XXS  d:f16 | qs:u16[32] (8 x 32 bits of 4 x 8-bit indices, then 4 x 7-bit signs + 4-bit scale)  2.0625
    IQ2_XS   d:f16 | qs:u16[32] (9-bit index + 7-bit signs) | scales[8] (16 x 4-bit)           256, 2.3125
    IQ2_S    d:f16 | qs[64] (32 index bytes, then 32 sign bytes) | qh[8] | scales[8]          256, 2.5625
    IQ1_S    d:f16 | qs[32] (low 8 index bits) | qh:u16[8] (4 x 3 high index bits, 3-bit scale, delta sign)  1.5625
    IQ1_M    qs[32] | qh[16] | scales[8] (3-bit scales; the fp16 d spread over their top nibbles)    256, 1.75
"""
from __future__ import annotations

import numpy as np

QK = 32  # weights per legacy block
QK_K = 256  # weights per K-quant super-block

BLOCK = {
    "Q4_0": np.dtype([("d", "<f2"), ("qs", "u1", 16)]),
    "Q4_1": np.dtype([("d", "<f2"), ("m", "<f2"), ("qs", "u1", 16)]),
    "Q5_0": np.dtype([("d", "<f2"), ("qh", "u1", 4), ("qs", "u1", 16)]),
    "Q5_1": np.dtype([("d", "<f2"), ("m", "<f2"), ("qh", "u1", 4), ("qs", "u1", 16)]),
    "Q8_0": np.dtype([("d", "<f2"), ("qs", "i1", 32)]),
    "MXFP4": np.dtype([("e", "u1"), ("qs", "u1", 16)]),
    "Q2_K": np.dtype([("scales", "u1", 16), ("qs", "u1", 64), ("d", "<f2"), ("dmin", "<f2")]),
    "Q3_K": np.dtype([("hmask", "u1", 32), ("qs", "u1", 64), ("scales", "u1", 12), ("d", "<f2")]),
    "Q4_K": np.dtype([("d", "<f2"), ("dmin", "<f2"), ("scales", "u1", 12), ("qs", "u1", 128)]),
    "Q5_K": np.dtype([("d", "<f2"), ("dmin", "<f2"), ("scales", "u1", 12), ("qh", "u1", 32), ("qs", "u1", 128)]),
    "Q6_K": np.dtype([("ql", "u1", 128), ("qh", "u1", 64), ("scales", "i1", 16), ("d", "<f2")]),
    "IQ4_NL": np.dtype([("d", "<f2"), ("qs", "u1", 16)]),
    "IQ4_XS": np.dtype([("d", "<f2"), ("scales_h", "<u2"), ("scales_l", "u1", 4), ("qs", "u1", 128)]),
    "TQ1_0": np.dtype([("qs", "u1", 48), ("qh", "u1", 4), ("d", "<f2")]),
    "TQ2_0": np.dtype([("qs", "u1", 64), ("d", "<f2")]),
    "IQ3_XXS": np.dtype([("d", "<f2"), ("qs", "u1", 96)]),
    "IQ3_S": np.dtype([("d", "<f2"), ("qs", "u1", 64), ("qh", "u1", 8), ("signs", "u1", 32), ("scales", "u1", 4)]),
    "IQ2_XXS": np.dtype([("d", "<f2"), ("qs", "<u2", 32)]),
    "IQ2_XS": np.dtype([("d", "<f2"), ("qs", "<u2", 32), ("scales", "u1", 8)]),
    "IQ2_S": np.dtype([("d", "<f2"), ("qs", "u1", 64), ("qh", "u1", 8), ("scales", "u1", 8)]),
    "IQ1_S": np.dtype([("d", "<f2"), ("qs", "u1", 32), ("qh", "<u2", 8)]),
    "IQ1_M": np.dtype([("qs", "u1", 32), ("qh", "u1", 16), ("scales", "u1", 8)]),
}

WEIGHTS_PER_BLOCK = {name: (QK if name in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "MXFP4", "IQ4_NL") else QK_K)
                     for name in BLOCK}

# which bytes of a block play which role (for the block-anatomy figure): field -> role
ROLE = {"d": "scale", "dmin": "min", "m": "min", "e": "scale", "scales": "sub-block scales", "qs": "quants",
        "ql": "quants", "qh": "high bits", "hmask": "high bits", "scales_h": "sub-block scales",
        "scales_l": "sub-block scales", "signs": "signs"}


def bits_per_weight(name: str) -> float:
    return BLOCK[name].itemsize * 8 / WEIGHTS_PER_BLOCK[name]


def split_halves(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Bytes whose low nibble is ``low`` and high nibble ``high`` (both 0..15)."""
    return (low.astype(np.uint8) & 0x0F) | (high.astype(np.uint8) << 4)


def fp16(x: np.ndarray) -> np.ndarray:
    """Round float32 to the fp16 a block stores (round to nearest even, as GGML_FP32_TO_FP16)."""
    return np.asarray(x, dtype=np.float32).astype(np.float16)
