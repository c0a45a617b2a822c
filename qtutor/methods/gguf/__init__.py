"""GGUF / llama.cpp quantization: ggml's block types, the K-quant mixes, and .gguf export.

    data = gguf.quantize(W, "Q4_K")          # uint8 (rows, bytes per row): exactly the bytes llama.cpp stores
    W_hat = gguf.dequantize(data, "Q4_K")    # float32 (rows, cols)
    q = gguf.quantize_tensor(W, "Q4_K")      # a QuantizedTensor (codes = those bytes) for the rest of qtutor

Files: ``layouts`` (the byte layout of every type — read it first), ``legacy`` (Q4_0 ... Q8_0, MXFP4),
``kquants`` (Q2_K ... Q6_K), ``mixes`` (Q4_K_M and friends: which tensor gets which type), ``export``
(writing a .gguf file llama.cpp can run).

Rows are quantized block by block along the input dimension (the last axis), so a row length must be a
multiple of the block size (32, or 256 for K-quants); llama.cpp falls back to a legacy type for a tensor
whose rows are not (``mixes.fallback_type``).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from qtutor.methods import Method
from qtutor.methods.gguf import kquants, legacy
from qtutor.methods.gguf.layouts import BLOCK, WEIGHTS_PER_BLOCK, bits_per_weight
from qtutor.methods.gguf.mixes import check_mix
from qtutor.tensor import QuantizedTensor

TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "MXFP4", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")


def type_names() -> list[str]:
    return list(TYPES)


def check_type(name: str) -> str:
    key = str(name).upper()
    if key not in BLOCK:
        raise ValueError(f"unknown ggml type {name!r}; the block types are: {', '.join(TYPES)} "
                         f"(mixes such as Q4_K_M are applied to whole models: qtutor.methods.gguf.mixes)")
    return key


def block_info(name: str) -> tuple[int, int, float]:
    """(weights per block, bytes per block, bits per weight) of a ggml type."""
    key = check_type(name)
    return WEIGHTS_PER_BLOCK[key], BLOCK[key].itemsize, bits_per_weight(key)


def _as_rows(W: Any, key: str) -> np.ndarray:
    from qtutor.formats.base import as_float32, check_finite

    W = as_float32(W, key)
    W = np.asarray(W.get() if hasattr(W, "get") else W)
    if W.ndim == 1:
        W = W[None, :]
    if W.ndim != 2:
        raise ValueError(f"{key}: expected a 2-D weight (rows, cols), got shape {W.shape}")
    block = WEIGHTS_PER_BLOCK[key]
    if W.shape[1] % block:
        raise ValueError(f"{key}: the row length {W.shape[1]} is not a multiple of its block of {block} weights; "
                         f"llama.cpp would use {_fallback_hint(key)} for this tensor (mixes.fallback_type)")
    check_finite(W, key, "llama.cpp cannot store NaN/Inf in a quantized block")
    return W


def _fallback_hint(key: str) -> str:
    from qtutor.methods.gguf.mixes import FALLBACK

    return FALLBACK.get(key, "F16")


def quantize(W: Any, type_name: str, imatrix: Any = None) -> np.ndarray:
    """ggml bytes of ``W`` (rows x cols, float32): uint8 array (rows, cols / block * bytes per block).

    ``imatrix``: per-column importance (mean squared activation of each input), K-quants only."""
    key = check_type(type_name)
    W = _as_rows(W, key)
    rows, cols = W.shape
    blocks = W.reshape(-1, WEIGHTS_PER_BLOCK[key])
    if key in legacy.QUANTIZE:
        if imatrix is not None:
            raise ValueError(f"{key}: the importance matrix applies to the K-quants only (Q2_K ... Q6_K)")
        structured = legacy.QUANTIZE[key](blocks)
    else:
        if imatrix is not None:
            imatrix = np.asarray(imatrix, dtype=np.float32).ravel()
            if imatrix.size != cols:
                raise ValueError(f"imatrix has {imatrix.size} entries; it needs one per input column ({cols})")
        structured = kquants.QUANTIZE[key](blocks, imatrix=imatrix)
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
    values = legacy.dequantize(structured, key) if key in legacy.QUANTIZE else kquants.DEQUANTIZE[key](structured)
    rows = shape[0] if shape is not None else (data.shape[0] if data.ndim == 2 else 1)
    out = values.astype(np.float32).reshape(rows, -1)
    if shape is not None and out.shape != tuple(shape):
        raise ValueError(f"{key}: the bytes hold {out.size} weights, not the {shape} asked for")
    return out


def _gpu_dequantize(data: Any, key: str, shape: tuple[int, int] | None) -> Any:
    """kernels/gguf.cu: one thread per weight, bit-exact with the NumPy dequantizers."""
    import cupy

    from qtutor.kernels import THREADS, blocks_for, function

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


class GGUFTensor(QuantizedTensor):
    """A QuantizedTensor whose ``codes`` are ggml block bytes (rows x bytes per row)."""

    def dequantize(self):
        return dequantize(self.codes, self.fmt, self.shape)

    @property
    def nbytes(self) -> float:
        return float(self.codes.size)

    @property
    def bits_per_weight(self) -> float:
        return self.codes.size * 8 / (self.shape[0] * self.shape[1])


def quantize_tensor(W: Any, type_name: str, imatrix: Any = None) -> GGUFTensor:
    key = check_type(type_name)
    data = quantize(W, key, imatrix)
    shape = (data.shape[0], data.shape[1] // BLOCK[key].itemsize * WEIGHTS_PER_BLOCK[key])
    return GGUFTensor(data, None, None, key, WEIGHTS_PER_BLOCK[key], True, shape, "gguf",
                      {"imatrix": imatrix is not None})


def importance_matrix(X: Any) -> np.ndarray:
    """llama.cpp's importance matrix of a layer: the mean of x_j^2 over calibration tokens, per input column."""
    X = np.asarray(X, dtype=np.float32)
    return (X.astype(np.float64) ** 2).mean(axis=0).astype(np.float32)


# As a method of a whole model, GGUF is a replacement: ``fmt`` names a mix (Q4_K_M ...) that gives each tensor its
# block type, and every weight, the tied embedding too, becomes what its blocks decode to (qtutor.model.phases)
METHOD = Method("gguf", replace="gguf_mix", check_fmt=check_mix)

__all__ = ["GGUFTensor", "TYPES", "block_info", "dequantize", "importance_matrix", "quantize", "quantize_tensor",
           "type_names"]
