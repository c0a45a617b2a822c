"""Vector codebooks: a format whose values are whole *vectors* of weights, chosen from a table.

Every format before this one rounds one weight at a time onto a grid of numbers. A codebook format cuts each
weight row into vectors of d consecutive weights and replaces every vector by the sum of M *codewords*, one
from each of M tables of K = 2^B entries (d numbers each), times a scale:

    w_hat[r, v*d:(v+1)*d] = s * sum_m C_m[code[r, v, m]]          (C_m: K x d, code: B bits each)

so a vector costs M*B bits, M*B/d bits per weight: 16 bits for 8 weights is 2 bits per weight, with 65536
points to choose from instead of 4^8 = 65536 combinations of a 2-bit grid placed on each axis. The gain is
that the points can sit where weight vectors actually are (a ball rather than a cube; a lattice's densest
packing; or a table learned from the layer itself).

Two kinds:

* **fixed** tables, part of the format like NF4's 16 levels: QuIP#'s E8P (``e8p``, 2 bits per weight) and its
  residual 3-bit version (``e8p_rvq3``: a second table of 256 points quantizes what the first missed). Only the
  codes and one float16 scale per tensor are stored.
* **learned** tables, fitted to each layer by a method (AQLM's additive codebooks, VPTQ's k-means): the tables
  travel with the tensor, so their float16 entries count in the bits per weight (``extra["codebooks"]``).

Layout of a QuantizedTensor of a codebook format: ``codes`` int64 (rows, vectors per row, M); ``scales`` float32
(rows, 1), (1, 1) or None; ``extra["codebooks"]`` float32 (M, K, d) for a learned table (fixed tables come from
the format); ``extra["vector_axis"]``: "in" when a vector runs along a row of W (d consecutive inputs), "out"
when it runs down a column (d consecutive outputs: the codes are then those of W^T). ``dequantize()`` puts the
vectors back; ``bits_per_weight`` counts codes, scales and learned tables.

A *scalar* member of the family, :class:`LookupTableFormat` (``any4``, ``any3``), has vectors of one weight
and one learned table per *row* (rather than per tensor), applied after a per-group scale and offset.

Codebook formats are not listed by :func:`qtutor.formats.names` (those have an element grid); they are listed
by :func:`qtutor.formats.codebook_formats` and chosen by the methods that fill them.
"""
from __future__ import annotations

import functools
import itertools
import math
from typing import Any

import numpy as np

from qtutor.backend import array_namespace
from qtutor.formats.base import Format, as_float32, check_finite
from qtutor.tensor import QuantizedTensor

TABLE_BITS = 16  # a learned codeword entry, and every scale, is stored as float16
AXES = ("in", "out")
SLICE = 8192  # vectors searched at once (the search holds 256 x 8 floats per vector)


# ---- QuIP#'s E8P lattice codebook ------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def e8p_magnitudes() -> np.ndarray:
    """The 256 magnitude patterns of E8P (float32, 256 x 8, entries in {1/2, 3/2, 5/2, 7/2}).

    227 are the distinct |x| of the points x of D8 + 1/2 (all coordinates half-integers, even sum) inside the
    ball ||x||^2 <= 10; 29 more of squared norm 12 (five 3/2 and three 1/2, chosen by QuIP# to fill 2^8) complete
    the table (QuIP#'s 2-bit file lists 13331133 twice; its 3-bit file has 29 distinct ones, taken here)."""
    # every |x| pattern of half-integers is reached by some x of even sum (one sign flip changes the sum by
    # the odd 2 a_i), so the patterns are those inside the ball, in lexicographic order
    patterns = np.array(list(itertools.product((0.5, 1.5, 2.5, 3.5), repeat=8)), dtype=np.float64)
    magnitudes = patterns[(patterns**2).sum(axis=1) <= 10]
    assert len(magnitudes) == 227
    threes = np.array([
        "31113333", "13113333", "11313333", "11133333", "33313311", "33313131", "33311331", "33313113",
        "33311313", "33311133", "33133311", "33133131", "33131331", "33133113", "33131313", "33131133",
        "31333311", "31333131", "31331331", "31333113", "31331313", "13331133", "13333311", "13333131",
        "13331331", "13333113", "13331313", "11331333", "33113331"], dtype=object)
    norm12 = np.array([[int(c) for c in row] for row in threes], dtype=np.float64) / 2
    table = np.concatenate([magnitudes, norm12]).astype(np.float32)
    table.setflags(write=False)
    return table


