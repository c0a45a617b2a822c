"""ggml's K-quants: super-blocks of 256 weights whose sub-blocks have their own 4- to 8-bit scales.

Why they beat Q4_0 at the same size: a Q4_0 block spends 16 bits of scale on 32 weights (0.5 bit/weight).
Q4_K spends 12 bytes on eight 6-bit scales and eight 6-bit minimums for its eight 32-weight sub-blocks, plus
two fp16 super-scales d and dmin for all 256 (0.5 bit/weight too) — an affine (scale + minimum) code per 32
weights for the price of Q4_0's scale-only one. And the sub-block scales are not plain max/min: a small
search picks the scale and minimum that minimize the weighted squared error (``best_affine_fit``).

Every step is ggml's reference quantizer (``quantize_row_qX_K_ref``, no importance matrix), in float32 with
the same order of operations and sequential sums, so the bytes are identical to ggml's (tests hold them
against golden bytes from ggml's own C code). The functions work on many blocks at once: arrays are
(n_blocks, n), and the loops run over the n positions of a block, never over blocks.

    weight = d * scale_j * q - dmin * min_j        (Q2_K, Q4_K, Q5_K: affine sub-blocks)
    weight = d * scale_j * (q - offset)             (Q3_K, Q6_K: symmetric sub-blocks)

With an importance matrix (``imatrix``: the mean squared activation of each input column), ggml switches to
its ``quantize_row_qX_K_impl`` path, and so does qtutor, byte for byte: the weights of the least-squares fits
become imatrix * sqrt(sigma^2 + x^2) (Q6_K: the imatrix entry alone), so that columns that see large
activations are reproduced more faithfully; the affine searches get finer (``make_qkx3_quants``: 37 grids of
step 0.05), and the sub-block scales and minimums are themselves fitted by weighted least squares
(``best_positive_fit``, ggml's ``make_qp_quants``; Q3_K: ``best_symmetric_fit``) instead of being divided by
their maximum.
"""
from __future__ import annotations

import numpy as np

from qtutor.formats.ggml.layouts import BLOCK, QK_K, fp16

F32 = np.float32
GROUP_MAX_EPS = F32(1e-15)


def nearest_int(x: np.ndarray) -> np.ndarray:
    """ggml's nearest_int (the 12582912 trick): round half to even."""
    return np.rint(x).astype(np.int32)


def seq_sum(terms: np.ndarray, axis: int = -1) -> np.ndarray:
    """Sum along ``axis`` left to right in float32, as a C loop does (NumPy's pairwise sum differs).

    Fastest along axis 0 of a C-ordered array, where every term added is one contiguous row."""
    total = np.zeros(np.delete(terms.shape, axis), F32)
    for term in np.moveaxis(terms, axis, 0):
        total += term  # float32 + float32, rounded to float32 after each term
    return total


