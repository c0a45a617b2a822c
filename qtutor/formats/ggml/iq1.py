"""ggml's 1-bit-and-a-half lattice types, IQ1_S (1.5625 bits/weight) and IQ1_M (1.75).

Every weight is one of three values -1, 0, +1 around a small shift delta = 0.125, times a scale: a sub-block of
weights (32 in IQ1_S, 16 in IQ1_M) has a 3-bit scale l, the super-block of 256 an fp16 scale d, and each group
of 8 weights is one point of a fixed grid of 2048 ternary points plus a shift of +delta or -delta:

    weight = d * (2 l + 1) * (g_k + s delta)      g the group's grid point (g_k in {-1, 0, +1}), s = +1 or -1

    IQ1_S  d:f16 | qs[32] | qh:u16[8]     qs: the low 8 bits of the 32 grid indices (11 bits each); qh[j], one
                                          per sub-block of 32: its 4 indices' high 3 bits (bits 0-11), l (bits
                                          12-14) and the sign of its shift (bit 15, set for -delta)
    IQ1_M  qs[32] | qh[16] | scales[8]    qh[j], one per sub-block of 16: the high 3 bits of its 2 indices (bits
                                          0-2 and 4-6), the sign of each group's shift (bits 3 and 7); scales: 4
                                          little-endian u16, each holding four 3-bit l (bits 0-11) and one
                                          nibble of the fp16 d (bits 12-15: the scale has no room of its own)

Why a grid: 8 ternary weights have 3^8 = 6561 combinations, 12.7 bits; the grid keeps the 2048 (11 bits) that
groups of real weights land on most often (:mod:`lattice`). Unlike the 2- and 3-bit grids, these points carry
their own signs (the values are -1, 0, +1, not magnitudes), so there are no separate sign bits and no parity.
Why the shift: {-1, 0, +1} is symmetric, but a group's weights rarely are; moving all three levels by +-1/8
(one bit per sub-block in IQ1_S, per group of 8 in IQ1_M) fits a skewed group better for almost no bits.

The search (``quantize_row_iq1_s_impl`` / ``quantize_row_iq1_m_impl`` in ggml-org/ggml d99724f2): for a fixed
scale and shift the best level of each weight grows with the weight, so the best assignment of levels is a split
of the sorted weights into three runs (level 0, 1, 2: values -1, 0, +1 shifted); trying every split is an exact
search, not a heuristic (for IQ1_M, whose two groups may shift differently, ggml uses the same search). ggml
tries every split (i1, i2) of the sorted sub-block and every choice of shifts, each with its weighted
least-squares scale,

    scale = sum w q x / sum w q^2,       kept if it raises (sum w q x)^2 / sum w q^2,

(the smaller the weighted error sum w (x - scale q)^2, the larger that ratio), w = imatrix_j * sqrt(sigma^2 +
x_j^2), sigma^2 = 2 * mean x^2 over the super-block. A negative best scale flips every level and shift. Each
group of 8 levels is then looked up on the grid; a group that is not a grid point takes the grid neighbour with
the smallest weighted error at that scale, and the sub-block's scale is refitted to the points it got. Last,
the sub-block scales become l = round((scale / d - 1) / 2), d = max scale / 15 (IQ1_M then refits d itself to
the rounded l); ggml stores d times a fudge factor (1.125 in IQ1_S, 1.1125 in IQ1_M) that its authors found to
lower the error.

As in :mod:`kquants`, every step is ggml's, in float32 with the same order of operations, so the bytes are
ggml's (tests hold them against golden bytes from ggml's C quantizer); arrays are (n_blocks, ...) and loops run
over positions and candidate splits, never over blocks. ggml sorts with ``qsort``, whose order of equal weights
is the C library's; glibc's (a merge sort) keeps them in their original order, and so does ``argsort(kind=
"stable")`` here. The order matters for IQ1_M: equal weights from its two groups have different shifted values,
so which of them a split puts on the lower level changes the result (a tensor of small integers quantizes to
other bytes with the ties reversed). Both types need an importance matrix, as in llama.cpp.
Newer llama.cpp (2026) forms IQ1_M's candidate sums from running sums kept per group of 8, the same numbers in
another float order: on a rare near-tie its choice differs (1 of the tiny model's 16,896 IQ1_M super-blocks,
tools/llamacpp_quantize.py); these bytes are those of ggml at d99724f2, the golden file's.
"""
from __future__ import annotations

import numpy as np