@functools.lru_cache(maxsize=None)
def e8p_table() -> np.ndarray:
    """All 2^16 points of E8P (float32, 65536 x 8), indexed as :func:`e8p_decode` reads a code.

    A code is 16 bits: the top 8 pick a magnitude pattern a, the next 7 the signs of coordinates 1..7 (bit set:
    negative), the lowest bit the shift (+1/4 if set, else -1/4). The sign of coordinate 0 is not stored: it
    is whatever makes the number of negative signs even when sum(a) is even and odd when it is odd, which keeps
    the signed vector in D8 + 1/2 (flipping one coordinate changes the sum by the odd integer 2 a_i). The table
    is D8 + 1/2, cut to 256 x 128 points, shifted by +-1/4: a subset of the E8 lattice (shifted by 1/4)."""
    table = e8p_decode(np.arange(2**16, dtype=np.int64))
    table.setflags(write=False)
    return table


def e8p_decode(codes: Any) -> np.ndarray:
    """The E8P points of ``codes`` (any shape of int), float32 with a trailing axis of 8."""
    codes = np.asarray(codes, dtype=np.int64)
    magnitude = e8p_magnitudes()[codes >> 8]
    negative = (codes[..., None] >> np.arange(7, 0, -1)) & 1  # bit 7 -> coordinate 1, ..., bit 1 -> coordinate 7
    odd_sum = np.mod(e8p_magnitudes().sum(axis=1), 2)[codes >> 8].astype(np.int64)
    first = (negative.sum(axis=-1) + odd_sum) & 1  # the first sign makes the count of negatives' parity right
    signs = 1 - 2 * np.concatenate([first[..., None], negative], axis=-1)
    shift = np.where(codes & 1, 0.25, -0.25)[..., None]
    return (magnitude * signs + shift).astype(np.float32)


