"""LLM.int8(): 8-bit matrix multiplication with the outlier features kept in 16 bits.

Dettmers, Lewis, Belkada, Zettlemoyer, "LLM.int8(): 8-bit Matrix Multiplication for Transformers at Scale",
2022, arXiv:2208.07339 (reference code: bitsandbytes, ``MatMul8bitLt`` and ``int8_vectorwise_quant``).

Vector-wise quantization. For Y = A W^T with activations A (tokens x in) and weights W (out x in), give every
row of A and every row of W (every output channel) its own absmax scale:

    CA = round(127 A / a),    a_t = max_k |A_tk|          (one scale per token,  computed on the fly)
    CB = round(127 W / b),    b_o = max_k |W_ok|          (one scale per output, computed once)
    Y  ~ (CA CB^T)_int32 * a b^T / 127^2

Mixed-precision decomposition. In models past ~6.7 B parameters a handful of *feature dimensions* (columns
of A) carry values up to 20x larger than the rest, in almost every token. One such value sets a_t for its
whole row and crushes every other value of the row into a few codes. LLM.int8() splits the product:

    outlier columns  O = { k : |A_tk| >= threshold for some token t }          (threshold 6.0)
    Y = int8 product over the columns not in O   +   16-bit product A[:, O] W[:, O]^T

and the row scales a_t leave the outlier values out. Typically < 0.1 % of the columns are
outliers, so almost all of the work stays in INT8.

qtutor keeps the paper's choice of 16-bit *original* weights for the outlier columns (bitsandbytes >= 0.45 uses
int8-dequantized weights there instead: ``outlier_weights="int8"`` reproduces that). Rounding is half to
even (torch.round). The float16 path is simulated in float32 here; the difference is below float16 precision.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from qtutor.backend import array_namespace
from qtutor.methods import Method
from qtutor.tensor import QuantizedTensor

DEFAULT_THRESHOLD = 6.0


@dataclass(frozen=True)
class Int8Weight:
    """W stored vector-wise: int8 codes CB (out x in) and one float32 absmax per output channel."""

    CB: Any
    absmax: Any

    def dequantize(self) -> Any:
        return self.CB.astype(np.float32) * (self.absmax[:, None] / np.float32(127))


def quantize_weight(W: Any) -> Int8Weight:
    """Per output channel: CB = round(127 W / max|W_row|). An all-zero row gets absmax 1 (codes 0)."""
    xp = array_namespace(W)
    W = xp.asarray(W, dtype=np.float32)
    absmax = xp.abs(W).max(axis=1)
    absmax = xp.where(absmax == 0, np.float32(1.0), absmax).astype(np.float32)
    CB = xp.rint(W * (np.float32(127) / absmax[:, None])).astype(np.int8)
    return Int8Weight(CB, absmax)


def outlier_columns(A: Any, threshold: float = DEFAULT_THRESHOLD) -> Any:
    """Indices of the feature dimensions where some token reaches |A| >= threshold."""
    if not threshold > 0:
        raise ValueError(f"threshold={threshold} must be > 0 (use float('inf') to turn the decomposition off)")
    xp = array_namespace(A)
    return xp.flatnonzero((xp.abs(A) >= threshold).any(axis=0))


def quantize_activations(A: Any, threshold: float | None = DEFAULT_THRESHOLD) -> tuple[Any, Any, Any]:
    """Per token: CA = round(127 A / a_t). Returns (CA, a, outlier column indices).

    The outlier *elements* (|A| >= threshold) are left out of the row absmax a_t, and the outlier *columns* get
    code 0 (their part of the product is done in 16 bits), as bitsandbytes' ``int8_vectorwise_quant`` does.
    ``threshold=None`` or ``inf``: no decomposition."""
    xp = array_namespace(A)
    A = xp.asarray(A, dtype=np.float32)
    regular, outliers = A, xp.zeros(0, dtype=np.int64)
    if threshold is not None and np.isfinite(threshold):
        outliers = outlier_columns(A, threshold)
        if len(outliers):
            regular = xp.where(xp.abs(A) >= threshold, np.float32(0), A)
    row_absmax = xp.abs(regular).max(axis=1)
    row_absmax = xp.where(row_absmax == 0, np.float32(1.0), row_absmax).astype(np.float32)
    CA = xp.rint(regular * (np.float32(127) / row_absmax[:, None])).astype(np.int8)
    if len(outliers):
        CA[:, outliers] = 0
    return CA, row_absmax, outliers


def int8_matmul(CA: Any, CB: Any) -> Any:
    """INT8 x INT8 -> INT32: the product the hardware does, exact and checked to fit int32.

    On the CPU it is a float64 matrix product (BLAS): every partial sum is an integer of magnitude below
    128^2 x in_features, far under 2^53, so float64 holds each one exactly and the result is the integer one.
    On a GPU (CuPy arrays) it is the kernel ``int8_gemm_tn`` of ``kernels/int8_gemm.cu``, with int32 sums."""
    from qtutor.backend import is_cupy

    if is_cupy(CA) or is_cupy(CB):
        return _gpu_int8_matmul(CA, CB)
    xp = array_namespace(CA, CB)
    product = CA.astype(np.float64) @ CB.astype(np.float64).T
    if bool((xp.abs(product) > np.iinfo(np.int32).max).any()):
        raise OverflowError("the INT32 accumulator overflowed: in_features too large for 8-bit x 8-bit products")
    return product.astype(np.int32)


INT32_SAFE_K = (2**31 - 1) // (128 * 128)  # the longest dot product of int8 codes that cannot overflow int32


def _gpu_int8_matmul(CA: Any, CB: Any) -> Any:
    import cupy

    from qtutor.kernels import function

    CA = cupy.ascontiguousarray(CA, dtype=cupy.int8)
    CB = cupy.ascontiguousarray(CB, dtype=cupy.int8)
    (M, K), (N, K_b) = CA.shape, CB.shape
    if K != K_b:
        raise ValueError(f"int8_matmul: A has {K} columns but B has {K_b}; both must be (rows, in_features)")
    if K > INT32_SAFE_K:
        raise OverflowError(f"in_features={K} > {INT32_SAFE_K}: an INT32 accumulator could overflow; split K")
    C = cupy.empty((M, N), dtype=cupy.int32)
    tile = 16
    function("int8_gemm", "int8_gemm_tn")(((N + tile - 1) // tile, (M + tile - 1) // tile), (tile, tile),
                                          (CA, CB, C, np.int64(M), np.int64(N), np.int64(K)))
    return C


def matmul(A: Any, W: Any, threshold: float = DEFAULT_THRESHOLD, outlier_weights: str = "fp", *,
           quantized: Int8Weight | None = None) -> Any:
    """Y = A W^T the LLM.int8() way. ``A`` (tokens x in), ``W`` (out x in) floats or an :class:`Int8Weight`.

    ``threshold=float('inf')`` gives pure vector-wise INT8; a tiny threshold sends every column to the 16-bit path
    and gives the float product. ``outlier_weights``: ``"fp"`` (paper: original weights) or ``"int8"``
    (bitsandbytes: dequantized int8 weights) for the outlier columns. ``quantized``: ``quantize_weight(W)`` when
    the caller already has it (a model's layer quantizes its weight once, not on every call)."""
    if outlier_weights not in ("fp", "int8"):
        raise ValueError(f"outlier_weights={outlier_weights!r}: use 'fp' (paper) or 'int8' (bitsandbytes)")
    xp = array_namespace(A)
    A = xp.asarray(A, dtype=np.float32)
    W_float = None if isinstance(W, Int8Weight) else xp.asarray(W, dtype=np.float32)
    weight = W if isinstance(W, Int8Weight) else quantized if quantized is not None else quantize_weight(W_float)
    CA, row_absmax, outliers = quantize_activations(A, threshold)
    Y = int8_matmul(CA, weight.CB).astype(np.float32) * (row_absmax[:, None] * weight.absmax[None, :]
                                                         / np.float32(127 * 127))
    if len(outliers):
        if outlier_weights == "fp" and W_float is not None:
            W_outliers = W_float[:, outliers]
        else:
            W_outliers = weight.dequantize()[:, outliers]
        Y = Y + A[:, outliers] @ W_outliers.T
    return Y


def outlier_fraction(A: Any, threshold: float = DEFAULT_THRESHOLD) -> float:
    """Fraction of feature dimensions that the decomposition keeps in 16 bits."""
    return len(outlier_columns(A, threshold)) / A.shape[-1]


def quantize(W: Any, fmt: Any = None, group_size: int | None = -1, sym: bool | None = True, calib: Any = None,
             **_ignored) -> QuantizedTensor:
    """The weight side of LLM.int8() as a QuantizedTensor: INT8, symmetric, one scale per output channel.

    (The activation side happens at run time, per token: :func:`matmul` simulates the whole product.) Another
    format or granularity is an error: LLM.int8() defines its own."""
    from qtutor import formats

    METHOD.resolve(fmt, group_size, sym)
    weight = quantize_weight(W)
    fmt8 = formats.get("int8")
    scales = (weight.absmax / np.float32(127)).astype(np.float32)
    return QuantizedTensor(weight.CB, scales, None, fmt8.name, -1, True, tuple(weight.CB.shape), "llm_int8",
                           {"absmax": weight.absmax, "scale_dtype": "float32"})


# INT8 weights per output channel by definition; while the model runs, every linear computes the decomposed
# product (the hook), with the outlier threshold as its option
METHOD = Method("llm_int8", quantize=quantize, fixed={"fmt": "int8", "group_size": -1, "sym": True},
                hook="llm_int8", options=("threshold",))
