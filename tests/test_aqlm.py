"""AQLM (qtutor.methods.aqlm): the code search against exhaustive search of the exact loss, the rounds never
raising the loss, the stored tensor equal to its codewords, its bits, and the error against RTN at equal bits."""
from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

from qtutor import formats
from qtutor.methods import aqlm, quantize_tensor


def correlated_layer(rows=32, columns=64, tokens=512, seed=0):
    """W (rows, columns) and inputs X whose features are mixed (H far from diagonal, blocks of 8 coupled)."""
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((columns, columns)) / np.sqrt(columns) + np.eye(columns)
    X = (rng.standard_normal((tokens, columns)) @ mixing).astype(np.float32)
    W = (rng.standard_normal((rows, columns)) * 0.02).astype(np.float32)
    return W, X


def output_error(W, W_hat, X):
    return float(np.linalg.norm((W - W_hat) @ X.T) ** 2 / np.linalg.norm(W @ X.T) ** 2)


def row_loss(e, H):
    return np.einsum("rc,cd,rd->r", e, H, e)


def test_a_full_beam_finds_the_pair_of_codewords_an_exhaustive_search_of_the_exact_loss_finds():
    # 3 groups, 2 tables of 16: the last group searched, with a beam of 16, must reach the best of all 256 pairs,
    # its loss measured directly as tr(E H E^T) with the other groups' errors in E (the coupling through H)
    W, X = correlated_layer(rows=6, columns=24)
    H = aqlm.layer_hessian(X, 24, "test")
    rng = np.random.default_rng(3)
    tables = rng.standard_normal((2, 16, 8)) * 0.02
    codes = rng.integers(0, 16, (6, 3, 2))
    s = np.ones((6, 1))
    last = np.random.default_rng(7).permutation(3)[-1]  # the order update_codes draws from the same seed
    found = {16: aqlm.update_codes(W.astype(np.float64), s, H, tables, codes, 16, np.random.default_rng(7))}
    best = np.empty(6)
    for r in range(6):
        losses = []
        for pair in itertools.product(range(16), repeat=2):
            trial = found[16][r].copy()
            trial[last] = pair
            losses.append(row_loss(W[r:r + 1] - aqlm.decode(tables, trial[None]), H)[0])
        best[r] = min(losses)
    np.testing.assert_allclose(row_loss(W - aqlm.decode(tables, found[16]), H), best, rtol=1e-10)


def test_a_wider_beam_is_no_worse_than_greedy_for_every_group_and_better_for_some():
    rng = np.random.default_rng(11)
    A = rng.standard_normal((8, 8))
    H_gg = A @ A.T / 8 + np.eye(8)
    tables = rng.standard_normal((2, 64, 8))
    b, s = rng.standard_normal((200, 8)), rng.uniform(0.5, 2, (200, 1))
    codes = rng.integers(0, 64, (200, 2))

    def loss(vectors):
        return -2 * s[:, 0] * (b * vectors).sum(1) + s[:, 0] ** 2 * np.einsum("rd,de,re->r", vectors, H_gg, vectors)

    start = loss(tables[0][codes[:, 0]] + tables[1][codes[:, 1]])
    results = {beam: aqlm.search_group(b, s, H_gg, codes, tables, beam) for beam in (1, 4)}
    for beam, (found, vectors) in results.items():  # the vectors returned are those of the codes returned
        np.testing.assert_allclose(vectors, tables[0][found[:, 0]] + tables[1][found[:, 1]], rtol=1e-12)
    greedy, wide = loss(results[1][1]), loss(results[4][1])
    assert (greedy <= start + 1e-12).all()
    assert (wide <= greedy + 1e-12).all()  # with M = 2 the greedy path is always in the beam's last step
    assert (wide < greedy - 1e-6).mean() > 0.05  # and the beam finds better pairs for a fair share of groups


def test_a_wider_beam_is_no_worse_than_greedy_on_a_whole_layer():
    W, X = correlated_layer(rows=64, columns=128, seed=1)
    greedy = quantize_tensor(W, "aqlm_2x8", "aqlm", calib=X)
    beam = quantize_tensor(W, "aqlm_2x8", "aqlm", calib=X, beam_size=4)
    assert beam.extra["losses"][0] == greedy.extra["losses"][0]  # the same k-means start
    assert beam.extra["losses"][-1] <= greedy.extra["losses"][-1]


def test_the_output_loss_never_rises_from_round_to_round():
    W, X = correlated_layer(rows=48, columns=96, seed=2)
    q = quantize_tensor(W, "aqlm_2x8", "aqlm", calib=X, alternations=5, tolerance=0.0)
    losses = np.array(q.extra["losses"])
    assert len(losses) == 6
    assert (np.diff(losses) <= 1e-12 * losses[0]).all(), losses
    assert losses[-1] < 0.9 * losses[0]  # the rounds do something beyond the k-means start
    # the recorded loss is the one of the stored tensor, up to its float16 tables and scales
    assert output_error(W, q.dequantize(), X) == pytest.approx(losses[-1], rel=0.02)


