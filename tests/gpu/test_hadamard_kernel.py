"""The fast Walsh-Hadamard transform on the GPU (kernels/hadamard.cu) against NumPy: the same floats, bit for bit."""
from __future__ import annotations

import numpy as np
import pytest

from qtutor.methods import rotation

pytestmark = pytest.mark.gpu
cupy = pytest.importorskip("cupy")


@pytest.mark.parametrize("rows,n", [(1, 1), (3, 2), (17, 64), (1000, 256), (5, 8192)])
def test_fwht_is_bit_identical(rows, n):
    X = np.random.default_rng(n).normal(size=(rows, n)).astype(np.float32)
    for scale in (1.0, 1 / np.sqrt(n)):
        got = rotation.fwht(cupy.asarray(X), scale)
        np.testing.assert_array_equal(got.get(), rotation.fwht(X, scale))


def test_rotated_weights_and_activations_agree_with_the_cpu():
    X = np.random.default_rng(0).normal(size=(4, 6, 512)).astype(np.float32)
    np.testing.assert_array_equal(rotation.rotate(cupy.asarray(X), 3).get(), rotation.rotate(X, 3))
    np.testing.assert_array_equal(rotation.unrotate(cupy.asarray(X), 3).get(), rotation.unrotate(X, 3))


def test_rows_longer_than_shared_memory_are_refused():
    with pytest.raises(ValueError, match="at most 8192"):
        rotation.fwht(cupy.ones((1, 16384), dtype=cupy.float32))
