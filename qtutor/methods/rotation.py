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

R is a randomized Hadamard matrix diag(+-1) H / sqrt(n) when n is a power of two (QuaRot's choice), applied
without forming it: x R = fwht(x * signs) / sqrt(n), the fast Walsh-Hadamard transform taking n log2(n)
additions per row instead of n^2 multiply-adds (on a GPU, the kernel of ``kernels/hadamard.cu``). Other sizes
get a random orthogonal matrix (QR of a Gaussian one) and a matrix product.
QuaRot folds most rotations into the weights (the residual stream is rotated once; RMSNorm commutes with a
rotation once its weight is folded into the next linear) and rotates online only before down_proj; here every
linear rotates its own input, which is the same arithmetic and easier to read.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np

from qtutor.backend import array_namespace, is_cupy
from qtutor.formats import Format
from qtutor.methods import Method
from qtutor.tensor import QuantizedTensor

MAX_KERNEL_N = 8192  # the GPU transform keeps a row in 32 KiB of shared memory


def hadamard(n: int) -> np.ndarray:
    """Sylvester's Hadamard matrix of order n (a power of two), entries +-1: H_2n = [[H, H], [H, -H]]."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"a Sylvester Hadamard matrix needs a power of two, not {n}")
    H = np.ones((1, 1), dtype=np.float64)
    while H.shape[0] < n:
        H = np.block([[H, H], [H, -H]])
    return H


def is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def fwht(x: Any, scale: float = 1.0) -> Any:
    """scale * (x H_n) along the last axis, n a power of two: the fast Walsh-Hadamard transform.

    H_2n = [[H_n, H_n], [H_n, -H_n]] factors into log2(n) stages of butterflies: at stage h = 1, 2, ..., n/2,
    every pair of entries (j, j + h) with j mod 2h < h becomes (a + b, a - b). Float32 throughout. On a GPU
    (CuPy arrays) it is the kernel ``fwht_rows`` of ``kernels/hadamard.cu``, bit-identical."""
    n = x.shape[-1]
    if not is_power_of_two(n):
        raise ValueError(f"the fast Walsh-Hadamard transform needs a power-of-two length, not {n}")
    if is_cupy(x):
        return _gpu_fwht(x, scale)
    y = np.array(x, dtype=np.float32).reshape(-1, n)
    h = 1
    while h < n:
        pairs = y.reshape(y.shape[0], n // (2 * h), 2, h)
        a, b = pairs[:, :, 0, :].copy(), pairs[:, :, 1, :].copy()
        pairs[:, :, 0, :] = a + b
        pairs[:, :, 1, :] = a - b
        h *= 2
    return (y * np.float32(scale)).reshape(x.shape)


def _gpu_fwht(x: Any, scale: float) -> Any:
    import cupy

    from qtutor.kernels import function

    n = x.shape[-1]
    if n > MAX_KERNEL_N:
        raise ValueError(f"the GPU transform takes rows of at most {MAX_KERNEL_N} values, not {n}")
    rows = cupy.ascontiguousarray(x, dtype=cupy.float32).reshape(-1, n)
    out = cupy.empty_like(rows)
    threads = min(max(n // 2, 32), 1024)
    function("hadamard", "fwht_rows")((rows.shape[0],), (threads,),
                                      (rows, out, np.int64(rows.shape[0]), np.int32(n), np.float32(scale)))
    return out.reshape(x.shape)


def _signs(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).choice([-1.0, 1.0], size=n).astype(np.float32)


@functools.lru_cache(maxsize=16)
def rotation_matrix(n: int, seed: int = 0) -> np.ndarray:
    """The random orthogonal n x n matrix R of :func:`rotate` (float32), the same for the same (n, seed): the
    randomized Hadamard matrix diag(signs) H / sqrt(n) for powers of two, otherwise Q of the QR decomposition of
    a Gaussian matrix (signs fixed so that Q is uniformly distributed)."""
    if is_power_of_two(n):
        R = _signs(n, seed)[:, None] * hadamard(n) / np.sqrt(n)
    else:
        Q, upper = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
        R = Q * np.sign(np.diag(upper))[None, :]
    R = R.astype(np.float32)
    R.setflags(write=False)
    return R


def rotate(x: Any, seed: int = 0) -> Any:
    """x R along the last axis; for powers of two without forming R: fwht(x * signs) / sqrt(n)."""
    xp, n = array_namespace(x), x.shape[-1]
    if is_power_of_two(n):
        return fwht(x * xp.asarray(_signs(n, seed)), 1 / np.sqrt(n))
    return x @ xp.asarray(rotation_matrix(n, seed))


def unrotate(y: Any, seed: int = 0) -> Any:
    """y R^T, the inverse of :func:`rotate`: fwht(y) * signs / sqrt(n) for powers of two (H is symmetric)."""
    xp, n = array_namespace(y), y.shape[-1]
    if is_power_of_two(n):
        return fwht(y, 1 / np.sqrt(n)) * xp.asarray(_signs(n, seed))
    return y @ xp.asarray(rotation_matrix(n, seed)).T


def quantize(W: Any, fmt: Format, group_size: int | None = -1, sym: bool | None = None, calib: Any = None, *,
             seed: int = 0, name: str = "layer", **_ignored) -> QuantizedTensor:
    """Round W R (:func:`rotate`, R of size in_features) to ``fmt``; ``dequantize()`` gives
    Q(W R) R^T, the weight of a fake-quant model whose inputs are rotated the same way (the activation side is
    :func:`qtutor.model.activations.quantized_inputs` with ``rotation_seed``). ``calib`` is not used."""
    q = fmt.encode(rotate(np.asarray(W, dtype=np.float32), seed), group_size=group_size, sym=sym)
    return RotatedTensor(q.codes, q.scales, q.zeros, q.fmt, q.group_size, q.sym, q.shape, "rotation",
                         {**q.extra, "seed": seed})


def rotated_fake_quantize(x: np.ndarray, quantize_rows: Any, seed: int = 0) -> np.ndarray:
    """x_hat = Q(x R) R^T for activations ``x (tokens, channels)``, Q being ``quantize_rows``."""
    return unrotate(quantize_rows(rotate(np.asarray(x, dtype=np.float32), seed)), seed).astype(np.float32)


class RotatedTensor(QuantizedTensor):
    """Codes of W R; dequantize() rotates back: Q(W R) R^T. R is regenerated from (in_features, seed)."""

    def dequantize(self):
        return unrotate(self.format.decode(self), self.extra["seed"]).astype(np.float32)


# W R rounded per tensor; at run time the activations are rounded in the same rotated basis, in the weights'
# format unless another is asked (W4A4 with fmt="int4")
METHOD = Method("rotation", quantize=quantize, activations="rotated", act_format="weights")