from qtutor.formats.ggml.kquants import F32, importance_weights, nearest_int, seq_sum
from qtutor.formats.ggml.lattice import checked_imatrix, grid
from qtutor.formats.ggml.layouts import BLOCK, QK_K, fp16

DELTA = F32(0.125)
# level -> value, for a shift of +delta (row 0) and -delta (row 1)
SHIFTED = np.array([[-1 + DELTA, DELTA, 1 + DELTA], [-1 - DELTA, -DELTA, 1 - DELTA]], F32)
GROUP = 8  # weights per grid point
FLT_MAX = np.finfo(F32).max
CHUNK = 4096  # sub-blocks searched at once

# type -> (weights per sub-block, threshold below which a sub-block is all zero, super-block scale fudge factor)
SUBBLOCK = {"IQ1_S": (32, F32(1e-12), F32(1.125)), "IQ1_M": (16, F32(1e-7), F32(1.1125))}
# the shift choices a search tries, as one bit per group of the sub-block (1: -delta): IQ1_S shifts a whole
# sub-block at once, IQ1_M each of its two groups (in ggml's order +/+, +/-, -/+, -/-)
SHIFT_CHOICES = {"IQ1_S": np.array([[0, 0, 0, 0], [1, 1, 1, 1]]),
                 "IQ1_M": np.array([[0, 0], [0, 1], [1, 0], [1, 1]])}


