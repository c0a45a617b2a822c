"""GPTQ's column loop on the GPU (kernels/gptq.cu, driven by GPTQ.run) against the NumPy step-by-step path."""
from __future__ import annotations

import numpy as np
import pytest

from qtutor import formats
from qtutor.methods.gptq import GPTQ, Hessian

pytestmark = pytest.mark.gpu
cupy = pytest.importorskip("cupy")


def problem(rows: int, columns: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    W = rng.standard_t(4, size=(rows, columns)).astype(np.float32) * 0.05
    mixing = rng.normal(size=(columns, columns)) / np.sqrt(columns)
    X = (rng.normal(size=(4 * columns, columns)) @ (np.eye(columns) + mixing)).astype(np.float32)  # correlated
    X[:, 5] = 0.0  # a dead input
    return W, Hessian(columns).add(X)


def solvers(W, H, **options):
    cpu = GPTQ(W, H, **options)
    gpu = GPTQ(cupy.asarray(W), H, **options)
    gpu.U = cupy.asarray(cpu.U)  # the same factor: the kernel is under test, not cuSOLVER against LAPACK
    assert gpu._block_kernel_applies()
    return cpu, gpu


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("grouping", [dict(group_size=-1), dict(group_size=0), dict(group_size=32),
                                      dict(group_size=32, act_order=True, static_groups=True)])
def test_one_block_on_the_gpu_is_bit_exact_with_numpy(bits, sym, grouping):
    W, H = problem(96, 128)
    cpu, gpu = solvers(W, H, fmt=formats.get(f"int{bits}"), sym=sym, blocksize=128, **grouping)
    a, b = cpu.run(), gpu.run()
    assert np.array_equal(a.codes, b.codes.get())
    assert np.array_equal(a.scales, b.scales.get())
    assert np.array_equal(a.dequantize(), b.dequantize().get())
    np.testing.assert_allclose(cpu.losses, gpu.losses.get(), rtol=1e-6)


@pytest.mark.parametrize("grouping", [dict(group_size=128), dict(group_size=-1, act_order=True)])
def test_many_blocks_agree_within_float_tolerance(grouping):
    """Past the first block the lazy update is a cuBLAS product, rounded differently from NumPy's BLAS: a rare
    code may flip at a rounding tie, and the weights agree within float tolerance."""
    W, H = problem(256, 512, seed=1)
    cpu, gpu = solvers(W, H, fmt=formats.get("int4"), sym=False, blocksize=128, **grouping)
    a, b = cpu.run(), gpu.run()
    assert np.mean(a.codes != b.codes.get()) < 1e-3
    np.testing.assert_allclose(a.dequantize(), b.dequantize().get(), atol=float(np.abs(W).max()) * 0.2)
    assert gpu.loss == pytest.approx(cpu.loss, rel=1e-3)


def test_a_block_already_begun_finishes_step_by_step_and_then_the_kernel_takes_over():
    W, H = problem(64, 256, seed=2)
    cpu, gpu = solvers(W, H, fmt=formats.get("int3"), sym=True, group_size=64, blocksize=64)
    for _ in range(10):
        cpu.step()
        gpu.step()
    assert not gpu._block_kernel_applies()
    a, b = cpu.run(), gpu.run()
    assert np.mean(a.codes != b.codes.get()) < 1e-3
