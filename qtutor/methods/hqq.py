"""HQQ: half-quadratic quantization, a better zero point for every group with no calibration data at all.

Badri and Shaji, "Half-Quadratic Quantization of Large Machine Learning Models", Mobius Labs blog, 2023
(code: mobiusml/hqq). RTN puts each group's range [min w, max w] on the codes 0 .. 2^b - 1 and stops. HQQ keeps
that scale and moves the zero point so that the *rounding errors* become sparse, because a few large errors
(outliers rounded badly) hurt a layer more than many small ones. It minimises a sparsity-promoting loss of the
error, the l_p "norm" with p < 1, over the zero point z of each group:

    min_z  sum_i |w_i - w_hat_i(z)|^p,      w_hat(z) = (clamp(round(w / s + z), 0, 2^b - 1) - z) * s

(here s is the step, 1/s the "inverse scale" HQQ's code works with). The rounding makes this non-smooth, so HQQ
splits it with an auxiliary variable e, the error it wants, and a quadratic coupling of weight beta/2 (the
*half-quadratic* splitting), then alternates two easy problems:

    e   <- argmin_e |e|^p + beta/2 (e - (w - w_hat))^2      = shrink_p(w - w_hat)
           shrink_p(x) = sign(x) max(|x| - |x|^(p-1) / beta, 0)      (p = 1: soft thresholding by 1/beta)
    z   <- argmin_z || (round(w / s + z) - z) s - (w - e) ||^2  = mean over the group of (q - (w - e) / s)

with q = clamp(round(w / s + z), 0, 2^b - 1) the codes of the current z. The first step decides which errors to
keep (small ones are shrunk to zero, large ones survive almost whole); the second moves z so that the
dequantized weights match w - e, the weights with the kept errors taken out. The loop stops as soon as the mean
absolute error over the whole tensor stops falling, at most 20 times.

Defaults are mobiusml/hqq's (``hqq_base_quant_config`` and ``optimize_weights_proximal_legacy``): p = 0.7,
beta = 10, 20 iterations, groups along the input dimension (axis=1), the starting zero rounded at 4 bits only.
Their quirks are kept so the codes match the package's: a range at or below 1e-4 gets inverse scale 1, the
inverse scale is capped at 2e4, the range is *not* widened to contain 0 (so z may be negative or above the
largest code), and when the loop stops early the zero point kept is the one computed from the last iteration,
not the best one seen. The step s = 1 / inverse scale and the float zero point are stored as float16, 16 bits
each (as HQQLinear stores them in float16 compute), so INT4 in groups of 64 costs 4 + 32/64 = 4.5 bits per
weight, more than RTN's 4 + 20/64: HQQ's zero point is a real number, not a code.

Measured on SmolLM2-135M (``qtutor sweep --model smollm2 --methods rtn,hqq --formats int3,int4 --group-sizes 64``,
8192 test tokens): at INT4 HQQ loses +21.1 % perplexity against RTN's +29.3 % (standard errors 1.1 and 1.4), with
no data at all. At INT3 with the package's defaults it loses +812 % against RTN's +208 %, although its weight
error is smaller than RTN's in every layer; rounding the starting zero point (``round_zero=True``, the package's
choice at 4 bits only) brings it back level with RTN. So where the grid's zero sits matters beyond the error
sizes a layer-by-layer measure sees; why, on this model, is still an open question for the course.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from qtutor.backend import array_namespace
from qtutor.formats import Format
from qtutor.formats.base import as_float32, check_finite, check_group_size, groups_shape, to_groups
from qtutor.methods import Method
from qtutor.tensor import QuantizedTensor

LP_NORM = 0.7  # p of the l_p loss on the errors: below 1, it prefers a few large errors to many small ones
BETA = 10.0  # weight of the quadratic coupling between e and the actual error
ITERATIONS = 20  # at most; the loop stops when the mean absolute error stops falling
SMALL_RANGE = 1e-4  # a group whose max - min is this small gets inverse scale 1 (the package's guard)
MAX_INVERSE_SCALE = 2e4  # the package's cap, there to keep float16 arithmetic finite
STORED_BITS = 16  # the step and the zero point are stored as float16 each


def shrink_lp(x: Any, beta: float = BETA, p: float = LP_NORM) -> Any:
    """The proximal step of |e|^p: sign(x) max(|x| - |x|^(p-1) / beta, 0). Zero stays zero."""
    xp = array_namespace(x)
    magnitude = xp.abs(x)
    if p == 1:
        shrunk = magnitude - np.float32(1.0 / beta)
    else:
        with np.errstate(divide="ignore"):  # 0^(p-1) = inf for p < 1: the clamp below sends it to 0
            shrunk = magnitude - np.float32(1.0 / beta) * magnitude ** np.float32(p - 1)
    return xp.sign(x) * xp.maximum(shrunk, np.float32(0.0))


def initial_params(G: Any, bits: int, round_zero: bool) -> tuple[Any, Any]:
    """RTN's inverse scale (2^b - 1) / (max - min) and zero point -min / s of each group (row of G)."""
    xp = array_namespace(G)
    low, high = G.min(axis=1, keepdims=True), G.max(axis=1, keepdims=True)
    spread = high - low
    with np.errstate(divide="ignore"):
        inverse_scale = np.float32(2**bits - 1) / spread
    inverse_scale = xp.where(xp.abs(spread) <= SMALL_RANGE, np.float32(1.0), inverse_scale)
    inverse_scale = xp.minimum(inverse_scale, np.float32(MAX_INVERSE_SCALE)).astype(np.float32)
    zero = (-low * inverse_scale).astype(np.float32)
    if round_zero:
        zero = xp.round(zero)
    return inverse_scale, zero


