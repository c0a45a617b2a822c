"""ggml's 2-bit lattice types IQ2_XXS, IQ2_XS and IQ2_S: eight weights at a time rounded to a point of a grid.

Every 8 consecutive weights of a super-block of 256 become one grid index and a few sign bits. The grid
(:mod:`lattice`) holds 256, 512 or 1024 points of 8 magnitudes, each one of 8, 25, 43 (roughly 8 (2l + 1) for a
level l in 0 .. 2), and every group of 8 shares a sub-block scale:

    IQ2_XXS  d:f16 | qs:u16[32]                  66 bytes, 2.0625 bits/weight
             per 32 weights, 64 bits: four 8-bit grid indices | four 7-bit signs, a 4-bit scale l in the top bits
    IQ2_XS   d:f16 | qs:u16[32] | scales[8]      74 bytes, 2.3125
             per 8 weights: a 9-bit index | 7 signs << 9; a 4-bit scale l per 16 weights
    IQ2_S    d:f16 | qs[64] | qh[8] | scales[8]  82 bytes, 2.5625
             qs[g]: the low 8 bits of group g's 10-bit index, qs[32 + g]: its 8 signs, qh: the top 2 bits
             (group g at bits 2 (g % 4) of qh[g / 4]); a 4-bit scale l per 16 weights

    weight_j = d (0.5 + l) / 4 * grid[index]_j * (-1 if sign_j else +1)

Why a grid: eight weights of three magnitudes each make 3^8 = 6561 patterns (12.7 bits), and most of them never
describe a real group of weights. The grid keeps only the 256 to 1024 patterns that normalized groups fall near
most often (points near the E8 lattice, the densest packing in 8 dimensions: see :mod:`lattice`), so 8 to 10
bits, about one bit per weight, describe 8 magnitudes.

Why the signs apart, and only 7 of them: the grid holds magnitudes, so the quantizer matches |x| against it and
keeps the signs as bits. As in QuIP#'s E8 codebook (Tseng et al. 2024, arXiv:2402.04396), only sign patterns with
an even number of minus signs are allowed, so IQ2_XXS and IQ2_XS store 7 signs and the eighth is whatever makes
the count even (gguf-py's ``ksigns`` table). When a group's count is odd, the quantizer gives up the sign of its
least important weight (smallest w x^2): that weight is matched against the grid as -|x| and comes back with the
wrong sign, where it costs the least (``even_sign_parity``). IQ2_S spends a whole byte on the 8 signs instead.

How the scales are found (ggml's ``quantize_row_iq2_{xxs,xs,s}_impl``): every weight gets an importance
w_j = imatrix_j * sqrt(sigma^2 + x_j^2) (sigma^2 the mean x^2 of the super-block; IQ2_S: twice that); a sub-block
(32 weights in IQ2_XXS, 16 in the others) tries the scales s_t = peak / (5 + 0.1 t), t = -6 .. 6 or -9 .. 9
(peak: 3 times IQ2_XXS's first fit ``kquants.best_positive_fit``, or max |x|). For each, every |x_j| / s_t is rounded to the
nearest odd 2 l + 1 in {1, 3, 5}; a group of 8 levels that is not a grid point is replaced by the best of its
precomputed neighbours, the one with the smallest sum_j sqrt(w_j) (s_t q_j - |x_j|)^2 (``nearest_grid_points``);
then s = sum w |x| q / sum w q^2 (least squares given the points q) and the trial with the largest
(sum w |x| q)^2 / sum w q^2, i.e. the smallest weighted error, wins. Groups that had to take a neighbour
(IQ2_XXS: all groups) are rounded once more with the winning scale, which is refitted. Last, d = max s / 31
and each sub-block keeps l = round((s / d - 1) / 2), so that s ~ d (2 l + 1); IQ2_S stores 0.9875 d.

ggml requires an importance matrix for all three (llama.cpp refuses them without one). Every step is ggml's
(ggml-org/ggml d99724f2) in float32 with the same order of operations and sequential sums, so the bytes are ggml's:
tests hold them against golden bytes from ggml's own quantizer. As in :mod:`kquants`, arrays are (n_blocks, ...)
and the loops run over positions, candidate scales and grid neighbours, never over blocks.
"""
from __future__ import annotations

from functools import cache

import numpy as np

from qtutor.formats.base import check_finite
from qtutor.formats.ggml.kquants import (F32, GROUP_MAX_EPS, best_positive_fit, importance_weights, nearest_int,
                                         seq_sum)
from qtutor.formats.ggml.lattice import Grid, checked_imatrix, even_sign_parity, grid, key, pack_bits, split_signs
from qtutor.formats.ggml.layouts import BLOCK, QK_K, fp16

