"""GGUF dequantization on the GPU (kernels/gguf.cu) against the NumPy dequantizers, bit for bit."""
from __future__ import annotations

import numpy as np
import pytest

from qtutor.methods import gguf

pytestmark = pytest.mark.gpu
cupy = pytest.importorskip("cupy")


@pytest.mark.parametrize("name", gguf.TYPES)
def test_dequantize_kernel_matches_numpy(name):
    rng = np.random.default_rng(0)
    W = (rng.standard_t(3, (64, 1024)) * 0.02).astype(np.float32)
    data = gguf.quantize(W, name)
    np.testing.assert_array_equal(cupy.asnumpy(gguf.dequantize(cupy.asarray(data), name)), gguf.dequantize(data, name))
