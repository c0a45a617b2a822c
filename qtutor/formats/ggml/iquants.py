"""ggml's non-linear 4-bit types (IQ4_NL, IQ4_XS) and its ternary types (TQ1_0, TQ2_0).

IQ4_NL and IQ4_XS: 4-bit codes that index a fixed table of 16 *non-uniform* levels,

    kvalues = -127 -104 -83 -65 -49 -35 -22 -10  1  13  25  38  53  69  89  113

denser near zero and sparser in the tails, where a bell-shaped weight distribution has few values (the idea of
NF4, with levels chosen by llama.cpp's authors on real weights). A weight is d * kvalues[q]:

    IQ4_NL  d:f16 | qs[16]                                  one scale per 32 weights            4.5 bits/weight
    IQ4_XS  d:f16 | scales_h:u16 | scales_l[4] | qs[128]    a 6-bit scale per 32, d per 256     4.25

Finding the scale of a block of 32 (``fit_nonlinear``): start from d = max / 127 (the largest weight on the
outermost level, with its sign: the table is not symmetric), take every weight's nearest level, and refit d by
weighted least squares given those levels, d = sum w q x / sum w q^2; then try 15 nearby starting scales,
(-127 + t) / max for t = -7 .. 7, and keep the fit with the largest sum(w q x)^2 / sum(w q^2), which is the same
as the smallest weighted squared error. The weights w are x^2, or with an importance matrix (llama.cpp's
``--imatrix``) imatrix_j * sqrt(sigma^2 + x_j^2), sigma^2 = 2 * mean x^2 over the block (IQ4_NL) or super-block.
IQ4_XS then stores each block's d as a 6-bit integer l in -32 .. 31 times one fp16 super-scale -max|d| / 32, and
picks every weight's level again for the scale it really gets.

TQ1_0 and TQ2_0: ternary weights (BitNet b1.58's -1, 0, +1) times one fp16 scale per 256, d = max|x|, the
trit q = round(x / d) + 1 in {0, 1, 2}. TQ2_0 spends 2 bits per trit (4 per byte, 2.0625 bits/weight); TQ1_0
packs 5 trits in a byte (3^5 = 243 <= 256: 1.6875 bits/weight) as the fraction ceil(256 * n / 243), n the
base-3 number of the trits, so that multiplying the byte by 3 (mod 256) shifts the next trit to the top:

    TQ2_0  qs[64] | d:f16                 weight m + 32 n of each 128: bits 2n .. 2n+1 of byte m
    TQ1_0  qs[48] | qh[4] | d:f16         first 160 weights: trit n of byte m is weight m + 32 n; next 80: byte
                                          32 + m, weight 160 + m + 16 n; last 16: 4 trits of qh[j], 240 + j + 4 m

Every step follows ggml's C code (``quantize_iq4_nl``, ``quantize_iq4_xs``, ``quantize_row_tq1_0_ref``,
``quantize_row_tq2_0_ref`` at ggml-org/ggml d99724f2) in float32 with the same order of operations and
sequential sums, so the bytes are ggml's: tests hold them against golden bytes from ggml's own quantizer, with
and without an importance matrix. As in :mod:`kquants`, arrays are (n_blocks, n) and loops run over the
positions of a block, never over blocks.
"""
from __future__ import annotations

import numpy as np

from qtutor.formats.base import round_half_away
from qtutor.formats.ggml.kquants import (F32, GROUP_MAX_EPS, importance_weights, nearest_int, seq_sum,
                                         signed_absmax)
from qtutor.formats.ggml.layouts import BLOCK, QK, QK_K, fp16

KVALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int8)
LEVELS = KVALUES.astype(F32)
TRIES = 7  # starting scales (-127 + t) / max for t = -7 .. 7
CHUNK = 2048  # blocks fitted at once


# The levels are integers, so the first level above x is the first above floor(x): tables over floor(x) in
# -128 .. 113 give it (its index, its value) and the level below it.
_UPPER = np.clip(np.searchsorted(LEVELS, np.arange(-128, 114), side="right"), 1, len(LEVELS) - 1).astype(np.uint8)
_UPPER_VALUE, _LOWER_VALUE = LEVELS[_UPPER], LEVELS[_UPPER - 1]


