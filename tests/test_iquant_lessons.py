"""The pieces notebook 16 teaches with: one IQ2_XXS group decoded by hand, BitNet's absmean ternary rounding,
the grid picture, and the stored SmolLM2 i-quant study (tools/iquants_smollm2.py)."""
from __future__ import annotations

import numpy as np
import pytest

from qtutor import zoo
from qtutor.formats import ggml
from qtutor.formats.ggml import iquants
from qtutor.formats.ggml.lattice import grid
from qtutor.methods.gguf import anatomy
from qtutor.viz import figures


def test_a_hand_decoded_iq2_xxs_group_is_what_the_dequantizer_returns():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((1, 256)).astype(np.float32)
    block = ggml.quantize(W, "IQ2_XXS", np.exp(rng.normal(0, 1, 256)).astype(np.float32))[0]
    decoded = ggml.dequantize(block, "IQ2_XXS")[0]
    for group in range(32):
        e = anatomy.explain_iq2_xxs_group(block, group)
        assert e["magnitudes"] == grid("IQ2_XXS").values[e["grid_index"]].astype(int).tolist()
        assert sum(e["negative"]) % 2 == 0 and len(e["stored_signs"]) == 7
        sign = np.where(e["negative"], -1, 1).astype(np.float32)
        rebuilt = np.float32(e["scale"]) * np.asarray(e["magnitudes"], np.float32) * sign
        np.testing.assert_array_equal(rebuilt, decoded[8 * group:8 * group + 8])
    with pytest.raises(ValueError, match="32 groups"):
        anatomy.explain_iq2_xxs_group(block, 32)


def test_absmean_ternary_is_bitnet_s_rounding():
    W = np.array([[0.0, 0.1, -0.2, 0.5], [-1.0, 0.05, 0.3, -0.4]], np.float32)
    trits, gamma = iquants.absmean_ternary(W)
    assert gamma == pytest.approx(np.abs(W).mean())  # 0.31875
    np.testing.assert_array_equal(trits, [[0, 0, -1, 1], [-1, 0, 1, -1]])
    big = np.random.default_rng(1).standard_normal((256, 256)).astype(np.float32)
    trits, _ = iquants.absmean_ternary(big)
    assert 0.25 < np.mean(trits == 0) < 0.37  # about a third of a normal matrix goes to zero (measured 0.308)
    tq = ggml.dequantize(ggml.quantize(big, "TQ1_0"), "TQ1_0", big.shape)
    assert np.mean(tq == 0) > 0.8  # TQ1_0 rounds by the maximum of 256: most become zero (measured 0.870)


def test_the_grid_picture_shows_every_point():
    fig = figures.grid_points(grid("IQ2_XS").values, title="IQ2_XS")
    image = fig.axes[0].images[0].get_array()
    assert image.shape == (8, 512) and set(np.unique(image)) == {8, 25, 43}
    norms = (np.asarray(image, np.float64) ** 2).sum(axis=0)
    assert np.all(np.diff(norms) >= 0)  # sorted by length


def test_the_stored_iquant_study_covers_every_mix_and_matrix():
    study = zoo.iquants("smollm2")
    rows = {(row["mix"], row["imatrix"]) for row in study["imatrix_study"]}
    for mix, plain in (("Q2_K", None), ("Q3_K_M", None), ("IQ3_XXS", "uniform"), ("IQ2_XS", "uniform")):
        assert {(mix, m) for m in (plain, "wiki", "news", "test")} <= rows
    assert {row["mix"] for row in study["mixes"]} >= {"IQ1_S", "IQ2_XXS", "IQ3_S", "IQ4_XS", "TQ1_0"}
    for row in study["imatrix_study"] + study["mixes"]:
        assert row["tokens"] == study["tokens"] and row["ppl_stderr"] > 0 and row["kl"] >= 0
    assert "evaluation text" in study["leak_warning"][0]
    with pytest.raises(ValueError, match="known: smollm2"):
        zoo.iquants("tiny")