TOP_LEVEL = 2  # levels 0, 1, 2: the odd integers 1, 3, 5 that |x| / s is rounded to
CHUNK = 512  # super-blocks quantized at once: the neighbour search's arrays then stay in the CPU's cache


def nearest_grid_points(g: Grid, keys: np.ndarray, magnitude: np.ndarray, root_weight: np.ndarray,
                        scale: np.ndarray) -> np.ndarray:
    """ggml's iq2_find_best_neighbour for many off-grid groups at once: the grid index, among each key's
    neighbour list, with the smallest sum_j root_weight_j (scale q_j - |x_j|)^2, the first in list order on a tie.

    All candidate points of all groups are laid end to end, scored one coordinate at a time (the sum in ggml's
    order), and each group's first minimum is found with a segmented reduction."""
    count = g.neighbour_count[keys]
    if (count == 0).any():
        raise AssertionError("a key off the grid has no neighbour list")
    first = np.cumsum(count) - count  # where each group's candidates begin
    total = int(count.sum())
    position = np.arange(total)
    candidate = g.neighbour_flat[np.repeat(g.neighbour_start[keys] - first, count) + position]
    points = _coordinates(g.type_name)  # (8, n_points) float32
    x, w = np.ascontiguousarray(magnitude.T), np.ascontiguousarray(root_weight.T)
    s = np.repeat(scale, count)
    d2 = np.zeros(total, F32)
    for j in range(g.dims):  # float32 operands, so every step rounds to float32 as in C: d2 += (w diff) diff
        diff = s * points[j].take(candidate)
        diff -= np.repeat(x[j], count)
        term = np.repeat(w[j], count)
        term *= diff
        term *= diff
        d2 += term
    smallest = np.repeat(np.minimum.reduceat(d2, first), count)
    return candidate[np.minimum.reduceat(np.where(d2 == smallest, position, total), first)]


@cache
def _coordinates(type_name: str) -> np.ndarray:
    """The grid's points 2 l + 1 as float32, one row per coordinate (the layout the neighbour search reads)."""
    return np.ascontiguousarray(grid(type_name).points.T.astype(F32))