def nearest_level(x: np.ndarray) -> np.ndarray:
    """Index of the level of ``LEVELS`` nearest to each x (ggml's best_index_int8: a tie goes up).

    The two levels around x come from the tables above; x goes to the lower one when it is strictly nearer,
    the distances compared in float32 as ggml does. Below the lowest level and above the highest the comparison
    itself gives the end levels; a NaN goes to the top one, as in ggml."""
    x = np.asarray(x, F32)
    floor = np.floor(x)
    np.clip(floor, -128, 113, out=floor)
    floor[np.isnan(floor)] = 113
    row = floor.astype(np.intp)
    row += 128
    nearer_below = (x - _LOWER_VALUE[row]) < (_UPPER_VALUE[row] - x)
    return _UPPER[row] - nearer_below.view(np.uint8)


def _weighted_sums(x: np.ndarray, w: np.ndarray, inverse_scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sum w q x, sum w q^2) over each block (columns of the (32, n_blocks) arrays), q the nearest levels."""
    q = LEVELS[nearest_level(inverse_scale[None, :] * x)]
    wq = w * q  # float32 throughout: every product rounded to float32, as in C
    return seq_sum(wq * x, 0), seq_sum(wq * q, 0)


def fit_nonlinear(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The least-squares scale d of every block of 32 (rows of ``x``) on the level table, best of 16 starts.

    An all-(near-)zero block gets d = 0. Blocks are independent: they are fitted a few thousand at a time, so
    that the 16 passes over them run in the CPU's cache."""
    if len(x) > CHUNK:
        return np.concatenate([fit_nonlinear(x[i:i + CHUNK], w[i:i + CHUNK]) for i in range(0, len(x), CHUNK)])
    _, signed_max = signed_absmax(x)
    empty = np.abs(signed_max) < GROUP_MAX_EPS
    peak = np.where(empty, F32(1), signed_max).astype(F32)
    x, w = np.ascontiguousarray(x.T, F32), np.ascontiguousarray(w.T, F32)  # (32, n_blocks): sums run down rows
    start = (-peak / LEVELS[0]).astype(F32)
    sum_qx, sum_q2 = _weighted_sums(x, w, (F32(1) / start).astype(F32))
    d = np.where(sum_q2 > 0, sum_qx / np.where(sum_q2 > 0, sum_q2, F32(1)), F32(0)).astype(F32)
    best = (d * sum_qx).astype(F32)
    for t in range(-TRIES, TRIES + 1):
        sum_qx, sum_q2 = _weighted_sums(x, w, (F32(t + int(KVALUES[0])) / peak).astype(F32))
        better = (sum_q2 > 0) & ((sum_qx * sum_qx).astype(F32) > (best * sum_q2).astype(F32))
        d = np.where(better, sum_qx / np.where(sum_q2 > 0, sum_q2, F32(1)), d).astype(F32)
        best = np.where(better, d * sum_qx, best).astype(F32)
    return np.where(empty, F32(0), d).astype(F32)


def pack_nibbles_by_32(L: np.ndarray) -> np.ndarray:
    """Bytes of 4-bit codes, 32 at a time: byte j of each 16 holds code j (low nibble) and code j + 16 (high)."""
    L = L.reshape(len(L), -1, 2, 16).astype(np.uint8)
    return (L[:, :, 0] | (L[:, :, 1] << 4)).reshape(len(L), -1)


def unpack_nibbles_by_32(qs: np.ndarray) -> np.ndarray:
    qs = qs.reshape(len(qs), -1, 1, 16)
    return np.concatenate([qs & 0x0F, qs >> 4], axis=2).reshape(len(qs), -1)