def splits(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every split (i1, i2), 0 <= i1 <= i2 <= size, of a sorted sub-block, in ggml's order (i1, then i2):
    sorted positions below i1 get level 0, from i2 on level 2, the rest level 1."""
    return np.triu_indices(size + 1)


def split_sums_prefix(xs: np.ndarray, ws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IQ1_S's candidate sums (sum w q x, sum w q^2) for every split and shift, (n_splits * 2, n_sub).

    ``xs``, ``ws``: the sorted weights and their importances, (32, n_sub). ggml forms them from running sums of
    w x and w over the sorted weights: the sum over a run is a difference of two running sums."""
    size = len(xs)
    running_wx = np.zeros((size + 1, xs.shape[1]), F32)
    running_w = np.zeros_like(running_wx)
    for j in range(size):
        running_wx[j + 1] = running_wx[j] + ws[j] * xs[j]
        running_w[j + 1] = running_w[j] + ws[j]
    i1, i2 = splits(size)
    runs_x = (running_wx[i1] - running_wx[0], running_wx[i2] - running_wx[i1], running_wx[size] - running_wx[i2])
    runs_w = (running_w[i1] - running_w[0], running_w[i2] - running_w[i1], running_w[size] - running_w[i2])
    sum_qx = np.empty((len(i1), 2, xs.shape[1]), F32)
    sum_q2 = np.empty_like(sum_qx)
    for shift, (q0, q1, q2) in enumerate(SHIFTED):
        sum_qx[:, shift] = runs_x[0] * q0 + runs_x[1] * q1 + runs_x[2] * q2
        sum_q2[:, shift] = runs_w[0] * q0 * q0 + runs_w[1] * q1 * q1 + runs_w[2] * q2 * q2
    return sum_qx.reshape(-1, xs.shape[1]), sum_q2.reshape(-1, xs.shape[1])


def split_sums_direct(xs: np.ndarray, ws: np.ndarray, group_of: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IQ1_M's candidate sums for every split and shift choice, (n_splits * 4, n_sub).

    ggml adds up every candidate's sums anew, position by position of the sorted sub-block (``xs``, ``ws``:
    (16, n_sub); ``group_of``: the group of 8 each sorted weight came from). Two splits that agree on the
    first j positions have the same partial sums there, so the sums are built here one position at a time
    for every distinct prefix: a prefix of j levels is (a, b), a zeros then b - a ones then j - b twos,
    stored at b (b + 1) / 2 + a. The float32 additions are ggml's, in ggml's order."""
    size, n = xs.shape
    choices = SHIFT_CHOICES["IQ1_M"]
    shift = choices[:, group_of]  # (choice, position, n_sub): the shift bit each choice gives each position
    value = SHIFTED[shift.transpose(1, 0, 2)[:, None], np.arange(3)[None, :, None, None]]  # (pos, level, choice, n)
    wq = (ws[:, None, None, :] * value).astype(F32)
    term_qx = (wq * xs[:, None, None, :]).astype(F32)
    term_q2 = (wq * value).astype(F32)
    n_prefixes = (size + 1) * (size + 2) // 2
    sum_qx = np.zeros((n_prefixes, len(choices), n), F32)
    sum_q2 = np.zeros_like(sum_qx)
    for j in range(size):  # extend every prefix of length j by position j
        column, next_column = j * (j + 1) // 2, (j + 1) * (j + 2) // 2
        for sums, term in ((sum_qx, term_qx), (sum_q2, term_q2)):
            sums[next_column:next_column + j + 1] = sums[column:next_column] + term[j, 1]  # b = j + 1 > a
            sums[next_column + j + 1] = sums[next_column - 1] + term[j, 0]  # all zeros: a = b = j + 1
            sums[:next_column] += term[j, 2]  # the prefixes that already hold a two
    i1, i2 = splits(size)
    prefix = i2 * (i2 + 1) // 2 + i1
    return sum_qx[prefix].reshape(-1, n), sum_q2[prefix].reshape(-1, n)


def first_best(sum_qx: np.ndarray, sum_q2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ggml's running best over candidates (rows), for every sub-block (columns): a candidate replaces the best
    when sum_qx^2 > best * sum_q2, best = scale * sum_qx of the current one. Returns (candidate or -1, scale)."""
    n = sum_qx.shape[1]
    best = np.full(n, -FLT_MAX, F32)
    scale = np.zeros(n, F32)
    choice = np.full(n, -1, np.int32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for c in range(len(sum_qx)):
            qx, q2 = sum_qx[c], sum_q2[c]
            take = (q2 > 0) & (qx * qx > best * q2)
            new_scale = qx / q2
            np.copyto(scale, new_scale, where=take)
            np.copyto(best, new_scale * qx, where=take)
            choice[take] = c
    return choice, scale


def levels_of_split(order: np.ndarray, i1: np.ndarray, i2: np.ndarray) -> np.ndarray:
    """Levels 0, 1, 2 of each weight of the sub-blocks (n_sub, size), given the sort order and the split."""
    position = np.arange(order.shape[1])[None, :]
    sorted_levels = (position >= i1[:, None]).astype(np.int8) + (position >= i2[:, None])
    L = np.empty_like(sorted_levels)
    np.put_along_axis(L, order, sorted_levels, axis=1)
    return L


def snap_to_grid(x: np.ndarray, w: np.ndarray, L: np.ndarray, scale: np.ndarray, shift: np.ndarray):
    """Grid index of each group of 8 (rows of ``x``, ``w``, levels ``L``; its sub-block's ``scale``, its shift
    bit): the grid point with these levels, or else the neighbour (ggml's list) with the smallest weighted
    error sum w (scale q - x)^2, the first one on a tie. Returns (index, whether it was off the grid)."""
    table = grid("IQ1_S")
    index = table.index_of[_key(L)].astype(np.int32)
    off_grid = index < 0
    off = np.flatnonzero(off_grid)
    if len(off):
        candidates = table.candidates(_key(L[off]))  # (n_off, width), -1 padded
        values = SHIFTED[shift[off][:, None, None], table.levels[np.maximum(candidates, 0)]]  # (n_off, width, 8)
        error = np.zeros(candidates.shape, F32)
        s = scale[off][:, None]
        for k in range(GROUP):
            diff = (s * values[:, :, k] - x[off, k][:, None]).astype(F32)
            error += (w[off, k][:, None] * diff).astype(F32) * diff
        error[candidates < 0] = np.inf
        index[off] = candidates[np.arange(len(off)), np.argmin(error, axis=1)]
    return index, off_grid


def _key(L: np.ndarray) -> np.ndarray:
    return (L.astype(np.int64) << (2 * np.arange(GROUP))).sum(axis=-1)


def point_values(index: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """The shifted values (.., 8) of grid points ``index`` with shift bits ``shift`` (same shape)."""
    return SHIFTED[shift[..., None], grid("IQ1_S").levels[index]]


def weighted_fit(x: np.ndarray, w: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sum w q x, sum w q^2) along rows, left to right in float32 as ggml's loops."""
    wq = (w * q).astype(F32)
    return seq_sum(np.ascontiguousarray((wq * x).T), 0), seq_sum(np.ascontiguousarray((wq * q).T), 0)


def search_subblocks(sub: np.ndarray, w: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The search of the module docstring for every sub-block (rows of ``sub``, importances ``w``).

    Returns (grid indices (n_sub, groups), scale (n_sub,) >= 0, shift choice (n_sub,): a row of
    SHIFT_CHOICES[name]). A sub-block that is all zero, or that no candidate fits, gets index 0, scale 0 and
    choice 0, as in ggml."""
    if len(sub) > CHUNK:
        parts = [search_subblocks(sub[i:i + CHUNK], w[i:i + CHUNK], name) for i in range(0, len(sub), CHUNK)]
        return tuple(np.concatenate(p) for p in zip(*parts))
    size, epsilon, _ = SUBBLOCK[name]
    choices = SHIFT_CHOICES[name]
    n, groups = len(sub), size // GROUP
    order = np.argsort(sub, axis=1, kind="stable")
    xs = np.ascontiguousarray(np.take_along_axis(sub, order, axis=1).T)
    ws = np.ascontiguousarray(np.take_along_axis(w, order, axis=1).T)
    if name == "IQ1_S":
        sum_qx, sum_q2 = split_sums_prefix(xs, ws)
    else:
        sum_qx, sum_q2 = split_sums_direct(xs, ws, (order.T // GROUP))
    candidate, scale = first_best(sum_qx, sum_q2)
    found = (candidate >= 0) & (np.abs(sub).max(axis=1) >= epsilon)
    candidate = np.maximum(candidate, 0)
    split, choice = np.divmod(candidate, len(choices))
    i1, i2 = splits(size)
    L = levels_of_split(order, i1[split], i2[split])
    flip = scale < 0  # the mirror image: every level and every shift reversed
    L = np.where(flip[:, None], 2 - L, L)
    scale = np.where(flip, -scale, scale).astype(F32)
    choice = np.where(flip, len(choices) - 1 - choice, choice)
    shift = choices[choice]  # (n, groups)
    index, off = snap_to_grid(sub.reshape(-1, GROUP), w.reshape(-1, GROUP), L.reshape(-1, GROUP),
                              np.repeat(scale, groups), shift.reshape(-1))
    index, off = index.reshape(n, groups), off.reshape(n, groups).any(axis=1)
    q = point_values(index, shift).reshape(n, size)
    sum_qx, sum_q2 = weighted_fit(sub, w, q)
    with np.errstate(divide="ignore", invalid="ignore"):
        refit = off & (sum_qx > 0) & (sum_q2 > 0)
        scale = np.where(refit, sum_qx / sum_q2, scale).astype(F32)
    return (np.where(found[:, None], index, 0), np.where(found, scale, F32(0)).astype(F32),
            np.where(found, choice, 0))


def scale_levels(scale: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(max scale, d = max / 15, 3-bit l = round((scale / d - 1) / 2)) of each super-block's sub-block scales
    (n, n_sub); l is 0 where the max is 0."""
    max_scale = np.maximum(scale.max(axis=1), F32(0)).astype(F32)
    d = (max_scale / F32(15)).astype(F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = (F32(1) / d).astype(F32)
        l = np.clip(nearest_int(F32(0.5) * ((inverse[:, None] * scale).astype(F32) - F32(1))), 0, 7)
    return max_scale, d, np.where(max_scale[:, None] > 0, l, 0)


def _weights(x: np.ndarray, imatrix: np.ndarray) -> np.ndarray:
    """imatrix_j * sqrt(sigma^2 + x_j^2), sigma^2 = 2 * mean x^2 over each super-block (rows of x)."""
    return importance_weights(np.asarray(x, F32), imatrix, None)


# ---- IQ1_S -------------------------------------------------------------------------------------------------
def quantize_iq1_s(x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
    """IQ1_S super-blocks of ``x`` (n_blocks, 256): 8 sub-blocks of 32, each 4 grid points and a shift."""
    x = np.asarray(x, F32)
    imatrix = checked_imatrix(x, imatrix, "IQ1_S")
    n = len(x)
    w = _weights(x, imatrix)
    index, scale, choice = search_subblocks(x.reshape(n * 8, 32), w.reshape(n * 8, 32), "IQ1_S")
    index, scale, choice = index.reshape(n, 8, 4), scale.reshape(n, 8), choice.reshape(n, 8)
    max_scale, d, l = scale_levels(scale)
    has_scale = max_scale > 0
    high = ((index >> 8) << (3 * np.arange(4))).sum(axis=2)
    qh = high | np.where(has_scale[:, None], (l | (choice << 3)) << 12, 0)
    out = np.zeros(n, BLOCK["IQ1_S"])
    out["d"] = np.where(has_scale, fp16((d * SUBBLOCK["IQ1_S"][2]).astype(F32)), np.float16(0))
    out["qs"] = (index & 255).reshape(n, 32)
    out["qh"] = qh.astype(np.uint16)
    return out


def dequantize_iq1_s(block: np.ndarray) -> np.ndarray:
    n = len(block)
    qh = block["qh"].astype(np.int32)  # (n, 8)
    dl = (block["d"].astype(F32)[:, None] * (2 * ((qh >> 12) & 7) + 1).astype(F32)).astype(F32)
    delta = np.where(qh & 0x8000, -DELTA, DELTA).astype(F32)
    index = block["qs"].reshape(n, 8, 4).astype(np.int32) | (((qh[:, :, None] >> (3 * np.arange(4))) & 7) << 8)
    values = grid("IQ1_S").values[index]  # (n, 8, 4, 8)
    return (dl[:, :, None, None] * (values + delta[:, :, None, None])).astype(F32).reshape(n, QK_K)


# ---- IQ1_M -------------------------------------------------------------------------------------------------
MASKS = np.array([0x00, 0x80, 0x08, 0x88])  # qh bits of the shift choices: 0x08 first group, 0x80 second


def quantize_iq1_m(x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
    """IQ1_M super-blocks of ``x`` (n_blocks, 256): 16 sub-blocks of 16, each 2 grid points with own shifts."""
    x = np.asarray(x, F32)
    imatrix = checked_imatrix(x, imatrix, "IQ1_M")
    n = len(x)
    w = _weights(x, imatrix)
    index, scale, choice = search_subblocks(x.reshape(n * 16, 16), w.reshape(n * 16, 16), "IQ1_M")
    index, scale, choice = index.reshape(n, 16, 2), scale.reshape(n, 16), choice.reshape(n, 16)
    max_scale, d, l = scale_levels(scale)
    has_scale = max_scale > 0
    # d refitted to the rounded sub-block scales: weight ~= d * (2 l + 1) * shifted grid value
    q = (point_values(index, SHIFT_CHOICES["IQ1_M"][choice]) * (2 * l + 1).astype(F32)[:, :, None, None])
    sum_qx, sum_q2 = weighted_fit(x, w, q.astype(F32).reshape(n, QK_K))
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(sum_q2 > 0, sum_qx / sum_q2, d).astype(F32)
    d16 = fp16((d * SUBBLOCK["IQ1_M"][2]).astype(F32)).view(np.uint16).astype(np.int64)
    scales = (l.reshape(n, 4, 4).astype(np.int64) << (3 * np.arange(4))).sum(axis=2)
    scales |= ((d16[:, None] >> (4 * np.arange(4))) & 0xF) << 12
    qh = (index[:, :, 0] >> 8) | ((index[:, :, 1] >> 8) << 4) | np.where(has_scale[:, None], MASKS[choice], 0)
    out = np.zeros(n, BLOCK["IQ1_M"])
    out["qs"] = (index & 255).reshape(n, 32)
    out["qh"] = qh
    out["scales"] = np.where(has_scale[:, None], scales, 0).astype("<u2").view(np.uint8)
    return out


def iq1_m_scale(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fp16 d gathered from the top nibbles, the 16 sub-block l) of IQ1_M super-blocks."""
    sc = np.ascontiguousarray(block["scales"]).view("<u2").astype(np.int32)  # (n, 4)
    d = ((sc >> 12) << (4 * np.arange(4))).sum(axis=1).astype(np.uint16).view(np.float16)
    l = (sc[:, :, None] >> (3 * np.arange(4))) & 7
    return d, l.reshape(len(block), 16)


def dequantize_iq1_m(block: np.ndarray) -> np.ndarray:
    n = len(block)
    d, l = iq1_m_scale(block)
    dl = (d.astype(F32)[:, None] * (2 * l + 1).astype(F32)).astype(F32)  # (n, 16)
    qh = block["qh"].astype(np.int32)[:, :, None] >> np.array([0, 4])  # (n, 16, 2)
    index = block["qs"].reshape(n, 16, 2).astype(np.int32) | ((qh & 7) << 8)
    delta = np.where(qh & 8, -DELTA, DELTA).astype(F32)
    values = grid("IQ1_S").values[index]  # (n, 16, 2, 8)
    return (dl[:, :, None, None] * (values + delta[:, :, :, None])).astype(F32).reshape(n, QK_K)


QUANTIZE = {"IQ1_S": quantize_iq1_s, "IQ1_M": quantize_iq1_m}
DEQUANTIZE = {"IQ1_S": dequantize_iq1_s, "IQ1_M": dequantize_iq1_m}
