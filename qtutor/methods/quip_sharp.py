"""QuIP#: incoherence by a randomized Hadamard transform, E8 lattice vectors, and LDLQ, at 2 and 3 bits.

Tseng, Chee, Sun, Kuleshov, De Sa, "QuIP#: Even Better LLM Quantization with Hadamard Incoherence and Lattice
Codebooks", ICML 2024, arXiv:2402.04475 (code: Cornell-RelaxML/quip-sharp), building on QuIP (Chee, Cai,
Kuleshov, De Sa, NeurIPS 2023). Three ideas, one per step:

1. **Incoherence.** Rounding hurts most where a few weights (or a few input channels) are much larger than the
   rest. Rotate both sides by random orthogonal matrices, R_in (in_features) and R_out (out_features):

       W~ = R_out^T W R_in,        H~ = R_in^T H R_in,        so  tr(E H E^T) = tr(E~ H~ E~^T)

   (E = W_hat - W; H = X^T X / tokens, the layer's input second moment). The rotated weights look Gaussian: no
   coordinate is special, max|W~| / rms(W~) falls to about sqrt(2 ln n). QuIP# uses randomized Hadamard
   matrices diag(+-1) H_n / sqrt(n), applied in n log n (here :func:`qtutor.methods.rotation.rotate`, the same
   fast Walsh-Hadamard transform as QuaRot's; sizes that are not a power of two, as SmolLM2's 576 and 1536,
   get a seeded random orthogonal matrix instead, QuIP's original choice). Undo: W_hat = R_out W~_hat R_in^T.

2. **Vectors from a lattice.** Gaussian-looking weights are coded 8 at a time as points of E8P
   (:mod:`qtutor.formats.codebook`): 2^16 points of the E8 lattice (shifted by 1/4) inside a ball, 16 bits
   per 8 weights = 2 bits per weight. A ball of lattice points covers a Gaussian cloud better than the cube of
   4^8 points a 2-bit grid puts on each axis. W~ is divided by one scale, rms(W~) / 1.03 (1.03: QuIP#'s best
   fit of the table to unit Gaussians). At 3 bits (``e8p_rvq3``) a second table of 256 E8 points codes the
   error of the first, divided by 2.04 (QuIP#'s residual scale), with the first scale 0.98.

3. **LDLQ**: adaptive rounding with feedback, which is GPTQ in another basis. Factor the (regularised) H~ as
   H~ = L D L^T with L unit *block* lower triangular (8 x 8 identity blocks on the diagonal) and D block
   diagonal. Going through the blocks of 8 columns from the last to the first,

       W_hat_k = Q( W_k + (W_{>k} - W_hat_{>k}) L_{>k,k} )

   each block is rounded after adding the error the later blocks made, weighted by how the inputs correlate.
   With blocks of 1 this is GPTQ on the columns in reverse order (a test shows it equal to GPTQ's loop, to
   float64 rounding). Then QuIP#'s 10 passes of block coordinate descent,
   W_hat_k <- Q( W_hat_k + (W - W_hat) H~_{:,k} H~_{kk}^-1 ), reduce the same proxy loss further.

H~ is first normalised to mean diagonal 1 and regularised by 0.01 I (QuIP#'s ``sigma_reg``), so a dead input
(never nonzero in calibration) costs no special case. Stored: the 16-bit codes (and 8-bit residual codes), one
float16 scale per tensor, and the two sign vectors of the randomized Hadamard transforms (in + out bits; our
non-power-of-two sizes regenerate their rotation from a seed instead, counted the same). Left out: QuIP#'s
fine-tuning after quantization (in-block, then end to end), its Kronecker/Paley Hadamards for sizes 2^k x 12,
20, ..., and the 4-bit two-E8P codebook.
"""
from __future__ import annotations

import warnings
from dataclasses import fields
from typing import Any

import numpy as np

from qtutor.formats.codebook import CodebookFormat, check_vectors, rms_scale
from qtutor.methods import Method
from qtutor.methods.gptq import layer_hessian
from qtutor.methods.rotation import rotate, unrotate
from qtutor.tensor import QuantizedTensor

SIGMA_REG = 1e-2  # added to the diagonal of H~ once it is normalised to mean diagonal 1
TUNE_ITERATIONS = 10  # QuIP#'s quip_tune_iters: passes of block coordinate descent after LDLQ


