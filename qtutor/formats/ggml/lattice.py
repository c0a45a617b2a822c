"""The grids of ggml's lattice i-quants, and the neighbour lists their quantizers search.

Below 4 bits, rounding each weight on its own wastes the bits: at 2 bits a weight has four levels, and most
combinations of eight rounded weights are never the best description of eight real weights. ggml's i-quants
(IQ3_XXS ... IQ1_M) round *groups* of weights at once, to the nearest point of a small fixed set, a grid:

    IQ2_XXS  256 points of 8 magnitudes in {8, 25, 43}       an 8-bit index per 8 weights
    IQ2_XS   512 points                                      9 bits
    IQ2_S   1024 points                                     10 bits
    IQ3_XXS  256 points of 4 magnitudes in {4, 12, ..., 62}  8 bits per 4 weights
    IQ3_S    512 points of 4 magnitudes in {1, 3, ..., 15}   9 bits
    IQ1_S / IQ1_M  2048 points of 8 values in {-1, 0, +1}    11 bits per 8 weights

Why this works: the points are not all 3^8 = 6561 combinations of three magnitudes but the few hundred that
real (normalized) weight groups fall near most often. They are chosen from the E8 lattice, the densest packing
of spheres in 8 dimensions, whose points (with all coordinates of one parity and an even coordinate sum) cover
space more evenly than a cube of independent levels: the same bits give a smaller average distance to the
nearest point. The signs are stored apart from the magnitudes (|x| is matched against the grid, which is why
its values are positive), and 7 sign bits cover 8 weights: the eighth sign is fixed by making the count of
negative signs even, the parity of E8's points; the quantizer flips the least important weight when needed.

The quantizer works with each coordinate's level index l (0 .. 2 in the 2-bit grids and IQ1's, 0 .. 7 in
IQ3's): it rounds |x| / d to the nearest odd integer 2l + 1, d a trial scale of the group. A rounded
group is first looked up by its *key*, sum_k l_k << (bits * k); if the key is not a point of the grid, ggml
searches a precomputed list of neighbours: every grid point at the ``nwant`` smallest squared distances from the
rounded point (``iq2xs_init_impl`` / ``iq3xs_init_impl``), and picks the one with the smallest weighted error.
This module builds those tables once, in the same order as ggml (by distance, then by grid index), since the
first of equally good candidates wins and the bytes depend on it.

The grids are the format's data, read from gguf-py's tables (the same points as ggml-common.h's iq2xxs_grid ...).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from qtutor.formats.ggml.kquants import F32

# type -> (gguf-py class holding its grid, bits of a coordinate in a key, nwant: distance shells searched)
GRIDS = {"IQ2_XXS": ("IQ2_XXS", 2, 2), "IQ2_XS": ("IQ2_XS", 2, 2), "IQ2_S": ("IQ2_S", 2, 1),
         "IQ3_XXS": ("IQ3_XXS", 3, 2), "IQ3_S": ("IQ3_S", 3, 3),
         "IQ1_S": ("IQ1_S", 2, 3), "IQ1_M": ("IQ1_S", 2, 3)}


def key(levels: np.ndarray, bits: int) -> np.ndarray:
    """ggml's index of rounded points: sum_k l_k << (bits * k) over the last axis (level indices l_k)."""
    levels = np.asarray(levels).astype(np.int64)
    shifts = bits * np.arange(levels.shape[-1], dtype=np.int64)
    return (levels << shifts).sum(axis=-1)


