"""How far a quantized layer's output is from the float layer's: the one output-error metric of the library.

A linear layer computes Y = X W^T from its inputs X (tokens x in_features). Quantizing W to W_hat changes the
output by X (W_hat - W)^T, and that change, not the weights' own error, is what every calibrated method fights:

    output_error(Y_hat, Y)                 e  = mean over all entries of (Y_hat - Y)^2
    output_error(Y_hat, Y, relative=True)  e_rel = ||Y_hat - Y||^2 / ||Y||^2   (0: exact; 1: as large as Y itself)
    layer_output_error(X, W, W_hat, ...)   either of them for Y = X W^T, Y_hat = X W_hat^T

Who reads which: AWQ's alpha search minimizes ``output_error`` of its block's output (notebook 07's curve);
``qt.quantize_model`` reports ``layer_output_error(..., relative=True)`` per layer, as do the layer maps of
notebooks 06 and 15; SmoothQuant's and LLM.int8()'s lessons print ``relative_error``, the square root of e_rel
(a ratio of norms). GPTQ's objective tr((W - W_hat) H (W - W_hat)^T) / 2 with H = 2 X^T X / n_tokens
(:func:`qtutor.eval.layer_error.layer_loss`) is the same quantity summed over the outputs instead of averaged:
out_features * output_error.

It sits at the bottom of the package (beside the formats) because a method (AWQ), the model layer
(quantize_model's report), the evaluation and the widgets all use it, and the layers only point down.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from qtutor.backend import array_namespace, to_torch


def output_error(Y_hat: Any, Y: Any, relative: bool = False) -> float:
    """mean((Y_hat - Y)^2), or with ``relative=True`` ||Y_hat - Y||^2 / ||Y||^2; sums in float64."""
    Y_hat, Y = np.asarray(Y_hat), np.asarray(Y)
    if Y_hat.shape != Y.shape:
        raise ValueError(f"output_error: outputs of shape {Y_hat.shape} against a reference of shape {Y.shape}")
    delta = (Y_hat - Y).astype(np.float64)
    if not relative:
        return float(np.mean(delta**2))
    return float((delta**2).sum() / max(float((Y.astype(np.float64) ** 2).sum()), 1e-30))


def relative_error(Y_hat: Any, Y: Any) -> float:
    """||Y_hat - Y|| / ||Y||: the square root of the relative output error (a ratio of norms, not of squares)."""
    return math.sqrt(output_error(Y_hat, Y, relative=True))


def layer_output_error(X: Any, W: Any, W_hat: Any, relative: bool = False, max_tokens: int | None = None) -> float:
    """:func:`output_error` of the layer's outputs X W_hat^T against X W^T on (up to ``max_tokens``) inputs.

    The change is computed as one product X (W_hat - W)^T, not as the difference of two products, so that a
    small error is not lost to the cancellation of two large outputs. The products are torch's (the model's
    dependency; several times NumPy's on a busy CPU) in float32, summed in float64, on the arrays' own device
    (NumPy or CuPy arrays, all on one)."""
    xp = array_namespace(X, W, W_hat)
    W = xp.asarray(W, dtype=np.float32)
    X = xp.asarray(X, dtype=np.float32).reshape(-1, W.shape[1])[:max_tokens]
    inputs = to_torch(xp.ascontiguousarray(X))
    delta = (inputs @ to_torch(xp.ascontiguousarray((xp.asarray(W_hat, dtype=np.float32) - W).T))).double()
    if not relative:
        return float((delta**2).mean())
    exact = (inputs @ to_torch(xp.ascontiguousarray(W.T))).double()
    return float((delta**2).sum() / max(float((exact**2).sum()), 1e-30))


def relative_output_error(W: Any, W_hat: Any, X: Any, max_tokens: int = 4096) -> float:
    """||X W^T - X W_hat^T||^2 / ||X W^T||^2 on up to ``max_tokens`` inputs: what ``qt.quantize_model`` reports
    per layer (``layer_output_error(X, W, W_hat, relative=True)``, arguments in the weights-first order)."""
    return layer_output_error(X, W, W_hat, relative=True, max_tokens=max_tokens)
