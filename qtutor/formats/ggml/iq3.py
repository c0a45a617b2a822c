"""ggml's 3-bit lattice types IQ3_XXS and IQ3_S: groups of 4 weights rounded together to a point of a grid.

A super-block of 256 weights is 8 sub-blocks of 32, each 8 groups of 4. A group stores the *index* of a grid point
(4 magnitudes) and the signs of its 4 weights apart; a sub-block stores a 4-bit scale s, the super-block an fp16
d (:mod:`lattice` explains the grids and why a group beats 4 independent levels):

    IQ3_XXS  d:f16 | qs[64] (8-bit index per group) | 8 x u32: 4 x 7 sign bits, then s in the top 4 bits
             weight = d * (2 s + 1) / 4 * grid256[index][j] * sign          grid values 4, 12, ..., 62   3.0625 bpw
    IQ3_S    d:f16 | qs[64] (low 8 index bits) | qh[8] (9th bit) | signs[32] (8 per byte) | scales[4] (2 x s)
             weight = d * (2 s + 1) * grid512[index][j] * sign              grid values 1, 3, ..., 15    3.4375 bpw

Why 7 sign bits for 8 weights (IQ3_XXS): the quantizer makes the count of negative signs in every 8 even, so the
eighth sign is the parity of the other seven (dequantization looks it up: ksigns). When a group has an odd count
of negative weights, it flips the sign of the weight that matters least, the smallest w x^2, and quantizes that
weight as -|x|: its error grows, the others' do not. IQ3_S spends the bit and stores all 8.

The search, per sub-block of 32 (``fit_subblocks``), on the magnitudes |x| and weights w (w = x^2, or with an
importance matrix imatrix_j * sqrt(sigma^2 + x_j^2), sigma^2 = 2 mean x^2 over the super-block):

    for 31 (IQ3_S: 19) inverse scales  id = (15 + 0.2 t) / max|x|,  t = -15 .. 15 (-9 .. 9):
        every coordinate to its nearest odd level 2l + 1 ~ id |x|:   l = round((id |x| - 1) / 2), 0 <= l <= 7
        a group whose 4 levels are not a grid point takes, among that point's neighbours (lattice.Grid),
            the one with the smallest sum_j sqrt(w_j) (q_j / id - |x_j|)^2
        the least-squares scale of these points  s = sum w |x| q / sum w q^2,  q = 2l + 1;
        keep the points with the largest (sum w |x| q)^2 / sum w q^2 (= the smallest weighted squared error)
    if a kept group came from a neighbour list, round again at id = 1 / s (IQ3_XXS: those groups, IQ3_S: all
    8) and refit s once.

Last, every sub-block scale becomes an odd multiple of d0 = max(s) / 31: s ~ d0 (2l + 1), l = round((s / d0 - 1) / 2)
in 0 .. 15, and the fp16 d stores d0 times a small fudge factor that ggml found to help (1.0125; IQ3_S 1.033).
(IQ3_XXS's grid values are 4 (2l + 1), the top one 62 rather than 60: hence its (2 s + 1) / 4.)

Every step is ggml's C code (``quantize_row_iq3_xxs_impl`` and ``quantize_row_iq3_s_impl``, ggml-org/ggml at
d99724f2) in float32 with the same order of operations and sequential sums, so the bytes are ggml's: tests hold
them against golden bytes from ggml's own quantizer, with and without an importance matrix. That includes a
quirk of IQ3_S: an all-zero sub-block writes nothing and does not advance the position of the next one's indices
and signs, so those of the sub-blocks after it land one slot early (its scale, its 9th index bits stay in place).
Arrays are (n_blocks, ...) and the loops run over the candidate scales and the positions of a sub-block, never
over blocks.
"""
from __future__ import annotations

import numpy as np

from qtutor.formats.ggml.kquants import F32, importance_weights, nearest_int, seq_sum
from qtutor.formats.ggml.lattice import Grid, checked_imatrix, even_sign_parity, grid, split_signs
from qtutor.formats.ggml.layouts import BLOCK, QK_K, fp16

LEVELS = 8  # level indices l = 0 .. 7 per coordinate, compared as the odd integers 2l + 1 = 1 .. 15
TOP = 2 * LEVELS - 1  # 15: the largest |x| is put near the top level first
TRIES = {"IQ3_XXS": 15, "IQ3_S": 9}  # inverse scales (15 + 0.2 t) / max, t = -TRIES .. TRIES
FUDGE = {"IQ3_XXS": F32(1.0125), "IQ3_S": F32(1.033)}  # d = FUDGE * max scale / 31
EMPTY_BELOW = F32(1e-8)  # IQ3_XXS skips a sub-block whose largest |x| is below this (IQ3_S: only an exact 0)
# ggml's ksigns_iq2xs: 7 stored sign bits and, as bit 7, their parity (the eighth sign, which makes the count even)
KSIGNS = np.array([s | (bin(s).count("1") % 2) << 7 for s in range(128)], np.uint8)
CHUNK = 2048  # sub-blocks fitted at once, so that the 31 passes over them run in the CPU's cache