# ---- 1. incoherence ---------------------------------------------------------------------------------------------

def incoherent(W: np.ndarray, H: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(W~, H~) = (R_out^T W R_in, R_in^T H R_in), R_in of seed ``seed``, R_out of seed ``seed + 1``."""
    W_in = rotate(np.asarray(W, dtype=np.float32), seed)  # W R_in
    W_rotated = rotate(np.ascontiguousarray(W_in.T), seed + 1).T  # (W R_in)^T R_out, transposed: R_out^T W R_in
    H_rotated = rotate(np.ascontiguousarray(rotate(np.asarray(H, dtype=np.float32), seed).T), seed)
    return np.ascontiguousarray(W_rotated), (H_rotated + H_rotated.T).astype(np.float64) / 2


def coherent(W_rotated: Any, seed: int = 0) -> np.ndarray:
    """W = R_out W~ R_in^T, the inverse of :func:`incoherent` on the weights."""
    back_in = unrotate(np.asarray(W_rotated, dtype=np.float32), seed)  # W~ R_in^T
    return np.ascontiguousarray(unrotate(np.ascontiguousarray(back_in.T), seed + 1).T, dtype=np.float32)


def regularize(H: np.ndarray, sigma: float = SIGMA_REG) -> np.ndarray:
    """H / mean(diag H) + sigma I (an all-zero H, from all-zero calibration inputs, becomes I: plain rounding)."""
    mean_diagonal = float(np.mean(np.diag(H)))
    if mean_diagonal <= 0:
        warnings.warn("QuIP#: the calibration inputs are all zero, so LDLQ has no correlations to use and rounds "
                      "to the nearest points; calibrate on real text (qt.data.calibration)", stacklevel=3)
        return np.eye(len(H))
    return H / mean_diagonal + sigma * np.eye(len(H))


# ---- 2. block LDL and LDLQ --------------------------------------------------------------------------------------

def block_ldl(H: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """(L, D): H = L D L^T, L unit block lower triangular (identity blocks of ``block`` on its diagonal), D
    block diagonal, returned as its blocks (n / block, block, block). From the Cholesky factor C (H = C C^T):
    D_k = C_kk C_kk^T and L = C diag(C_kk^-1)."""
    C = np.linalg.cholesky(H)
    n_blocks = len(H) // block
    diagonal = np.stack([C[k * block:(k + 1) * block, k * block:(k + 1) * block] for k in range(n_blocks)])
    L = C.copy()
    for k in range(n_blocks):
        columns = slice(k * block, (k + 1) * block)
        L[:, columns] = C[:, columns] @ np.linalg.inv(diagonal[k])
    return L, diagonal @ diagonal.transpose(0, 2, 1)


def ldlq(W: np.ndarray, L: np.ndarray, round_block: Any, block: int) -> tuple[np.ndarray, list]:
    """W_hat_k = Q(W_k + (W_{>k} - W_hat_{>k}) L_{>k,k}) for the blocks of columns, last to first.

    ``round_block(x, k)`` rounds the (rows, block) columns of block k and returns (codes, rounded values).
    Returns W_hat and the codes of every block, in column order."""
    W_hat, codes = np.zeros_like(W), [None] * (W.shape[1] // block)
    for k in reversed(range(W.shape[1] // block)):
        columns, later = slice(k * block, (k + 1) * block), slice((k + 1) * block, None)
        target = W[:, columns] + (W[:, later] - W_hat[:, later]) @ L[later, columns]
        codes[k], W_hat[:, columns] = round_block(target, k)
    return W_hat, codes


def tune(W: np.ndarray, W_hat: np.ndarray, H: np.ndarray, codes: list, round_block: Any, block: int,
         iterations: int = TUNE_ITERATIONS) -> np.ndarray:
    """QuIP#'s block coordinate descent: each block, last to first, re-rounded to the minimiser of the proxy
    loss with the others fixed, W_hat_k + (W - W_hat) H_{:,k} H_kk^-1. ``codes`` is updated in place. Stops
    after a pass that changes no code (the rest would be the same pass again): on SmolLM2-sized layers the codes
    settle after one or two passes."""
    n_blocks = W.shape[1] // block
    pulls = [H[:, k * block:(k + 1) * block] @ np.linalg.inv(H[k * block:(k + 1) * block, k * block:(k + 1) * block])
             for k in range(n_blocks)]
    W_hat = W_hat.copy()
    for _ in range(iterations):
        error, changed = W - W_hat, False
        for k in reversed(range(n_blocks)):
            columns = slice(k * block, (k + 1) * block)
            before, codes_before = W_hat[:, columns].copy(), codes[k]
            codes[k], W_hat[:, columns] = round_block(before + error @ pulls[k], k)
            error[:, columns] += before - W_hat[:, columns]
            changed = changed or not np.array_equal(codes[k], codes_before)
        if not changed:  # a pass that changed no code: every later pass would repeat it
            break
    return W_hat


def proxy_loss(W: np.ndarray, W_hat: np.ndarray, H: np.ndarray) -> float:
    """tr((W_hat - W) H (W_hat - W)^T) / rows: the output error LDLQ minimises, per output."""
    E = np.asarray(W_hat, dtype=np.float64) - W
    return float(np.einsum("ij,jk,ik->", E, H, E) / len(E))


# ---- 3. one layer -----------------------------------------------------------------------------------------------

class QuipSharpTensor(QuantizedTensor):
    """Codes of W~ = R_out^T W R_in in E8P; dequantize() rotates back: R_out W~_hat R_in^T."""

    def dequantize(self):
        return coherent(self.format.decode(self), self.extra["seed"])


def quantize(W: Any, fmt: CodebookFormat, group_size: Any = None, sym: bool | None = None, calib: Any = None, *,
             H: Any = None, seed: int = 0, incoherence: bool = True, feedback: bool = True,
             tune_iterations: int = TUNE_ITERATIONS, sigma_reg: float = SIGMA_REG, name: str = "layer",
             **_ignored) -> QuantizedTensor:
    """QuIP#-quantize ``W (out_features, in_features)`` with its layer's inputs ``calib (tokens, in_features)``
    (or a Hessian ``H``). ``incoherence=False`` skips the rotations and ``feedback=False`` LDLQ and the tuning
    (plain nearest points), for the lessons that take the method apart. ``group_size``, ``sym``: not used (one
    scale per tensor)."""
    W = np.asarray(W, dtype=np.float32)
    check_vectors(tuple(W.shape), fmt.vector_size, f"QuIP# ({fmt.name}) {name}")
    if not np.isfinite(W).all():
        raise ValueError(f"QuIP# {name}: the weights contain NaN/Inf; fix the checkpoint before quantizing")
    if tune_iterations < 0:
        raise ValueError(f"tune_iterations must be >= 0, not {tune_iterations}")
    H, _ = layer_hessian(W.shape[1], calib, H, "QuIP#", name)  # checks the inputs' width and values
    H = np.asarray(H, dtype=np.float64)
    W_work, H_work = incoherent(W, H, seed) if incoherence else (W, H)
    H_work = regularize(H_work, sigma_reg)
    scale = rms_scale(W_work, fmt.scale)
    scale = float(np.float16(scale))  # stored in float16: round with the stored value
    W_units = W_work.astype(np.float64) / scale
    block = fmt.vector_size

    def round_block(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        code, point = fmt.nearest(x.astype(np.float32))
        return code, point.astype(np.float64)

    if feedback:
        L, _ = block_ldl(H_work, block)
        W_hat, codes = ldlq(W_units, L, round_block, block)
        W_hat = tune(W_units, W_hat, H_work, codes, round_block, block, tune_iterations)
    else:
        codes = [round_block(W_units[:, k * block:(k + 1) * block], k)[0] for k in range(W.shape[1] // block)]
    q = fmt.tensor(np.stack(codes, axis=1), np.full((1, 1), scale, np.float32), tuple(W.shape), "quip_sharp",
                   extra={"seed": seed, "side_bits": sum(W.shape) if incoherence else 0})
    if not incoherence:
        return q
    return QuipSharpTensor(*(getattr(q, f.name) for f in fields(q)))


# QuIP# reads each layer's inputs (H, from the float model as the reference's offline Hessians) and codes
# the layer in E8P, 2 or 3 bits per weight
METHOD = Method("quip_sharp", quantize=quantize, calibration=True, layer_inputs=True,
                formats=("e8p", "e8p_rvq3"))
