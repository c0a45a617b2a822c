"""AffineQuant: an invertible matrix before the rounding, learned so that the rounded layer computes as before.

Ma et al., "AffineQuant: Affine Transformation Quantization for Large Language Models", ICLR 2024 (code:
bytedance/AffineQuant). SmoothQuant and AWQ (notebooks 07, 08) move quantization difficulty between a linear's
inputs and its weights with a *diagonal* scale. AffineQuant moves it with a full invertible matrix A:

    y = x W^T = (x A^-1) (W A^T)^T                       the float layer: unchanged for any invertible A
    y_hat     = (x A^-1) Q(W A^T)^T = x W_hat^T,          W_hat = Q(W A^T) A^-T

Q rounds the *transformed* weight W A^T, whose columns mix the original ones, and W_hat is the weight the rounded
layer effectively computes with. A is learned to keep the layer's output on the calibration inputs x_t:

    L(A) = sum over the linears reading x of  tr((W_hat - W) H (W_hat - W)^T) / tr(W H W^T),   H = sum_t x_t^T x_t

Gradient. Q is a staircase; AffineQuant differentiates through it straight (dQ(V) = dV, the straight-through
estimate). With D = W_hat - W (out x in) it comes out in closed form, and only the rounding error D drives it
(with Q = identity, D = 0 and the float layer is optimal for every A):

    A on a linear's inputs   (W' = W A^T):       dL/dA = -2 A^-T H D^T D / tr(W H W^T)
    A on a linear's outputs  (W' = A^-T W):      dL/dA =  2 A^-T D H D^T / tr(W H W^T)

(first: dL = <2 H D^T, d(A^-1) Q^T + A^-1 dQ^T> with d(A^-1) = -A^-1 dA A^-1 and dQ = dW' = W dA^T; the two
terms combine through W - Q A^-T = -D. Second likewise, with W_hat = A^T Q(A^-T W).) The second is the v_proj side
of a v -> o pair: v's outputs times A^-1 reach o_proj through the attention average, which o_proj's columns
(times A^T) undo, one A block per key/value head.

Invertibility: the gradual mask. A = S * M_e (elementwise), with S learned and M_e fixed during epoch e:

    M_e = I + sf * (the off-diagonal band |i - j| < k_e),      k_e = floor((d - 1) / (E - 1) * e) + 1

At epoch 0 (k = 1) A is diagonal; the band widens each epoch until A is full at the last. Each step the new
off-diagonals start at zero and sf (the *stability factor*, 1e-2 for the reference's Llama runs) keeps them small
against the diagonal, so A stays strictly diagonally dominant, hence invertible. A starts at SmoothQuant's scale,
A = diag(s) with s_j = max|x_j|^alpha / max|W_:j|^(1 - alpha), alpha = 0.5 (the first epoch learns OmniQuant's
diagonal "LET"). The learning is Adam, ``lr`` = 5e-3 as the reference's ``let_lr``; the best A seen (by the exact
loss, with the real rounding) is kept, and if no step beats the start the result says so (``improved=False``).

Where A goes in a Llama block (the model's half is :mod:`qtutor.model.affine`):

    input_layernorm -> q, k, v          A on their shared input; the norm's output is multiplied by A^-1 at run time
    post_attention_layernorm -> gate, up    the same
    v_proj -> o_proj                    A block-diagonal, one block per key/value head, folded into both weights

A full matrix after a norm cannot be folded into the norm's weight (a vector), so the deployed model stores A^-1
and multiplies by it: d x d float16 numbers per norm, counted here in bits per weight (``matrix_bits``). On
SmolLM2 (d = 576) that is 3.0 bits per weight more over the whole model, as much as the 3-bit weights themselves;
``ln_matrix=False`` keeps those two diagonal (then they fold into the norms for free) and learns a full matrix only
where it costs nothing, v -> o.

Differences from the reference, and why:
* The loss is each group's own output error in the quadratic form above (its linears' outputs), not the whole
  block's output through the attention and the MLP; it needs only H (d x d), so a step costs the same for any
  number of calibration tokens, and every step uses all of them (the reference: AdamW on mini-batches of the
  block's output MSE, in float16).
* Adam works on A = D^(1/2) (P * M_e) D^(1/2), D = diag(s), P = I at the start: the same A, but each step moves
  entry (i, j) by about lr * sqrt(s_i s_j), so one learning rate suits channels whose scales differ 1000-fold (the
  reference's lr is absolute, for its float16 models).
* No learnable weight clipping (OmniQuant's LWC, which the reference trains with A) and no shifts (the reference
  uses none on Llama either): after the transform each weight is rounded to nearest (RTN).
* The groups are learned one after another from the float model's inputs (q, k, v's A first, then v -> o on the
  weights it left), not block by block on the quantized model's outputs.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Sequence

import numpy as np

from qtutor.formats import Format
from qtutor.formats.base import check_finite
from qtutor.methods import Method
from qtutor.methods.smoothquant import check_alpha, smoothing_scales
from qtutor.tensor import QuantizedTensor

EPOCHS = 10  # the band widens from the diagonal (epoch 0) to the full matrix (the last epoch)
STEPS_PER_EPOCH = 8  # Adam steps at each width, each on every calibration token (through H)
LEARNING_RATE = 5e-3  # the reference's let_lr (relative here: see the docstring)
STABILITY_FACTOR = 1e-2  # sf: the weight of the off-diagonal band in the mask (the reference's Llama scripts)
MAX_CONDITION = 1e6  # a step whose A is worse conditioned than this is not taken
MATRIX_BITS = 16  # a run-time A^-1 is stored in float16
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


# ---- the mask ----------------------------------------------------------------------------------------------------
def band_width(epoch: int, epochs: int, d: int) -> int:
    """k_e = floor((d - 1) / (E - 1) * e) + 1: the band's half width at epoch e (1: diagonal only; d: full)."""
    if epochs < 2:
        raise ValueError(f"epochs={epochs}: the gradual mask needs at least 2 epochs (the diagonal, then wider)")
    return min(int((d - 1) / (epochs - 1) * epoch) + 1, d)


