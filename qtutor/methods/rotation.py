"""Rotate before rounding: spread every outlier over all channels (QuaRot's answer to W4A4).

Ashkboos, Mohtashami, Croci, Li, Cameron, Jaggi, Alistarh, Hoefler, Hensman, "QuaRot: Outlier-Free 4-Bit
Inference in Rotated LLMs", 2024, arXiv:2404.00456 (and SpinQuant, Liu et al., 2024, arXiv:2405.16406, which
learns the rotation). The incoherence processing of QuIP (Chee et al., 2023) is the same idea for weights alone.

For any orthogonal matrix R (R R^T = I) a linear layer computes the same product in the rotated basis:

    y = x W^T = (x R)(W R)^T.

An outlier channel of x is one coordinate carrying a large share of the token's energy. A random rotation
spreads it over all n coordinates, each receiving about 1/sqrt(n) of it, so the rotated token has no outlier:
its max/rms ratio falls to about sqrt(2 ln n) whatever it was before, and a per-token scale wastes no codes.
The weight columns are mixed the same way. W4A4 then rounds both in the rotated basis:

    y_hat = Q(x R) Q(W R)^T            (the integer product, as for W8A8)

Fake quantization reproduces it exactly: with W_hat = Q(W R) R^T and x_hat = Q(x R) R^T,
x_hat W_hat^T = Q(x R) R^T R Q(W R)^T = Q(x R) Q(W R)^T.

R is a randomized Hadamard matrix H diag(+-1) / sqrt(n) when n is a power of two (QuaRot's choice: applied in
O(n log n) by a fast Walsh-Hadamard transform), otherwise a random orthogonal matrix (QR of a Gaussian one).
QuaRot folds most rotations into the weights (the residual stream is rotated once; RMSNorm commutes with a
rotation once its weight is folded into the next linear) and rotates online only before down_proj; here every
linear rotates its own input, which is the same arithmetic and easier to read.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np

from qtutor.formats import Format
from qtutor.tensor import QuantizedTensor


def hadamard(n: int) -> np.ndarray:
    """Sylvester's Hadamard matrix of order n (a power of two), entries +-1: H_2n = [[H, H], [H, -H]]."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"a Sylvester Hadamard matrix needs a power of two, not {n}")
    H = np.ones((1, 1), dtype=np.float64)
    while H.shape[0] < n:
        H = np.block([[H, H], [H, -H]])
    return H


@functools.lru_cache(maxsize=16)
def rotation_matrix(n: int, seed: int = 0) -> np.ndarray:
    """A random orthogonal n x n matrix (float32), the same for the same (n, seed): a randomized Hadamard
    matrix diag(+-1) H / sqrt(n) for powers of two, otherwise Q of the QR decomposition of a Gaussian matrix
    (signs fixed so that Q is uniformly distributed)."""
    rng = np.random.default_rng(seed)
    if n & (n - 1) == 0:
        signs = rng.choice([-1.0, 1.0], size=n)
        R = signs[:, None] * hadamard(n) / np.sqrt(n)
    else:
        Q, upper = np.linalg.qr(rng.standard_normal((n, n)))
        R = Q * np.sign(np.diag(upper))[None, :]
    R = R.astype(np.float32)
    R.setflags(write=False)
    return R


def quantize(W: Any, fmt: Format, group_size: int | None = -1, sym: bool | None = None, calib: Any = None, *,
             seed: int = 0, name: str = "layer", **_ignored) -> QuantizedTensor:
    """Round W R (R from :func:`rotation_matrix` of in_features) to ``fmt``; ``dequantize()`` gives
    Q(W R) R^T, the weight of a fake-quant model whose inputs are rotated the same way (the activation side is
    :func:`qtutor.model.activations.quantized_inputs` with ``rotation_seed``). ``calib`` is not used."""
    W = np.asarray(W, dtype=np.float32)
    R = rotation_matrix(W.shape[1], seed)
    q = fmt.encode(W @ R, group_size=group_size, sym=sym)
    return RotatedTensor(q.codes, q.scales, q.zeros, q.fmt, q.group_size, q.sym, q.shape, "rotation",
                         {**q.extra, "seed": seed})


def rotated_fake_quantize(x: np.ndarray, quantize_rows: Any, seed: int = 0) -> np.ndarray:
    """x_hat = Q(x R) R^T for activations ``x (tokens, channels)``, Q being ``quantize_rows``."""
    R = rotation_matrix(x.shape[-1], seed)
    return (quantize_rows(x @ R) @ R.T).astype(np.float32)


class RotatedTensor(QuantizedTensor):
    """Codes of W R; dequantize() rotates back: Q(W R) R^T. R is regenerated from (in_features, seed)."""

    def dequantize(self):
        R = rotation_matrix(self.shape[1], self.extra["seed"])
        return (self.format.decode(self) @ R.T).astype(np.float32)
