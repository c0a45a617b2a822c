"""ggml's block types (llama.cpp's Q4_0 ... Q8_0, MXFP4, the K-quants Q2_K ... Q6_K, the non-linear IQ4_NL and
IQ4_XS, the ternary TQ1_0 and TQ2_0, the lattice i-quants IQ3_XXS ... IQ1_M) as number formats.

    fmt = qt.formats.get("Q4_K")             # a Format like int4 or nf4, with its own fixed block
    q = fmt.encode(W)                        # codes = the bytes llama.cpp stores, (rows, bytes per row)
    W_hat = q.dequantize()                   # float32 (rows, cols)
    data = ggml.quantize(W, "Q4_K")          # the same bytes as a plain uint8 array; ggml.dequantize(data, "Q4_K")

A ggml type differs from the element formats in one way: its scales are not a separate array but bytes inside
each block, next to the packed codes (``layouts`` declares every block; ``legacy``, ``kquants``, ``iquants`` and
the lattice types' ``iq3``, ``iq2``, ``iq1`` (their grids: ``lattice``) fill them).
So a QuantizedTensor of a ggml type keeps the raw block bytes in ``codes`` and nothing in ``scales``; its size
is the size of those bytes. Which tensor of a model gets which type (Q4_K_M and the other mixes) is a
*method*: :mod:`qtutor.methods.gguf`.

Rows are quantized block by block along the input dimension (the last axis), so a row length must be a
multiple of the block (32, or 256 for the K-quants).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from qtutor.formats.base import Format, as_float32, check_finite
from qtutor.formats.ggml import iq1, iq2, iq3, iquants, kquants, legacy
from qtutor.formats.ggml.layouts import BLOCK, WEIGHTS_PER_BLOCK, bits_per_weight
from qtutor.tensor import QuantizedTensor

TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "MXFP4", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
         "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "IQ3_XXS", "IQ3_S", "IQ2_XXS", "IQ2_XS", "IQ2_S",
         "IQ1_S", "IQ1_M")
KERNEL_TYPES = TYPES[:11]  # the types kernels/gguf.cu dequantizes on a GPU (the others decode on the host)
# the types that store no minimum (no offset) per block
SYMMETRIC = ("Q4_0", "Q5_0", "Q8_0", "MXFP4", "Q3_K", "Q6_K", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "IQ3_XXS", "IQ3_S",
             "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ1_S", "IQ1_M")
CODE_BITS = {"MXFP4": 4, "IQ4_NL": 4, "IQ4_XS": 4, "TQ1_0": 2, "TQ2_0": 2, "IQ3_XXS": 3, "IQ3_S": 3,
             "IQ2_XXS": 2, "IQ2_XS": 2, "IQ2_S": 2, "IQ1_S": 1, "IQ1_M": 1}  # else Q's digit
# every type's quantizer (blocks, imatrix) and dequantizer (structured blocks -> float32 (n_blocks, weights))
QUANTIZERS = {**kquants.QUANTIZE, **iquants.QUANTIZE, **iq3.QUANTIZE, **iq2.QUANTIZE, **iq1.QUANTIZE}
DEQUANTIZERS = {**kquants.DEQUANTIZE, **iquants.DEQUANTIZE, **iq3.DEQUANTIZE, **iq2.DEQUANTIZE,
                **iq1.DEQUANTIZE}
TAKES_IMATRIX = (*legacy.WEIGHTED, *kquants.QUANTIZE, *iquants.TAKES_IMATRIX, *iq3.QUANTIZE, *iq2.QUANTIZE, *iq1.QUANTIZE)
# quantized only with an importance matrix: ggml's IQ2_XXS, IQ2_XS and IQ1_S need one
# (ggml_quantize_requires_imatrix); its IQ2_S and IQ1_M fall back to weights of their own, a path llama.cpp never
# takes (llama-quantize refuses these types without a matrix) and qtutor does not reproduce
REQUIRES_IMATRIX = ("IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ1_S", "IQ1_M")


def type_names() -> list[str]:
    return list(TYPES)


def check_type(name: str) -> str:
    key = str(name).upper()
    if key not in TYPES:
        raise ValueError(f"unknown ggml type {name!r}; the block types are: {', '.join(TYPES)} "
                         f"(mixes such as Q4_K_M are applied to whole models: qtutor.methods.gguf.mixes)")
    return key


def block_info(name: str) -> tuple[int, int, float]:
    """(weights per block, bytes per block, bits per weight) of a ggml type."""
    key = check_type(name)
    return WEIGHTS_PER_BLOCK[key], BLOCK[key].itemsize, bits_per_weight(key)


def _as_rows(W: Any, key: str) -> np.ndarray:
    W = as_float32(W, key)
    W = np.asarray(W.get() if hasattr(W, "get") else W)
    if W.ndim == 1:
        W = W[None, :]
    if W.ndim != 2:
        raise ValueError(f"{key}: expected a 2-D weight (rows, cols), got shape {W.shape}")
    block = WEIGHTS_PER_BLOCK[key]
    if W.shape[1] % block:
        raise ValueError(f"{key}: the row length {W.shape[1]} is not a multiple of its block of {block} weights; "
                         f"llama.cpp stores such a tensor in a 32-weight type (qtutor.methods.gguf.mixes.FALLBACK)")
    check_finite(W, key, "llama.cpp cannot store NaN/Inf in a quantized block")
    return W


def quantize(W: Any, type_name: str, imatrix: Any = None) -> np.ndarray:
    """ggml bytes of ``W`` (rows x cols, float32): uint8 array (rows, cols / block * bytes per block).

    ``imatrix``: per-column importance (mean squared activation of each input), for the K-quants and i-quants
    (TAKES_IMATRIX); the IQ1 and IQ2 types need one (REQUIRES_IMATRIX)."""
    key = check_type(type_name)
    W = _as_rows(W, key)
    rows, cols = W.shape
    blocks = W.reshape(-1, WEIGHTS_PER_BLOCK[key])
    if imatrix is not None:
        if not takes_imatrix(key):
            raise ValueError(f"{key}: ggml does not use an importance matrix for this type; it applies to "
                             f"{', '.join(TAKES_IMATRIX)}")
        imatrix = check_imatrix(imatrix, cols)
    elif key in REQUIRES_IMATRIX:
        raise ValueError(f"{key}: ggml (and llama.cpp) quantize {key} only with an importance matrix, one entry "
                         f"per input column: at these bits an unweighted fit ruins the layer. Get one with "
                         f"importance_matrix(X) from the layer's inputs X, or `qtutor imatrix --model M OUT`")
    if key in legacy.WEIGHTED and imatrix is not None:
        structured = legacy.quantize_weighted(blocks, key, imatrix)
    elif key in legacy.QUANTIZE:
        structured = legacy.QUANTIZE[key](blocks)
    else:
        structured = QUANTIZERS[key](blocks, imatrix=imatrix)
    return structured.view(np.uint8).reshape(rows, -1)


def dequantize(data: Any, type_name: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    """float32 weights of ggml bytes (rows x bytes per row, or flat with ``shape``)."""
    key = check_type(type_name)
    from qtutor.backend import is_cupy

    if is_cupy(data):
        return _gpu_dequantize(data, key, shape)
    data = np.ascontiguousarray(np.asarray(data, dtype=np.uint8))
    size = BLOCK[key].itemsize
    if data.size % size:
        raise ValueError(f"{key}: {data.size} bytes is not a whole number of {size}-byte blocks "
                         f"(truncated or not {key} data)")
    structured = data.reshape(-1).view(BLOCK[key])
    if key in legacy.QUANTIZE:
        values = legacy.dequantize(structured, key)
    else:
        values = DEQUANTIZERS[key](structured)
    rows = shape[0] if shape is not None else (data.shape[0] if data.ndim == 2 else 1)
    out = values.astype(np.float32).reshape(rows, -1)
    if shape is not None and out.shape != tuple(shape):
        raise ValueError(f"{key}: the bytes hold {out.size} weights, not the {shape} asked for")
    return out


def _gpu_dequantize(data: Any, key: str, shape: tuple[int, int] | None) -> Any:
    """kernels/gguf.cu: one thread per weight, bit-exact with the NumPy dequantizers."""
    import cupy

    from qtutor.kernels import THREADS, blocks_for, function

    if key not in KERNEL_TYPES:  # no kernel for it yet: decoded on the host, the result moved to the device
        return cupy.asarray(dequantize(data.get(), key, shape))
    data = cupy.ascontiguousarray(data, dtype=cupy.uint8)
    weights, size = WEIGHTS_PER_BLOCK[key], BLOCK[key].itemsize
    if data.size % size:
        raise ValueError(f"{key}: {data.size} bytes is not a whole number of {size}-byte blocks")
    n = data.size // size * weights
    out = cupy.empty(n, dtype=cupy.float32)
    function("gguf", "gguf_dequantize")((blocks_for(n),), (THREADS,),
                                        (data, np.int64(n), np.int32(TYPES.index(key)), np.int32(weights),
                                         np.int32(size), out))
    rows = shape[0] if shape is not None else (data.shape[0] if data.ndim == 2 else 1)
    return out.reshape(rows, -1)


def quantize_tensor(W: Any, type_name: str, imatrix: Any = None) -> QuantizedTensor:
    """``W`` as a QuantizedTensor of ggml type ``type_name`` (``codes``: its block bytes, rows x bytes per row)."""
    key = check_type(type_name)
    data = quantize(W, key, imatrix)
    shape = (data.shape[0], data.shape[1] // BLOCK[key].itemsize * WEIGHTS_PER_BLOCK[key])
    return QuantizedTensor(data, None, None, format_name(key), WEIGHTS_PER_BLOCK[key], key in SYMMETRIC, shape,
                           "gguf", {"imatrix": imatrix is not None})


def takes_imatrix(type_name: str) -> bool:
    """Whether qtutor's quantizer of this type uses an importance matrix (as ggml's does, byte for byte)."""
    return check_type(type_name) in TAKES_IMATRIX


def check_imatrix(imatrix: Any, columns: int) -> np.ndarray:
    """The importance matrix as float32, one finite non-negative entry per input column, or a clear error."""
    imatrix = np.asarray(imatrix, dtype=np.float32).ravel()
    if imatrix.size != columns:
        raise ValueError(f"imatrix has {imatrix.size} entries; it needs one per input column ({columns}): compute it "
                         "from this layer's own inputs (importance_matrix(X))")
    if not np.isfinite(imatrix).all() or (imatrix < 0).any():
        raise ValueError("imatrix entries must be finite and >= 0 (means of squared activations); recompute it "
                         "with importance_matrix(X) from finite calibration inputs")
    return imatrix


def importance_matrix(X: Any) -> np.ndarray:
    """llama.cpp's importance matrix of a layer: the mean of x_j^2 over calibration tokens, per input column."""
    X = np.asarray(X, dtype=np.float32)
    return (X.astype(np.float64) ** 2).mean(axis=0).astype(np.float32)