def round_to_grid(g: Grid, magnitude: np.ndarray, root_weight: np.ndarray, inverse_scale: np.ndarray,
                  scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(grid index, whether the rounded levels were on the grid) of every group of 8 magnitudes (rows).

    Each |x| / s goes to the nearest odd 2 l + 1, l clamped to 0 .. 2; a group whose levels are no grid point
    takes its best neighbour (``nearest_grid_points``)."""
    half_steps = (F32(0.5) * ((inverse_scale[:, None] * magnitude).astype(F32) - F32(1))).astype(F32)
    levels = np.clip(nearest_int(half_steps), 0, TOP_LEVEL)
    keys = key(levels, g.bits)
    index = g.index_of[keys]
    on_grid = index >= 0
    off = np.flatnonzero(~on_grid)
    if len(off):
        index[off] = nearest_grid_points(g, keys[off], magnitude[off], root_weight[off], scale[off])
    return index, on_grid


def least_squares(g: Grid, index: np.ndarray, magnitude: np.ndarray, weight: np.ndarray):
    """(sum w |x| q, sum w q^2) of every sub-block (rows; its groups' points q = 2 l + 1 along the last axes),
    summed position by position as ggml does."""
    shape = (len(index), index.shape[1] * g.dims)
    q = g.points[index].astype(F32).reshape(shape)
    x, w = magnitude.reshape(shape), weight.reshape(shape)
    return seq_sum(((w * x).astype(F32) * q).astype(F32)), seq_sum(((w * q).astype(F32) * q).astype(F32))


# ---- the sub-block search shared by the three types -------------------------------------------------------------
def fit_subblocks(g: Grid, x: np.ndarray, weight: np.ndarray, eps: float, even_parity: bool, iq2_xxs: bool):
    """Scale, grid indices and sign bits of every sub-block (rows of ``x`` and ``weight``: (n_sub, groups, 8)).

    ``even_parity``: 7 stored signs per group (IQ2_XXS, IQ2_XS), else 8 (IQ2_S). ``iq2_xxs``: start from a
    least-squares fit on the integers 0 .. 4 (``kquants.best_positive_fit``) and try 13 scales around 3 times it, rounding every
    group again at the end; else start from max |x| / 5, try 19 scales, round again only the groups that took a
    neighbour. Returns (scale (n_sub,) >= 0, index (n_sub, groups), signs (n_sub, groups)); a sub-block whose |x|
    are all below ``eps`` (or whose first fit is not positive) gets scale 0 and stores zeros."""
    n_sub, groups = x.shape[:2]
    magnitude, negative = split_signs(x)
    if even_parity:
        magnitude, negative = even_sign_parity(magnitude, negative, x, weight)
    signs = pack_bits(negative[..., :7] if even_parity else negative)
    peak = magnitude.reshape(n_sub, -1).max(axis=1)
    live = peak >= F32(eps)
    if iq2_xxs:
        start = np.zeros(n_sub, F32)
        start[live] = best_positive_fit(magnitude[live].reshape(-1, groups * 8), TOP_LEVEL + 2,
                                        weight[live].reshape(-1, groups * 8))[0]
        peak = (start * F32(TOP_LEVEL + 1)).astype(F32)
        live &= peak > 0
    else:
        start = (peak / F32(2 * TOP_LEVEL + 1)).astype(F32)
    rows = np.flatnonzero(live)  # the search runs on the live sub-blocks only
    magnitude, weight = magnitude[rows], weight[rows]
    root_weight = np.sqrt(weight).astype(F32)
    scale, index, on_grid = try_scales(g, magnitude, weight, root_weight, peak[rows], start[rows],
                                       range(-6, 7) if iq2_xxs else range(-9, 10))
    redo = (scale > 0)[:, None] & (np.ones_like(on_grid) if iq2_xxs else ~on_grid)
    scale, index = round_again(g, magnitude, weight, root_weight, scale, index, redo)
    flipped = scale < 0  # ggml's safeguard: a negative scale becomes positive with every sign inverted
    live_signs = np.where(flipped[:, None], ~signs[rows] & (127 if even_parity else 255), signs[rows])
    out_scale, out_index = np.zeros(n_sub, F32), np.zeros((n_sub, groups), np.int32)
    out_signs = np.zeros((n_sub, groups), np.uint32)
    out_scale[rows], out_index[rows], out_signs[rows] = np.where(flipped, -scale, scale), index, live_signs
    return out_scale, out_index, out_signs


def try_scales(g: Grid, magnitude, weight, root_weight, peak, scale, steps):
    """The candidate scales s_t = peak / (5 + 0.1 t): round every group to the grid at s_t, fit s by least
    squares to the points found, keep the trial with the largest (sum w |x| q)^2 / sum w q^2 (``scale`` and
    grid point 0 until one has sum w |x| q != 0). Returns (scale, grid indices, whether each was on the grid)."""
    m, groups = magnitude.shape[:2]
    best = np.zeros(m, F32)
    index = np.zeros((m, groups), np.int32)
    on_grid = np.ones((m, groups), bool)
    group_x, group_w = magnitude.reshape(-1, 8), root_weight.reshape(-1, 8)
    for step in steps:
        inverse = ((F32(2 * TOP_LEVEL + 1) + F32(step) * F32(0.1)) / peak).astype(F32)
        trial_scale = (F32(1) / inverse).astype(F32)
        trial, trial_on = round_to_grid(g, group_x, group_w, np.repeat(inverse, groups), np.repeat(trial_scale, groups))
        trial, trial_on = trial.reshape(m, groups), trial_on.reshape(m, groups)
        sumqx, sumq2 = least_squares(g, trial, magnitude, weight)
        better = (sumq2 > 0) & ((sumqx * sumqx).astype(F32) > (best * sumq2).astype(F32))
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(better, (sumqx / sumq2).astype(F32), scale).astype(F32)
        best = np.where(better, (scale * sumqx).astype(F32), best).astype(F32)
        index = np.where(better[:, None], trial, index)
        on_grid = np.where(better[:, None], trial_on, on_grid)
    return scale, index, on_grid


def round_again(g: Grid, magnitude, weight, root_weight, scale, index, redo):
    """Round the groups marked in ``redo`` (n_sub, groups) to the grid at the scale found, and refit the scale
    of every sub-block that has one. Returns (scale, index)."""
    sub, group = np.nonzero(redo)
    if len(sub) == 0:
        return scale, index
    index, scale = index.copy(), scale.copy()
    inverse = (F32(1) / scale[sub]).astype(F32)
    index[sub, group], _ = round_to_grid(g, magnitude[sub, group], root_weight[sub, group], inverse, scale[sub])
    refit = redo.any(axis=1)
    sumqx, sumq2 = least_squares(g, index[refit], magnitude[refit], weight[refit])
    with np.errstate(divide="ignore", invalid="ignore"):
        scale[refit] = np.where(sumq2 > 0, (sumqx / sumq2).astype(F32), scale[refit])
    return scale, index


def super_scale(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(d = max s / 31, the 4-bit l of every sub-block scale s, s ~ d (2 l + 1), whether every s is 0)."""
    max_scale = np.maximum(scales.max(axis=1), F32(0)).astype(F32)
    empty = max_scale == 0
    d = (max_scale / F32(31)).astype(F32)
    with np.errstate(divide="ignore"):
        inverse = (F32(1) / np.where(empty, F32(1), d)).astype(F32)
    half_steps = (F32(0.5) * ((inverse[:, None] * scales).astype(F32) - F32(1))).astype(F32)
    l = np.clip(nearest_int(half_steps), 0, 15).astype(np.uint32)
    return np.where(empty, F32(0), d).astype(F32), np.where(empty[:, None], 0, l).astype(np.uint32), empty


def _chunked(quantize_chunk, x: np.ndarray, imatrix: np.ndarray | None, name: str, sigma_factor: int):
    x = np.ascontiguousarray(x, dtype=F32).reshape(-1, QK_K)
    check_finite(x, name, "ggml's grid search has no point for it (ggml aborts)")
    imatrix = checked_imatrix(x, imatrix, name)
    weight = importance_weights(x, imatrix, None, sigma_factor=sigma_factor)
    parts = [quantize_chunk(x[i:i + CHUNK], weight[i:i + CHUNK]) for i in range(0, len(x), CHUNK)]
    return np.concatenate(parts) if parts else np.zeros(0, BLOCK[name])


def _pack_nibble_scales(l: np.ndarray) -> np.ndarray:
    """16 4-bit scales in 8 bytes: sub-block 2 i in the low nibble of byte i, 2 i + 1 in the high one."""
    return (l[:, 0::2] | (l[:, 1::2] << 4)).astype(np.uint8)


# ---- IQ2_XXS ---------------------------------------------------------------------------------------------------
def quantize_iq2_xxs(x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
    """IQ2_XXS super-blocks of ``x`` (n_blocks, 256) with the per-column ``imatrix`` (required)."""
    return _chunked(_quantize_iq2_xxs, x, imatrix, "IQ2_XXS", sigma_factor=1)


def _quantize_iq2_xxs(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    n = len(x)
    scales, index, signs = fit_subblocks(grid("IQ2_XXS"), x.reshape(n * 8, 4, 8), weight.reshape(n * 8, 4, 8),
                                         GROUP_MAX_EPS, even_parity=True, iq2_xxs=True)
    d, l, empty = super_scale(scales.reshape(n, 8))
    words = np.zeros((n, 8, 2), np.uint32)
    words[:, :, 0] = (index.reshape(n, 8, 4).astype(np.uint32) << (8 * np.arange(4, dtype=np.uint32))).sum(
        axis=2, dtype=np.uint32)
    words[:, :, 1] = (signs.reshape(n, 8, 4) << (7 * np.arange(4, dtype=np.uint32))).sum(axis=2, dtype=np.uint32)
    words[:, :, 1] |= l << np.uint32(28)
    words[empty] = 0
    out = np.zeros(n, BLOCK["IQ2_XXS"])
    out["d"] = fp16(d)
    out["qs"] = words.reshape(n, 16).view(np.uint16)
    return out


# ---- IQ2_XS ----------------------------------------------------------------------------------------------------
def quantize_iq2_xs(x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
    """IQ2_XS super-blocks of ``x`` (n_blocks, 256) with the per-column ``imatrix`` (required)."""
    return _chunked(_quantize_iq2_xs, x, imatrix, "IQ2_XS", sigma_factor=1)


def _quantize_iq2_xs(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    n = len(x)
    scales, index, signs = fit_subblocks(grid("IQ2_XS"), x.reshape(n * 16, 2, 8), weight.reshape(n * 16, 2, 8),
                                         GROUP_MAX_EPS, even_parity=True, iq2_xxs=False)
    d, l, empty = super_scale(scales.reshape(n, 16))
    qs = (index.astype(np.uint32) | (signs << np.uint32(9))).reshape(n, 32).astype(np.uint16)
    qs[empty] = 0
    out = np.zeros(n, BLOCK["IQ2_XS"])
    out["d"], out["qs"], out["scales"] = fp16(d), qs, _pack_nibble_scales(l)
    return out


# ---- IQ2_S -----------------------------------------------------------------------------------------------------
GROUP_MAX_EPS_IQ2_S = 1e-8
D_SHRINK_IQ2_S = F32(0.9875)  # ggml stores a slightly smaller d for IQ2_S (tuned on models)


def quantize_iq2_s(x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
    """IQ2_S super-blocks of ``x`` (n_blocks, 256) with the per-column ``imatrix`` (required here, as in
    llama.cpp; ggml's C alone would fall back to weights sigma^2 / 4 + x^2)."""
    return _chunked(_quantize_iq2_s, x, imatrix, "IQ2_S", sigma_factor=2)


def _quantize_iq2_s(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    n = len(x)
    scales, index, signs = fit_subblocks(grid("IQ2_S"), x.reshape(n * 16, 2, 8), weight.reshape(n * 16, 2, 8),
                                         GROUP_MAX_EPS_IQ2_S, even_parity=False, iq2_xxs=False)
    d, l, _ = super_scale(scales.reshape(n, 16))  # an all-zero super-block keeps its indices and signs
    index = index.reshape(n, 32)
    high = (index >> 8).astype(np.uint8).reshape(n, 8, 4)
    out = np.zeros(n, BLOCK["IQ2_S"])
    out["d"] = fp16((d * D_SHRINK_IQ2_S).astype(F32))
    out["qs"] = np.concatenate([(index & 0xFF).astype(np.uint8), signs.reshape(n, 32).astype(np.uint8)], axis=1)
    out["qh"] = (high << (2 * np.arange(4, dtype=np.uint8))).sum(axis=2, dtype=np.uint8)
    out["scales"] = _pack_nibble_scales(l)
    return out


# ---- dequantization --------------------------------------------------------------------------------------------
def _weights(g: Grid, d: np.ndarray, l: np.ndarray, index: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """d (0.5 + l) / 4 * grid[index] * sign for (n, groups) scales l, indices and 8-bit sign masks."""
    n = len(d)
    db = ((d.astype(F32)[:, None] * (F32(0.5) + l.astype(F32))).astype(F32) * F32(0.25)).astype(F32)
    negative = (signs.astype(np.uint32)[..., None] >> np.arange(8, dtype=np.uint32)) & 1
    sign = np.where(negative == 1, F32(-1), F32(1))
    return ((db[:, :, None] * g.values[index]).astype(F32) * sign).astype(F32).reshape(n, QK_K)


def with_parity_bit(signs: np.ndarray) -> np.ndarray:
    """The 8 signs of 7 stored ones: the eighth makes the count of negatives even (gguf-py's ksigns)."""
    signs = signs.astype(np.uint32)
    parity = ((signs[..., None] >> np.arange(7, dtype=np.uint32)) & 1).sum(axis=-1, dtype=np.uint32) & 1
    return signs | (parity << np.uint32(7))


def dequantize_iq2_xxs(block: np.ndarray) -> np.ndarray:
    n = len(block)
    words = np.ascontiguousarray(block["qs"]).view(np.uint32).reshape(n, 8, 2)
    index = (words[:, :, 0:1] >> (8 * np.arange(4, dtype=np.uint32))) & 0xFF  # (n, 8, 4)
    signs = with_parity_bit((words[:, :, 1:2] >> (7 * np.arange(4, dtype=np.uint32))) & 127)
    l = np.repeat(words[:, :, 1] >> 28, 4, axis=1)
    return _weights(grid("IQ2_XXS"), block["d"], l, index.reshape(n, 32), signs.reshape(n, 32))


def dequantize_iq2_xs(block: np.ndarray) -> np.ndarray:
    qs = block["qs"].astype(np.uint32)
    l = np.repeat(np.stack([block["scales"] & 0xF, block["scales"] >> 4], axis=2).reshape(len(block), 16), 2, axis=1)
    return _weights(grid("IQ2_XS"), block["d"], l, qs & 511, with_parity_bit(qs >> 9))


def dequantize_iq2_s(block: np.ndarray) -> np.ndarray:
    n = len(block)
    high = (block["qh"].astype(np.int32)[:, :, None] >> (2 * np.arange(4))) & 3  # (n, 8, 4): group 4 i + k
    index = block["qs"][:, :32].astype(np.int32) | (high.reshape(n, 32) << 8)
    l = np.repeat(np.stack([block["scales"] & 0xF, block["scales"] >> 4], axis=2).reshape(n, 16), 2, axis=1)
    return _weights(grid("IQ2_S"), block["d"], l, index, block["qs"][:, 32:])


QUANTIZE = {"IQ2_XXS": quantize_iq2_xxs, "IQ2_XS": quantize_iq2_xs, "IQ2_S": quantize_iq2_s}
DEQUANTIZE = {"IQ2_XXS": dequantize_iq2_xxs, "IQ2_XS": dequantize_iq2_xs, "IQ2_S": dequantize_iq2_s}
