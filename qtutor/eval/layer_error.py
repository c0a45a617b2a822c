"""How far a quantized layer's output is from the float layer's, in GPTQ's terms: the numbers that compare GPTQ
with RTN, layer by layer (notebook 06, the step-through widget, the tests).

    layer_loss(W, W_hat, H)              GPTQ's objective tr((W - W_hat) H (W - W_hat)^T) / 2 = ||W X - W_hat X||^2 / n_tokens
    running_rtn_loss(W, H, fmt, ...)     RTN's objective as its columns are rounded one by one, beside GPTQ's running loss
    gptq_vs_rtn(W, X, fmt, ...)          both methods' objective on one layer and one grid

GPTQ's objective is the library's one output-error metric (:mod:`qtutor.metrics`, re-exported here) written with
the Hessian instead of the inputs: layer_loss(W, W_hat, H) = out_features * layer_output_error(X, W, W_hat) when
H = 2 X^T X / n_tokens (:class:`qtutor.methods.gptq.Hessian`).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from qtutor.formats import Format
from qtutor.methods import gptq, rtn
from qtutor.metrics import layer_output_error, output_error, relative_error, relative_output_error  # noqa: F401


def layer_loss(W: Any, W_hat: Any, H: Any) -> float:
    """The layer-wise objective tr((W - W_hat) H (W - W_hat)^T) / 2, i.e. ||W X - W_hat X||^2 / n_tokens."""
    delta = np.asarray(W, dtype=np.float64) - np.asarray(W_hat, dtype=np.float64)
    return float(np.einsum("ij,jk,ik->", delta, np.asarray(H, dtype=np.float64), delta) / 2)


def running_rtn_loss(W: Any, H: Any, fmt: Format, group_size: int = -1, sym: bool | None = None,
                     order: Any = None) -> np.ndarray:
    """RTN's objective as its columns are rounded one by one in ``order``: entry k is the loss with the first
    k+1 columns rounded and the others exact. Drawn against GPTQ's running loss in the step-through widget."""
    W = np.asarray(W, dtype=np.float64)
    delta = W - rtn.quantize(W.astype(np.float32), fmt, group_size, sym).dequantize()
    order = np.arange(W.shape[1]) if order is None else np.asarray(order)
    delta, H = delta[:, order], np.asarray(H, dtype=np.float64)[order][:, order]
    # adding column k to the rounded set adds  1/2 delta_k^2 H_kk + sum_{j<k} delta_j H_jk delta_k  (summed over rows)
    cross = delta @ np.triu(H, 1)  # column k: sum over j < k of delta_j H_jk
    increments = 0.5 * (delta**2 * np.diag(H)).sum(axis=0) + (delta * cross).sum(axis=0)
    return np.cumsum(increments)


def gptq_vs_rtn(W: Any, X: Any, fmt: Format, group_size: int = 128, sym: bool | None = None, **options) -> dict:
    """Layer output error ||W X - W_hat X||^2 / n_tokens of GPTQ and of RTN on the same grid."""
    H = gptq.Hessian(W.shape[-1]).add(X)
    gptq_hat = gptq.quantize(W, fmt, group_size, sym, H=H, **options).dequantize()
    rtn_hat = rtn.quantize(W, fmt, group_size, sym).dequantize()
    return {"gptq": layer_loss(W, gptq_hat, H.H), "rtn": layer_loss(W, rtn_hat, H.H)}
