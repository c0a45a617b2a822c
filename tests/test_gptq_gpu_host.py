"""The host side of GPTQ's GPU path (GPTQ._run_block_on_gpu: parameter tables, transposes, the lazy update),
checked on any machine: CuPy is replaced by NumPy and kernels/gptq.cu by a line-by-line NumPy transcription of
it, vectorized over the rows (one CUDA thread per row). On a GPU, tests/gpu/test_gptq_kernel.py runs the real one."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from qtutor import formats
from qtutor.methods import gptq
from qtutor.methods.gptq import GPTQ, Hessian


def store_scale_float16(s):
    half = s.astype(np.float16)
    return np.where(half.astype(np.float32) < s, np.nextafter(half, np.float16(np.inf)), half).astype(np.float32)


def gptq_quantize_block(grid, block, args):
    """kernels/gptq.cu's gptq_quantize_block, every row at once."""
    (Wt, U, rows, columns, start, count, scales, zeros, n_groups, group_of, dynamic, bits, codes_t, Qt, Err_t,
     losses) = args
    symmetric = isinstance(zeros, np.uint64)  # the NULL pointer
    assert grid[0] * block[0] >= rows
    qmax_sym, maxq = np.float32(2 ** (bits - 1) - 1), np.float32(2**bits - 1)
    for k in range(int(count)):
        i = int(start) + k
        g = int(group_of[i])
        if dynamic > 0 and i % dynamic == 0:
            values = Wt[k:k + int(dynamic)]  # (group, rows)
            if symmetric:
                s = np.abs(values).max(axis=0) / qmax_sym
                scales[:, g] = store_scale_float16(np.where(s == 0, np.float32(1), s))
            else:
                low, high = np.minimum(values.min(axis=0), 0), np.maximum(values.max(axis=0), 0)
                s = (high - low) / maxq
                s = store_scale_float16(np.where(s == 0, np.float32(1), s))
                scales[:, g] = s
                zeros[:, g] = np.clip(np.rint(-low / s), 0, maxq)
        s, w = scales[:, g], Wt[k].copy()
        if symmetric:
            code = np.clip(np.rint(w / s), -qmax_sym, qmax_sym)
            q = code * s
        else:
            z = zeros[:, g]
            code = np.clip(np.rint(w / s) + z, 0, maxq)
            q = (code - z) * s
        codes_t[k], Qt[k] = code.astype(np.int32), q
        err = (w - q) / U[i, i]
        Err_t[k] = err
        losses[i] += float(0.5 * (err.astype(np.float64) ** 2).sum())
        Wt[k:int(count)] -= err[None, :] * U[i, int(start) + k:int(start) + int(count)][:, None]


@pytest.fixture
def numpy_as_the_gpu(monkeypatch):
    import qtutor.kernels

    monkeypatch.setitem(sys.modules, "cupy", np)
    monkeypatch.setattr(GPTQ, "_on_gpu", lambda self: True)
    monkeypatch.setattr(qtutor.kernels, "function",
                        lambda family, name: {("gptq", "gptq_quantize_block"): gptq_quantize_block}[family, name])
    return gptq


@pytest.mark.parametrize("bits,sym", [(4, False), (3, True), (2, False), (8, True)])
@pytest.mark.parametrize("grouping", [dict(group_size=-1), dict(group_size=0), dict(group_size=32),
                                      dict(group_size=32, act_order=True, static_groups=True),
                                      dict(group_size=32, act_order=True), dict(group_size=-1, act_order=True)])
def test_block_path_gives_the_step_by_step_result(numpy_as_the_gpu, bits, sym, grouping):
    rng = np.random.default_rng(bits)
    W = (rng.standard_t(4, size=(24, 192)) * 0.05).astype(np.float32)
    X = (rng.normal(size=(400, 192)) @ (np.eye(192) + rng.normal(size=(192, 192)) / 14)).astype(np.float32)
    H = Hessian(192).add(X)
    options = dict(fmt=formats.get(f"int{bits}"), sym=sym, blocksize=64, **grouping)
    stepwise = GPTQ(W, H, **options)
    while not stepwise.done:
        stepwise.step()
    by_blocks = GPTQ(W, H, **options)
    calls = []
    original = by_blocks._run_block_on_gpu
    by_blocks._run_block_on_gpu = lambda: (calls.append(by_blocks.position), original())[1]
    a, b = stepwise.result(), by_blocks.run()
    assert calls == [0, 64, 128]  # every block went through the kernel
    np.testing.assert_array_equal(a.codes, b.codes)
    np.testing.assert_array_equal(a.scales, b.scales)
    np.testing.assert_allclose(a.dequantize(), b.dequantize(), rtol=0, atol=0)
    np.testing.assert_allclose(stepwise.losses, by_blocks.losses, rtol=1e-6)