def signed_absmax(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(max |x|, the element that has it, with its sign), the first one on a tie."""
    index = np.argmax(np.abs(x), axis=1)
    signed = x[np.arange(len(x)), index]
    return np.abs(signed), signed


# ---- sub-block searches ----------------------------------------------------------------------------------------
def best_affine_fit(x, w, nmax, rmin, rdelta, nstep, use_mad):
    """ggml's make_qkx2_quants: scale s and minimum m (m <= 0) with x ~= s * L + m, L in 0..nmax.

    Start from the min/max fit; then try nstep + 1 slightly different grids, and for each the least-squares
    (s, m) given its codes L (weighted by w); keep whichever has the smallest weighted error (absolute if
    use_mad, else squared). Returns (scale, -min, L)."""
    x, w = np.ascontiguousarray(x.T, F32), np.ascontiguousarray(w.T, F32)  # (n, n_blocks): sums run down rows
    low = np.minimum(x.min(axis=0), F32(0))
    high = x.max(axis=0)
    sum_w, sum_x = seq_sum(w, 0), seq_sum(w * x, 0)
    flat = high == low
    span = np.where(flat, F32(1), high - low).astype(F32)

    def error(scale, minimum, L):
        diff = (scale * L.astype(F32) + minimum) - x
        return seq_sum(w * (np.abs(diff) if use_mad else diff * diff), 0)

    iscale = (F32(nmax) / span).astype(F32)
    scale = (F32(1) / iscale).astype(F32)
    L = np.clip(nearest_int(iscale * (x - low)), 0, nmax)
    best = error(scale, low, L)
    for step in range(nstep + 1):
        span = np.where(flat, F32(1), high - low).astype(F32)
        iscale = ((F32(rmin) + F32(rdelta) * F32(step) + F32(nmax)) / span).astype(F32)
        trial = np.clip(nearest_int(iscale * (x - low)), 0, nmax)
        trial_f = trial.astype(F32)
        wl = w * trial_f
        sum_l, sum_l2 = seq_sum(wl, 0), seq_sum(wl * trial_f, 0)
        sum_xl = seq_sum(wl * x, 0)
        D = (sum_w * sum_l2 - sum_l * sum_l).astype(F32)
        ok = D > 0
        safe_D = np.where(ok, D, F32(1))
        this_scale = ((sum_w * sum_xl - sum_x * sum_l) / safe_D).astype(F32)
        this_min = ((sum_l2 * sum_x - sum_l * sum_xl) / safe_D).astype(F32)
        positive = this_min > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            this_scale = np.where(positive, sum_xl / sum_l2, this_scale).astype(F32)
        this_min = np.where(positive, F32(0), this_min).astype(F32)
        with np.errstate(invalid="ignore", over="ignore"):
            current = error(this_scale, this_min, trial)
        better = ok & (current < best) & ~flat
        L = np.where(better, trial, L)
        best = np.where(better, current, best)
        scale = np.where(better, this_scale, scale)
        low = np.where(better, this_min, low)
    scale = np.where(flat, F32(0), scale).astype(F32)
    L = np.where(flat, 0, L)
    return scale, (-low).astype(F32), np.ascontiguousarray(L.T)


def best_symmetric_fit(x, nmax, weights=None):
    """ggml's make_qx_quants (rmse_type 1): scale s with x ~= s * l, l in -nmax..nmax-1 (returned + nmax).

    The largest-magnitude weight with its sign fixes the direction; 19 grids around -nmax/max are tried and
    the least-squares scale of the best one (weighted by x^2, or by the importance weights) is kept."""
    amax, signed = signed_absmax(x)
    zero = amax < GROUP_MAX_EPS
    safe = np.where(zero, F32(1), signed).astype(F32)
    x = np.ascontiguousarray(x.T, F32)  # (n, n_blocks): sums run down rows
    w = x * x if weights is None else np.ascontiguousarray(weights.T, F32)
    wx = w * x

    def fit(iscale):
        l = np.clip(nearest_int(iscale * x), -nmax, nmax - 1)
        lf = l.astype(F32)
        return l, seq_sum(wx * lf, 0), seq_sum((w * lf) * lf, 0)

    L, sumlx, suml2 = fit((F32(-nmax) / safe).astype(F32))
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(suml2 != 0, sumlx / suml2, F32(0)).astype(F32)
    best = (scale * sumlx).astype(F32)
    for step in range(-9, 10):
        if step == 0:
            continue
        l, sumlx, suml2 = fit((-(F32(nmax) + F32(0.1) * F32(step)) / safe).astype(F32))
        better = (suml2 > 0) & ((sumlx * sumlx).astype(F32) > (best * suml2).astype(F32))
        with np.errstate(divide="ignore", invalid="ignore"):
            new_scale = (sumlx / suml2).astype(F32)
        L = np.where(better, l, L)
        scale = np.where(better, new_scale, scale)
        best = np.where(better, (new_scale * sumlx).astype(F32), best)
    return np.where(zero, F32(0), scale).astype(F32), np.ascontiguousarray(np.where(zero, 0, L + nmax).T)


def best_positive_fit(x, nmax, weights):
    """ggml's make_qp_quants: one scale s for non-negative values x ~= s * l, l in 0..nmax, weighted by ``weights``
    (rows of x are independent sets: the 8 sub-block scales of a K-quant super-block, say).

    Try nmax / max and 8 nearby grids, keep the one with the smallest weighted error, then improve the codes one at
    a time, each moved to where the least-squares scale of the others wants it, while that raises
    (sum w x l)^2 / sum w l^2 (at most 5 passes). Returns (s, l).

    ggml keeps the codes in bytes: a negative code (IQ2_XXS fits magnitudes of which one per group may carry a
    flipped sign) reads back as code + 256, and so it does here; for non-negative x it changes nothing."""
    x, w = np.ascontiguousarray(x.T, F32), np.ascontiguousarray(weights.T, F32)  # (n, n_sets)
    peak = np.maximum(x.max(axis=0), F32(0)).astype(F32)
    empty = peak < GROUP_MAX_EPS
    peak = np.where(empty, F32(1), peak).astype(F32)

    def error(scale, l):
        diff = (x - (scale * l.astype(F32)).astype(F32)).astype(F32)
        return seq_sum(((w * diff).astype(F32) * diff).astype(F32), 0)

    iscale = (F32(nmax) / peak).astype(F32)
    best = error((F32(1) / iscale).astype(F32), nearest_int((iscale * x).astype(F32)) & 0xFF)
    for step in (-4, -3, -2, -1, 1, 2, 3, 4):
        trial = ((F32(0.1) * F32(step) + F32(nmax)) / peak).astype(F32)
        current = error((F32(1) / trial).astype(F32), np.minimum(nmax, nearest_int((trial * x).astype(F32))))
        better = current < best
        best, iscale = np.where(better, current, best), np.where(better, trial, iscale).astype(F32)
    l = np.minimum(nmax, nearest_int((iscale * x).astype(F32)))
    wx = (w * x).astype(F32)
    sumlx = seq_sum((wx * l.astype(F32)).astype(F32), 0)
    suml2 = seq_sum(((w * l.astype(F32)).astype(F32) * l.astype(F32)).astype(F32), 0)
    L = l & 0xFF  # the byte ggml keeps
    for _ in range(5):  # a pass that changes nothing leaves the next one nothing to change
        for i in range(len(x)):
            li = L[i].astype(F32)
            slx = (sumlx - (wx[i] * li).astype(F32)).astype(F32)
            sl2 = (suml2 - ((w[i] * li).astype(F32) * li).astype(F32)).astype(F32)
            movable = (slx > 0) & (sl2 > 0)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(movable, ((x[i] * sl2).astype(F32) / slx).astype(F32), F32(0))
            new_l = np.minimum(nmax, nearest_int(ratio))
            new_f = new_l.astype(F32)
            slx = (slx + (wx[i] * new_f).astype(F32)).astype(F32)
            sl2 = (sl2 + ((w[i] * new_f).astype(F32) * new_f).astype(F32)).astype(F32)
            gains = ((slx * slx).astype(F32) * suml2).astype(F32) > ((sumlx * sumlx).astype(F32) * sl2).astype(F32)
            take = movable & (new_l != L[i]) & gains
            L[i] = np.where(take, new_l & 0xFF, L[i])
            sumlx, suml2 = np.where(take, slx, sumlx).astype(F32), np.where(take, sl2, suml2).astype(F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(suml2 > 0, sumlx / suml2, F32(0)).astype(F32)
    return np.where(empty, F32(0), scale).astype(F32), np.ascontiguousarray(np.where(empty, 0, L).T)


def best_q3_fit(x, nmax=4, weights=None):
    """ggml's make_q3_quants with rmse: a symmetric fit, then up to 5 passes of coordinate descent that move
    one code at a time when that raises sumlx^2 / suml2 (i.e. lowers the least-squares error)."""
    amax, signed = signed_absmax(x)
    zero = amax < GROUP_MAX_EPS
    safe = np.where(zero, F32(1), signed).astype(F32)
    w = (x * x).astype(F32) if weights is None else weights
    iscale = (F32(-nmax) / safe).astype(F32)
    L = np.clip(nearest_int(iscale[:, None] * x), -nmax, nmax - 1)
    Lf = L.astype(F32)
    sumlx = seq_sum(((w * x).astype(F32) * Lf).astype(F32))
    suml2 = seq_sum(((w * Lf).astype(F32) * Lf).astype(F32))
    for _ in range(5):
        changed = np.zeros(len(x), bool)
        for i in range(x.shape[1]):
            wi, xi, li = w[:, i], x[:, i], L[:, i].astype(F32)
            slx = (sumlx - (wi * xi).astype(F32) * li).astype(F32)
            sl2 = (suml2 - (wi * li).astype(F32) * li).astype(F32)
            with np.errstate(divide="ignore", invalid="ignore"):
                new_l = np.clip(nearest_int(np.where(slx > 0, (xi * sl2).astype(F32) / slx, F32(0))), -nmax, nmax - 1)
            nf = new_l.astype(F32)
            slx2 = (slx + (wi * xi).astype(F32) * nf).astype(F32)
            sl22 = (sl2 + (wi * nf).astype(F32) * nf).astype(F32)
            accept = ((slx > 0) & (new_l != L[:, i]) & (sl22 > 0)
                      & (((slx2 * slx2).astype(F32) * suml2).astype(F32) > ((sumlx * sumlx).astype(F32) * sl22).astype(F32)))
            L[:, i] = np.where(accept, new_l, L[:, i])
            sumlx = np.where(accept, slx2, sumlx)
            suml2 = np.where(accept, sl22, suml2)
            changed |= accept
        if not changed.any():
            break
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(zero, F32(0), sumlx / suml2).astype(F32)
    return scale, np.where(zero[:, None], 0, L + nmax)


# ---- 6-bit scale packing (Q4_K, Q5_K) ------------------------------------------------------------------------
def pack_scales_mins_6bit(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and eight 6-bit mins in 12 bytes: 0-3 whole in bytes 0-7, 4-7 split across bytes."""
    out = np.zeros((len(ls), 12), np.uint8)
    out[:, 0:4] = ls[:, 0:4]
    out[:, 4:8] = lm[:, 0:4]
    out[:, 8:12] = (ls[:, 4:8] & 0x0F) | ((lm[:, 4:8] & 0x0F) << 4)
    out[:, 0:4] |= (ls[:, 4:8] >> 4) << 6
    out[:, 4:8] |= (lm[:, 4:8] >> 4) << 6
    return out


def unpack_scales_mins_6bit(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = s.astype(np.int32)
    ls = np.concatenate([s[:, 0:4] & 63, (s[:, 8:12] & 0x0F) | ((s[:, 0:4] >> 6) << 4)], axis=1)
    lm = np.concatenate([s[:, 4:8] & 63, (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)], axis=1)
    return ls, lm


def importance_weights(sub: np.ndarray, imatrix: np.ndarray | None, default: np.ndarray | None,
                       sigma_factor: int = 2, superblock: int = QK_K) -> np.ndarray | None:
    """Weights of the least-squares fits. Without an importance matrix: ``default``. With one (per input column,
    llama.cpp's ``--imatrix``): imatrix_j * sqrt(sigma^2 + x_j^2), sigma^2 = 2 * mean x^2 over each
    ``superblock`` of weights (Q2_K: the mean itself, ``sigma_factor=1``; IQ4_NL: its block of 32)."""
    if imatrix is None:
        return default
    per_block = superblock // sub.shape[1]
    superblocks = sub.reshape(-1, superblock)
    sigma2 = (F32(sigma_factor) * seq_sum((superblocks * superblocks).astype(F32)) / F32(superblock)).astype(F32)
    sigma2 = np.repeat(sigma2, per_block)[:, None]
    return (imatrix_columns(sub, imatrix) * np.sqrt((sigma2 + (sub * sub).astype(F32)).astype(F32))).astype(F32)


def imatrix_columns(sub: np.ndarray, imatrix: np.ndarray) -> np.ndarray:
    """The importance of every weight of ``sub`` (the blocks of whole rows, in order): its column's entry."""
    rows = len(sub) * sub.shape[1] // imatrix.size
    return np.tile(imatrix.astype(F32).reshape(-1, sub.shape[1]), (rows, 1))


# ---- Q4_K and Q5_K ---------------------------------------------------------------------------------------------
def quantize_affine_k(x: np.ndarray, name: str, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Q4_K (nmax 15) or Q5_K (nmax 31): 8 affine sub-blocks of 32 with 6-bit scales and mins."""
    nmax = 15 if name == "Q4_K" else 31
    n = len(x)
    sub = x.reshape(n * 8, 32)
    av_x = np.sqrt((seq_sum((sub * sub).astype(F32)) / F32(32)).astype(F32)).astype(F32)
    default = (av_x[:, None] + np.abs(sub)).astype(F32)
    w = importance_weights(sub, imatrix, default)
    if imatrix is None:  # quantize_row_qX_K_ref: a short search, scales and mins quantized against their maxima
        rmin, rdelta, nstep = (-1.0, 0.1, 20) if name == "Q4_K" else (-0.5, 0.1, 15)
    else:  # quantize_row_qX_K_impl: a finer search, scales and mins fitted by weighted least squares
        rmin, rdelta, nstep = -0.9, 0.05, 36
    scales, mins, L = best_affine_fit(sub, w, nmax, rmin, rdelta, nstep, use_mad=False)
    scales, mins, L = scales.reshape(n, 8), mins.reshape(n, 8), L.reshape(n, 256)
    if imatrix is None:
        max_scale, max_min = _running_max(scales), _running_max(mins)
        with np.errstate(divide="ignore"):
            inv_scale = np.where(max_scale > 0, F32(63) / max_scale, F32(0)).astype(F32)
            inv_min = np.where(max_min > 0, F32(63) / max_min, F32(0)).astype(F32)
        ls = np.minimum(63, nearest_int(inv_scale[:, None] * scales)).astype(np.uint8)
        lm = np.minimum(63, nearest_int(inv_min[:, None] * mins)).astype(np.uint8)
        d, dmin = fp16(max_scale / F32(63)), fp16(max_min / F32(63))
    else:  # each sub-block's scale and min weighted by the sum of its importance weights
        sub_weights = seq_sum(np.ascontiguousarray(w.T), 0).reshape(n, 8)
        d, ls = best_positive_fit(scales, 63, sub_weights)
        dmin, lm = best_positive_fit(mins, 63, sub_weights)
        d, dmin, ls, lm = fp16(d), fp16(dmin), ls.astype(np.uint8), lm.astype(np.uint8)
    dj = (d.astype(F32)[:, None] * ls.astype(F32)).astype(F32)
    dm = (dmin.astype(F32)[:, None] * lm.astype(F32)).astype(F32)
    x3, dj3, dm3 = x.reshape(n, 8, 32), dj[:, :, None], dm[:, :, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        requantized = np.clip(nearest_int(((x3 + dm3).astype(F32) / dj3).astype(F32)), 0, nmax)
    L = np.where(dj3 == 0, L.reshape(n, 8, 32), requantized).reshape(n, 256)
    out = np.zeros(n, BLOCK[name])
    out["d"], out["dmin"] = d, dmin
    out["scales"] = pack_scales_mins_6bit(ls, lm)
    chunks = L.reshape(n, 4, 2, 32)  # chunk c: sub-blocks 2c (low nibble) and 2c + 1 (high nibble)
    out["qs"] = ((chunks[:, :, 0] & 0x0F) | ((chunks[:, :, 1] & 0x0F) << 4)).reshape(n, 128)
    if name == "Q5_K":
        high = (chunks >> 4) & 1  # bit 2c of qh[l]: element 64c + l; bit 2c + 1: element 64c + 32 + l
        shifts = (2 * np.arange(4)[:, None] + np.arange(2)[None, :]).astype(np.uint8)
        out["qh"] = (high.astype(np.uint8) << shifts[None, :, :, None]).sum(axis=(1, 2)).astype(np.uint8)
    return out


def _running_max(values: np.ndarray) -> np.ndarray:
    """max over sub-blocks starting from 0 (ggml: ``if (v > max) max = v`` from max = 0)."""
    return np.maximum(values.max(axis=1), F32(0)).astype(F32)


def dequantize_affine_k(block: np.ndarray, name: str) -> np.ndarray:
    n = len(block)
    ls, lm = unpack_scales_mins_6bit(block["scales"])
    d = (block["d"].astype(F32)[:, None] * ls.astype(F32)).astype(F32)
    m = (block["dmin"].astype(F32)[:, None] * lm.astype(F32)).astype(F32)
    qs = block["qs"].reshape(n, 4, 32).astype(np.int32)
    codes = np.stack([qs & 0x0F, qs >> 4], axis=2)  # (n, chunk, half, 32)
    if name == "Q5_K":
        qh = block["qh"].astype(np.int32)[:, None, None, :]
        shifts = (2 * np.arange(4)[:, None] + np.arange(2)[None, :])[None, :, :, None]
        codes = codes | (((qh >> shifts) & 1) << 4)
    codes = codes.reshape(n, 8, 32).astype(F32)
    return (d[:, :, None] * codes - m[:, :, None]).astype(F32).reshape(n, 256)


# ---- Q2_K ------------------------------------------------------------------------------------------------------
def quantize_q2_k(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    n = len(x)
    sub = x.reshape(n * 16, 16)
    w = importance_weights(sub, imatrix, np.abs(sub).astype(F32), sigma_factor=1)
    if imatrix is None:  # quantize_row_q2_K_ref: absolute errors, scales and mins against their maxima
        scales, mins, L = best_affine_fit(sub, w, 3, -0.5, 0.1, 15, use_mad=True)
    else:  # quantize_row_q2_K_impl: squared errors, a finer search, least-squares scales and mins
        scales, mins, L = best_affine_fit(sub, w, 3, -0.9, 0.05, 36, use_mad=False)
    scales, mins, L = scales.reshape(n, 16), mins.reshape(n, 16), L.reshape(n, 256)
    if imatrix is None:
        max_scale, max_min = _running_max(scales), _running_max(mins)
        with np.errstate(divide="ignore"):
            iscale = np.where(max_scale > 0, F32(15) / max_scale, F32(0)).astype(F32)
            imin = np.where(max_min > 0, F32(15) / max_min, F32(0)).astype(F32)
        ls = np.where(max_scale[:, None] > 0, nearest_int(iscale[:, None] * scales), 0)
        lm = np.where(max_min[:, None] > 0, nearest_int(imin[:, None] * mins), 0)
        d = np.where(max_scale > 0, fp16(max_scale / F32(15)), np.float16(0))
        dmin = np.where(max_min > 0, fp16(max_min / F32(15)), np.float16(0))
    else:
        sub_weights = seq_sum(np.ascontiguousarray(w.T), 0).reshape(n, 16)
        d, ls = best_positive_fit(scales, 15, sub_weights)
        dmin, lm = best_positive_fit(mins, 15, sub_weights)
        d, dmin = fp16(d), fp16(dmin)
    packed_scales = (ls | (lm << 4)).astype(np.uint8)  # ggml keeps only what fits the byte
    dj = (d.astype(F32)[:, None] * (packed_scales & 0x0F).astype(F32)).astype(F32)[:, :, None]
    dm = (dmin.astype(F32)[:, None] * (packed_scales >> 4).astype(F32)).astype(F32)[:, :, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        requantized = np.clip(nearest_int(((x.reshape(n, 16, 16) + dm).astype(F32) / dj).astype(F32)), 0, 3)
    L = np.where(dj == 0, L.reshape(n, 16, 16), requantized).reshape(n, 256)
    out = np.zeros(n, BLOCK["Q2_K"])
    out["scales"], out["d"], out["dmin"] = packed_scales, d, dmin
    out["qs"] = pack_2bit(L)
    return out


def pack_2bit(L: np.ndarray) -> np.ndarray:
    """qs[32h + l] = L[128h + l] | L[128h + 32 + l] << 2 | L[128h + 64 + l] << 4 | L[128h + 96 + l] << 6."""
    quarters = L.reshape(len(L), 2, 4, 32).astype(np.uint8)
    shifts = (2 * np.arange(4, dtype=np.uint8))[None, None, :, None]
    return (quarters << shifts).sum(axis=2).astype(np.uint8).reshape(len(L), 64)


def unpack_2bit(qs: np.ndarray) -> np.ndarray:
    shifts = (2 * np.arange(4))[None, None, :, None]
    return ((qs.reshape(len(qs), 2, 1, 32).astype(np.int32) >> shifts) & 3).reshape(len(qs), 256)


def dequantize_q2_k(block: np.ndarray) -> np.ndarray:
    n = len(block)
    sc = block["scales"].astype(np.int32)
    d = (block["d"].astype(F32)[:, None] * (sc & 0x0F).astype(F32)).astype(F32)
    m = (block["dmin"].astype(F32)[:, None] * (sc >> 4).astype(F32)).astype(F32)
    q = unpack_2bit(block["qs"]).reshape(n, 16, 16).astype(F32)
    return (d[:, :, None] * q - m[:, :, None]).astype(F32).reshape(n, 256)


# ---- Q3_K ------------------------------------------------------------------------------------------------------
def _symmetric_subblocks(x: np.ndarray, fit, weights):
    """Q3_K / Q6_K's first pass: ``fit`` every 16-weight sub-block, weighted by ``weights(sub)`` (None: the
    fit's default); then the sub-block scale of largest magnitude, with its sign, which sets the super-block
    scale d. Returns (scales, L, amax, max_scale, the sub-blocks' weights)."""
    n = len(x)
    sub = x.reshape(n * 16, 16)
    w = weights(sub)
    scales, L = fit(sub, w)
    scales, L = scales.reshape(n, 16), L.reshape(n, 256)
    amax, max_scale = signed_absmax(scales)
    return scales, L, amax, max_scale, w


def quantize_q3_k(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    n = len(x)
    if imatrix is None:  # quantize_row_q3_K_ref: make_q3_quants, scales against the largest
        scales, L, amax, max_scale, _ = _symmetric_subblocks(x, lambda sub, w: best_q3_fit(sub, 4), lambda sub: None)
        has_scale = max_scale != 0
        with np.errstate(divide="ignore"):
            iscale = np.where(has_scale, F32(-32) / np.where(has_scale, max_scale, F32(1)), F32(0)).astype(F32)
        l = np.where(has_scale[:, None], np.clip(nearest_int(iscale[:, None] * scales), -32, 31) + 32, 0)
        with np.errstate(divide="ignore"):
            d = np.where(has_scale, fp16(F32(1) / iscale), np.float16(0))
    else:  # quantize_row_q3_K_impl: weighted symmetric fits, the scales themselves fitted by their weights
        scales, L, _, _, w = _symmetric_subblocks(x, lambda sub, w: best_symmetric_fit(sub, 4, w),
                                                  lambda sub: importance_weights(sub, imatrix, None))
        d, l = best_symmetric_fit(scales, 32, seq_sum(np.ascontiguousarray(w.T), 0).reshape(n, 16))
        d = fp16(d)
    sc = l.astype(np.int32) - 32
    dj = (d.astype(F32)[:, None] * sc.astype(F32)).astype(F32)[:, :, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        requantized = np.clip(nearest_int((x.reshape(n, 16, 16) / dj).astype(F32)), -4, 3) + 4
    L = np.where(dj == 0, L.reshape(n, 16, 16), requantized).reshape(n, 256)
    out = np.zeros(n, BLOCK["Q3_K"])
    out["d"] = d
    out["scales"] = pack_scales_6bit_q3(l.astype(np.uint8))
    high = (L > 3)
    out["hmask"] = (high.reshape(n, 8, 32).astype(np.uint8) << np.arange(8, dtype=np.uint8)[None, :, None]).sum(
        axis=1).astype(np.uint8)
    out["qs"] = pack_2bit(np.where(high, L - 4, L))
    return out


def pack_scales_6bit_q3(l: np.ndarray) -> np.ndarray:
    """Sixteen 6-bit scales in 12 bytes: low nibbles of 0-7 and 8-15 share bytes 0-7; the top 2 bits of
    scale j go to byte 8 + j % 4 at bit 2 * (j // 4)."""
    out = np.zeros((len(l), 12), np.uint8)
    out[:, 0:8] = (l[:, 0:8] & 0x0F) | ((l[:, 8:16] & 0x0F) << 4)
    top = (l >> 4).astype(np.uint8).reshape(len(l), 4, 4)  # [j // 4, j % 4]
    out[:, 8:12] = (top << (2 * np.arange(4, dtype=np.uint8))[None, :, None]).sum(axis=1).astype(np.uint8)
    return out


def unpack_scales_6bit_q3(s: np.ndarray) -> np.ndarray:
    s = s.astype(np.int32)
    low = np.concatenate([s[:, 0:8] & 0x0F, s[:, 0:8] >> 4], axis=1)
    top = (s[:, None, 8:12] >> (2 * np.arange(4))[None, :, None]) & 3  # [j // 4, j % 4]
    return (low | (top.reshape(len(s), 16) << 4)) - 32


def dequantize_q3_k(block: np.ndarray) -> np.ndarray:
    n = len(block)
    sc = unpack_scales_6bit_q3(block["scales"])
    d = (block["d"].astype(F32)[:, None] * sc.astype(F32)).astype(F32)
    q = unpack_2bit(block["qs"])
    high = (block["hmask"].astype(np.int32)[:, None, :] >> np.arange(8)[None, :, None]) & 1
    q = q - 4 * (1 - high.reshape(n, 256))
    return (d[:, :, None] * q.reshape(n, 16, 16).astype(F32)).astype(F32).reshape(n, 256)


# ---- Q6_K ------------------------------------------------------------------------------------------------------
def quantize_q6_k(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    n = len(x)
    # with an importance matrix, quantize_row_q6_K_impl weights each weight by its column's entry alone
    weights = (lambda sub: None) if imatrix is None else (lambda sub: imatrix_columns(sub, imatrix))
    scales, L, amax, max_scale, _ = _symmetric_subblocks(x, lambda sub, w: best_symmetric_fit(sub, 32, w), weights)
    empty = amax < GROUP_MAX_EPS
    safe = np.where(empty, F32(1), max_scale).astype(F32)
    iscale = (F32(-128) / safe).astype(F32)
    d = np.where(empty, np.float16(0), fp16(F32(1) / iscale))
    sc = np.where(empty[:, None], 0, np.minimum(127, nearest_int(iscale[:, None] * scales))).astype(np.int8)
    dj = (d.astype(F32)[:, None] * sc.astype(F32)).astype(F32)[:, :, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        requantized = np.clip(nearest_int((x.reshape(n, 16, 16) / dj).astype(F32)), -32, 31) + 32
    L = np.where(dj == 0, L.reshape(n, 16, 16), requantized).reshape(n, 256)
    L = np.where(empty[:, None], 0, L)
    out = np.zeros(n, BLOCK["Q6_K"])
    out["d"], out["scales"] = d, sc
    quarters = L.reshape(n, 2, 4, 32).astype(np.uint8)  # half h, quarter k, position l
    low, high = quarters & 0x0F, quarters >> 4
    out["ql"] = np.concatenate([low[:, :, 0] | (low[:, :, 2] << 4), low[:, :, 1] | (low[:, :, 3] << 4)],
                               axis=2).reshape(n, 128)
    out["qh"] = (high << (2 * np.arange(4, dtype=np.uint8))[None, None, :, None]).sum(axis=2).astype(
        np.uint8).reshape(n, 64)
    return out


def dequantize_q6_k(block: np.ndarray) -> np.ndarray:
    n = len(block)
    ql = block["ql"].reshape(n, 2, 2, 32).astype(np.int32)  # half, (quarters 0/2 | quarters 1/3), position
    qh = block["qh"].reshape(n, 2, 1, 32).astype(np.int32)
    low = np.stack([ql[:, :, 0] & 0x0F, ql[:, :, 1] & 0x0F, ql[:, :, 0] >> 4, ql[:, :, 1] >> 4], axis=2)
    high = (qh >> (2 * np.arange(4))[None, None, :, None]) & 3
    q = ((low | (high << 4)) - 32).reshape(n, 16, 16).astype(F32)
    d = (block["d"].astype(F32)[:, None] * block["scales"].astype(F32)).astype(F32)
    return (d[:, :, None] * q).astype(F32).reshape(n, 256)


QUANTIZE = {"Q2_K": quantize_q2_k, "Q3_K": quantize_q3_k, "Q6_K": quantize_q6_k,
            "Q4_K": lambda x, imatrix=None: quantize_affine_k(x, "Q4_K", imatrix),
            "Q5_K": lambda x, imatrix=None: quantize_affine_k(x, "Q5_K", imatrix)}
DEQUANTIZE = {"Q2_K": dequantize_q2_k, "Q3_K": dequantize_q3_k, "Q6_K": dequantize_q6_k,
              "Q4_K": lambda b: dequantize_affine_k(b, "Q4_K"), "Q5_K": lambda b: dequantize_affine_k(b, "Q5_K")}
