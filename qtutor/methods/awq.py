"""AWQ: activation-aware weight quantization — protect the weights that meet large activations, by scaling.

Lin, Tang, Tang, Yang, Chen, Wang, Xiao, Dang, Gan, Han, "AWQ: Activation-aware Weight Quantization for LLM
Compression and Acceleration", 2023, arXiv:2306.00978 (reference code: mit-han-lab/llm-awq; AutoAWQ).

Not all weights matter equally: the error of weight W_oj reaches the output multiplied by x_j. Keeping the 1 %
of input channels with the largest mean |x_j| in FP16 recovers most of INT3's loss — but mixed precision is
awkward for kernels. AWQ gets the same protection in INT: scale input channel j up by s_j > 1 before
quantizing and divide the activation by s_j,

    Q(W diag(s)) (diag(s)^-1 x)

The scaled weights' *relative* rounding error on channel j shrinks by about s_j (the group's scale barely
moves when a single channel grows), so the salient channels are quantized more finely. The scale comes from the
activations alone, s = mean|x|^alpha, normalized so that max(s) min(s) = 1, and alpha is searched on a grid
{0, 0.05, ..., 0.95} to minimize the error of the block's output on calibration data:

    alpha* = argmin_alpha || f(W, X) - f(Q(W diag(s_alpha)) diag(s_alpha)^-1, X) ||^2

Folding: diag(s)^-1 x costs nothing, because x comes out of a norm (whose weight absorbs 1/s) or out of
another linear (whose output rows absorb it): the unquantized model is unchanged. In a model every linear that
reads the same x must share one s (q, k and v; gate and up), searched on the output of the module around them
(:func:`qtutor.model.awq_scaling.scale_model`, the model's half; the groups are in :mod:`qtutor.model.scaling`);
:func:`quantize` is the one-layer case.

Then the clip search: for each (row, group), shrink the clipping range max|w| by a factor in {1.0, 0.95, ...,
0.55} and keep the one with the smallest error of that group's partial output sum(x w) — clipping a few
outliers buys a finer step for everyone else (q and k are not clipped: their errors meet in the q k^T product).
Both searches rank their candidates with the scales as stored (:func:`fake_quantize`): qtutor's integer formats
round a scale *up* to float16, so that no weight is clipped by the storage. That costs a clipped group its top
code (clipped to [-m, m] at INT3, the zero point becomes round(3.5 - epsilon) = 3, not the exact tie's 4), and
llm-awq, which searches in the model's own precision, picks other clip ratios in up to 41 % of groups. Searching
with exact float32 scales instead reproduces llm-awq's choices, but the weight stored is then not the one the
search chose: measured on SmolLM2-135M (tools/model_card_smollm2.py, 4,096 test tokens), AWQ INT3 g64 went from
53.40 ± 2.74 to 57.04 ± 2.97 perplexity and INT4 g64 from 29.59 ± 1.42 to 29.98 ± 1.47, so qtutor searches
with what it stores.

qtutor implements current llm-awq (s = mean|x|^alpha); AutoAWQ's ``duo_scaling`` (s = mean|x|^alpha /
mean|w|^(1-alpha)) is available with ``duo_scaling=True``.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from qtutor.formats import Format
from qtutor.methods import Method
from qtutor.metrics import output_error
from qtutor.tensor import QuantizedTensor

ALPHA_GRID = tuple(i / 20 for i in range(20))  # 0, 0.05, ..., 0.95: alpha = 1 is not tried (as the reference)
CLIP_GRID = tuple(1 - i / 20 for i in range(10))  # 1.0, 0.95, ..., 0.55
# q and k meet in the product q k^T, where clipping one shifts every attention score (the reference skips them,
# and a fused q, k, v projection with them)
UNCLIPPED_ROLES = ("q", "k", "qkv")


def activation_mean(X: Any) -> np.ndarray:
    """mean |x_j| over tokens, per input channel (the reference calls it x_max; it is a mean)."""
    X = np.asarray(X, dtype=np.float32)
    return np.abs(X.reshape(-1, X.shape[-1])).mean(axis=0)


def weight_mean(weights: Sequence[Any], group_size: int) -> np.ndarray:
    """AutoAWQ's w_mean: |W| normalized by its group's max, averaged over the rows of every weight."""
    stacked = np.concatenate([np.asarray(W, dtype=np.float32) for W in weights], axis=0)
    size = stacked.shape[1] if group_size in (-1, 0, None) else group_size
    grouped = np.abs(stacked).reshape(-1, size)
    normalized = grouped / (grouped.max(axis=1, keepdims=True) + 1e-6)
    return normalized.reshape(stacked.shape).mean(axis=0)


def scales_for(alpha: float, x_mean: np.ndarray, w_mean: np.ndarray | None = None) -> np.ndarray:
    """s = mean|x|^alpha (or / mean|w|^(1-alpha) with duo scaling), clamped at 1e-4, with max(s) min(s) = 1."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} must be in [0, 1]")
    s = np.maximum(x_mean, 0) ** alpha
    if w_mean is not None:
        s = s / (w_mean ** (1 - alpha) + 1e-4)
    s = np.maximum(s, 1e-4)
    return (s / np.sqrt(s.max() * s.min())).astype(np.float32)


