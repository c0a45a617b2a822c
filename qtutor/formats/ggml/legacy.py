"""ggml's first block types: 32 weights, one fp16 scale (and a minimum), 4, 5 or 8 bits — and MXFP4.

Each function takes ``blocks`` (n_blocks x 32, float32) and returns a structured array of ggml blocks
(``layouts.BLOCK[type]``). The rules, ggml's ``quantize_row_*_ref``, written out:

    Q4_0   max = the weight of largest magnitude, *with its sign*;  d = max / -8
           q = min(15, trunc(x / d + 8.5))               (so max lands exactly on code 0: -8 d = max)
    Q4_1   d = (max - min) / 15,  m = min;  q = min(15, trunc((x - min) / d + 0.5))
    Q5_0   as Q4_0 with d = max / -16 and codes 0..31; bit 4 of code j goes to bit j of the 32-bit qh
    Q5_1   as Q4_1 with 31 levels
    Q8_0   d = max|x| / 127;  q = round(x / d)  (half away from zero)
    MXFP4  e = floor(log2 max|x|) - 2 + 127;  q = the E2M1 code nearest x / 2^(e-127), the first on a tie

With an importance matrix (llama.cpp's ``--imatrix``; ``quantize_row_q4_0_impl`` ...), Q4_0 ... Q5_1 are found by
search instead: every weight gets w_j = imatrix_j * sqrt(sigma^2 + x_j^2), sigma^2 the mean x^2 of its whole row,
and each block takes the weighted least-squares fit of the K-quants (``kquants.best_symmetric_fit`` for Q4_0 and
Q5_0, ``best_affine_fit`` with the finer search for Q4_1 and Q5_1). Q8_0 and MXFP4 ignore the matrix, as in ggml.

"x / d" is computed as x * (1/d) in float32, as ggml does, and the fp32 d (not its fp16 rounding) is used
for the codes; the dequantizers use the stored fp16. Q4_0's asymmetric trick (the extreme weight gets
code 0, the other side reaches only +7 d) is why it is not the same as a symmetric "amax / 7" INT4.
"""
from __future__ import annotations

import numpy as np

from qtutor.formats.base import round_half_away
from qtutor.formats.ggml.kquants import F32, best_affine_fit, best_symmetric_fit, importance_weights
from qtutor.formats.ggml.layouts import BLOCK, QK, fp16, split_halves


def _signed_max(blocks: np.ndarray) -> np.ndarray:
    """The element of largest magnitude with its sign; the first one on a tie."""
    index = np.argmax(np.abs(blocks), axis=1)
    return blocks[np.arange(len(blocks)), index]


def _inverse(d: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(d != 0, np.float32(1.0) / d, np.float32(0.0)).astype(np.float32)


def _truncate(x: np.ndarray) -> np.ndarray:
    """C's (int8_t) cast of a float: toward zero."""
    return np.trunc(x).astype(np.int32)


def _pack_halves(codes: np.ndarray) -> np.ndarray:
    return split_halves(codes[:, :16] & 0x0F, codes[:, 16:] & 0x0F)


def _high_bits(codes: np.ndarray) -> np.ndarray:
    """Bit 4 of code j -> bit j of a little-endian uint32, as 4 bytes."""
    bits = ((codes >> 4) & 1).astype(np.uint32) << np.arange(32, dtype=np.uint32)
    return bits.sum(axis=1, dtype=np.uint32).astype("<u4")[:, None].view(np.uint8)


def quantize_q4_0(blocks: np.ndarray) -> np.ndarray:
    return _symmetric_nibbles(blocks, "Q4_0", levels=16)


def quantize_q5_0(blocks: np.ndarray) -> np.ndarray:
    return _symmetric_nibbles(blocks, "Q5_0", levels=32)


def _symmetric_nibbles(blocks: np.ndarray, name: str, levels: int) -> np.ndarray:
    half = levels // 2
    d = (_signed_max(blocks) / np.float32(-half)).astype(np.float32)
    codes = np.minimum(levels - 1, _truncate(blocks * _inverse(d)[:, None] + np.float32(half + 0.5)))
    out = np.zeros(len(blocks), BLOCK[name])
    out["d"] = fp16(d)
    out["qs"] = _pack_halves(codes)
    if levels == 32:
        out["qh"] = _high_bits(codes)
    return out


def quantize_q4_1(blocks: np.ndarray) -> np.ndarray:
    return _affine_nibbles(blocks, "Q4_1", levels=16)


def quantize_q5_1(blocks: np.ndarray) -> np.ndarray:
    return _affine_nibbles(blocks, "Q5_1", levels=32)


def _affine_nibbles(blocks: np.ndarray, name: str, levels: int) -> np.ndarray:
    low, high = blocks.min(axis=1), blocks.max(axis=1)
    d = ((high - low) / np.float32(levels - 1)).astype(np.float32)
    codes = _truncate((blocks - low[:, None]) * _inverse(d)[:, None] + np.float32(0.5))
    if levels == 16:
        codes = np.minimum(15, codes)  # Q5_1 has no clamp in ggml: (x - min) / d + 0.5 <= 31.5 anyway
    out = np.zeros(len(blocks), BLOCK[name])
    out["d"], out["m"] = fp16(d), fp16(low)
    out["qs"] = _pack_halves(codes)
    if levels == 32:
        out["qh"] = _high_bits(codes)
    return out


def quantize_q8_0(blocks: np.ndarray) -> np.ndarray:
    d = (np.abs(blocks).max(axis=1) / np.float32(127)).astype(np.float32)
    scaled = blocks * _inverse(d)[:, None]
    out = np.zeros(len(blocks), BLOCK["Q8_0"])
    out["d"] = fp16(d)
    out["qs"] = round_half_away(scaled).astype(np.int8)  # roundf
    return out


MXFP4_DOUBLED = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], dtype=np.float32)


