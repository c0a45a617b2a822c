"""Block formats on the GPU: NF4/bnb-FP4 codes (kernels/normalfloat.cu) and MX/NVFP4 (minifloat kernels plus
CuPy block reductions) against the NumPy path, bit for bit."""
from __future__ import annotations

import numpy as np
import pytest

from qtutor import formats

pytestmark = pytest.mark.gpu
cupy = pytest.importorskip("cupy")


def weights(shape=(256, 1024), seed=0):
    rng = np.random.default_rng(seed)
    W = (rng.standard_normal(shape) * np.exp(rng.uniform(-4, 4, (shape[0], 1)))).astype(np.float32)
    W[0, :64] = 0.0
    return W


@pytest.mark.parametrize("name", ["nf4", "bnb_fp4"])
def test_lookup_table_codes_match(name):
    fmt, W = formats.get(name), weights()
    table = np.sort(fmt.table)
    ties = ((table[1:] + table[:-1]) / np.float32(2)).astype(np.float32)
    y = np.concatenate([np.clip(W.ravel() / np.abs(W).max(), -1, 1), ties, table])
    np.testing.assert_array_equal(fmt.cast(cupy.asarray(y)).get(), fmt.cast(y))
    q_gpu, q_cpu = fmt.encode(cupy.asarray(W)), fmt.encode(W)
    np.testing.assert_array_equal(q_gpu.codes.get(), q_cpu.codes)
    np.testing.assert_array_equal(q_gpu.dequantize().get(), q_cpu.dequantize())


@pytest.mark.parametrize("name", ["mxfp4", "mxfp6", "mxfp8", "mxint8", "nvfp4"])
def test_block_formats_match(name):
    fmt, W = formats.get(name), weights(seed=1)
    q_gpu, q_cpu = fmt.encode(cupy.asarray(W)), fmt.encode(W)
    np.testing.assert_array_equal(cupy.asnumpy(q_gpu.codes), q_cpu.codes)
    np.testing.assert_array_equal(cupy.asnumpy(q_gpu.extra["scale_codes"]), q_cpu.extra["scale_codes"])
    np.testing.assert_array_equal(cupy.asnumpy(q_gpu.dequantize()), q_cpu.dequantize())