def fake_quantize(W: np.ndarray, fmt: Format, group_size: int, sym: bool | None) -> np.ndarray:
    """W rounded to ``fmt``'s grid and back exactly as it will be stored (integer scales rounded up to float16),
    so that the searches rank each candidate by the weight the model will really use."""
    return np.asarray(fmt.encode(W, group_size=group_size, sym=sym).dequantize(), dtype=np.float32)


def search_scale(X: Any, weights: Sequence[Any], block: Callable[[list[np.ndarray], np.ndarray], np.ndarray],
                 fmt: Format, group_size: int, sym: bool | None = None, alphas: Sequence[float] = ALPHA_GRID,
                 duo_scaling: bool = False) -> dict:
    """Grid search of alpha for the linears ``weights`` that read ``X``.

    ``block(weights, X) -> Y`` computes the output whose error is minimized (the linears themselves, or the MLP
    they feed); the loss is its :func:`~qtutor.metrics.output_error`, the mean squared error of that output.
    Returns the best scales, the best alpha and the loss of every alpha (the curve of notebook 07)."""
    X = np.asarray(X, dtype=np.float32)
    weights = [np.asarray(W, dtype=np.float32) for W in weights]
    x_mean = activation_mean(X)
    w_mean = weight_mean(weights, group_size) if duo_scaling else None
    reference = block(weights, X)
    losses = []
    for alpha in alphas:
        s = scales_for(alpha, x_mean, w_mean)
        candidate = [fake_quantize(W * s[None, :], fmt, group_size, sym) / s[None, :] for W in weights]
        losses.append(output_error(block(candidate, X), reference))
    best = int(np.argmin(losses))
    return {"s": scales_for(alphas[best], x_mean, w_mean), "alpha": alphas[best], "alphas": list(alphas),
            "losses": losses}