def e8p_nearest(X: Any) -> tuple[Any, Any]:
    """(codes, points): the nearest E8P point to every row of ``X`` (n x 8), exactly, without the full table.

    For each shift t = +-1/4, y = x - t must go to the nearest signed magnitude pattern s * a. For a given a,
    ||y - s a||^2 = ||y||^2 + ||a||^2 - 2 sum_i s_i a_i y_i is smallest with s_i = sign(y_i), unless that gives
    the wrong parity of negative signs; then the one coordinate flipped is the one with the smallest a_i |y_i|.
    So 2 x 256 patterns are scored instead of 65536 points (QuIP#'s reference does the same with a table of
    sign patterns), and only the few whose score could still win get the parity correction."""
    xp = array_namespace(X)
    X = X.astype(np.float32)
    if len(X) > SLICE:
        parts = [e8p_nearest(X[start:start + SLICE]) for start in range(0, len(X), SLICE)]
        return xp.concatenate([c for c, _ in parts]), xp.concatenate([p for _, p in parts])
    magnitudes = xp.asarray(e8p_magnitudes())
    odd_sum = xp.asarray(np.mod(e8p_magnitudes().sum(axis=1), 2).astype(bool))
    norms = (magnitudes**2).sum(axis=1)
    best_score = best_code = best_point = None
    for shift_bit, shift in ((1, 0.25), (0, -0.25)):
        Y = X - np.float32(shift)
        Yabs = xp.abs(Y)
        # 2 sum_i a_i |y_i| - ||a||^2, the score with every sign right: an upper bound of the true score
        bound = 2 * (Yabs @ magnitudes.T) - norms[None, :]
        negatives = (Y < 0).sum(axis=1) % 2 == 1  # parity of the negatives with s_i = sign(y_i)
        # a parity mismatch costs 4 min_i a_i |y_i| <= 4 a_j |y_j| (j: the smallest |y_j|), so bound - that cost
        # on a mismatch is a lower bound; only patterns whose upper bound reaches the best lower bound can win,
        # and only they get the exact (penalised) score
        j = Yabs.argmin(axis=1)
        mismatch = negatives[:, None] != odd_sum[None, :]
        lower = bound - 4 * mismatch * (magnitudes.T[j] * Yabs[xp.arange(len(Y)), j][:, None])
        rows, candidates = xp.nonzero(bound >= lower.max(axis=1)[:, None])
        cheapest_cost = (Yabs[rows] * magnitudes[candidates]).min(axis=1)
        score = xp.full(bound.shape, -np.inf, dtype=np.float32)
        score[rows, candidates] = bound[rows, candidates] - 4 * mismatch[rows, candidates] * cheapest_cost
        pattern = score.argmax(axis=1)
        # minus the squared distance: ||y||^2 differs between the two shifts
        top = xp.take_along_axis(score, pattern[:, None], axis=1)[:, 0] - (Y**2).sum(axis=1)
        # the signs of that pattern: sign(y), with the cheapest coordinate flipped on a parity mismatch
        a = magnitudes[pattern]
        signs = xp.where(Y < 0, -1, 1).astype(np.int64)
        flip = negatives != odd_sum[pattern]
        cheapest = (Yabs * a).argmin(axis=1)
        rows = xp.arange(len(X))
        signs[rows, cheapest] = xp.where(flip, -signs[rows, cheapest], signs[rows, cheapest])
        sign_bits = ((signs[:, 1:] < 0).astype(np.int64) << xp.arange(7, 0, -1)).sum(axis=1)
        code = (pattern.astype(np.int64) << 8) | sign_bits | shift_bit
        point = (a * signs + np.float32(shift)).astype(np.float32)
        if best_score is None:
            best_score, best_code, best_point = top, code, point
        else:
            better = top > best_score
            best_code = xp.where(better, code, best_code)
            best_point = xp.where(better[:, None], point, best_point)
    return best_code, best_point


@functools.lru_cache(maxsize=None)
def e8_one_bit_table() -> np.ndarray:
    """QuIP#'s 256-point table for its 3-bit residual stage (float32, 256 x 8): the 241 points of E8 with
    ||x||^2 <= 2 (the origin and the 240 roots) and 15 of the 16 points +-2 e_i (not -2 e_8)."""
    integers = np.array(list(itertools.product((-1, 0, 1), repeat=8)), dtype=np.float64)  # |x_i| <= 1 here
    halves = np.array(list(itertools.product((-0.5, 0.5), repeat=8)), dtype=np.float64)  # +-3/2 is too long
    points = np.concatenate([integers, halves])
    keep = (np.mod(points.sum(axis=1), 2) == 0) & ((points**2).sum(axis=1) <= 2)
    axes = np.concatenate([2 * np.eye(8), -2 * np.eye(8)[:7]])
    table = np.concatenate([points[keep], axes]).astype(np.float32)
    assert table.shape == (256, 8)
    table.setflags(write=False)
    return table


