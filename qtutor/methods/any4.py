"""any4: a learned table of 16 numbers for every row of a weight, found by a weighted 1-D k-means.

Elhoushi and Johnson, "any4: Learned 4-bit Numeric Representation for LLMs", ICML 2025, arXiv:2507.04610
(code: facebookresearch/any4). INT4 puts a group's weights on 16 evenly spaced levels, NF4 on 16 fixed
normal quantiles; any4 lets every output row r choose its own 16 levels T[r, 0..15]. First each group g of a
row is normalised as asymmetric INT4 would do it (scale from the range, offset at the minimum):

    s[r, g] = (max w - min w) / (K - 1),     z[r, g] = min w,      u = (w - z) / s  in [0, K - 1]

(K = 2^bits = 16). Then the row's normalised values u_j are clustered into K values by k-means, each weight
counted with a weight omega_j; the codes are the nearest levels and the weight comes back as

    min_{T, c}  sum_j omega_j (u_j - T[c_j])^2,      w_hat_j = s[r, g(j)] T[r, c_j] + z[r, g(j)]
    omega_j = |mean_t x_tj| * s[r, g(j)]

omega is the reference's recommended setting (``sample_weight=calibrate, scale_sample_weight=True``): the
absolute value of the *mean* input of column j over the calibration tokens (signed mean first, then abs, as
its calibrate.py does; ``weighting="abs_mean"`` takes mean_t |x_tj| instead), times the group's scale, so that
an error in a wide group (a large error in w) counts for more. Without calibration inputs omega = s. Lloyd's
algorithm in 1-D: with the levels sorted, the nearest level of u is found by comparing u with the midpoints
between neighbouring levels; each level then moves to the omega-weighted mean of the values assigned to it.
Neither step can raise the objective, so it falls until no code changes. All rows are clustered at once.

Choices of ours: Lloyd's loop ends in a local optimum, badly so when a few columns carry most of the weight,
so it runs from two starts and keeps, row by row, the lower objective (``init="best"``): the levels 0, 1, ...,
K - 1 (``"linspace"``: the INT4 grid of the same scale and offset, so the objective ends below asymmetric
RTN's with an unrounded offset) and the row's quantiles (``"quantile"``); the reference starts scikit-learn's
k-means once from k-means++ seeds. The reference recalibrates before every layer (earlier layers quantized);
here the inputs are captured block by block (``sequential``). Storage: 4-bit codes, a float16 scale and
offset per group, the row's 16 float16 levels: 4 + 32 / 64 + 256 / in_features bits per weight in groups of
64 (4.94 on SmolLM2's rows of 576, 4.67 on its rows of 1536).

Measured on SmolLM2-135M (``qtutor sweep --model smollm2 --methods rtn,any4 --formats int4,nf4,any4
--group-sizes 64``, 8192 test tokens, 32 x 256 wiki calibration tokens; its float weights are the GGUF file's
Q4_1 weights expanded): any4 loses +11.7 % perplexity (standard error 0.7) at 4.875 bits per weight, against
RTN's +29.3 % (1.4) for INT4 at 4.31 and +26.0 % (1.2) for NF4 at 4.5. Part of the gain is bought with the
tables' 0.4 extra bits per weight on rows this short.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from qtutor.formats import Format
from qtutor.formats.base import as_float32, check_finite
from qtutor.formats.codebook import LookupTableFormat, group_length
from qtutor.methods import Method
from qtutor.tensor import QuantizedTensor

ITERATIONS = 300  # at most (scikit-learn's max_iter, which the reference runs); it stops once no code changes
SMALLEST_RANGE = 1e-6  # a constant group gets this range (the reference's clamp): its values all map to 0
FLOAT16_MAX = 65504.0  # scales, offsets and levels are stored as float16
INITS = ("best", "linspace", "quantile")  # "best": both starts, the lower objective kept row by row
WEIGHTINGS = ("mean", "abs_mean", "none")


def normalise(W: np.ndarray, group_size: int, levels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(u, s, z): every group's weights mapped onto [0, levels - 1] by its min/max, and the scale and offset
    (rows, groups) that map them back: w = s u + z."""
    rows, columns = W.shape
    G = W.reshape(rows, columns // group_size, group_size)
    low, high = G.min(axis=2), G.max(axis=2)
    s = (np.maximum(high - low, SMALLEST_RANGE) / (levels - 1)).astype(np.float32)
    u = (G - low[..., None]) / s[..., None]
    return u.reshape(rows, columns).astype(np.float32), s, low.astype(np.float32)


def input_importance(calib: Any, in_features: int, weighting: str) -> np.ndarray:
    """a_j per input column from the calibration inputs X (tokens, in_features); ones without them."""
    if calib is None or weighting == "none":
        return np.ones(in_features, dtype=np.float64)
    X = np.asarray(calib)
    if X.ndim != 2 or X.shape[1] != in_features or X.shape[0] == 0:
        raise ValueError(f"any4's calib are the layer's inputs (tokens, in_features={in_features}); got shape "
                         f"{X.shape}: pass the activations this layer multiplies, one row per token")
    check_finite(X, "any4", "a NaN or Inf input would poison the mean activation of its column")
    X = X.astype(np.float64)
    return np.abs(X.mean(axis=0)) if weighting == "mean" else np.abs(X).mean(axis=0)


def nearest_level(u: np.ndarray, T: np.ndarray) -> np.ndarray:
    """The index of the nearest entry of each row's *sorted* table T (rows, K) for every u (rows, n): the
    number of midpoints between neighbouring entries that u lies above (ties go to the lower entry)."""
    midpoints = (T[:, 1:] + T[:, :-1]) / 2
    return (u[:, :, None] > midpoints[:, None, :]).sum(axis=2)


def kmeans_rows(u: np.ndarray, omega: np.ndarray, levels: int, init: str = "linspace",
                iterations: int = ITERATIONS) -> tuple[np.ndarray, list[float], np.ndarray]:
    """Weighted 1-D k-means of every row of ``u`` (rows, n) into ``levels`` sorted values, all rows at once.

    Returns the tables T (rows, levels), the objective sum omega (u - T[c])^2 after every update, in order,
    and each row's share of the last one.
    Each row is sorted once; a level's values are then one run of it, between two boundaries (where the
    midpoints fall), and its weighted count, sum and sum of squares are differences of running sums, so an
    iteration costs a search of rows x levels midpoints, not a pass over every weight. A level that loses all
    its values (or whose values all have weight 0) stays where it was."""
    rows, n = u.shape
    order = np.argsort(u, axis=1)
    u_sorted, omega_sorted = np.take_along_axis(u, order, axis=1), np.take_along_axis(omega, order, axis=1)
    # row r shifted by r * span (span: more than the values' range): the sorted rows become one ascending array
    low, span = float(u_sorted[:, 0].min()), float(u_sorted[:, -1].max() - u_sorted[:, 0].min()) + 1.0
    shift = (np.arange(rows) * span - low)[:, None]
    keys = (u_sorted + shift).ravel()
    running = [np.concatenate([[0.0], np.cumsum((omega_sorted * u_sorted**p).ravel())]) for p in (0, 1, 2)]
    if init == "linspace":
        T = np.tile(np.arange(levels, dtype=np.float64), (rows, 1))
    else:  # the row's values at the middles of K equal slices of it
        T = u_sorted[:, ((np.arange(levels) + 0.5) * n / levels).astype(int)].astype(np.float64)
    starts = (np.arange(rows) * n)[:, None]
    ends = starts + n

    def boundaries(T: np.ndarray) -> np.ndarray:  # (rows, levels + 1): level k of row r is keys[b[k]:b[k+1]]
        midpoints = (T[:, 1:] + T[:, :-1]) / 2 + shift
        inner = np.searchsorted(keys, midpoints.ravel(), side="right").reshape(rows, levels - 1)
        return np.concatenate([starts, inner, ends], axis=1)

    b = boundaries(T)
    errors: list[float] = []
    for _ in range(iterations):
        mass, total, squares = (r[b[:, 1:]] - r[b[:, :-1]] for r in running)
        with np.errstate(invalid="ignore", divide="ignore"):
            T = np.where(mass > 0, total / mass, T)
        row_errors = (squares - 2 * T * total + T**2 * mass).sum(axis=1)  # sum omega (u - T)^2, run by run
        errors.append(float(row_errors.sum()))
        T = np.sort(T, axis=1)  # in 1-D the means stay in order; sorting only guards exact ties
        new_b = boundaries(T)
        if np.array_equal(new_b, b):
            return T, errors, row_errors
        b = new_b
    warnings.warn(f"any4's k-means did not settle in {iterations} iterations (its codes still move); the "
                  f"tables are usable but not a fixed point: raise iterations=", RuntimeWarning, stacklevel=3)
    return T, errors, row_errors


def stored_codes(W: np.ndarray, T: np.ndarray, s: np.ndarray, z: np.ndarray, group_size: int) -> np.ndarray:
    """The nearest *stored* value (float16 s, z, T) to every weight: the codes decode exactly to those."""
    rows, columns = W.shape
    values = s[:, :, None] * T[:, None, :] + z[:, :, None]  # (rows, groups, K), ascending since s > 0
    midpoints = (values[..., 1:] + values[..., :-1]) / 2
    G = W.reshape(rows, columns // group_size, group_size)
    codes = (G[..., None] > midpoints[:, :, None, :]).sum(axis=3)
    return codes.reshape(rows, columns)


def quantize(W: Any, fmt: Format, group_size: Any = 64, sym: bool | None = None, calib: Any = None,
             name: str = "layer", role: str | None = None, init: str = "best", weighting: str = "mean",
             iterations: int = ITERATIONS) -> QuantizedTensor:
    """any4-quantize ``W (out_features, in_features)`` to ``fmt`` ("any4": 16 levels per row, "any3": 8).

    ``group_size``: the weights sharing one scale and offset (N dividing in_features, or -1 for whole rows).
    ``sym`` must be left out: the normalisation is asymmetric by construction. ``calib``: the layer's inputs
    (tokens, in_features) that weight the k-means (``weighting``: "mean" the reference's |mean x_j|,
    "abs_mean" mean |x_j|, "none" plain k-means); without them every weight counts by its group's scale."""
    if not isinstance(fmt, LookupTableFormat):
        raise ValueError(f"any4 learns a table of levels per row; {fmt.name} is not such a format: use "
                         f"fmt='any4' (16 levels) or 'any3' (8)")
    if sym:
        raise ValueError("any4 normalises every group by its min and max (an offset, not a zero point to drop): "
                         "leave sym out")
    if init not in INITS or weighting not in WEIGHTINGS:
        raise ValueError(f"any4 takes init in {INITS} and weighting in {WEIGHTINGS}; got init={init!r}, "
                         f"weighting={weighting!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 1:
        raise ValueError(f"any4 needs iterations >= 1 (an integer), not {iterations!r}")
    W = np.asarray(as_float32(W, fmt.name))
    group_size_asked = group_size
    group_size = group_length(group_size, tuple(W.shape), fmt.name)
    check_finite(W, fmt.name, "a NaN or Inf has no place in a group's range")
    if float(np.abs(W).max()) > FLOAT16_MAX:
        raise ValueError(f"{fmt.name} stores scales and offsets as float16: weights up to {FLOAT16_MAX:g} in "
                         f"magnitude, not {float(np.abs(W).max()):g}; rescale the layer first")
    levels = fmt.entries
    u, s, z = normalise(W, group_size, levels)
    a = input_importance(calib, W.shape[1], weighting)
    omega = a[None, :] * np.repeat(s, group_size, axis=1) if weighting != "none" else np.ones_like(u, np.float64)
    starts = ("linspace", "quantile") if init == "best" else (init,)
    runs = [kmeans_rows(u.astype(np.float64), omega, levels, start, int(iterations)) for start in starts]
    T, _, row_errors = runs[0]
    for other, _, other_errors in runs[1:]:  # Lloyd's loop ends in a local optimum: keep the lower, row by row
        T = np.where((other_errors < row_errors)[:, None], other, T)
        row_errors = np.minimum(row_errors, other_errors)
    stored = [np.asarray(x, np.float16).astype(np.float32) for x in (s, z, T)]
    codes = stored_codes(W, stored[2], stored[0], stored[1], group_size)
    return fmt.tensor(codes, stored[0], stored[1], stored[2], tuple(W.shape), group_size_asked, "any4",
                      extra={"errors": {start: run[1] for start, run in zip(starts, runs)},
                             "objective": float(row_errors.sum())})


# the inputs weight each row's k-means; the model layer captures them block by block (the reference recalibrates
# before every layer, its earlier layers already quantized), so it needs calibration text
METHOD = Method("any4", quantize=quantize, calibration=True, layer_inputs=True, sequential=True,
                formats=("any4", "any3"))