def format_name(key: str) -> str:
    """The qtutor format name of a ggml type: the type itself, but ggml's MXFP4 block is ``ggml_mxfp4``
    (``mxfp4`` is the OCP format: the same numbers, its scales kept apart from the codes)."""
    return "ggml_mxfp4" if key == "MXFP4" else key


class GGMLType(Format):
    """One ggml block type as a Format: ``encode`` writes whole blocks, ``decode`` reads them back.

    Its granularity is its block (32 or 256 weights along a row) and cannot be changed; its scales live inside
    the blocks. It has no element-wise rounding of its own (a K-quant's sub-block scales come from a small
    search over the whole block), so a method that rounds one column at a time against a format's grid (GPTQ)
    needs an element format such as int4 instead; methods that encode whole tensors (RTN, AWQ, rotation) take
    a block type as they take any format."""

    family = "ggml"
    encodes_on_device = False  # the block searches are NumPy (only decoding has a kernel)

    def __init__(self, key: str):
        self.key, self.name = key, format_name(key)
        self.block, self.block_bytes, self.bpw = block_info(key)
        self.bits = CODE_BITS.get(key) or int(key[1])  # width of one code
        self.default_group_size = self.block
        self.symmetric_only = key in SYMMETRIC
        self.description = f"ggml block type: {self.block} weights in {self.block_bytes} bytes"

    def _no_elements(self, *_args, **_kwargs):
        raise TypeError(f"{self.name} is a ggml block type: it quantizes whole blocks of {self.block} weights "
                        f"(encode), with no element grid of its own; use an element format such as int4 here")

    grid = property(_no_elements)
    cast = values = find_params = quantize = dequantize = _no_elements

    def resolve_sym(self, sym: bool | None) -> bool:
        if sym is not None:
            raise ValueError(f"{self.name}'s blocks define whether they store a minimum; leave sym out")
        return self.symmetric_only

    def encode(self, x: Any, group_size: int | None = "default", sym: bool | None = None,
               imatrix: Any = None) -> QuantizedTensor:
        """The ggml blocks of ``x (rows, cols)``; ``imatrix`` (one importance per column) for the K- and i-quants."""
        self.resolve_sym(sym)
        if group_size not in ("default", self.block):
            raise ValueError(f"{self.name} has fixed blocks of {self.block} weights along a row; "
                             f"group_size={group_size!r} does not apply (leave it out)")
        return quantize_tensor(x, self.key, imatrix)

    def decode(self, q: QuantizedTensor) -> Any:
        if q.fmt != self.name:
            raise ValueError(f"this QuantizedTensor is {q.fmt}, not {self.name}; call q.dequantize() instead")
        return dequantize(q.codes, self.key, q.shape)

    def storage_bits(self, q: QuantizedTensor) -> int:
        return int(q.codes.size) * 8

    def bits_per_weight(self, shape: tuple[int, ...] = (4096, 4096), group_size: int | None = "default",
                        sym: bool | None = None) -> float:
        return self.bpw


def make(name: str) -> GGMLType:
    return GGMLType(check_type(name.removeprefix("ggml_")))


__all__ = ["GGMLType", "TYPES", "block_info", "check_type", "dequantize", "importance_matrix", "quantize",
           "quantize_tensor", "takes_imatrix", "type_names"]
