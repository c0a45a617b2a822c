"""MR-GPTQ: GPTQ in a basis rotated block by block, the block being the format's scale block.

Egiazarian, Castro, Kurtic, Alistarh et al., "Bridging the Gap Between Promise and Performance for Microscaling
FP4 Quantization", 2025, arXiv:2509.23202 ("micro-rotated GPTQ"). MXFP4 shares one power-of-two scale among 32
weights, NVFP4 one E4M3 scale among 16; each weight itself is E2M1, whose 8 magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6
are dense near zero and sparse near the top. A block whose largest weight is an outlier spends its scale on it and
rounds the rest coarsely; plain GPTQ, which only redistributes errors between columns, cannot change which weight
sets a block's scale.

Rotate first, inside each scale block, with the b x b Hadamard matrix (b = 32 for MX, 16 for NVFP4):

    R = I_(n/b) (x) H_b / sqrt(b)          block-diagonal and orthogonal: R R^T = I
    y = x W^T = (x R)(W R)^T

Each block of W R mixes only the b weights that share a scale, so an outlier is spread over its own block and no
further, and the block's values become closer to Gaussian, which E2M1's grid suits. The rotation costs b log2(b)
additions per block of activations at run time (the paper fuses it into the kernels) and no stored bits: H_b is
fixed, no random signs. GPTQ then works in the rotated basis, with the inputs rotated too:

    H' = R^T H R,      codes = GPTQ(W R, H'),      W_hat = Q(W R) R^T

(a fake-quant model computes x W_hat^T = (x R) Q(W R)^T: what the rotated kernel computes). Because R is
orthogonal the error GPTQ minimises is the same in both bases, tr((W_hat - W) H (W_hat - W)^T).

Left out: the paper's format-specific scale search for NVFP4 (the block scale chosen by MSE instead of max/6)
and its activation reordering; the activations' rotation at run time for W4A4 (here weights only).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from qtutor.formats import Format
from qtutor.methods import Method
from qtutor.methods import gptq
from qtutor.methods.rotation import hadamard, is_power_of_two
from qtutor.tensor import QuantizedTensor


def rotation_block(fmt: Format, group_size: Any, block: int | None = None) -> int:
    """The rotation's block: ``block`` if given, else the format's scale block (MX 32, NVFP4 16) or the group."""
    if block is None:
        block = group_size if isinstance(group_size, int) and group_size > 0 else fmt.weight_group_size
    if not isinstance(block, (int, np.integer)) or not is_power_of_two(int(block)) or block < 2:
        raise ValueError(f"MR-GPTQ rotates blocks of a power-of-two size (the format's scale block: 16 or 32); "
                         f"got {block!r}. Give block=16 or 32, or a power-of-two group_size")
    return int(block)


def block_rotate(x: Any, block: int) -> np.ndarray:
    """x R along the last axis, R = I (x) H_b / sqrt(b): each run of ``block`` entries times the Hadamard matrix."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[-1]
    if n % block:
        raise ValueError(f"MR-GPTQ: rows of {n} weights cannot be cut into rotation blocks of {block}; choose a "
                         f"block (or group_size) dividing {n}")
    H_b = hadamard(block) / np.sqrt(block)
    return (x.reshape(*x.shape[:-1], n // block, block) @ H_b).reshape(x.shape)


def block_unrotate(y: Any, block: int) -> np.ndarray:
    """y R^T (H_b is symmetric and orthogonal once divided by sqrt(b), so R^T applies the same blocks)."""
    return block_rotate(y, block)


def rotated_hessian(H: Any, block: int) -> np.ndarray:
    """R^T H R, computed block by block on both sides (H symmetric)."""
    HR = block_rotate(np.asarray(H, dtype=np.float64), block)
    return block_rotate(HR.T, block)


class MicroRotatedTensor(QuantizedTensor):
    """Codes of W R (GPTQ's, in the rotated basis); dequantize() rotates back: Q(W R) R^T."""

    def dequantize(self):
        values = self.format.decode(self)
        return block_unrotate(values, self.extra["rotation_block"]).astype(np.float32)


def quantize(W: Any, fmt: Format, group_size: int | None = 32, sym: bool | None = None, calib: Any = None, *,
             H: Any = None, block: int | None = None, blocksize: int = 128, percdamp: float = 0.01,
             act_order: bool = False, name: str = "layer", role: str | None = None) -> QuantizedTensor:
    """GPTQ of W R with H' = R^T H R (``calib``: the layer's inputs, tokens x in_features, or ``H``)."""
    H, _ = gptq.layer_hessian(np.shape(W)[-1], calib, H, "MR-GPTQ", name)
    b = rotation_block(fmt, group_size, block)
    W_rotated = block_rotate(W, b).astype(np.float32)
    q = gptq.quantize(W_rotated, fmt, group_size, sym, H=rotated_hessian(H, b), blocksize=blocksize,
                      percdamp=percdamp, act_order=act_order, name=name)
    return MicroRotatedTensor(q.codes, q.scales, q.zeros, q.fmt, q.group_size, q.sym, q.shape, "mr_gptq",
                              {**q.extra, "rotation_block": b}, column_order=q.column_order)


# as GPTQ (calibration text, each layer's inputs captured block by block after the blocks before it are
# quantized), in the block-rotated basis
METHOD = Method("mr_gptq", quantize=quantize, calibration=True, layer_inputs=True, sequential=True)
