"""Rotations before rounding (QuaRot): orthogonal, free in float, and they take the outliers away."""
from __future__ import annotations

import numpy as np
import pytest

from qtutor import formats
from qtutor.methods import rotation
from qtutor.model.activations import fake_quantize_activations


@pytest.mark.parametrize("n", [256, 96])  # randomized Hadamard, and QR for a size that is not a power of two
def test_the_rotation_is_orthogonal_and_reproducible(n):
    R = rotation.rotation_matrix(n, seed=3)
    np.testing.assert_allclose(R @ R.T, np.eye(n), atol=1e-5)
    np.testing.assert_array_equal(R, rotation.rotation_matrix(n, seed=3))
    assert not np.allclose(R, rotation.rotation_matrix(n, seed=4))


def test_sylvester_hadamard_has_orthogonal_plus_minus_one_rows():
    H = rotation.hadamard(16)
    assert set(np.unique(H)) == {-1.0, 1.0}
    np.testing.assert_array_equal(H @ H.T, 16 * np.eye(16))
    with pytest.raises(ValueError, match="power of two"):
        rotation.hadamard(12)


@pytest.mark.parametrize("n", [1, 2, 64, 1024])
def test_the_fast_transform_is_the_product_with_sylvesters_matrix(rng, n):
    X = rng.integers(-50, 50, size=(7, n)).astype(np.float32)  # integers: every sum is exact, in any order
    np.testing.assert_array_equal(rotation.fwht(X), X @ rotation.hadamard(n).astype(np.float32))
    np.testing.assert_array_equal(rotation.fwht(X[0], 0.5), 0.5 * (X[0] @ rotation.hadamard(n)))
    with pytest.raises(ValueError, match="power-of-two"):
        rotation.fwht(np.ones((2, 48), np.float32))


@pytest.mark.parametrize("n", [256, 96])
def test_rotate_is_the_product_with_the_matrix_and_unrotate_undoes_it(rng, n):
    X = rng.normal(size=(33, n)).astype(np.float32)
    R = rotation.rotation_matrix(n, seed=5)
    np.testing.assert_allclose(rotation.rotate(X, 5), X @ R, atol=1e-5)
    np.testing.assert_allclose(rotation.unrotate(X, 5), X @ R.T, atol=1e-5)
    np.testing.assert_allclose(rotation.unrotate(rotation.rotate(X, 5), 5), X, atol=1e-5)


def test_fake_quantization_is_the_integer_product_in_the_rotated_basis(rng):
    W = rng.normal(0, 0.05, (64, 256)).astype(np.float32)
    X = rng.normal(size=(32, 256)).astype(np.float32)
    int4 = formats.get("int4")
    W_hat = rotation.quantize(W, int4, -1, True).dequantize()
    X_hat = rotation.rotated_fake_quantize(X, lambda rows: fake_quantize_activations(rows, "int4"))
    X_codes = fake_quantize_activations(rotation.rotate(X), "int4")
    W_codes = int4.encode(rotation.rotate(W), group_size=-1, sym=True).dequantize()
    np.testing.assert_allclose(X_hat @ W_hat.T, X_codes @ W_codes.T, rtol=1e-4, atol=1e-4)


def test_a_rotation_spreads_an_outlier_channel_and_cuts_the_per_token_error(rng):
    X = rng.normal(size=(256, 256)).astype(np.float32)
    X[:, 7] *= 50  # one channel 50x the others, in every token
    peaks = lambda A: np.abs(A).max(axis=0)  # noqa: E731
    assert peaks(X).max() / np.median(peaks(X)) > 10
    rotated = rotation.rotate(X)
    assert peaks(rotated).max() / np.median(peaks(rotated)) < 2
    quantize = lambda rows: fake_quantize_activations(rows, "int4")  # noqa: E731
    plain = np.linalg.norm(quantize(X) - X)
    rotated = np.linalg.norm(rotation.rotated_fake_quantize(X, quantize) - X)
    assert rotated < 0.5 * plain
