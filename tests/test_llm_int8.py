"""LLM.int8(): vector-wise INT8 codes against bitsandbytes, and the mixed-precision decomposition's limits."""
from __future__ import annotations

import numpy as np
import pytest

from qtutor import synth
from qtutor.methods import llm_int8


@pytest.fixture
def outlier_problem():
    X, outliers = synth.activations_with_outlier_channels(tokens=64, channels=128, outlier_channels=3, seed=1)
    X = X.astype(np.float16).astype(np.float32)  # values bitsandbytes sees exactly in float16
    W = np.random.default_rng(2).normal(0, 0.05, size=(48, 128)).astype(np.float16).astype(np.float32)
    return X, W, outliers


def test_codes_and_scales_match_bitsandbytes(outlier_problem):
    torch = pytest.importorskip("torch")
    bnb = pytest.importorskip("bitsandbytes.functional")
    X, W, outliers = outlier_problem
    CA, row_stats, columns = bnb.int8_vectorwise_quant(torch.from_numpy(X).half(), threshold=6.0)
    ours, ours_stats, ours_columns = llm_int8.quantize_activations(X, threshold=6.0)
    np.testing.assert_array_equal(ours, CA.numpy())
    np.testing.assert_array_equal(ours_stats, row_stats.numpy())
    np.testing.assert_array_equal(ours_columns, columns.numpy())
    np.testing.assert_array_equal(ours_columns, outliers)
    CB, weight_stats, _ = bnb.int8_vectorwise_quant(torch.from_numpy(W).half())
    weight = llm_int8.quantize_weight(W)
    np.testing.assert_array_equal(weight.CB, CB.numpy())
    np.testing.assert_array_equal(weight.absmax, weight_stats.numpy())


def test_infinite_threshold_is_pure_vectorwise_int8(outlier_problem):
    X, W, _ = outlier_problem
    CA, a, outliers = llm_int8.quantize_activations(X, threshold=None)
    weight = llm_int8.quantize_weight(W)
    expected = llm_int8.int8_matmul(CA, weight.CB).astype(np.float32) * (a[:, None] * weight.absmax[None, :] / np.float32(127 * 127))
    assert len(outliers) == 0
    np.testing.assert_array_equal(llm_int8.matmul(X, W, threshold=float("inf")), expected)


def test_a_tiny_threshold_sends_everything_to_16_bit_and_gives_the_float_product(outlier_problem):
    X, W, _ = outlier_problem
    np.testing.assert_allclose(llm_int8.matmul(X, W, threshold=1e-12), X @ W.T, rtol=1e-6, atol=1e-6)


def test_decomposition_rescues_the_rows_that_outliers_crush(outlier_problem):
    X, W, _ = outlier_problem
    exact = X @ W.T
    plain = np.abs(llm_int8.matmul(X, W, threshold=float("inf")) - exact).mean()
    decomposed = np.abs(llm_int8.matmul(X, W, threshold=6.0) - exact).mean()
    assert decomposed < plain / 5
    assert llm_int8.outlier_fraction(X, 6.0) == pytest.approx(3 / 128)


def test_bitsandbytes_outlier_weights_variant_differs_only_by_weight_rounding(outlier_problem):
    X, W, _ = outlier_problem
    paper = llm_int8.matmul(X, W, outlier_weights="fp")
    bnb_style = llm_int8.matmul(X, W, outlier_weights="int8")
    assert 0 < np.abs(paper - bnb_style).max() < 0.05 * np.abs(paper).max()


def test_int32_accumulator_is_exact():
    rng = np.random.default_rng(3)
    CA = rng.integers(-127, 128, size=(5, 300)).astype(np.int8)
    CB = rng.integers(-127, 128, size=(7, 300)).astype(np.int8)
    assert np.array_equal(llm_int8.int8_matmul(CA, CB), CA.astype(np.int64) @ CB.astype(np.int64).T)


def test_bad_threshold_and_variant_are_refused(outlier_problem):
    X, W, _ = outlier_problem
    for threshold in (0.0, -1.0):
        with pytest.raises(ValueError, match="threshold"):
            llm_int8.matmul(X, W, threshold=threshold)
    with pytest.raises(ValueError, match="outlier_weights"):
        llm_int8.matmul(X, W, outlier_weights="bf16")


def test_weight_side_as_a_quantized_tensor(outlier_problem):
    _, W, _ = outlier_problem
    q = llm_int8.quantize(W)
    np.testing.assert_array_equal(q.dequantize(), llm_int8.quantize_weight(W).dequantize())
    assert q.method == "llm_int8" and q.group_size == -1