def nearest_rows(X: Any, table: Any, norms: Any = None) -> tuple[Any, Any]:
    """(codes, points): the nearest row of ``table`` (K x d) to every row of ``X`` (n x d), by
    argmax 2 x.c - ||c||^2 (the same as argmin ||x - c||^2), in slices of rows to bound the memory.
    ``norms``: the ||c||^2 of the table, when the caller has them already."""
    xp = array_namespace(X)
    table = xp.asarray(table, dtype=np.float32)
    norms = (table**2).sum(axis=1) if norms is None else norms
    codes = xp.empty(len(X), dtype=np.int64)
    step = max(1, 2**22 // max(len(table), 1))
    for start in range(0, len(X), step):
        codes[start:start + step] = (2 * X[start:start + step] @ table.T - norms[None, :]).argmax(axis=1)
    return codes, table[codes]


# ---- the format ------------------------------------------------------------------------------------------------

class CodebookFormat(Format):
    """Vectors of ``vector_size`` weights, each the sum of ``codebooks`` codewords of ``codebook_bits`` bits,
    from fixed tables (``learned=False``: QuIP#'s lattices) or from tables stored with each tensor."""

    family = "codebook"
    symmetric_only = True
    default_group_size = -1  # one scale per row (or per tensor): the codewords carry the rest
    scale_bits = TABLE_BITS
    encodes_on_device = False

    def __init__(self, name: str, vector_size: int, codebook_bits: tuple[int, ...], learned: bool,
                 description: str, scale: float = 1.0, residual_scale: float = 1.0):
        self.name, self.description = name, description
        self.vector_size, self.codebook_bits, self.learned = vector_size, tuple(codebook_bits), learned
        self.codebooks = len(self.codebook_bits)
        self.bits = sum(self.codebook_bits) / vector_size  # code bits per weight
        self.scale, self.residual_scale = scale, residual_scale  # fixed tables: rms of W / scale -> table units

    @property
    def grid(self) -> np.ndarray:
        raise ValueError(f"{self.name} has no grid of numbers: its values are {self.vector_size}-dim vectors "
                         f"(see qtutor.formats.codebook)")

    # the fixed tables, one per stage, in table units (the residual stage's divided by residual_scale)
    def tables(self) -> list[np.ndarray]:
        if self.learned:
            raise ValueError(f"{self.name}'s tables are learned per tensor: they are in q.extra['codebooks']")
        tables = [e8p_table()]
        if self.codebooks > 1:
            tables.append(e8_one_bit_table() / np.float32(self.residual_scale))
        return tables

    def nearest(self, V: Any) -> tuple[Any, Any]:
        """(codes (n, M), points (n, d)): every row of ``V`` (in table units) coded stage by stage, each stage
        coding what the stages before it left (residual vector quantization)."""
        if self.learned:
            raise ValueError(f"{self.name}'s tables are learned: a method chooses its codes (aqlm, vptq)")
        xp = array_namespace(V)
        codes, total = [], xp.zeros_like(V, dtype=np.float32)
        for stage, table in enumerate(self.tables()):
            if stage == 0:
                code, point = e8p_nearest(V)
            else:
                code, point = nearest_rows(V - total, table)
            codes.append(code)
            total = total + point
        return xp.stack(codes, axis=1), total

    def encode(self, x: Any, group_size: Any = "default", sym: bool | None = None) -> QuantizedTensor:
        """Nearest-point coding of ``x`` with one scale per tensor: the RTN of a fixed codebook (rows of x are
        cut into vectors of ``vector_size``; QuIP# adds incoherence and LDLQ: :mod:`qtutor.methods.quip_sharp`)."""
        x = as_float32(x, self.name)
        check_vectors(x.shape, self.vector_size, self.name)
        check_finite(x, self.name, "a NaN or Inf would poison the tensor's scale")
        xp = array_namespace(x)
        scale = rms_scale(x, self.scale)
        codes, _ = self.nearest((x / scale).reshape(-1, self.vector_size))
        return self.tensor(codes.reshape(x.shape[0], -1, self.codebooks), xp.full((1, 1), scale, np.float32),
                           tuple(x.shape), "rtn")

    def tensor(self, codes: Any, scales: Any, shape: tuple[int, ...], method: str, codebooks: Any = None,
               vector_axis: str = "in", extra: dict | None = None) -> QuantizedTensor:
        """A QuantizedTensor of this format: codes (rows, vectors, M), scales (rows, 1) / (1, 1) / None, the
        learned ``codebooks`` (M, K, d), float16-rounded as stored."""
        if vector_axis not in AXES:
            raise ValueError(f"vector_axis must be one of {AXES}, not {vector_axis!r}")
        if self.learned:
            if codebooks is None:
                raise ValueError(f"{self.name} stores its learned tables with the tensor: give codebooks=(M, K, d)")
            codebooks = array_namespace(codebooks).asarray(codebooks, dtype=np.float16).astype(np.float32)
            expected = (self.codebooks, None, self.vector_size)
            if codebooks.ndim != 3 or codebooks.shape[0] != self.codebooks or codebooks.shape[2] != self.vector_size:
                raise ValueError(f"{self.name} takes codebooks of shape {expected}, not {tuple(codebooks.shape)}")
            for m, bits in enumerate(self.codebook_bits):
                if codebooks.shape[1] > 2**bits:
                    raise ValueError(f"codebook {m} of {self.name} has {codebooks.shape[1]} entries, more than "
                                     f"2^{bits}")
        if scales is not None:
            scales = array_namespace(scales).asarray(scales, dtype=np.float16).astype(np.float32)
        extra = {**(extra or {}), "vector_axis": vector_axis}
        if codebooks is not None:
            extra["codebooks"] = codebooks
        return QuantizedTensor(codes, scales, None, self.name, -1 if scales is None or scales.shape[0] > 1 else 0,
                               True, tuple(shape), method, extra)

    def decode(self, q: QuantizedTensor) -> Any:
        if q.fmt != self.name:
            raise ValueError(f"this QuantizedTensor is {q.fmt}, not {self.name}; call q.dequantize() instead")
        xp = array_namespace(q.codes)
        if self.learned:
            books = q.extra["codebooks"]
            vectors = sum(books[m][q.codes[..., m]] for m in range(self.codebooks))
        else:
            tables = self.tables()
            vectors = sum(xp.asarray(tables[m])[q.codes[..., m]] for m in range(self.codebooks))
        rows = vectors.reshape(vectors.shape[0], -1)
        if q.scales is not None:
            rows = rows * q.scales
        values = rows if q.extra.get("vector_axis", "in") == "in" else rows.T
        return xp.ascontiguousarray(values.reshape(q.shape), dtype=np.float32)

    def storage_bits(self, q: QuantizedTensor) -> int:
        """Codes (sum of the stages' bits per vector) + float16 scales + float16 learned tables (what the method
        stored besides, ``extra["side_bits"]``, QuIP#'s sign vectors, is added by QuantizedTensor)."""
        numel = math.prod(q.shape)
        bits = numel // self.vector_size * sum(self.codebook_bits)
        bits += 0 if q.scales is None else int(np.prod(q.scales.shape)) * TABLE_BITS
        if self.learned:
            bits += int(np.prod(q.extra["codebooks"].shape)) * TABLE_BITS
        return bits

    def bits_per_weight(self, shape: tuple[int, ...] = (4096, 4096), group_size: Any = "default",
                        sym: bool | None = None) -> float:
        """Code bits per weight (the fixed part; scales and learned tables depend on the tensor)."""
        return self.bits


def check_vectors(shape: tuple[int, ...], vector_size: int, name: str, axis: str = "in") -> None:
    """A clear error unless ``shape`` is a 2-D weight whose vectors (along ``axis``) fit exactly."""
    if len(shape) != 2 or 0 in shape:
        raise ValueError(f"{name} quantizes non-empty 2-D weights (out_features, in_features), not shape {shape}")
    length = shape[1] if axis == "in" else shape[0]
    if length % vector_size:
        side = "in_features" if axis == "in" else "out_features"
        raise ValueError(f"{name} cuts {side} into vectors of {vector_size}; {length} is not a multiple of "
                         f"{vector_size}")


def rms_scale(x: Any, target: float) -> float:
    """The per-tensor scale that brings x's root mean square to ``target`` (1 for an all-zero tensor)."""
    rms = float(array_namespace(x).sqrt((x.astype(np.float32) ** 2).mean()))
    return rms / target if rms > 0 else 1.0


# ---- a learned lookup table per row (any4) ---------------------------------------------------------------------

class LookupTableFormat(Format):
    """A *scalar* codebook: every weight a ``bits``-bit code into its row's own table of 2^bits numbers, the
    table applied after a per-group affine normalisation (any4, Elhoushi and Johnson 2025):

        w_hat[r, j] = s[r, g] * T[r, code[r, j]] + z[r, g]          g = j // group_size

    ``codes`` uint8 (rows, in_features); ``scales`` and ``zeros`` float32 (rows, groups), the scale s and the
    offset z; ``extra["tables"]`` float32 (rows, 2^bits). All three are float16-rounded as stored (16 bits each);
    the codes cost ``bits`` each. NF4 is the special case where every row's T is the same fixed table.
    A method fills the tables (:mod:`qtutor.methods.any4`); this format only stores and decodes them."""

    family = "codebook"
    symmetric_only = False
    default_group_size = 64  # the reference's default is 128; 64 also divides SmolLM2's rows of 576
    scale_bits = TABLE_BITS
    encodes_on_device = False
    learned = True
    vector_size = 1

    def __init__(self, name: str, bits: int, description: str):
        self.name, self.bits, self.description = name, bits, description
        self.entries = 2**bits

    @property
    def grid(self) -> np.ndarray:
        raise ValueError(f"{self.name} has no fixed grid: every row has its own learned table "
                         f"(q.extra['tables'])")

    def encode(self, x: Any, group_size: Any = "default", sym: bool | None = None) -> QuantizedTensor:
        raise ValueError(f"{self.name}'s tables are learned from the weights: use "
                         f"qt.quantize_tensor(W, {self.name!r}, method='any4')")

    def tensor(self, codes: Any, scales: Any, zeros: Any, tables: Any, shape: tuple[int, ...], group_size: int,
               method: str, extra: dict | None = None) -> QuantizedTensor:
        """A QuantizedTensor of this format, scales, offsets and tables float16-rounded as stored."""
        rows, groups = shape[0], shape[1] // group_length(group_size, shape, self.name)
        if tuple(tables.shape) != (rows, self.entries):
            raise ValueError(f"{self.name} takes tables of shape {(rows, self.entries)}, not {tuple(tables.shape)}")
        if tuple(scales.shape) != (rows, groups) or tuple(zeros.shape) != (rows, groups):
            raise ValueError(f"{self.name} takes scales and zeros of shape {(rows, groups)}")
        stored = [np.asarray(a, dtype=np.float16).astype(np.float32) for a in (scales, zeros, tables)]
        return QuantizedTensor(np.asarray(codes, dtype=np.uint8), stored[0], stored[1], self.name, group_size,
                               False, tuple(shape), method, {**(extra or {}), "tables": stored[2]})

    def decode(self, q: QuantizedTensor) -> Any:
        if q.fmt != self.name:
            raise ValueError(f"this QuantizedTensor is {q.fmt}, not {self.name}; call q.dequantize() instead")
        normalised = np.take_along_axis(q.extra["tables"], q.codes.astype(np.int64), axis=1)
        G = normalised.reshape(-1, group_length(q.group_size, q.shape, self.name))
        values = G * q.scales.reshape(-1, 1) + q.zeros.reshape(-1, 1)
        return np.ascontiguousarray(values.reshape(q.shape), dtype=np.float32)

    def storage_bits(self, q: QuantizedTensor) -> int:
        """Codes at ``bits`` + a float16 scale and offset per group + the rows' float16 tables."""
        numel = math.prod(q.shape)
        groups = numel // group_length(q.group_size, q.shape, self.name)
        return numel * self.bits + groups * 2 * TABLE_BITS + q.shape[0] * self.entries * TABLE_BITS

    def bits_per_weight(self, shape: tuple[int, ...] = (4096, 4096), group_size: Any = "default",
                        sym: bool | None = None) -> float:
        """bits + 32 / group_size + 16 * 2^bits / in_features: 4 + 0.5 + 0.0625 = 4.5625 for any4 g64 on a
        row of 4096, 4.94 on SmolLM2's rows of 576."""
        if group_size == "default":
            group_size = self.default_group_size
        group_size = group_length(group_size, shape, self.name)
        return self.bits + 2 * TABLE_BITS / group_size + self.entries * TABLE_BITS / shape[1]


LOOKUP_TABLES = {"any4": 4, "any3": 3}  # learned scalar tables per row: name -> code bits


def group_length(group_size: Any, shape: tuple[int, ...], name: str) -> int:
    """The weights per scale and offset: ``group_size`` N > 0 (a divisor of in_features) or -1 (a whole row)."""
    if len(shape) != 2 or 0 in shape:
        raise ValueError(f"{name} quantizes non-empty 2-D weights (out_features, in_features), not shape {shape}")
    if group_size == -1:
        return shape[1]
    if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) or group_size <= 0 \
            or shape[1] % group_size:
        divisors = [d for d in (32, 64, 128, 256) if shape[1] % d == 0] or [shape[1]]
        raise ValueError(f"{name} normalises groups of weights along each row; group_size={group_size!r} must "
                         f"divide in_features={shape[1]} (e.g. {', '.join(map(str, divisors))}), or be -1 for one "
                         "group per row")
    return int(group_size)