def mxfp4_half_scale(e: np.ndarray) -> np.ndarray:
    """2^(e - 127) / 2: ggml stores E2M1 values doubled (integers), so it halves the scale."""
    return np.ldexp(np.float32(1.0), e.astype(np.int32) - 128).astype(np.float32)


def quantize_mxfp4(blocks: np.ndarray) -> np.ndarray:
    from qtutor.formats.microscaling import floor_log2

    amax = np.abs(blocks).max(axis=1)
    safe = np.where(amax > 0, amax, np.float32(1.0))
    e = np.where(amax > 0, np.clip(floor_log2(safe) - 2 + 127, 0, 254), 0).astype(np.uint8)
    d = mxfp4_half_scale(e)
    errors = np.abs(d[:, None, None] * MXFP4_DOUBLED - blocks[:, :, None])
    codes = np.argmin(errors, axis=2)  # the first minimum: ties go to the smaller magnitude, +0 over -0
    out = np.zeros(len(blocks), BLOCK["MXFP4"])
    out["e"] = e
    out["qs"] = _pack_halves(codes)
    return out


# ---- dequantize ------------------------------------------------------------------------------------------------
def _unpack_halves(qs: np.ndarray) -> np.ndarray:
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int32)


def _unpack_high_bits(qh: np.ndarray) -> np.ndarray:
    word = np.ascontiguousarray(qh).view("<u4")[:, :1]
    return ((word >> np.arange(32, dtype=np.uint32)) & 1).astype(np.int32) << 4


def dequantize(block: np.ndarray, name: str) -> np.ndarray:
    """float32 weights (n_blocks x 32) of structured ggml blocks."""
    d = block["d"].astype(np.float32)[:, None] if name != "MXFP4" else None
    if name == "Q8_0":
        return d * block["qs"].astype(np.float32)
    if name == "MXFP4":
        with np.errstate(over="ignore"):  # e = 255 (NaN in OCP's E8M0) overflows to inf, as in ggml
            return mxfp4_half_scale(block["e"])[:, None] * MXFP4_DOUBLED[_unpack_halves(block["qs"])]
    codes = _unpack_halves(block["qs"])
    if name in ("Q5_0", "Q5_1"):
        codes = codes | _unpack_high_bits(block["qh"])
    if name == "Q4_0":
        return d * (codes - 8).astype(np.float32)
    if name == "Q5_0":
        return d * (codes - 16).astype(np.float32)
    return d * codes.astype(np.float32) + block["m"].astype(np.float32)[:, None]


def quantize_weighted(blocks: np.ndarray, name: str, imatrix: np.ndarray) -> np.ndarray:
    """Q4_0, Q4_1, Q5_0 or Q5_1 blocks of whole rows (``blocks``: the rows' blocks in order) weighted by the
    importance matrix (one entry per column), as llama.cpp's quantize_row_qX_Y_impl."""
    row = imatrix.size
    w = importance_weights(blocks, imatrix, None, sigma_factor=1, superblock=row)
    levels = 16 if name in ("Q4_0", "Q4_1") else 32
    out = np.zeros(len(blocks), BLOCK[name])
    if name in ("Q4_0", "Q5_0"):
        d, codes = best_symmetric_fit(blocks, levels // 2, w)
        out["d"] = fp16(d)
    else:
        d, minimum, codes = best_affine_fit(blocks, w, levels - 1, -0.9, 0.05, 36, use_mad=False)
        out["d"], out["m"] = fp16(d), fp16((-minimum).astype(F32))
    codes = codes.astype(np.int32)
    out["qs"] = _pack_halves(codes)
    if levels == 32:
        out["qh"] = _high_bits(codes)
    return out


WEIGHTED = ("Q4_0", "Q4_1", "Q5_0", "Q5_1")  # the legacy types an importance matrix changes
QUANTIZE = {"Q4_0": quantize_q4_0, "Q4_1": quantize_q4_1, "Q5_0": quantize_q5_0, "Q5_1": quantize_q5_1,
            "Q8_0": quantize_q8_0, "MXFP4": quantize_mxfp4}
assert all(name in BLOCK for name in QUANTIZE) and QK == 32
