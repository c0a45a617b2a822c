"""GPTQ: quantize a layer one column at a time, pushing each column's rounding error onto the columns not yet
quantized so that the layer's *output* stays close.

Frantar, Ashkboos, Hoefler, Alistarh, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers", 2022, arXiv:2210.17323 (reference code: IST-DASLab/gptq).

The layer-wise objective. For a linear layer y = W x and calibration inputs X (in_features x tokens), find
quantized weights W_hat minimizing

    || W X - W_hat X ||^2  =  tr( (W - W_hat) H (W - W_hat)^T ) / 2,     H = 2 X X^T / n_tokens.

Rows are independent (they share H), so think of one row w. Optimal Brain Surgeon (OBS): quantizing weight i
to q costs (w_i - q)^2 / (2 [H^-1]_ii) once the remaining weights move optimally, by

    delta = - (w_i - q) / [H^-1]_ii  *  H^-1[i, :]          (then drop i: H^-1 <- H^-1 with row/column i eliminated)

GPTQ makes three changes that turn OBS into a method for billion-parameter models:

  1. every row quantizes its columns in the same fixed order, so H^-1 is shared by all rows;
  2. the successive eliminated H^-1 rows are exactly the rows of the upper Cholesky factor U of H^-1
     (H^-1 = U^T U), scaled by sqrt([H^-1]_ii): row i of U gives the update, d = U_ii the cost denominator;
        err = (w_i - q_i) / U_ii,      w_j -= err * U_ij   for j > i;
  3. lazy batches: within a block of 128 columns the updates touch only the block; the rest of W receives the
     block's accumulated errors in one matrix product, W[:, block_end:] -= Err @ U[block, block_end:].

Details that matter (all from the reference implementation):
  * dampening: H += lambda I with lambda = percdamp * mean(diag H) (default 1 %), because H from few tokens is
    singular or badly conditioned; if the Cholesky factorization still fails, lambda grows tenfold until it works;
  * dead inputs (diag H = 0, an input that is always 0) get H_ii = 1 and their weights set to 0;
  * H is divided by the number of sequences there, by the number of tokens here: the same result unless some
    input is dead (see :class:`Hessian`);
  * act-order: quantize columns by decreasing diag H (the inputs with the largest activations first, while many
    columns remain to absorb their error), then undo the permutation;
  * groups: a group's scale is chosen when its first column is reached, from the weights as updated so far
    (static groups: all scales chosen up front from the original weights, so act-order keeps contiguous groups);
    per-channel scales come from the original weights.

One deliberate difference from the reference: when a group starts, its scale is computed from the *fully*
updated weights of its columns. The reference reads the lazily updated W, which misses the in-block updates
when groups are smaller than the block (REFERENCE.md §2.5); ours is the algorithm the paper describes, and it
makes the blocked result equal to the unblocked column-by-column one, whatever the group size.

Any element format can be the grid: INT2..8, NF4, FP4, FP8: GPTQ only needs the format's ``find_params`` (the
scale of a group) and ``quantize``/``dequantize`` (round a column to the grid). MX and NVFP4 too: their scales are
stored as codes of their own (E8M0, E4M3), which ``fmt.tensor_from_params`` derives from the scales GPTQ found,
and NVFP4's per-tensor scale is fixed from the whole W first (``fmt.for_tensor``). Not ggml's block types, which
have no element grid.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qtutor.backend import array_namespace, cholesky, cholesky_inverse
from qtutor.formats import Format
from qtutor.methods import Method
from qtutor.tensor import QuantizedTensor

# --------------------------------------------------------------------------------------------------------------
# 1. The Hessian H = 2 X X^T / n_tokens
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Hessian:
    """Running H = (2 / n_tokens) * sum over tokens of x x^T, accumulated batch by batch in float64.

    Divided by tokens; the reference divides by *sequences* (its H is tokens-per-sequence times ours). While every
    input is live the scale of H does not change the result: the dampening is a fraction of mean(diag H) and only
    ratios of H^-1 enter the updates. It does once an input is dead (always 0): its H_dd is set to 1 whatever
    the scale, and that 1 enters mean(diag H), so the live inputs are damped by a different fraction of their own
    diagonal (with small activations the 1s can dominate the mean), and some weights round differently. The
    scale also sets the reported loss, here ||W X - W_hat X||^2 / n_tokens.
    """

    in_features: int
    H: Any = None
    n_tokens: int = 0
    name: str = "layer"

    def add(self, X: Any) -> "Hessian":
        """Add a batch of inputs ``X`` (tokens x in_features, or any (..., in_features))."""
        xp = array_namespace(X)
        X = xp.asarray(X)
        if X.ndim == 0 or X.shape[-1] != self.in_features:
            raise ValueError(
                f"GPTQ {self.name}: calibration inputs of width {X.shape[-1] if X.ndim else 'scalar'} for a layer "
                f"with {self.in_features} input features; pass the layer's own inputs, shaped (tokens, "
                f"{self.in_features}) (qt.model.capture_inputs records them)")
        X = X.reshape(-1, self.in_features).astype(np.float64)
        if not bool(xp.isfinite(X).all()):
            raise ValueError(
                f"GPTQ: the calibration inputs of {self.name} contain NaN/Inf; the model produces non-finite "
                "activations on this data (check the model in float32, or the calibration text)"
            )
        if self.H is None:
            self.H = xp.zeros((self.in_features, self.in_features), dtype=np.float64)
        n_new = X.shape[0]
        self.H *= self.n_tokens / (self.n_tokens + n_new)  # keep H a mean as tokens arrive
        self.n_tokens += n_new
        self.H += (2.0 / self.n_tokens) * (X.T @ X)
        return self


def hessian(X: Any, name: str = "layer") -> Any:
    """H = 2 X^T X / n_tokens of inputs ``X`` (tokens x in_features)."""
    return Hessian(X.shape[-1], name=name).add(X).H


def layer_hessian(in_features: int, calib: Any = None, H: Any = None, method: str = "GPTQ",
                  name: str = "layer") -> tuple[Any, int | None]:
    """(H, n_tokens) for a second-order method (GPTQ, MR-GPTQ, QuIP#, VPTQ): ``H`` as given (a :class:`Hessian`,
    or an array, its token count then unknown: None), else accumulated from the layer's inputs ``calib``;
    checked to be (in_features, in_features)."""
    if H is None:
        if calib is None:
            raise ValueError(f"{method} needs calibration inputs (calib=X of shape (tokens, in_features)) or H")
        H = Hessian(in_features, name=name if method == "GPTQ" else f"{method} {name}").add(calib)
    H, n_tokens = (H.H, H.n_tokens) if isinstance(H, Hessian) else (H, None)
    if tuple(H.shape) != (in_features, in_features):
        raise ValueError(f"{method} {name}: H must be ({in_features}, {in_features}) for a layer with "
                         f"{in_features} inputs, not {tuple(H.shape)}")
    return H, n_tokens


# --------------------------------------------------------------------------------------------------------------
# 2. Dampening and the upper Cholesky factor of H^-1
# --------------------------------------------------------------------------------------------------------------


def inverse_cholesky_upper(H: Any, percdamp: float = 0.01, n_tokens: int | None = None, name: str = "layer"):
    """Return (U, dead, damp): H^-1 = U^T U after the dead-input fix and dampening.

    ``dead`` marks inputs that never fire (diag H == 0); their weights must be zeroed by the caller.
    If the dampened H is still not positive definite (too few tokens for the number of columns), the dampening
    grows tenfold until the factorization succeeds, with a warning: never NaN weights.
    """
    xp = array_namespace(H)
    H = xp.array(H, dtype=np.float64)
    columns = H.shape[0]
    if n_tokens is not None and n_tokens < columns:
        warnings.warn(
            f"GPTQ {name}: {n_tokens} calibration tokens for {columns} columns; H has rank <= {n_tokens} and "
            "leans on dampening. Use more calibration tokens for a better result.",
            stacklevel=3,
        )
    dead = xp.diag(H) == 0
    H[dead, dead] = 1.0
    damp = percdamp * float(xp.mean(xp.diag(H)))
    if damp <= 0:
        damp = 1e-6
    for attempt in range(12):
        damped = H + damp * xp.eye(columns)
        try:
            L = cholesky(damped)
            if not bool(xp.isfinite(L).all()):
                raise np.linalg.LinAlgError("non-finite factor")
            H_inverse = cholesky_inverse(L)
            U = cholesky(H_inverse).T
            if not bool(xp.isfinite(U).all()):
                raise np.linalg.LinAlgError("non-finite factor")
        except np.linalg.LinAlgError:
            damp *= 10
            warnings.warn(f"GPTQ {name}: H is not positive definite; dampening raised to {damp:.3g}", stacklevel=3)
            continue
        return U, dead, damp
    raise np.linalg.LinAlgError(f"GPTQ {name}: H could not be factorized even with dampening {damp:.3g}")


def _warn_about_dead_inputs(H: Any, name: str) -> None:
    """Say so when calibration never exercised some inputs: GPTQ sets their weights to 0 (they carry no
    information on this data), which is right for an input that is always 0 and wrong for calibration data that
    missed it."""
    xp = array_namespace(H)
    dead = int((xp.diag(xp.asarray(H)) == 0).sum())
    if dead == H.shape[0]:
        warnings.warn(f"GPTQ {name}: every one of the {dead} inputs is 0 in all calibration tokens (all-zero "
                      "calibration data?), so every weight is set to 0; calibrate on real text "
                      "(qt.data.calibration) or use RTN", stacklevel=3)
    elif dead:
        warnings.warn(f"GPTQ {name}: {dead} of {H.shape[0]} inputs are 0 in all calibration tokens (dead "
                      "columns); their weights are set to 0, as the reference does. If those inputs can be nonzero "
                      "on other text, calibrate on more or other data", stacklevel=3)


# --------------------------------------------------------------------------------------------------------------
# 3. The textbook loop: one column at a time, every later column updated at once
# --------------------------------------------------------------------------------------------------------------


def quantize_unblocked(W: Any, H: Any, fmt: Format, group_size: int = -1, sym: bool | None = None,
                       percdamp: float = 0.01, dtype: Any = np.float64) -> Any:
    """The algorithm with no lazy batches, no act-order: quantize column i, then update every later column at
    once. Slow and plain; tests check that :class:`GPTQ` gives the same weights. Returns dequantized W_hat."""
    sym = fmt.resolve_sym(sym)
    W = np.array(W, dtype=dtype)
    fmt = fmt.for_tensor(W)
    U, dead, _ = inverse_cholesky_upper(np.asarray(H), percdamp)
    W[:, dead] = 0
    fixed = None
    if group_size in (-1, 0):
        G = W if group_size == -1 else W.reshape(1, -1)
        scale, zero = fmt.find_params(G, sym)
        fixed = (np.broadcast_to(scale, (W.shape[0], 1)), None if zero is None else np.broadcast_to(zero, (W.shape[0], 1)))
    Q = np.zeros_like(W)
    for i in range(W.shape[1]):
        if fixed is None and i % group_size == 0:
            params = fmt.find_params(W[:, i:i + group_size], sym)
        scale, zero = fixed or params
        q = fmt.dequantize(fmt.quantize(W[:, i:i + 1], scale, zero), scale, zero)[:, 0]
        Q[:, i] = q
        W[:, i:] -= np.outer((W[:, i] - q) / U[i, i], U[i, i:])
    return Q


# --------------------------------------------------------------------------------------------------------------
# 4. Lazy batches, one column per step (the object an instructor drives in class)
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Step:
    """What one step of GPTQ did: the numbers the step-through widget shows."""

    position: int  # how many columns were quantized before this one
    column: int  # index of the column in W (original order)
    w: Any  # the column as it was when its turn came (after earlier updates)
    q: Any  # its quantized value
    error: Any  # w - q
    d: float  # U_ii, the denominator: the square root of [H^-1]_ii after earlier columns were eliminated
    hinv_row: Any  # U[i, i:], the row of the Cholesky factor used for the update (permuted order)
    loss: float  # this column's share of the objective, sum over rows of (w - q)^2 / (2 d^2)
    update_columns: Any = field(repr=False, default=None)  # original indices of the columns not yet quantized

    @property
    def update(self) -> Any:
        """The change this step makes to every column not yet quantized: -(error / d) outer U[i, i+1:]
        (applied at once inside the block, and through the lazy batch update beyond it)."""
        xp = array_namespace(self.error)
        return -xp.outer(self.error / self.d, self.hinv_row[1:])


class GPTQ:
    """GPTQ on one weight matrix, one column per :meth:`step`; :meth:`run` does it all.

    >>> solver = GPTQ(W, H, qt.formats.get("int4"), group_size=128)
    >>> step = solver.step()          # quantize the next column; step.error, step.update, step.hinv_row ...
    >>> solver.run_block()            # finish the current block of 128 columns
    >>> q = solver.run()              # the rest; a QuantizedTensor
    """

    def __init__(self, W: Any, H: Any, fmt: Format, group_size: int | None = 128, sym: bool | None = None,
                 blocksize: int = 128, percdamp: float = 0.01, act_order: bool = False, static_groups: bool = False,
                 n_tokens: int | None = None, name: str = "layer", dtype: Any = np.float32):
        from qtutor.formats.base import as_float32, check_finite, check_group_size

        if isinstance(H, Hessian):
            n_tokens, H = H.n_tokens, H.H
        self.name, self.dtype = name, dtype
        self.sym = fmt.resolve_sym(sym)
        W = as_float32(W, f"GPTQ {name}")
        check_finite(W, f"GPTQ {name}", "GPTQ needs finite weights")
        self.fmt = fmt.for_tensor(W)  # NVFP4: the per-tensor scale of the whole W, fixed before the first group
        if W.ndim != 2:
            raise ValueError(f"GPTQ {name}: W must be 2-D (out_features, in_features), got shape {tuple(W.shape)}")
        self.rows, self.columns = W.shape
        if H is None or tuple(H.shape) != (self.columns, self.columns):
            raise ValueError(f"GPTQ {name}: H must be ({self.columns}, {self.columns}) for W of shape {tuple(W.shape)}")
        if group_size is None:
            raise ValueError("GPTQ needs a scaled format: group_size N > 0, -1 (per channel) or 0 (per tensor)")
        self.group_size = check_group_size(group_size, tuple(W.shape), f"GPTQ {name}")
        if blocksize < 1:
            raise ValueError(f"blocksize={blocksize} must be >= 1")
        self.blocksize, self.percdamp = int(blocksize), percdamp
        self.act_order, self.static_groups = bool(act_order), bool(static_groups)
        self.xp = array_namespace(W)
        self._W_original = W
        self._H = H
        self._n_tokens = n_tokens
        _warn_about_dead_inputs(H, name)
        self.reset()

    # ---- set-up -------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Start again from the original weights (the widget's Reset button)."""
        xp, W = self.xp, self._W_original.astype(self.dtype)
        # per-channel / per-tensor scales come from the ORIGINAL weights, before any update
        self._fixed_params = None
        if self.group_size in (-1, 0):
            G = W if self.group_size == -1 else W.reshape(1, -1)
            scale, zero = self.fmt.find_params(G, self.sym)
            rows_scale = xp.broadcast_to(scale, (self.rows, 1)) if self.group_size == 0 else scale
            rows_zero = None if zero is None else (xp.broadcast_to(zero, (self.rows, 1)) if self.group_size == 0 else zero)
            self._fixed_params = (scale, zero, rows_scale, rows_zero)
        H = xp.asarray(self._H)
        dead = xp.diag(H) == 0
        W = W.copy()
        W[:, dead] = 0  # an input that never fires carries no information: its weight is dropped
        self.perm = xp.argsort(-xp.diag(H), kind="stable") if self.act_order else xp.arange(self.columns)
        self.inverse_perm = xp.argsort(self.perm)
        # static groups: every group's scale from the weights in ORIGINAL column order, before any update
        self._static_params = None
        if self.group_size > 0 and self.static_groups:
            gs = self.group_size
            self._static_params = [self.fmt.find_params(W[:, g:g + gs], self.sym) for g in range(0, self.columns, gs)]
        W = W[:, self.perm]
        U, _, self.damp = inverse_cholesky_upper(H[self.perm][:, self.perm], self.percdamp, self._n_tokens, self.name)
        self.U = U.astype(self.dtype)
        self.W = W  # current weights, permuted order; columns < position are final (Q)
        self.Q = xp.zeros_like(W)  # dequantized values, permuted order
        self.codes = None
        self.position = 0  # next column to quantize (permuted order)
        self.losses = xp.zeros(self.columns, dtype=np.float64)
        self._block_errors = xp.zeros((self.rows, self.blocksize), dtype=self.dtype)
        self._block_start = 0
        self._params = None
        self._group_scales: dict[int, tuple[Any, Any]] = {}

    # ---- one column -------------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.position >= self.columns

    def _current_columns(self, start: int, stop: int) -> Any:
        """Fully updated weights of columns [start, stop): inside the current block W holds them already;
        beyond it, subtract the block's errors that the lazy update has not applied yet."""
        block_end = min(self._block_start + self.blocksize, self.columns)
        inside = self.W[:, start:min(stop, block_end)]
        if stop <= block_end:
            return inside
        done_in_block = self.position - self._block_start
        beyond = self.W[:, block_end:stop] - self._block_errors[:, :done_in_block] @ self.U[
            self._block_start:self.position, block_end:stop]
        return self.xp.concatenate([inside, beyond], axis=1)

    def _params_for(self, i: int) -> tuple[Any, Any]:
        if self._fixed_params is not None:
            return self._fixed_params[2], self._fixed_params[3]
        gs = self.group_size
        if self.static_groups:
            return self._static_params[int(self.perm[i]) // gs]
        if i % gs == 0:  # a new group starts: its scale from the weights as they are now
            self._params = self.fmt.find_params(self._current_columns(i, i + gs), self.sym)
            self._group_scales[i // gs] = self._params
        return self._params

    def step(self) -> Step:
        """Quantize the next column and spread its error over the columns not yet quantized."""
        if self.done:
            raise StopIteration("all columns are quantized; call reset() to start again")
        xp, i = self.xp, self.position
        if i == self._block_start + self.blocksize:  # the block is finished: apply its errors lazily
            self._flush_block()
        scale, zero = self._params_for(i)
        w = self.W[:, i:i + 1].copy()
        codes = self.fmt.quantize(w, scale, zero)
        q = self.fmt.dequantize(codes, scale, zero).astype(self.dtype)
        self._store_codes(i, codes)
        d = self.U[i, i]
        error = (w - q)[:, 0]
        scaled_error = error / d
        block_end = min(self._block_start + self.blocksize, self.columns)
        # the OBS update, restricted to this block; later blocks get it from _flush_block
        self.W[:, i:block_end] -= xp.outer(scaled_error, self.U[i, i:block_end])
        self._block_errors[:, i - self._block_start] = scaled_error
        self.Q[:, i] = q[:, 0]
        self.losses[i] = float((scaled_error.astype(np.float64) ** 2).sum() / 2)
        self.position += 1
        if self.done:
            self._flush_block()
        return Step(position=i, column=int(self.perm[i]), w=w[:, 0], q=q[:, 0], error=error, d=float(d),
                     hinv_row=self.U[i, i:], loss=float(self.losses[i]), update_columns=self.perm[i + 1:])

    def _flush_block(self) -> None:
        """The lazy batch update: W[:, block_end:] -= Err_block @ U[block, block_end:]."""
        start, end = self._block_start, min(self._block_start + self.blocksize, self.columns)
        if end < self.columns:
            self.W[:, end:] -= self._block_errors[:, : end - start] @ self.U[start:end, end:]
        self._block_errors[:] = 0
        self._block_start = end

    def _store_codes(self, start: int, codes: Any) -> None:
        """Codes (rows, k) of the columns start .. start + k - 1."""
        if self.codes is None:
            self.codes = self.xp.zeros((self.rows, self.columns), dtype=codes.dtype)
        self.codes[:, start:start + codes.shape[1]] = codes

    def run_block(self) -> list[Step]:
        """Quantize the columns left in the current block of ``blocksize`` columns."""
        steps = [self.step()]
        while not self.done and self.position % self.blocksize:
            steps.append(self.step())
        return steps

    # ---- the same block on the GPU: kernels/gptq.cu, whose NumPy twin is run_block (step by step) above -----
    def _on_gpu(self) -> bool:
        from qtutor.backend import is_cupy

        return is_cupy(self.W)

    def _block_kernel_applies(self) -> bool:
        groups_fit = self.group_size in (-1, 0) or self.static_groups or self.blocksize % self.group_size == 0
        return (self._on_gpu() and self.fmt.family == "integer" and self.dtype == np.float32 and groups_fit
                and self.position == self._block_start)

    def _group_tables(self) -> tuple[Any, Any, Any, int]:
        """Scales and zero points as (rows, n_groups) tables, the group of every column (permuted order), and
        the group size the kernel must compute parameters for (0: all given)."""
        xp, rows = self.xp, self.rows
        if self._fixed_params is not None:
            scale, zero = self._fixed_params[2], self._fixed_params[3]
            group_of = xp.zeros(self.columns, dtype=np.int32)
            return (xp.ascontiguousarray(scale.reshape(rows, 1), dtype=np.float32),
                    None if zero is None else xp.ascontiguousarray(zero.reshape(rows, 1), dtype=np.float32),
                    group_of, 0)
        n_groups = self.columns // self.group_size
        if self.static_groups:
            scales = xp.ascontiguousarray(xp.concatenate([p[0] for p in self._static_params], axis=1), np.float32)
            zeros = None if self.sym else xp.ascontiguousarray(
                xp.concatenate([p[1] for p in self._static_params], axis=1), np.float32)
            return scales, zeros, (self.perm // self.group_size).astype(np.int32), 0
        scales = xp.ones((rows, n_groups), dtype=np.float32)
        zeros = None if self.sym else xp.zeros((rows, n_groups), dtype=np.float32)
        return scales, zeros, (xp.arange(self.columns) // self.group_size).astype(np.int32), self.group_size

    def _run_block_on_gpu(self) -> None:
        import cupy

        from qtutor.kernels import function, optional

        start, end = self.position, min(self.position + self.blocksize, self.columns)
        count, rows = end - start, self.rows
        scales, zeros, group_of, dynamic = self._group_tables()
        Wt = cupy.ascontiguousarray(self.W[:, start:end].T)
        codes_t = cupy.empty((count, rows), dtype=cupy.int32)
        Qt = cupy.empty((count, rows), dtype=cupy.float32)
        Err_t = cupy.empty((count, rows), dtype=cupy.float32)
        losses = cupy.zeros(self.columns, dtype=cupy.float64)
        U = cupy.ascontiguousarray(self.U, dtype=cupy.float32)
        threads = 128
        function("gptq", "gptq_quantize_block")(
            ((rows + threads - 1) // threads,), (threads,),
            (Wt, U, np.int64(rows), np.int64(self.columns), np.int64(start), np.int64(count), scales, optional(zeros),
             np.int64(scales.shape[1]), cupy.ascontiguousarray(group_of), np.int64(dynamic), np.int32(self.fmt.bits),
             codes_t, Qt, Err_t, losses))
        self.W[:, start:end] = Wt.T
        self.Q[:, start:end] = Qt.T
        self._store_codes(start, codes_t.T.astype(np.int8 if self.sym else np.uint8))
        self.losses[start:end] = losses[start:end]
        if dynamic:
            for g in range(start // dynamic, end // dynamic):
                self._group_scales[g] = (scales[:, g:g + 1], None if zeros is None else zeros[:, g:g + 1])
                self._params = self._group_scales[g]
        self._block_errors[:, :count] = Err_t.T
        self.position = end
        self._flush_block()

    def run(self) -> QuantizedTensor:
        """Quantize every remaining column and return the result.

        On a GPU (W a CuPy array) with an integer format, whole blocks go through the kernel of
        ``kernels/gptq.cu`` (one thread per row runs this column loop) and cuBLAS applies the lazy update;
        everything else, and a block already begun, goes step by step."""
        while not self.done:
            if self._block_kernel_applies():
                self._run_block_on_gpu()
            else:
                self.step()
        return self.result()

    # ---- results ------------------------------------------------------------------------------------------
    @property
    def loss(self) -> float:
        """Running objective: sum of (w - q)^2 / (2 d^2) over the columns quantized so far."""
        return float(self.losses[: self.position].sum())

    def quantized_so_far(self) -> Any:
        """Dequantized weights in original column order, NaN where a column is not quantized yet."""
        xp = self.xp
        out = xp.full((self.rows, self.columns), np.nan, dtype=np.float32)
        done = self.perm[: self.position]
        out[:, done] = self.Q[:, : self.position]
        return out

    def current_weights(self) -> Any:
        """The weights as GPTQ sees them now (original order): quantized columns, and the remaining columns
        with every update so far applied (the lazy ones included)."""
        xp = self.xp
        permuted = xp.array(self.W)
        permuted[:, : self.position] = self.Q[:, : self.position]
        if not self.done and self.position > self._block_start:
            permuted[:, self.position:] = self._current_columns(self.position, self.columns)
        return permuted[:, self.inverse_perm]

    def result(self) -> QuantizedTensor:
        if not self.done:
            raise RuntimeError(f"{self.columns - self.position} columns are not quantized yet; call run()")
        xp = self.xp
        extra = {"loss": self.loss, "damp": self.damp, "perm": self.perm}
        if self.group_size in (-1, 0):
            scale, zero = self._fixed_params[0], self._fixed_params[1]
            shape = () if self.group_size == 0 else (self.rows,)
            return self.fmt.tensor_from_params(self.codes[:, self.inverse_perm], scale.reshape(shape),
                                               None if zero is None else zero.reshape(shape), self.group_size,
                                               self.sym, (self.rows, self.columns), "gptq", extra)
        n_groups = self.columns // self.group_size
        params = self._static_params if self.static_groups else [self._group_scales[g] for g in range(n_groups)]
        scales = xp.concatenate([p[0] for p in params], axis=1)
        zeros = None if params[0][1] is None else xp.concatenate([p[1] for p in params], axis=1)
        if self.act_order and not self.static_groups:
            # the groups were formed in act-order: they are contiguous in the permuted order, so the codes stay
            # in it (a checkpoint's g_idx, the group of every original column, is inverse_perm // group_size)
            return self.fmt.tensor_from_params(self.codes, scales, zeros, self.group_size, self.sym,
                                               (self.rows, self.columns), "gptq", extra, column_order=self.perm)
        return self.fmt.tensor_from_params(self.codes[:, self.inverse_perm], scales, zeros, self.group_size,
                                           self.sym, (self.rows, self.columns), "gptq", extra)


# --------------------------------------------------------------------------------------------------------------
# 5. One call
# --------------------------------------------------------------------------------------------------------------


def quantize(W: Any, fmt: Format, group_size: int | None = 128, sym: bool | None = None, calib: Any = None, *,
             H: Any = None, blocksize: int = 128, percdamp: float = 0.01, act_order: bool = False,
             static_groups: bool = False, name: str = "layer", role: str | None = None) -> QuantizedTensor:
    """GPTQ-quantize ``W (out_features, in_features)`` with calibration inputs ``calib (tokens, in_features)``
    or a precomputed Hessian ``H`` (a :class:`Hessian` or an array). ``role`` is accepted and ignored."""
    H, n_tokens = layer_hessian(W.shape[-1], calib, H, "GPTQ", name)
    return GPTQ(W, H, fmt, group_size, sym, blocksize, percdamp, act_order, static_groups, n_tokens, name).run()


# GPTQ needs calibration text and its layers' inputs, captured block by block: block i's inputs come from the model
# with blocks < i already quantized (sequential, as the reference); on a GPU its blocks run kernels/gptq.cu
METHOD = Method("gptq", quantize=quantize, calibration=True, layer_inputs=True, sequential=True,
                device_arrays=True)