def test_the_stored_tensor_is_the_sum_of_its_codewords_times_the_row_scale():
    W, X = correlated_layer(rows=16, columns=64, seed=4)
    q = quantize_tensor(W, "aqlm_2x8", "aqlm", calib=X)
    books, codes, scales = q.extra["codebooks"], q.codes, q.scales
    assert codes.shape == (16, 8, 2) and codes.dtype == np.int64 and scales.shape == (16, 1)
    assert np.array_equal(books, books.astype(np.float16).astype(np.float32))  # the tables as stored: float16
    expected = np.empty((16, 64), dtype=np.float32)
    for r in range(16):
        for g in range(8):
            expected[r, 8 * g:8 * g + 8] = (books[0][codes[r, g, 0]] + books[1][codes[r, g, 1]]) * scales[r, 0]
    np.testing.assert_array_equal(q.dequantize(), expected)


@pytest.mark.parametrize("fmt, M, B", [("aqlm_2x8", 2, 8), ("aqlm_1x16", 1, 16)])
def test_bits_per_weight_follow_the_papers_count(fmt, M, B):
    # (M B groups + M entries d 16 + rows 16) / (rows columns), entries = 2^B, or one per group when a layer has
    # fewer groups than 2^B (k-means cannot place more centres than points)
    rows, columns = 64, 128
    W, X = correlated_layer(rows, columns, seed=5)
    q = quantize_tensor(W, fmt, "aqlm", calib=X, alternations=1)
    groups = rows * columns // 8
    entries = min(2**B, groups)
    assert q.extra["codebooks"].shape == (M, entries, 8)
    assert q.bits_per_weight == (M * B * groups + M * entries * 8 * 16 + rows * 16) / (rows * columns)


def test_the_output_error_is_well_below_rtn_int2_at_about_the_same_bits():
    W, X = correlated_layer(rows=512, columns=512, tokens=1024, seed=6)
    q = quantize_tensor(W, "aqlm_2x8", "aqlm", calib=X)
    rtn = quantize_tensor(W, "int2", "rtn", group_size=64)
    assert abs(q.bits_per_weight - rtn.bits_per_weight) < 0.05
    assert output_error(W, q.dequantize(), X) < 0.5 * output_error(W, rtn.dequantize(), X)


def test_no_improvement_on_the_start_is_warned(monkeypatch):
    W, X = correlated_layer(rows=16, columns=32, seed=8)
    monkeypatch.setattr(aqlm, "update_codes", lambda W, s, H, tables, codes, *rest: codes)
    monkeypatch.setattr(aqlm, "update_tables", lambda W, s, H, WH, tables, *rest: tables)
    monkeypatch.setattr(aqlm, "decode", lambda tables, codes: np.zeros((codes.shape[0], codes.shape[1] * 8)))
    with pytest.warns(RuntimeWarning, match="did not lower the output loss"):
        quantize_tensor(W, "aqlm_2x8", "aqlm", calib=X)


def test_bad_input_is_refused_with_the_fix():
    W, X = correlated_layer(rows=8, columns=32, seed=9)
    fmt = formats.get("aqlm_2x8")
    bad = W.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        aqlm.quantize(bad, fmt, calib=X)
    with pytest.raises(ValueError, match=r"width 16 for a layer with 32 inputs; .* shaped \(tokens, 32\)"):
        aqlm.quantize(W, fmt, calib=X[:, :16])
    with pytest.raises(ValueError, match="36 is not a multiple of 8"):
        aqlm.quantize(np.zeros((8, 36), np.float32), fmt, calib=np.zeros((4, 36), np.float32))
    with pytest.raises(ValueError, match="beam_size=0: keep at least 1"):
        aqlm.quantize(W, fmt, calib=X, beam_size=0)
    with pytest.raises(ValueError, match="calib=X"):
        aqlm.quantize(W, fmt)
    with pytest.raises(ValueError, match="aqlm takes the formats aqlm_2x8, aqlm_1x16, not 'int2'"):
        quantize_tensor(W, "int2", "aqlm", calib=X)
    with pytest.raises(ValueError, match="not 'e8p'; give fmt='aqlm_2x8'"):
        aqlm.quantize(W, formats.get("e8p"), calib=X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the meaningless group_size / sym are accepted silently
        quantize_tensor(W, "aqlm_2x8", "aqlm", group_size=64, sym=True, calib=X, alternations=1)