def optimize_zero(G: Any, inverse_scale: Any, zero: Any, bits: int, beta: float = BETA, p: float = LP_NORM,
                  iterations: int = ITERATIONS) -> tuple[Any, list[float]]:
    """HQQ's alternating minimisation over the zero points (the scale stays fixed).

    Returns the final zero points and the mean absolute error of every iteration's codes, in order; the last
    entry is the one that stopped the loop when it did not fall below the best before it."""
    xp = array_namespace(G)
    top = np.float32(2**bits - 1)
    best, errors = np.inf, []
    for _ in range(iterations):
        codes = xp.clip(xp.round(G * inverse_scale + zero), 0, top)
        dequantized = (codes - zero) / inverse_scale
        kept_error = shrink_lp(G - dequantized, beta, p)
        zero = xp.mean(codes - (G - kept_error) * inverse_scale, axis=1, keepdims=True).astype(np.float32)
        error = float(xp.abs(G - dequantized).mean())
        errors.append(error)
        if error < best:
            best = error
        else:
            break
    return zero, errors


def quantize_groups(G: Any, bits: int, round_zero: bool | None = None, optimize: bool = True, beta: float = BETA,
                    p: float = LP_NORM, iterations: int = ITERATIONS) -> dict:
    """HQQ on groups (one per row of G): float32 codes, inverse scales, zero points and the error history,
    before the float16 storage rounding (what mobiusml/hqq's ``Quantizer.quantize`` computes on a CPU)."""
    xp = array_namespace(G)
    if round_zero is None:
        round_zero = bits == 4  # hqq_base_quant_config rounds the starting zero point at 4 bits only
    inverse_scale, zero = initial_params(G, bits, round_zero)
    errors: list[float] = []
    if optimize:
        zero, errors = optimize_zero(G, inverse_scale, zero, bits, beta, p, iterations)
    codes = xp.clip(xp.round(G * inverse_scale + zero), 0, np.float32(2**bits - 1))
    return {"codes": codes, "inverse_scale": inverse_scale, "zero": zero, "errors": errors}


def quantize(W: Any, fmt: Format, group_size: int | None = 64, sym: bool | None = None, calib: Any = None,
             name: str = "layer", role: str | None = None, beta: float = BETA, lp_norm: float = LP_NORM,
             iterations: int = ITERATIONS, round_zero: bool | None = None, optimize: bool = True) -> QuantizedTensor:
    """HQQ-quantize ``W (out_features, in_features)`` to the integer format ``fmt`` in groups of ``group_size``
    along each row (-1: one group per row). ``calib`` is ignored: HQQ needs no data. The codes are those of
    mobiusml/hqq; the step and zero point are stored as float16 (see the module docstring)."""
    if getattr(fmt, "family", None) != "integer":
        raise ValueError(f"HQQ rounds onto an integer grid with a real-valued zero point; {fmt.name} is not an "
                         "integer format: use fmt='int2' ... 'int8'")
    if sym:
        raise ValueError("HQQ is asymmetric by construction (its zero point is what it optimizes): leave sym out")
    if group_size in (None, 0):
        raise ValueError(f"HQQ optimizes a zero point per group; group_size={group_size!r} has none: give groups "
                         "of N > 0 weights along each row or -1 for one group per row")
    if not (beta > 0 and 0 < lp_norm <= 1 and int(iterations) >= 1):
        raise ValueError(f"HQQ needs beta > 0, 0 < lp_norm <= 1 and iterations >= 1; got beta={beta}, "
                         f"lp_norm={lp_norm}, iterations={iterations}")
    W = as_float32(W, "hqq")
    group_size = check_group_size(group_size, tuple(W.shape), fmt.name)
    check_finite(W, "hqq", "a NaN or Inf has no place on a group's range")
    solved = quantize_groups(to_groups(W, group_size), fmt.bits, round_zero, optimize, beta, lp_norm,
                             int(iterations))
    step = (np.float32(1.0) / solved["inverse_scale"]).astype(np.float16).astype(np.float32)
    zero = solved["zero"].astype(np.float16).astype(np.float32)
    shape_of_groups = groups_shape(tuple(W.shape), group_size)
    errors = solved["errors"]
    return QuantizedTensor(
        codes=solved["codes"].astype(np.uint8).reshape(W.shape),
        scales=step.reshape(shape_of_groups),
        zeros=zero.reshape(shape_of_groups),
        fmt=fmt.name, group_size=group_size, sym=False, shape=tuple(W.shape), method="hqq",
        # zero_bits: the zero point is a float16, not a b-bit code; errors: the loop's mean |W - W_hat| per step
        extra={"zero_bits": STORED_BITS, "errors": errors, "iterations": len(errors)},
    )


# no data, no model phase: each weight on its own, on the model's device (the loop is elementwise array code)
METHOD = Method("hqq", quantize=quantize, device_arrays=True)
