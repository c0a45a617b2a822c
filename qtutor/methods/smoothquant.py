"""SmoothQuant: move the quantization difficulty from the activations to the weights, then run W8A8.

Xiao, Lin, Seznec, Wu, Demouth, Han, "SmoothQuant: Accurate and Efficient Post-Training Quantization for
Large Language Models", 2022, arXiv:2211.10438 (reference code: mit-han-lab/smoothquant, ``smooth_ln_fcs``).

Activations are hard to quantize (a few channels are 100x larger than the rest, in every token), weights are
easy (flat). A per-input-channel scale s_j changes neither the product nor the model,

    Y = X W^T = (X diag(s)^-1) (W diag(s))^T,

but it can trade range between the two: divide channel j of X by s_j, multiply column j of W by s_j. With the
migration strength alpha,

    s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)          (alpha = 0.5 splits the difficulty evenly:
                                                          max|X_j / s_j| = max|W_j s_j| = sqrt(max|X_j| max|W_j|))

The division of X is free: X comes out of a normalization layer (LayerNorm / RMSNorm) whose weight absorbs
1/s. So only the linears right after a norm are smoothed (q, k, v after input_layernorm; gate, up after
post_attention_layernorm); a scale is shared by every linear that reads the same X. (Scaling groups and the
folding itself live in :mod:`qtutor.model.scaling`, shared with AWQ; smoothing a whole model is
:func:`qtutor.model.smoothing.smooth_model`.)

Then W8A8: weights INT8 per output channel, activations INT8 per token, computed on the fly (dynamic),
INT8 x INT8 products accumulated in INT32 and rescaled by (activation scale x weight scale).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from qtutor.backend import array_namespace
from qtutor.methods import Method

# The reference (smooth_ln_fcs) clamps the weight maxima and the final scale at 1e-5, so that a dead weight column
# cannot divide by 0 and no s is 0; it does not clamp the activation maxima. Ours clamps those too: the same s
# unless a channel's max|X_j| stays below 1e-5 (a dead channel), where ours computes s from 1e-5 and the reference
# from max|X_j| itself (floored at 1e-5 afterwards). The W8A8 quantizers below clamp each row's max|x| at 1e-5, as the
# reference's fake_quant does.
CLAMP = 1e-5


def check_alpha(alpha: float) -> float:
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha={alpha} must be in [0, 1]: 0 keeps the activations as they are, 1 moves all "
                         "their range into the weights")
    return float(alpha)


def activation_scales(X: Any) -> Any:
    """max |X_j| per input channel over every token (what ``calibration.get_act_scales`` collects)."""
    xp = array_namespace(X)
    X = xp.asarray(X, dtype=np.float32)
    return xp.abs(X.reshape(-1, X.shape[-1])).max(axis=0)


def smoothing_scales(act_absmax: Any, weights: Sequence[Any], alpha: float = 0.5) -> Any:
    """s_j = clamp(max|X_j|^alpha / max_over_fcs(max|W_j|)^(1 - alpha), 1e-5) for the linears reading X, each
    maximum clamped at 1e-5 first (the reference clamps only the weight maxima: see ``CLAMP``)."""
    alpha = check_alpha(alpha)
    xp = array_namespace(act_absmax)
    weight_absmax = None
    for W in weights:
        column_max = xp.abs(xp.asarray(W, dtype=np.float32)).max(axis=0)
        weight_absmax = column_max if weight_absmax is None else xp.maximum(weight_absmax, column_max)
    if weight_absmax is None or weight_absmax.shape != act_absmax.shape:
        raise ValueError("smoothing needs at least one weight whose in_features equal the activation channels")
    weight_absmax = xp.maximum(weight_absmax, CLAMP)
    act_absmax = xp.maximum(xp.asarray(act_absmax, dtype=np.float32), CLAMP)
    return xp.maximum(act_absmax**alpha / weight_absmax ** (1 - alpha), CLAMP).astype(np.float32)


def smooth(X: Any, weights: Sequence[Any], s: Any) -> tuple[Any, list]:
    """(X / s, [W * s for W in weights]): the same products, redistributed."""
    return X / s, [W * s[None, :] for W in weights]


def fold_into_norm(norm_weight: Any, norm_bias: Any, weights: Sequence[Any], s: Any) -> tuple[Any, Any, list]:
    """Apply s without touching X: the norm's weight (and bias) divided by s, each linear's columns times s."""
    new_bias = None if norm_bias is None else norm_bias / s
    return norm_weight / s, new_bias, [W * s[None, :] for W in weights]


# ---- W8A8 (and W4A4): the fake-quantized products ---------------------------------------------------------------
def quantize_per_token(X: Any, bits: int = 8) -> tuple[Any, Any]:
    """Dynamic symmetric quantization, one scale per token (row): codes and scales (tokens,)."""
    qmax = 2 ** (bits - 1) - 1
    xp = array_namespace(X)
    X = xp.asarray(X, dtype=np.float32)
    scale = xp.maximum(xp.abs(X).max(axis=-1), CLAMP) / np.float32(qmax)
    codes = xp.clip(xp.rint(X / scale[..., None]), -qmax, qmax).astype(np.int8)
    return codes, scale.astype(np.float32)


def quantize_per_channel(W: Any, bits: int = 8) -> tuple[Any, Any]:
    """Static symmetric quantization of a weight, one scale per output channel (row)."""
    return quantize_per_token(W, bits)


def w8a8_matmul(X: Any, W: Any, weight_bits: int = 8, activation_bits: int = 8) -> Any:
    """Y = X W^T with INT weights per channel and INT activations per token, INT32 accumulation."""
    from qtutor.methods.llm_int8 import int8_matmul

    codes_x, scale_x = quantize_per_token(X, activation_bits)
    codes_w, scale_w = quantize_per_channel(W, weight_bits)
    accumulator = int8_matmul(codes_x.reshape(-1, codes_x.shape[-1]), codes_w)
    Y = accumulator.astype(np.float32) * (scale_x.reshape(-1)[:, None] * scale_w[None, :])
    return Y.reshape(*X.shape[:-1], W.shape[0])


def difficulty(X: Any, W: Any) -> dict:
    """How hard each side is to quantize: max/median of the per-channel maxima (1 = flat, large = outliers)."""
    xp = array_namespace(X)
    act = activation_scales(X)
    weight = xp.abs(xp.asarray(W, dtype=np.float32)).max(axis=0)
    return {"activation": float(act.max() / xp.median(act)), "weight": float(weight.max() / xp.median(weight))}


# SmoothQuant has no weight quantizer of its own: it smooths the model (the transform, from max|X_j| on the
# calibration text), then RTN rounds the weights and the activations are rounded at run time (INT8 by default)
METHOD = Method("smoothquant", weights="rtn", calibration=True, transform="smoothing", act_format="int8",
                options=("alpha", "smooth_linears"))
