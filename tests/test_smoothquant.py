"""SmoothQuant on tensors: the balance property, exact folding, and W8A8 / W4A4 with and without smoothing."""
from __future__ import annotations

import numpy as np
import pytest

from qtutor import synth
from qtutor.methods import smoothquant as sq


@pytest.fixture
def layer():
    X, outliers = synth.activations_with_outlier_channels(tokens=256, channels=128, outlier_channels=4, seed=3)
    rng = np.random.default_rng(4)
    weights = [rng.normal(0, 0.05, size=(96, 128)).astype(np.float32) for _ in range(3)]  # q, k, v share X
    return X, weights, outliers


def test_alpha_one_half_balances_activation_and_weight_ranges(layer):
    X, weights, _ = layer
    s = sq.smoothing_scales(sq.activation_scales(X), weights, alpha=0.5)
    X_smooth, smoothed = sq.smooth(X, weights, s)
    act = np.abs(X_smooth).max(axis=0)
    weight = np.max([np.abs(W).max(axis=0) for W in smoothed], axis=0)
    expected = np.sqrt(np.abs(X).max(axis=0) * np.max([np.abs(W).max(axis=0) for W in weights], axis=0))
    np.testing.assert_allclose(act, expected, rtol=1e-5)
    np.testing.assert_allclose(weight, expected, rtol=1e-5)


def test_smoothing_leaves_the_products_unchanged_in_float64(layer):
    X, weights, _ = layer
    s = sq.smoothing_scales(sq.activation_scales(X), weights, alpha=0.8).astype(np.float64)
    X64 = X.astype(np.float64)
    X_smooth, smoothed = sq.smooth(X64, [W.astype(np.float64) for W in weights], s)
    for W, Ws in zip(weights, smoothed):
        np.testing.assert_allclose(X_smooth @ Ws.T, X64 @ W.astype(np.float64).T, rtol=1e-12, atol=1e-12)


def test_folding_into_a_norm_is_the_same_as_dividing_the_activations(layer):
    X, weights, _ = layer
    rng = np.random.default_rng(5)
    gamma, beta = rng.uniform(0.5, 1.5, 128), rng.normal(size=128)
    normalized = rng.normal(size=(16, 128))
    s = sq.smoothing_scales(sq.activation_scales(X), weights).astype(np.float64)
    gamma_s, beta_s, folded = sq.fold_into_norm(gamma, beta, [W.astype(np.float64) for W in weights], s)
    for W, Wf in zip(weights, folded):
        np.testing.assert_allclose((normalized * gamma_s + beta_s) @ Wf.T, (normalized * gamma + beta) @ W.T,
                                   rtol=1e-12, atol=1e-12)


def test_alpha_zero_changes_nothing_but_the_weight_normalization(layer):
    X, weights, _ = layer
    s = sq.smoothing_scales(sq.activation_scales(X), weights, alpha=0.0)
    np.testing.assert_allclose(s, 1 / np.maximum(np.max([np.abs(W).max(axis=0) for W in weights], axis=0), 1e-5),
                               rtol=1e-6)


def test_w8a8_with_smoothing_is_no_worse_than_without(layer):
    X, weights, _ = layer
    W = weights[0]
    exact = X @ W.T
    plain = np.mean((sq.w8a8_matmul(X, W) - exact) ** 2)
    s = sq.smoothing_scales(sq.activation_scales(X), [W], alpha=0.5)
    X_smooth, (W_smooth,) = sq.smooth(X, [W], s)
    smoothed = np.mean((sq.w8a8_matmul(X_smooth, W_smooth) - exact) ** 2)
    assert smoothed <= plain


def test_w4a4_fails_without_smoothing_and_recovers_with_it(layer):
    X, weights, _ = layer
    W = weights[0]
    exact = X @ W.T
    relative = lambda Y: np.mean((Y - exact) ** 2) / np.mean(exact**2)  # noqa: E731
    plain = relative(sq.w8a8_matmul(X, W, 4, 4))
    s = sq.smoothing_scales(sq.activation_scales(X), [W], alpha=0.5)
    X_smooth, (W_smooth,) = sq.smooth(X, [W], s)
    smoothed = relative(sq.w8a8_matmul(X_smooth, W_smooth, 4, 4))
    assert smoothed < plain / 2  # measured: 0.0093 vs 0.0225 relative MSE at alpha 0.5


def test_smoothing_moves_difficulty_from_activations_to_weights(layer):
    X, weights, _ = layer
    before = sq.difficulty(X, weights[0])
    s = sq.smoothing_scales(sq.activation_scales(X), [weights[0]], alpha=0.5)
    X_smooth, (W_smooth,) = sq.smooth(X, [weights[0]], s)
    after = sq.difficulty(X_smooth, W_smooth)
    assert after["activation"] < before["activation"] / 4 and after["weight"] > before["weight"]


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_alpha_outside_zero_one_is_refused(layer, alpha):
    X, weights, _ = layer
    with pytest.raises(ValueError, match=r"alpha=.* must be in \[0, 1\]"):
        sq.smoothing_scales(sq.activation_scales(X), weights, alpha=alpha)


def test_per_token_codes_are_symmetric_int8():
    X = np.array([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0]], dtype=np.float32)
    codes, scale = sq.quantize_per_token(X)
    assert codes.tolist() == [[64, -127, 32], [0, 0, 0]]
    assert scale[0] == np.float32(1.0) / np.float32(127)