def _grid_levels(source: str) -> tuple[np.ndarray, np.ndarray]:
    """(level indices (n, dims) uint8, values (n, dims) float32) of gguf-py's grid of ``source``.

    gguf-py keeps a grid as hexadecimal text of bytes; each byte packs the level indices of 2 or 4 coordinates,
    lowest bits first, and ``grid_map`` gives each level's value."""
    import gguf.quants as gq

    table = getattr(gq, source)
    n_points, dims = table.grid_shape
    bits = int(np.ceil(np.log2(len(table.grid_map))))
    per_byte = 8 // bits
    packed = np.frombuffer(bytes.fromhex(table.grid_hex.decode("ascii")), dtype=np.uint8)
    shifts = np.arange(per_byte, dtype=np.uint8) * (8 // per_byte)  # 3-bit levels take a nibble each
    levels = ((packed[:, None] >> shifts[None, :]) & ((1 << bits) - 1)).reshape(n_points, dims)
    values = np.asarray(table.grid_map, dtype=np.float32)[levels]
    return levels.astype(np.uint8), values


def checked_imatrix(x: np.ndarray, imatrix: np.ndarray | None, name: str, required: bool = True) -> np.ndarray | None:
    """The importance matrix of super-blocks ``x`` as float32 (None when not given and not ``required``), or a
    ValueError that says what is wrong and how to get a right one. (Entries that are negative or not finite are
    refused by ``qtutor.formats.ggml.check_imatrix``, which knows the row length.)"""
    if imatrix is None:
        if required:
            raise ValueError(f"{name} needs an importance matrix: llama.cpp refuses to quantize {name} without an "
                             "importance matrix (at these bits the fit must know which weights matter). Compute one "
                             "with `qtutor imatrix --model M OUT` for a whole model, or "
                             "qt.formats.ggml.importance_matrix(X) from one layer's inputs X, and pass it as imatrix")
        return None
    imatrix = np.asarray(imatrix, dtype=F32).ravel()
    if imatrix.size == 0 or imatrix.size % 256 or x.size % imatrix.size:
        raise ValueError(f"{name}: an imatrix of {imatrix.size} entries does not fit these {len(x)} super-blocks "
                         f"of 256; it needs one entry per input column, a multiple of 256 that divides {x.size} "
                         "(compute it from this layer's own inputs: importance_matrix(X))")
    return imatrix


# ---- signs: matched as magnitudes, stored as bits, an even count of minus signs ---------------------------------
def split_signs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(|x|, x < 0): the magnitudes the grid is matched against and the sign bits stored beside them."""
    positive = x >= 0
    return np.where(positive, x, -x).astype(F32), ~positive


def even_sign_parity(magnitude: np.ndarray, negative: np.ndarray, x: np.ndarray,
                     weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Make the count of negative signs of every group of 8 (last axis) even, so that 7 sign bits store them.

    A group with an odd count flips the sign of its least important weight (smallest w x^2, the first on a tie):
    that weight is then fitted as -|x|, which is what dequantization will give it back."""
    odd = (negative.sum(axis=-1) % 2) == 1
    least = np.argmin((weight * x).astype(F32) * x, axis=-1)
    flip = odd[..., None] & (np.arange(8) == least[..., None])
    return np.where(flip, -magnitude, magnitude).astype(F32), negative ^ flip


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """The bits along the last axis as one integer, bit i = element i."""
    return (bits.astype(np.uint32) << np.arange(bits.shape[-1], dtype=np.uint32)).sum(axis=-1, dtype=np.uint32)


# ---- rounding to the grid --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """One type's grid and ggml's lookup tables for it (see the module docstring)."""

    type_name: str
    levels: np.ndarray  # (n_points, dims) uint8: each coordinate's level index l
    values: np.ndarray  # (n_points, dims) float32: what dequantization multiplies by the scale
    bits: int  # bits per coordinate in a key
    nwant: int  # distance shells in a neighbour list
    index_of: np.ndarray  # (n_keys,) int32: grid index of a key, -1 off the grid
    neighbour_start: np.ndarray  # (n_keys,) int32: where a key's neighbour list starts in neighbour_flat
    neighbour_count: np.ndarray  # (n_keys,) int32: its length (0 for keys on the grid)
    neighbour_flat: np.ndarray  # int32: all lists, one after another

    @property
    def points(self) -> np.ndarray:
        """(n_points, dims) int8: 2 l + 1, the odd integers ggml's quantizer measures distances between."""
        return (2 * self.levels.astype(np.int8) + 1).astype(np.int8)

    @property
    def dims(self) -> int:
        return self.levels.shape[1]

    def candidates(self, keys: np.ndarray) -> np.ndarray:
        """The neighbour lists of many keys at once: (len(keys), longest list) int32, padded with -1."""
        keys = np.asarray(keys, dtype=np.int64).ravel()
        count = self.neighbour_count[keys]
        width = max(int(count.max(initial=0)), 1)
        position = np.arange(width)[None, :]
        index = self.neighbour_start[keys][:, None] + position
        inside = position < count[:, None]
        return np.where(inside, self.neighbour_flat[np.where(inside, index, 0)], -1).astype(np.int32)


def _neighbour_lists(points: np.ndarray, index_of: np.ndarray, bits: int, nwant: int, top_level: int):
    """ggml's neighbour lists of every off-grid key whose levels are all <= top_level (the quantizers clamp
    each level to the grid's range, so no other key is ever looked up)."""
    dims = points.shape[1]
    n_keys = len(index_of)
    start = np.zeros(n_keys, np.int32)
    count = np.zeros(n_keys, np.int32)
    grids = np.stack(np.meshgrid(*[np.arange(top_level + 1)] * dims, indexing="ij"), -1).reshape(-1, dims)
    keys = key(grids, bits)
    off_grid = index_of[keys] < 0
    keys, grids = keys[off_grid], grids[off_grid]
    order = np.argsort(keys)
    keys, grids = keys[order], grids[order]
    grid_points = points.astype(np.int32)
    flat, position = [], 0
    for chunk in range(0, len(keys), 512):
        rounded = 2 * grids[chunk:chunk + 512].astype(np.int32) + 1
        distance = ((grid_points[None, :, :] - rounded[:, None, :]) ** 2).sum(-1)  # (chunk, n_points)
        shells = np.sort(distance, axis=1)
        for row, k in enumerate(keys[chunk:chunk + 512]):
            distinct = np.unique(shells[row])[:nwant]
            chosen = np.flatnonzero(np.isin(distance[row], distinct))
            chosen = chosen[np.lexsort((chosen, distance[row][chosen]))]  # by distance, then by grid index
            start[k], count[k] = position, len(chosen)
            flat.append(chosen)
            position += len(chosen)
    return start, count, np.concatenate(flat).astype(np.int32)


@cache
def grid(type_name: str) -> Grid:
    """The grid of a lattice type (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M), built once."""
    if type_name not in GRIDS:
        raise ValueError(f"{type_name!r} has no grid; the lattice types are {', '.join(GRIDS)}")
    source, bits, nwant = GRIDS[type_name]
    levels, values = _grid_levels(source)
    n_keys = 1 << (bits * levels.shape[1])
    index_of = np.full(n_keys, -1, np.int32)
    index_of[key(levels, bits)] = np.arange(len(levels), dtype=np.int32)
    top_level = int(levels.max())
    points = (2 * levels.astype(np.int32) + 1)
    start, count, flat = _neighbour_lists(points, index_of, bits, nwant, top_level)
    return Grid(type_name, levels, values, bits, nwant, index_of, start, count, flat)