def gradual_mask(d: int, width: int, sf: float = STABILITY_FACTOR, block: int | None = None) -> np.ndarray:
    """M = I + sf * (1 where 0 < |i - j| < width), optionally only inside diagonal blocks of ``block`` (one per
    attention head: A must not mix heads)."""
    if not sf > 0:
        raise ValueError(f"sf={sf}: the stability factor must be > 0 (1e-2 keeps A diagonally dominant)")
    i, j = np.indices((d, d))
    band = (np.abs(i - j) < width) & (i != j)
    if block is not None:
        band &= (i // block) == (j // block)
    return (np.eye(d) + sf * band).astype(np.float64)


def diagonally_dominant(A: np.ndarray) -> bool:
    """|A_ii| > sum over j != i of |A_ij| in every row (then A is invertible)."""
    magnitude = np.abs(A)
    diagonal = np.diag(magnitude)
    return bool(np.all(diagonal > magnitude.sum(axis=1) - diagonal))


# ---- the loss of one linear and its gradient (closed form, straight-through) --------------------------------------
@dataclass(frozen=True)
class Term:
    """One linear W (out x in) reading inputs of Gram H = X^T X, transformed on its ``side`` by T, where T is A
    itself or, with ``index``, A's entries A[index][:, index] inside diagonal blocks of ``block`` (o_proj reads
    each key/value head's block of A once per query head that shares it)."""

    W: np.ndarray
    H: np.ndarray
    side: str = "in"  # "in": W' = W T^T, the inputs times T^-1;  "out": W' = T^-T W, the outputs times T^-1
    index: np.ndarray | None = None
    block: int | None = None

    @cached_property
    def energy(self) -> float:
        """tr(W H W^T) = ||X W^T||^2: the float output's energy, which normalises the term's loss."""
        return max(float(np.sum((self.W @ self.H) * self.W)), 1e-30)

    def expand(self, A: np.ndarray) -> np.ndarray:
        if self.index is None:
            return A
        T = A[np.ix_(self.index, self.index)]
        n = len(self.index)
        same = (np.arange(n)[:, None] // self.block) == (np.arange(n)[None, :] // self.block)
        return T * same

    def collapse(self, G: np.ndarray, d: int) -> np.ndarray:
        """The gradient with respect to A from the gradient with respect to T = expand(A)."""
        if self.index is None:
            return G
        out = np.zeros((d, d))
        n = len(self.index)
        same = (np.arange(n)[:, None] // self.block) == (np.arange(n)[None, :] // self.block)
        np.add.at(out, (self.index[:, None], self.index[None, :]), G * same)
        return out


def transformed(term: Term, T: np.ndarray) -> np.ndarray:
    """The weight that is rounded: W T^T (inputs side) or T^-T W (outputs side)."""
    return term.W @ T.T if term.side == "in" else np.linalg.solve(T.T, term.W)


def effective_weight(term: Term, T: np.ndarray, rounded: np.ndarray) -> np.ndarray:
    """The weight the rounded layer computes with, in the original basis: Q(W T^T) T^-T, or T^T Q(T^-T W)."""
    return np.linalg.solve(T, rounded.T).T if term.side == "in" else T.T @ rounded


def term_loss_and_gradient(term: Term, T: np.ndarray, rounded: np.ndarray) -> tuple[float, np.ndarray]:
    """(tr(D H D^T) / tr(W H W^T), its straight-through gradient with respect to T), D = W_hat - W."""
    D = effective_weight(term, T, rounded) - term.W
    DH = D @ term.H
    loss = float(np.sum(DH * D)) / term.energy
    T_inv_t = np.linalg.inv(T).T
    if term.side == "in":
        G = -2.0 * T_inv_t @ (DH.T @ D) / term.energy  # H D^T D, H symmetric
    else:
        G = 2.0 * T_inv_t @ (DH @ D.T) / term.energy
    return loss, G


def group_loss(terms: Sequence[Term], A: np.ndarray, round_weight: Callable[[np.ndarray], np.ndarray],
               with_gradient: bool = True) -> tuple[float, np.ndarray | None]:
    """L(A) over the group's linears (each rounded by ``round_weight``, the format's RTN) and dL/dA."""
    d = A.shape[0]
    loss, gradient = 0.0, np.zeros((d, d))
    for term in terms:
        T = term.expand(A)
        rounded = np.asarray(round_weight(transformed(term, T)), dtype=np.float64)
        part, G = term_loss_and_gradient(term, T, rounded)
        loss += part
        if with_gradient:
            gradient += term.collapse(G, d)
    return loss, (gradient if with_gradient else None)


# ---- learning A ----------------------------------------------------------------------------------------------------
@dataclass
class Learned:
    """A learned transform: A, its loss at the start (SmoothQuant's diagonal) and at the end, the best loss of each
    epoch, and how well conditioned the kept A is."""

    A: np.ndarray
    start_loss: float
    loss: float
    epoch_losses: list = field(default_factory=list)
    condition: float = 1.0
    dominant: bool = True
    rejected_steps: int = 0  # steps not taken because A would have been worse conditioned than MAX_CONDITION

    @property
    def improved(self) -> bool:
        return self.loss < self.start_loss


def initial_scales(act_absmax: np.ndarray, weights: Sequence[np.ndarray], alpha: float = 0.5) -> np.ndarray:
    """SmoothQuant's s (the reference's start): max|x_j|^alpha / max over the readers of max|W_:j|^(1 - alpha)."""
    return np.asarray(smoothing_scales(np.asarray(act_absmax, dtype=np.float32), weights, alpha), dtype=np.float64)


def learn_transform(terms: Sequence[Term], s: np.ndarray, round_weight: Callable[[np.ndarray], np.ndarray], *,
                    epochs: int = EPOCHS, steps: int = STEPS_PER_EPOCH, lr: float = LEARNING_RATE,
                    sf: float = STABILITY_FACTOR, block: int | None = None, diagonal_only: bool = False,
                    name: str = "group") -> Learned:
    """Learn A (d x d, d = len(s)) from A = diag(s) under the gradual mask, by Adam on the group's loss.

    ``block``: A is block-diagonal with blocks of this size (one per attention head); ``diagonal_only``: the band
    never widens (a diagonal A, foldable into a norm)."""
    s = np.asarray(s, dtype=np.float64)
    d = len(s)
    if d == 0 or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"AffineQuant {name}: the starting scales must be finite and positive")
    if steps < 1 or not lr > 0:
        raise ValueError(f"AffineQuant {name}: steps={steps} and lr={lr} must be >= 1 and > 0")
    for term in terms:
        check_finite(term.W, f"AffineQuant {name}", "the weights must be finite to be transformed")
        size = term.W.shape[1] if term.side == "in" else term.W.shape[0]
        expected = d if term.index is None else len(term.index)
        if size != expected or term.H.shape != (term.W.shape[1],) * 2:
            raise ValueError(f"AffineQuant {name}: a weight of shape {term.W.shape} with inputs of width "
                             f"{term.H.shape[0]} does not fit a transform of size {d}")
        if not np.all(np.isfinite(term.H)):
            raise ValueError(f"AffineQuant {name}: the calibration inputs contain NaN/Inf")
    root = np.sqrt(s)
    scale = root[:, None] * root[None, :]  # A = scale * P * M
    P = np.eye(d)
    first, second = np.zeros((d, d)), np.zeros((d, d))
    start_loss, _ = group_loss(terms, np.diag(s), round_weight, with_gradient=False)
    best = Learned(np.diag(s), start_loss, start_loss, condition=float(s.max() / s.min()))
    t = 0
    for epoch in range(epochs):
        width = 1 if diagonal_only else band_width(epoch, epochs, d)
        mask = gradual_mask(d, width, sf, block)
        for _ in range(steps):
            A = scale * P * mask
            loss, G_A = group_loss(terms, A, round_weight)
            if loss < best.loss:
                best.A, best.loss = A, loss
            G_P = G_A * scale * mask
            t += 1
            first = ADAM_BETAS[0] * first + (1 - ADAM_BETAS[0]) * G_P
            second = ADAM_BETAS[1] * second + (1 - ADAM_BETAS[1]) * G_P**2
            step = lr * (first / (1 - ADAM_BETAS[0] ** t)) / (np.sqrt(second / (1 - ADAM_BETAS[1] ** t)) + ADAM_EPS)
            candidate = P - step * (mask != 0)
            if np.linalg.cond(scale * candidate * mask) > MAX_CONDITION:
                best.rejected_steps += 1
                continue
            P = candidate
        A = scale * P * mask
        loss, _ = group_loss(terms, A, round_weight, with_gradient=False)
        if loss < best.loss:
            best.A, best.loss = A, loss
        best.epoch_losses.append(best.loss)
    best.condition = float(np.linalg.cond(best.A))
    best.dominant = diagonally_dominant(best.A)
    return best


def matrix_bits(d: int) -> int:
    """Bits to store a run-time d x d A^-1 (float16)."""
    return d * d * MATRIX_BITS


def shares(total_bits: int, sizes: Sequence[int]) -> list[int]:
    """``total_bits`` split over tensors in proportion to their sizes, in whole bits that add up exactly."""
    weights = np.asarray(sizes, dtype=np.float64)
    parts = np.floor(total_bits * weights / weights.sum()).astype(np.int64)
    parts[-1] += total_bits - int(parts.sum())
    return [int(p) for p in parts]


def warn_if_not_improved(learned: Learned, name: str) -> None:
    if not learned.improved:
        warnings.warn(f"AffineQuant {name}: no learned A beat SmoothQuant's diagonal start (loss {learned.loss:.4g}); "
                      "the start is kept. More epochs or a smaller lr may help", RuntimeWarning, stacklevel=2)


# ---- the per-tensor quantizer: round the transformed weight --------------------------------------------------------
def quantize(W: Any, fmt: Format, group_size: int | None = 128, sym: bool | None = None, calib: Any = None,
             name: str = "layer", role: str | None = None, side_bits: int = 0, **format_options) -> QuantizedTensor:
    """Round ``W`` (already transformed by the model's half: W A^T, or A^-T W) to nearest, as RTN; ``side_bits``
    is this tensor's share of a run-time A^-1, counted in its bits per weight."""
    if int(side_bits) < 0:
        raise ValueError(f"side_bits={side_bits} must be >= 0")
    q = fmt.encode(W, group_size=group_size, sym=sym, **format_options)
    extra = {**q.extra, "side_bits": int(side_bits)} if side_bits else q.extra
    return QuantizedTensor(q.codes, q.scales, q.zeros, q.fmt, q.group_size, q.sym, q.shape, "affinequant", extra)


def check_options(alpha: float, epochs: int, sf: float) -> None:
    check_alpha(alpha)
    band_width(0, epochs, 1)
    gradual_mask(1, 1, sf)
    if not math.isfinite(sf):
        raise ValueError(f"sf={sf} must be finite")


# AffineQuant needs calibration text; the model's half learns and applies the transforms (phases "affine"), then
# each transformed weight is rounded to nearest
METHOD = Method("affinequant", quantize=quantize, calibration=True, transform="affine",
                options=("alpha",))