def make(name: str) -> Format:
    if name == "e8p":
        return CodebookFormat("e8p", 8, (16,), False, "QuIP#'s E8P: 8-dim vectors of the E8 lattice, 16-bit codes "
                              "(2 bits/weight)", scale=1.03)
    if name == "e8p_rvq3":
        return CodebookFormat("e8p_rvq3", 8, (16, 8), False, "QuIP#'s 3-bit E8P + a 256-point E8 residual stage",
                              scale=0.98, residual_scale=2.04)
    if name == "aqlm_2x8":
        return CodebookFormat("aqlm_2x8", 8, (8, 8), True, "AQLM: 8 weights as the sum of 2 codewords from 2 learned "
                              "tables of 256 (2 bits/weight + tables + a scale per row)")
    if name == "aqlm_1x16":
        return CodebookFormat("aqlm_1x16", 8, (16,), True, "AQLM: 8 weights as 1 codeword of a learned table of "
                              "65536 (2 bits/weight + a 8.4 Mbit table + a scale per row)")
    if name in LOOKUP_TABLES:
        bits, levels = LOOKUP_TABLES[name], 2 ** LOOKUP_TABLES[name]
        return LookupTableFormat(name, bits, f"{name}: a learned table of {levels} float16 values per row, after a "
                                 "per-group min/max scale and offset")
    # VPTQ's learned tables (qtutor.methods.vptq explains the choice of sizes and what the tables cost)
    if name == "vptq_v8_2bit":
        return CodebookFormat("vptq_v8_2bit", 8, (8, 8), True, "VPTQ: vectors of 8 outputs, a 256-entry k-means "
                              "table + a 256-entry residual table (2 bits/weight + tables)")
    if name == "vptq_v4_3bit":
        return CodebookFormat("vptq_v4_3bit", 4, (6, 6), True, "VPTQ: vectors of 4 outputs, a 64-entry k-means "
                              "table + a 64-entry residual table (3 bits/weight + tables)")
    raise ValueError(f"unknown codebook format {name!r}")