# ---- signs -----------------------------------------------------------------------------------------------------
def even_parity_signs(x: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(magnitudes to quantize, 7-bit signs) of every group of 8 weights, rows of x (n, 8 k): IQ3_XXS's signs.

    A group with an odd count of negative weights gets the sign of its least important weight (smallest
    w x^2, the first on a tie) flipped, so that the count is even and bit 7 need not be stored; that weight is
    then quantized as -|x|. Returns (|x| with those weights negative, (n, k) uint8 of bits 0 .. 6)."""
    n = len(x)
    groups = x.reshape(n, -1, 8)
    magnitude, negative = split_signs(groups)  # ggml's test: -0.0 counts as positive
    magnitude, negative = even_sign_parity(magnitude, negative, groups, weight.reshape(n, -1, 8))
    signs = sign_bytes(negative) & 127
    return magnitude.reshape(x.shape), signs


def sign_bytes(negative: np.ndarray) -> np.ndarray:
    """Bit i of byte g: weight i of group g (last axis, 8 wide) is negative."""
    return (negative.astype(np.uint8) << np.arange(8, dtype=np.uint8)).sum(axis=-1).astype(np.uint8)


def signs_of_bytes(signs: np.ndarray) -> np.ndarray:
    """+1 / -1 float32 of every bit of ``signs`` (a new last axis of 8, bit 0 first)."""
    bits = (signs[..., None] >> np.arange(8, dtype=np.uint8)) & 1
    return np.where(bits == 1, F32(-1), F32(1))


# ---- rounding a sub-block to the grid ----------------------------------------------------------------------------
def best_neighbour(lattice: Grid, points: np.ndarray, keys: np.ndarray, magnitude: np.ndarray,
                   root_weight: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Grid index, for each off-grid group g (its key, its 4 magnitudes x = magnitude[:, g], the square roots of
    their weights r = root_weight[:, g], its scale), of the neighbour with the smallest sum_j r_j (scale q_j - x_j)^2,
    q = 2l + 1 (``points``: (4, n_points)), the first of equal ones in ggml's list order.

    The lists differ in length (2 to ~40), so every (group, candidate) pair is one entry of flat arrays, and
    each group's best is the first minimum of its segment."""
    count = lattice.neighbour_count[keys]
    first = np.cumsum(count) - count  # where each group's segment starts
    owner = np.repeat(np.arange(len(keys)), count)
    candidate = lattice.neighbour_flat[(lattice.neighbour_start[keys] - first)[owner] + np.arange(len(owner))]
    scale = scale[owner]
    error = None
    for j in range(4):  # ggml's order of the sum over the 4 coordinates
        diff = scale * points[j][candidate] - magnitude[j][owner]
        term = (root_weight[j][owner] * diff) * diff
        error = term if error is None else error + term
    hits = np.flatnonzero(error == np.minimum.reduceat(error, first)[owner])
    first_hits = hits[np.concatenate([[True], owner[hits[1:]] != owner[hits[:-1]]])]
    return candidate[first_hits]


def round_to_grid(lattice: Grid, points: np.ndarray, magnitude: np.ndarray, root_weight: np.ndarray,
                  inverse_scale: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Level indices (32, m) of the sub-blocks (columns of magnitude, root_weight) at ``inverse_scale``, every group
    on a grid point (off-grid ones: the best neighbour at ``scale``), and whether each group's rounded point
    already was one (8, m)."""
    m = magnitude.shape[1]
    l = np.clip(nearest_int(F32(0.5) * (inverse_scale * magnitude - F32(1))), 0, LEVELS - 1).reshape(8, 4, m)
    keys = (l << (3 * np.arange(4, dtype=np.int32))[None, :, None]).sum(axis=1)  # ggml's key of a group
    on_grid = lattice.index_of[keys] >= 0
    group, column = np.nonzero(~on_grid)
    if len(group):
        chosen = best_neighbour(lattice, points, keys[group, column],
                                magnitude.reshape(8, 4, m)[group, :, column].T,
                                root_weight.reshape(8, 4, m)[group, :, column].T, scale[column])
        l[group, :, column] = lattice.levels[chosen]
    return l.reshape(32, m), on_grid


def _fit_sums(weight: np.ndarray, magnitude: np.ndarray, l: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sum w x q, sum w q^2) down the 32 rows, q = 2l + 1, summed in ggml's order."""
    q = (2 * l + 1).astype(F32)
    return seq_sum((weight * magnitude) * q, 0), seq_sum((weight * q) * q, 0)


def fit_subblocks(magnitude: np.ndarray, weight: np.ndarray, empty: np.ndarray,
                  name: str) -> tuple[np.ndarray, np.ndarray]:
    """The scale (m,) and grid indices (m, 8) of every sub-block (rows of magnitude, weight: (m, 32)), searched as
    in the module docstring. ``empty`` sub-blocks get scale 0 and index 0."""
    if len(magnitude) > CHUNK:
        parts = [fit_subblocks(magnitude[i:i + CHUNK], weight[i:i + CHUNK], empty[i:i + CHUNK], name)
                 for i in range(0, len(magnitude), CHUNK)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    lattice = grid(name)
    points = np.ascontiguousarray(lattice.points.T, F32)  # (4, n_points): one row per coordinate
    magnitude, weight = np.ascontiguousarray(magnitude.T, F32), np.ascontiguousarray(weight.T, F32)  # (32, m)
    root_weight = np.sqrt(weight).astype(F32)
    m = magnitude.shape[1]
    peak = np.where(empty, F32(1), magnitude.max(axis=0)).astype(F32)
    scale = (peak / F32(TOP)).astype(F32)
    best = np.zeros(m, F32)
    L = np.zeros((32, m), np.int32)
    # IQ3_S refits a sub-block whose search kept nothing; IQ3_XXS keeps its all-zero levels
    kept_on_grid = np.full((8, m), name == "IQ3_XXS")
    for t in range(-TRIES[name], TRIES[name] + 1):
        inverse = ((F32(TOP) + F32(t) * F32(0.2)) / peak).astype(F32)
        trial, on_grid = round_to_grid(lattice, points, magnitude, root_weight, inverse, (F32(1) / inverse).astype(F32))
        sum_qx, sum_q2 = _fit_sums(weight, magnitude, trial)
        better = (sum_q2 > 0) & ((sum_qx * sum_qx).astype(F32) > (best * sum_q2).astype(F32))
        scale = np.where(better, sum_qx / np.where(better, sum_q2, F32(1)), scale).astype(F32)
        best = np.where(better, scale * sum_qx, best).astype(F32)
        L = np.where(better, trial, L)
        kept_on_grid = np.where(better, on_grid, kept_on_grid)
    refit = np.flatnonzero(~kept_on_grid.all(axis=0) & (scale > 0) & ~empty)
    if len(refit):
        s = scale[refit]
        again, _ = round_to_grid(lattice, points, magnitude[:, refit], root_weight[:, refit],
                                 (F32(1) / s).astype(F32), s)
        if name == "IQ3_XXS":  # only the groups that came from a neighbour list are rounded again
            again = np.where(np.repeat(kept_on_grid[:, refit], 4, axis=0), L[:, refit], again)
        L[:, refit] = again
        sum_qx, sum_q2 = _fit_sums(weight[:, refit], magnitude[:, refit], again)
        scale[refit] = np.where(sum_q2 > 0, sum_qx / np.where(sum_q2 > 0, sum_q2, F32(1)), s).astype(F32)
    levels = L.reshape(8, 4, m)
    index = lattice.index_of[(levels << (3 * np.arange(4, dtype=np.int32))[None, :, None]).sum(axis=1)].T
    return np.where(empty, F32(0), scale).astype(F32), np.where(empty[:, None], 0, index)


def superblock_scale(scales: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(fp16 d (n,), 4-bit sub-block scales (n, 8)) for the sub-block scales (n, 8): d = FUDGE max / 31."""
    max_scale = np.maximum(scales.max(axis=1), F32(0))
    has_scale = max_scale > 0
    d = (np.where(has_scale, max_scale, F32(1)) / F32(31)).astype(F32)
    inverse = (F32(1) / d).astype(F32)
    l = np.clip(nearest_int(F32(0.5) * (inverse[:, None] * scales - F32(1))), 0, 15)
    return np.where(has_scale, fp16(d * FUDGE[name]), np.float16(0)), np.where(has_scale[:, None], l, 0)


def subblock_inputs(x: np.ndarray, imatrix: np.ndarray | None, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(sub-blocks (8 n, 32), their weights): x^2, or imatrix_j * sqrt(sigma^2 + x_j^2)."""
    imatrix = checked_imatrix(x, imatrix, name, required=False)
    sub = np.asarray(x, F32).reshape(-1, 32)
    return sub, importance_weights(sub, imatrix, (sub * sub).astype(F32))


# ---- IQ3_XXS -----------------------------------------------------------------------------------------------------
def quantize_iq3_xxs(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """IQ3_XXS super-blocks of ``x`` (n_blocks, 256, finite: ggml.quantize checks), ``imatrix`` per column."""
    n = len(x)
    sub, weight = subblock_inputs(x, imatrix, "IQ3_XXS")
    magnitude, signs = even_parity_signs(sub, weight)
    empty = magnitude.max(axis=1) < EMPTY_BELOW
    scale, index = fit_subblocks(magnitude, weight, empty, "IQ3_XXS")
    signs = np.where((scale < 0)[:, None], ~signs & 127, signs)  # rare: s < 0 is stored as -s with all 8 signs flipped
    signs = np.where(empty[:, None], 0, signs).astype(np.uint32)
    d, l = superblock_scale(np.abs(scale).reshape(n, 8), "IQ3_XXS")
    words = (signs << (7 * np.arange(4, dtype=np.uint32))).sum(axis=1).reshape(n, 8).astype(np.uint32)
    words |= l.astype(np.uint32) << 28
    out = np.zeros(n, BLOCK["IQ3_XXS"])
    keep = (np.abs(scale).reshape(n, 8).max(axis=1) > 0)[:, None]  # no scale at all: ggml writes zeros
    out["d"] = d
    out["qs"][:, :64] = np.where(keep, index.reshape(n, 64), 0)
    out["qs"][:, 64:] = np.where(keep, words, 0).astype("<u4").view(np.uint8).reshape(n, 32)
    return out


def dequantize_iq3_xxs(block: np.ndarray) -> np.ndarray:
    n = len(block)
    words = np.ascontiguousarray(block["qs"][:, 64:]).view("<u4")  # (n, 8)
    db = ((block["d"].astype(F32)[:, None] * (F32(0.5) + (words >> 28).astype(F32))) * F32(0.5)).astype(F32)
    seven = (words[:, :, None] >> (7 * np.arange(4, dtype=np.uint32))) & 127  # (n, 8, 4)
    signs = signs_of_bytes(KSIGNS[seven]).reshape(n, 8, 32)
    values = grid("IQ3_XXS").values[block["qs"][:, :64]].reshape(n, 8, 32)
    return ((db[:, :, None] * values) * signs).reshape(n, QK_K).astype(F32)


# ---- IQ3_S -------------------------------------------------------------------------------------------------------
def quantize_iq3_s(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """IQ3_S super-blocks of ``x`` (n_blocks, 256, finite: ggml.quantize checks), ``imatrix`` per column."""
    n = len(x)
    sub, weight = subblock_inputs(x, imatrix, "IQ3_S")
    negative = ~(sub.reshape(-1, 4, 8) >= 0)
    magnitude = np.abs(sub).astype(F32)
    empty = magnitude.max(axis=1) == 0
    scale, index = fit_subblocks(magnitude, weight, empty, "IQ3_S")
    signs = sign_bytes(negative) ^ np.where(scale < 0, np.uint8(255), np.uint8(0))[:, None]
    d, l = superblock_scale(np.abs(scale).reshape(n, 8), "IQ3_S")
    index, signs, used = index.reshape(n, 8, 8), signs.reshape(n, 8, 4), ~empty.reshape(n, 8)
    # ggml's quirk: the indices and signs of the non-empty sub-blocks are written one after another
    block, subblock = np.nonzero(used)
    slot = (np.cumsum(used, axis=1) - 1)[block, subblock]
    low, packed_signs = np.zeros((n, 8, 8), np.uint8), np.zeros((n, 8, 4), np.uint8)
    low[block, slot] = index[block, subblock] & 255
    packed_signs[block, slot] = signs[block, subblock]
    out = np.zeros(n, BLOCK["IQ3_S"])
    out["d"] = d
    out["qs"] = low.reshape(n, 64)
    out["qh"] = sign_bytes((index >> 8) == 1)  # bit k of qh[j]: the 9th index bit of group k of sub-block j
    out["signs"] = packed_signs.reshape(n, 32)
    out["scales"] = (l[:, 0::2] | (l[:, 1::2] << 4)).astype(np.uint8)
    return out


def dequantize_iq3_s(block: np.ndarray) -> np.ndarray:
    n = len(block)
    scales = np.stack([block["scales"] & 0x0F, block["scales"] >> 4], axis=2).reshape(n, 8)
    db = (block["d"].astype(F32)[:, None] * (1 + 2 * scales).astype(F32)).astype(F32)
    high = ((block["qh"][:, :, None] >> np.arange(8, dtype=np.uint8)) & 1).astype(np.int32).reshape(n, 64)
    values = grid("IQ3_S").values[block["qs"].astype(np.int32) | (high << 8)].reshape(n, 8, 32)
    signs = signs_of_bytes(block["signs"]).reshape(n, 8, 32)
    return ((db[:, :, None] * values) * signs).reshape(n, QK_K).astype(F32)


QUANTIZE = {"IQ3_XXS": quantize_iq3_xxs, "IQ3_S": quantize_iq3_s}
DEQUANTIZE = {"IQ3_XXS": dequantize_iq3_xxs, "IQ3_S": dequantize_iq3_s}
