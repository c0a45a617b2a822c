"""INT8 x INT8 -> INT32 on the GPU (kernels/int8_gemm.cu) against NumPy: the same integers, bit for bit."""
from __future__ import annotations

import numpy as np
import pytest

from qtutor.methods import llm_int8, smoothquant

pytestmark = pytest.mark.gpu
cupy = pytest.importorskip("cupy")


@pytest.mark.parametrize("shape", [(1, 1, 1), (37, 53, 131), (256, 512, 4096), (5, 300, 64)])
def test_int8_products_are_exact(shape):
    M, N, K = shape
    rng = np.random.default_rng(K)
    A = rng.integers(-128, 128, size=(M, K), dtype=np.int8)
    B = rng.integers(-128, 128, size=(N, K), dtype=np.int8)
    A[0, :] = -128  # the extreme products
    B[0, :] = -128
    expected = llm_int8.int8_matmul(A, B)
    got = llm_int8.int8_matmul(cupy.asarray(A), cupy.asarray(B))
    assert got.dtype == cupy.int32
    np.testing.assert_array_equal(got.get(), expected)


def test_w8a8_and_llm_int8_give_the_cpu_results_on_the_gpu():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 256)).astype(np.float32)
    X[:, 7] *= 20  # an outlier feature for LLM.int8()
    W = (rng.normal(size=(96, 256)) * 0.02).astype(np.float32)
    np.testing.assert_allclose(smoothquant.w8a8_matmul(cupy.asarray(X), cupy.asarray(W)).get(),
                               smoothquant.w8a8_matmul(X, W), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(llm_int8.matmul(cupy.asarray(X), cupy.asarray(W)).get(), llm_int8.matmul(X, W),
                               rtol=1e-5, atol=1e-5)


def test_too_long_a_dot_product_is_refused():
    A = cupy.zeros((1, llm_int8.INT32_SAFE_K + 4), dtype=cupy.int8)
    with pytest.raises(OverflowError, match="overflow"):
        llm_int8.int8_matmul(A, A)