def quantize_iq4_nl(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """IQ4_NL blocks of ``x`` (n_blocks, 32): one fp16 scale and 32 table indices each."""
    d = fit_nonlinear(x, importance_weights(x, imatrix, (x * x).astype(F32), superblock=QK))
    inverse = np.where(d != 0, F32(1) / np.where(d != 0, d, F32(1)), F32(0)).astype(F32)
    out = np.zeros(len(x), BLOCK["IQ4_NL"])
    out["d"] = fp16(d)
    out["qs"] = pack_nibbles_by_32(nearest_level(inverse[:, None] * x))
    return out


def quantize_iq4_xs(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """IQ4_XS super-blocks of ``x`` (n_blocks, 256): 8 blocks of 32 with 6-bit scales under one fp16 scale."""
    n = len(x)
    sub = x.reshape(n * 8, 32)
    scales = fit_nonlinear(sub, importance_weights(sub, imatrix, (sub * sub).astype(F32))).reshape(n, 8)
    _, max_scale = signed_absmax(scales)
    d = (-max_scale / F32(32)).astype(F32)
    inverse = np.where(d != 0, F32(1) / np.where(d != 0, d, F32(1)), F32(0)).astype(F32)
    l = np.clip(nearest_int((inverse[:, None] * scales).astype(F32)), -32, 31)
    dl = (d[:, None] * l.astype(F32)).astype(F32)
    inverse_dl = np.where(dl != 0, F32(1) / np.where(dl != 0, dl, F32(1)), F32(0)).astype(F32)
    L = nearest_level(inverse_dl.reshape(-1, 1) * sub).reshape(n, QK_K)
    stored = (l + 32).astype(np.uint16)
    out = np.zeros(n, BLOCK["IQ4_XS"])
    out["d"] = fp16(d)
    out["scales_l"] = ((stored[:, 0::2] & 0xF) | ((stored[:, 1::2] & 0xF) << 4)).astype(np.uint8)
    out["scales_h"] = ((stored >> 4) << (2 * np.arange(8, dtype=np.uint16))).sum(axis=1).astype(np.uint16)
    out["qs"] = pack_nibbles_by_32(L)
    return out


def dequantize_iq4_nl(block: np.ndarray) -> np.ndarray:
    d = block["d"].astype(F32)[:, None]
    return (d * LEVELS[unpack_nibbles_by_32(block["qs"])]).astype(F32)


def iq4_xs_scales(block: np.ndarray) -> np.ndarray:
    """The 8 signed 6-bit scales l - 32 of each IQ4_XS super-block, (n, 8)."""
    low = np.stack([block["scales_l"] & 0xF, block["scales_l"] >> 4], axis=2).reshape(len(block), 8)
    high = (block["scales_h"][:, None] >> (2 * np.arange(8, dtype=np.uint16))) & 3
    return (low.astype(np.int32) | (high.astype(np.int32) << 4)) - 32


def dequantize_iq4_xs(block: np.ndarray) -> np.ndarray:
    dl = (block["d"].astype(F32)[:, None] * iq4_xs_scales(block).astype(F32)).astype(F32)  # (n, 8)
    levels = LEVELS[unpack_nibbles_by_32(block["qs"])].reshape(len(block), 8, 32)
    return (dl[:, :, None] * levels).reshape(len(block), QK_K).astype(F32)


# ---- ternary ------------------------------------------------------------------------------------------------
def _trits(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fp16 scale d = max|x|, trits round(x / d) + 1 in {0, 1, 2}) of each super-block (rows of x)."""
    d = np.abs(x).max(axis=1).astype(F32)
    inverse = np.where(d != 0, F32(1) / np.where(d != 0, d, F32(1)), F32(0)).astype(F32)
    return fp16(d), (round_half_away((x * inverse[:, None]).astype(F32)) + 1).astype(np.uint16)


def quantize_tq2_0(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """TQ2_0: 2 bits per trit; byte m of each 32 holds weights m, m + 32, m + 64, m + 96 of its 128."""
    d, trits = _trits(x)
    trits = trits.reshape(len(x), 2, 4, 32)  # (block, half of 128, n, m)
    qs = (trits << (2 * np.arange(4, dtype=np.uint16))[None, None, :, None]).sum(axis=2)
    out = np.zeros(len(x), BLOCK["TQ2_0"])
    out["qs"], out["d"] = qs.reshape(len(x), 64).astype(np.uint8), d
    return out


def dequantize_tq2_0(block: np.ndarray) -> np.ndarray:
    qs = block["qs"].reshape(len(block), 2, 1, 32)
    trits = (qs >> (2 * np.arange(4, dtype=np.uint8))[None, None, :, None]) & 3
    return (trits.reshape(len(block), QK_K).astype(F32) - F32(1)) * block["d"].astype(F32)[:, None]


POW3 = 3 ** np.arange(5)[::-1]  # the first trit is the most significant


def _pack_base3(trits: np.ndarray) -> np.ndarray:
    """ceil(256 n / 243) of the base-3 number n of 5 trits (last axis, most significant first)."""
    n = (trits * POW3).sum(axis=-1)
    return ((n * 256 + 242) // 243).astype(np.uint8)


def quantize_tq1_0(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """TQ1_0: 5 trits per byte for 240 weights, 4 (and a zero trit) per byte for the last 16."""
    d, trits = _trits(x)
    n = len(x)
    first = trits[:, :160].reshape(n, 5, 32).transpose(0, 2, 1)  # byte m: weights m + 32 k, k = 0 .. 4
    second = trits[:, 160:240].reshape(n, 5, 16).transpose(0, 2, 1)  # byte 32 + m: weights 160 + m + 16 k
    last = trits[:, 240:].reshape(n, 4, 4).transpose(0, 2, 1)  # qh[j]: weights 240 + j + 4 k, k = 0 .. 3
    last = np.concatenate([last, np.zeros((n, 4, 1), np.uint16)], axis=2)  # the fifth trit is 0 (q *= 3)
    out = np.zeros(n, BLOCK["TQ1_0"])
    out["qs"] = np.concatenate([_pack_base3(first), _pack_base3(second)], axis=1)
    out["qh"], out["d"] = _pack_base3(last), d
    return out


def _unpack_base3(bytes_: np.ndarray, count: int) -> np.ndarray:
    """The first ``count`` trits of each byte (new last axis): trit k = (byte * 3^k mod 256) * 3 >> 8."""
    shifted = (bytes_[..., None].astype(np.uint16) * (3 ** np.arange(count, dtype=np.uint16))) & 0xFF
    return (shifted * 3) >> 8


def dequantize_tq1_0(block: np.ndarray) -> np.ndarray:
    n = len(block)
    first = _unpack_base3(block["qs"][:, :32], 5).transpose(0, 2, 1).reshape(n, 160)
    second = _unpack_base3(block["qs"][:, 32:], 5).transpose(0, 2, 1).reshape(n, 80)
    last = _unpack_base3(block["qh"], 4).transpose(0, 2, 1).reshape(n, 16)
    trits = np.concatenate([first, second, last], axis=1).astype(F32)
    return (trits - F32(1)) * block["d"].astype(F32)[:, None]


def absmean_ternary(W: np.ndarray, eps: float = 1e-5) -> tuple[np.ndarray, np.float32]:
    """BitNet b1.58's ternary rounding of a whole matrix (Ma et al. 2024, arXiv:2402.17764), for comparison with
    TQ1_0 / TQ2_0's: one scale for the tensor, the mean magnitude gamma = mean |W|, and the trits
    t = clip(round(W / (gamma + eps)), -1, 1), so that W ~ gamma t. Dividing by the mean rather than the maximum
    puts about a third of a bell-shaped matrix at zero and sends the tails to +-1; BitNet trains its weights
    through this rounding (a model trained in float and rounded afterwards loses most of what it knew, either
    way). Returns (trits int8, gamma)."""
    W = np.asarray(W, dtype=F32)
    gamma = F32(np.abs(W).mean(dtype=np.float64))
    trits = np.clip(round_half_away((W / (gamma + F32(eps))).astype(F32)), -1, 1).astype(np.int8)
    return trits, gamma


QUANTIZE = {"IQ4_NL": quantize_iq4_nl, "IQ4_XS": quantize_iq4_xs, "TQ1_0": quantize_tq1_0, "TQ2_0": quantize_tq2_0}
DEQUANTIZE = {"IQ4_NL": dequantize_iq4_nl, "IQ4_XS": dequantize_iq4_xs, "TQ1_0": dequantize_tq1_0,
              "TQ2_0": dequantize_tq2_0}
TAKES_IMATRIX = ("IQ4_NL", "IQ4_XS")  # the ternary types ignore it in ggml; here they refuse it