def search_clip(W: Any, X: Any, fmt: Format, group_size: int, sym: bool | None = None,
                ratios: Sequence[float] = CLIP_GRID, n_tokens: int = 512) -> np.ndarray:
    """Per (row, group): the clipping threshold max_val = ratio * max|w| minimizing the error of the group's
    partial outputs sum_j x_j w_j over (up to ``n_tokens``) calibration tokens. Returns (rows, groups)."""
    W = np.asarray(W, dtype=np.float32)
    X = np.asarray(X, dtype=np.float32).reshape(-1, W.shape[1])
    X = X[:: max(1, X.shape[0] // n_tokens)][:n_tokens]
    rows, columns = W.shape
    size = columns if group_size in (-1, 0) else group_size
    groups = columns // size
    Wg = W.reshape(rows, groups, size)
    Xg = np.ascontiguousarray(X.reshape(X.shape[0], groups, size).transpose(1, 0, 2))  # (groups, tokens, size)

    def partial_outputs(weights: np.ndarray) -> np.ndarray:
        """sum_j x_j w_j over each group's columns: (groups, tokens, rows), one matrix product per group."""
        return Xg @ weights.transpose(1, 2, 0)

    exact = partial_outputs(Wg)
    original_max = np.abs(Wg).max(axis=2)
    best_error = np.full((rows, groups), np.inf)
    best_max = original_max.copy()
    for ratio in ratios:
        max_val = original_max * np.float32(ratio)
        clipped = np.clip(Wg, -max_val[..., None], max_val[..., None]).reshape(rows, columns)
        quantized = fake_quantize(clipped, fmt, group_size, sym).reshape(rows, groups, size)
        error = ((partial_outputs(quantized) - exact) ** 2).mean(axis=1).T  # (rows, groups)
        better = error < best_error
        best_error[better] = error[better]
        best_max[better] = max_val[better]
    return best_max


def apply_clip(W: Any, max_val: np.ndarray, group_size: int) -> np.ndarray:
    """Clip every (row, group) of W to [-max_val, max_val] (symmetric, as the reference)."""
    W = np.asarray(W, dtype=np.float32)
    rows, columns = W.shape
    size = columns if group_size in (-1, 0) else group_size
    Wg = W.reshape(rows, columns // size, size)
    return np.clip(Wg, -max_val[..., None], max_val[..., None]).reshape(rows, columns)


def linear_block(weights: list[np.ndarray], X: np.ndarray) -> np.ndarray:
    """The simplest block: the linears themselves, outputs side by side (X W_1^T, X W_2^T, ...)."""
    return np.concatenate([X @ W.T for W in weights], axis=1)


def quantize(W: Any, fmt: Format, group_size: int | None = 128, sym: bool | None = None, calib: Any = None, *,
             name: str = "layer", role: str | None = None, clip: bool | None = None, duo_scaling: bool = False,
             prescaled: bool = False, **_ignored) -> QuantizedTensor:
    """AWQ on one linear layer: search the scale on the layer's own output, clip, quantize W diag(s).

    The returned QuantizedTensor stores the codes of ``W diag(s)``; its ``dequantize()`` gives
    ``Q(W diag(s)) diag(s)^-1`` (the scale folded back), the weight a fake-quant model uses.
    ``prescaled=True`` skips the search (s = 1): :func:`~qtutor.model.awq_scaling.scale_model` has already
    folded the scales of a whole model's blocks, and only the clip search and the rounding are left.
    ``role`` is the layer's role in its block (``qtutor.model.role_of``: "q", "k", "up", ...); the query and key
    projections (roles in ``UNCLIPPED_ROLES``) are not clipped unless ``clip=True``."""
    if calib is None:
        raise ValueError(f"AWQ {name} needs calibration inputs (calib=X of shape (tokens, in_features))")
    if group_size is None:
        raise ValueError("AWQ needs a scaled format: group_size N > 0, -1 or 0")
    W = np.asarray(W, dtype=np.float32)
    calib = np.asarray(calib, dtype=np.float32)
    if calib.ndim != 2 or calib.shape[1] != W.shape[1]:
        raise ValueError(f"AWQ {name}: calibration inputs of shape {tuple(calib.shape)} for a layer with {W.shape[1]} "
                         f"input features; pass the layer's own inputs, shaped (tokens, {W.shape[1]})")
    if prescaled:
        found = {"s": np.ones(W.shape[1], dtype=np.float32), "alpha": None, "losses": []}
    else:
        found = search_scale(calib, [W], linear_block, fmt, group_size, sym, duo_scaling=duo_scaling)
    s = found["s"]
    scaled = W * s[None, :]
    if clip is None:
        clip = role not in UNCLIPPED_ROLES
    if clip:
        scaled = apply_clip(scaled, search_clip(scaled, np.asarray(calib, np.float32) / s[None, :], fmt, group_size,
                                                sym), group_size)
    q = fmt.encode(scaled, group_size=group_size, sym=sym)
    return AWQTensor(q.codes, q.scales, q.zeros, q.fmt, q.group_size, q.sym, q.shape, "awq",
                     {"s": s, "alpha": found["alpha"], "losses": found["losses"]})


class AWQTensor(QuantizedTensor):
    """Codes of W diag(s); dequantize() folds the scale back: Q(W diag(s)) diag(s)^-1."""

    def dequantize(self):
        return (self.format.decode(self) / self.extra["s"][None, :]).astype(np.float32)

    @property
    def nbytes(self) -> float:  # s is folded into the previous layer: no storage of its own
        return self.format.storage_bits(self) / 8


# AWQ needs calibration text and its layers' inputs (captured once, from the float model); in a whole model it
# first searches and folds one scale per scaling group (the transform), then each layer clips and rounds
METHOD = Method("awq", quantize=quantize, calibration=True, layer_inputs=True, transform="awq_scales")
