"""VPTQ (qtutor.methods.vptq): GPTQ's loop with vectors from a learned table; GPTQ itself when the vectors are
single weights and the table is GPTQ's grid."""
from __future__ import annotations

import numpy as np
import pytest

from qtutor import formats
from qtutor.methods import gptq, quantize_tensor, vptq


def correlated_layer(out=64, inputs=128, tokens=1024, seed=0):
    """W (out x in) and inputs X (tokens x in) whose features are strongly correlated, as a model's are."""
    rng = np.random.default_rng(seed)
    W = (rng.standard_normal((out, inputs)) * 0.02).astype(np.float32)
    mix = rng.standard_normal((inputs, inputs)) / np.sqrt(inputs) + 2 * np.eye(inputs)
    shared = rng.standard_normal((tokens, 1)) * rng.standard_normal((1, inputs))  # a common direction
    X = (rng.standard_normal((tokens, inputs)) @ mix + 3 * shared).astype(np.float32)
    return W, X


def proxy_error(W, Q, H):
    """tr((W - Q) H (W - Q)^T): the layer's output error on the calibration inputs, up to the factor 2 / n."""
    D = (W - Q).astype(np.float64)
    return float(((D @ H) * D).sum())


def test_with_single_weights_and_a_uniform_scalar_table_vptq_is_gptq():
    W, X = correlated_layer()
    H = gptq.Hessian(W.shape[1]).add(X)
    int4 = formats.get("int4")
    expected = gptq.GPTQ(W, H, int4, group_size=0, blocksize=32).run()
    scale, zero = int4.find_params(W.reshape(1, -1), False)  # GPTQ's per-tensor grid: the 16 levels as a table
    levels = int4.dequantize(np.arange(16, dtype=np.uint8).reshape(1, -1), scale, zero).reshape(16, 1)
    U, _, _ = gptq.inverse_cholesky_upper(H.H)
    Q, codes, _ = vptq.feedback_loop(W, U, [levels], v=1, blocksize=32)
    np.testing.assert_array_equal(codes[:, :, 0].T, expected.codes)
    np.testing.assert_allclose(Q, expected.dequantize(), rtol=0, atol=1e-6)


def test_every_vector_gets_its_exact_nearest_entry_stage_by_stage():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((32, 48)).astype(np.float32)
    tables = [rng.standard_normal((16, 4)).astype(np.float32), 0.3 * rng.standard_normal((16, 4)).astype(np.float32)]
    # U diagonal: no error feedback, so each vector of W is coded as it is
    _, codes, _ = vptq.feedback_loop(W, np.eye(48), tables, v=4)
    V = vptq.column_vectors(W, 4).reshape(-1, 4).astype(np.float64)
    left = V
    for stage, table in enumerate(tables):
        distances = ((left[:, None, :] - table[None, :, :].astype(np.float64)) ** 2).sum(axis=2)  # brute force
        np.testing.assert_array_equal(codes[:, :, stage].reshape(-1), distances.argmin(axis=1))
        left = left - table[distances.argmin(axis=1)]


def test_the_dequantized_tensor_is_the_loops_result_and_its_bits_count_codes_and_tables():
    W, X = correlated_layer(out=64, inputs=128)
    for name in vptq.METHOD.formats:
        fmt = formats.get(name)
        q = quantize_tensor(W, name, "vptq", calib=X)
        sizes = tuple(2**bits for bits in fmt.codebook_bits)
        done = vptq.vptq_layer(W, gptq.hessian(X), fmt.vector_size, sizes)
        np.testing.assert_array_equal(q.dequantize(), done["Q"])
        assert q.codes.shape == (128, 64 // fmt.vector_size, len(sizes)) and q.extra["vector_axis"] == "out"
        codes = W.size // fmt.vector_size * sum(fmt.codebook_bits)
        tables = sum(sizes) * fmt.vector_size * 16
        assert q.bits_per_weight == pytest.approx((codes + tables) / W.size, rel=1e-12)


def test_error_feedback_beats_the_same_table_without_it():
    W, X = correlated_layer()
    H = gptq.hessian(X)
    done = vptq.vptq_layer(W, H, 4, (64,))
    _, alone = vptq.nearest_stages(vptq.column_vectors(W, 4).reshape(-1, 4), done["codebooks"])  # k-means only
    alone = alone.reshape(W.shape[1], W.shape[0]).T
    assert proxy_error(W, done["Q"], H) < 0.7 * proxy_error(W, alone, H)


def test_a_residual_table_lowers_the_error_of_one_table():
    W, X = correlated_layer()
    H = gptq.hessian(X)
    single = vptq.vptq_layer(W, H, 4, (64,))
    residual = vptq.vptq_layer(W, H, 4, (64, 64))
    np.testing.assert_array_equal(residual["codebooks"][0], single["codebooks"][0])  # the same first table
    assert proxy_error(W, residual["Q"], H) < 0.7 * proxy_error(W, single["Q"], H)


def test_hessian_weights_pull_the_table_towards_the_heavy_vectors():
    rng = np.random.default_rng(2)
    V = rng.standard_normal((4000, 4)).astype(np.float32)
    heavy = np.zeros(len(V), bool)
    heavy[:400] = True
    V[heavy] = V[heavy] + np.float32(4.0)  # the vectors of a few columns that matter, off where the rest are
    weights = np.where(heavy, 100.0, 1.0)

    def heavy_error(C):
        _, points = vptq.nearest_stages(V[heavy], [C])
        return float(((V[heavy] - points) ** 2).sum())

    weighted, _ = vptq.kmeans(V, weights, 32)
    plain, _ = vptq.kmeans(V, np.ones(len(V)), 32)
    assert heavy_error(weighted) < 0.7 * heavy_error(plain)


def test_kmeans_that_runs_out_of_steps_says_so():
    V = np.random.default_rng(3).standard_normal((5000, 8)).astype(np.float32)
    with pytest.warns(UserWarning, match="stopped after 1 Lloyd steps"):
        vptq.fit_codebook(V, np.ones(len(V)), 64, iterations=1)


def test_bad_input_is_refused_with_a_way_out():
    W, X = correlated_layer(out=64, inputs=128, tokens=256)
    with pytest.raises(ValueError, match="NaN/Inf"):
        quantize_tensor(np.where(np.eye(64, 128, dtype=bool), np.nan, W), "vptq_v4_3bit", "vptq", calib=X)
    with pytest.raises(ValueError, match="width 64 for a layer with 128 input features"):
        quantize_tensor(W, "vptq_v4_3bit", "vptq", calib=X[:, :64])
    with pytest.raises(ValueError, match="out_features into vectors of 8; 60 is not a multiple of 8"):
        quantize_tensor(W[:60], "vptq_v8_2bit", "vptq", calib=X)
    with pytest.raises(ValueError, match="vptq takes the formats vptq_v4_3bit, vptq_v8_2bit, not 'int4'"):
        quantize_tensor(W, "int4", "vptq", calib=X)
    with pytest.raises(ValueError, match="unknown"):
        quantize_tensor(W, "vptq_v5_1bit", "vptq", calib=X)
    with pytest.raises(ValueError, match="is not one of them"):
        vptq.quantize(W, formats.get("int4"), calib=X)
    with pytest.raises(ValueError, match=r"needs calibration inputs \(calib=X"):
        quantize_tensor(W, "vptq_v4_3bit", "vptq")
    with pytest.raises(ValueError, match="kmeans_iterations >= 1"):
        quantize_tensor(W, "vptq_v4_3bit", "vptq", calib=X, kmeans_iterations=0)
