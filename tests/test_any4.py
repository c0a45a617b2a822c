"""any4 (qtutor.methods.any4): a learned 16-level table per row, by a weighted 1-D k-means of normalised groups."""
from __future__ import annotations

import numpy as np
import pytest

import qtutor as qt
from qtutor import formats
from qtutor.methods import any4, quantize_tensor


def heavy_tailed(shape=(64, 512), seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_t(3, shape) * 0.02).astype(np.float32)


def normal(shape=(64, 512), seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * 0.02).astype(np.float32)


def inputs(in_features=512, tokens=256, seed=1) -> np.ndarray:
    """Activations whose columns have very different means (a few large, most near zero), as any4's weighting reads."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal(in_features) * np.where(rng.random(in_features) < 0.1, 5.0, 0.1)
    return (means + 0.3 * rng.standard_normal((tokens, in_features))).astype(np.float32)


def stored_levels(q) -> np.ndarray:
    """Every value a weight of q could take: s * T[k] + z for each group and level, (rows, groups, K)."""
    return q.scales[:, :, None] * q.extra["tables"][:, None, :] + q.zeros[:, :, None]


@pytest.mark.parametrize("fmt", ["any4", "any3"])
def test_every_weight_decodes_to_its_nearest_stored_level(fmt):
    W = heavy_tailed()
    q = quantize_tensor(W, fmt, "any4", 64, calib=inputs())
    levels = stored_levels(q)  # (rows, groups, K)
    G = W.reshape(W.shape[0], -1, 64)
    nearest = np.abs(G[..., None] - levels[:, :, None, :]).min(axis=3).reshape(W.shape)
    np.testing.assert_array_equal(np.abs(W - q.dequantize()), nearest)
    assert q.codes.max() < 2 ** formats.get(fmt).bits and q.extra["tables"].shape == (64, 2 ** formats.get(fmt).bits)


def test_dequantize_is_the_table_lookup_scaled_and_offset_with_float16_numbers():
    W = normal()
    q = quantize_tensor(W, "any4", "any4", 64)
    for stored in (q.scales, q.zeros, q.extra["tables"]):
        np.testing.assert_array_equal(stored, stored.astype(np.float16).astype(np.float32))
    rows = np.arange(W.shape[0])[:, None]
    expected = q.extra["tables"][rows, q.codes].reshape(64, -1, 64) * q.scales[..., None] + q.zeros[..., None]
    np.testing.assert_array_equal(q.dequantize(), expected.reshape(W.shape))
    assert np.all(np.diff(q.extra["tables"], axis=1) >= 0)  # each row's levels in order


def test_kmeans_assignments_are_the_nearest_level_and_the_objective_never_rises():
    rng = np.random.default_rng(2)
    u = rng.standard_t(3, (32, 300)) * 2 + 7
    omega = rng.random((32, 300))
    T, errors, row_errors = any4.kmeans_rows(u, omega, 16)
    codes = any4.nearest_level(u, T)
    brute = np.abs(u[:, :, None] - T[:, None, :]).min(axis=2)
    np.testing.assert_array_equal(np.abs(u - np.take_along_axis(T, codes, axis=1)), brute)
    assert len(errors) >= 2
    assert all(later <= earlier * (1 + 1e-12) for earlier, later in zip(errors, errors[1:]))
    direct = float((omega * (u - np.take_along_axis(T, codes, axis=1)) ** 2).sum())
    assert errors[-1] == pytest.approx(direct, rel=1e-9)  # the running sums give the true objective
    assert row_errors.sum() == pytest.approx(direct, rel=1e-9)
    # from the integer grid 0..15 (asymmetric RTN with the same scale and offset) the first update already improves
    grid = np.tile(np.arange(16.0), (32, 1))
    start = float((omega * (u - np.take_along_axis(grid, any4.nearest_level(u, grid), axis=1)) ** 2).sum())
    assert errors[0] < start


@pytest.mark.parametrize("make", [normal, heavy_tailed], ids=["normal", "heavy_tailed"])
def test_any4_weight_error_is_below_nf4_and_int4_in_groups_of_64(make):
    W = make(shape=(128, 512))
    mse = {}
    for fmt, method in (("any4", "any4"), ("nf4", "rtn"), ("int4", "rtn")):
        mse[fmt] = float(((quantize_tensor(W, fmt, method, 64).dequantize() - W) ** 2).mean())
    assert mse["any4"] < 0.95 * mse["nf4"] and mse["any4"] < 0.95 * mse["int4"], mse


@pytest.mark.parametrize("group_size", [64, -1])
def test_activation_weights_lower_the_activation_weighted_error(group_size):
    # the weighted k-means minimises sum_j |mean x_j| s (u_j - T[c_j])^2 (one group per row: exactly the
    # activation-weighted weight error, up to the row's scale); the plain k-means the unweighted error
    W, X = heavy_tailed(), inputs()
    importance = np.abs(X.astype(np.float64).mean(axis=0))
    weighted = quantize_tensor(W, "any4", "any4", group_size, calib=X, weighting="mean").dequantize()
    plain = quantize_tensor(W, "any4", "any4", group_size, calib=X, weighting="none").dequantize()

    def activation_weighted(W_hat):
        return float((importance * (W - W_hat) ** 2).sum())

    assert activation_weighted(weighted) < activation_weighted(plain)
    assert ((W - plain) ** 2).sum() < ((W - weighted) ** 2).sum()  # the price: more plain error


@pytest.mark.parametrize("fmt, group_size", [("any4", 64), ("any4", 128), ("any3", 64), ("any4", -1)])
def test_bits_per_weight_count_codes_scales_offsets_and_the_row_tables(fmt, group_size):
    W = normal(shape=(32, 768))
    q = quantize_tensor(W, fmt, "any4", group_size)
    bits = formats.get(fmt).bits
    per_group = 768 if group_size == -1 else group_size
    expected = bits + 2 * 16 / per_group + 2**bits * 16 / 768
    assert q.bits_per_weight == pytest.approx(expected, rel=1e-12)
    assert formats.get(fmt).bits_per_weight((32, 768), group_size) == pytest.approx(expected, rel=1e-12)
    assert q.nbytes * 8 == pytest.approx(expected * W.size)


def test_a_constant_group_comes_back_exactly():
    W = normal(shape=(4, 128))
    W[1, :64] = 0.25
    q = quantize_tensor(W, "any4", "any4", 64)
    np.testing.assert_array_equal(q.dequantize()[1, :64], W[1, :64])


def test_a_loop_cut_short_says_so():
    with pytest.warns(RuntimeWarning, match="did not settle in 1 iterations"):
        quantize_tensor(heavy_tailed(), "any4", "any4", 64, init="linspace", iterations=1)


@pytest.mark.parametrize("change, message", [
    (lambda W, X: dict(W=np.where(np.eye(*W.shape, dtype=bool), np.nan, W)), "NaN/Inf"),
    (lambda W, X: dict(calib=X[:, :100]), r"tokens, in_features=512"),
    (lambda W, X: dict(calib=np.where(X > 5, np.inf, X)), "NaN/Inf"),
    (lambda W, X: dict(group_size=100), "must divide in_features=512"),
    (lambda W, X: dict(group_size=0), "must divide in_features=512"),
    (lambda W, X: dict(sym=True), "leave sym out"),
    (lambda W, X: dict(fmt="int4"), "any4 takes the formats any4, any3"),
    (lambda W, X: dict(init="k-means++"), "init in"),
    (lambda W, X: dict(weighting="square"), "weighting in"),
    (lambda W, X: dict(iterations=0), "iterations >= 1"),
    (lambda W, X: dict(W=W * 1e7), "float16"),
])
def test_bad_input_gets_an_error_that_says_how_to_fix_it(change, message):
    W, X = heavy_tailed(), inputs()
    arguments = dict(W=W, fmt="any4", group_size=64, calib=X)
    arguments.update(change(W, X))
    with pytest.raises(ValueError, match=message):
        quantize_tensor(arguments.pop("W"), arguments.pop("fmt"), "any4", **arguments)


def test_the_format_alone_cannot_encode_and_other_methods_refuse_it():
    with pytest.raises(ValueError, match="method='any4'"):
        formats.get("any4").encode(normal())
    with pytest.raises(ValueError, match="codebook format .* use any4"):
        qt.quantize_tensor(normal(), "any4", "rtn")
    assert {"any4", "any3"} <= set(formats.codebook_formats()) and "any4" not in formats.names()
