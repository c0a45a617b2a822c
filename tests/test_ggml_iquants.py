"""ggml's i-quants and ternary types: every golden entry of every type (IQ4_NL, IQ4_XS, TQ1_0, TQ2_0 of
qtutor/formats/ggml/iquants.py; the lattice types of iq3.py, iq2.py, iq1.py) byte-identical with ggml's own C
quantizer, with and without an importance matrix, through the public ggml.quantize, and dequantized as gguf-py
does; IQ4_NL, IQ4_XS and the ternary types as formats (the lattice types' own claims: test_ggml_iq1/2/3.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import qtutor as qt
from qtutor.formats import ggml
from qtutor.methods.gguf.reader import DEQUANTIZABLE

gq = pytest.importorskip("gguf.quants")
from gguf import GGMLQuantizationType  # noqa: E402

TYPES = ["IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0"]
LATTICE_TYPES = ["IQ3_XXS", "IQ3_S", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ1_S", "IQ1_M"]
SUBSET = Path(__file__).parent / "data" / "ggml_iquants_subset.npz"
FULL = Path(__file__).resolve().parents[2] / "shared" / "golden" / "ggml_iquants.npz"
GOLDEN = FULL if FULL.is_file() else SUBSET


def golden_cases():
    data = np.load(GOLDEN)
    return [(key.split("/")[0], key.split("/")[1]) for key in data.files
            if key.split("/")[0].split("+")[0] in TYPES + LATTICE_TYPES]


@pytest.mark.parametrize("case,family", golden_cases())
def test_bytes_are_ggml_s_with_and_without_the_importance_matrix(case, family):
    data = np.load(GOLDEN)
    name, with_imatrix = case.split("+")[0], case.endswith("+imatrix")
    x, expected = data[f"x/{family}"], data[f"{case}/{family}"]
    ours = ggml.quantize(x, name, data["imatrix"] if with_imatrix else None)
    np.testing.assert_array_equal(ours, expected)
    np.testing.assert_array_equal(ggml.dequantize(ours, name), gq.dequantize(ours, GGMLQuantizationType[name]))


def test_the_imatrix_changes_the_bytes_and_lowers_the_weighted_error():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((32, 512)).astype(np.float32)
    importance = np.exp(rng.normal(0, 1.5, 512)).astype(np.float32)  # a few columns matter much more
    for name in ("IQ4_NL", "IQ4_XS"):
        plain, weighted = ggml.quantize(W, name), ggml.quantize(W, name, importance)
        assert not np.array_equal(plain, weighted)
        error = {label: float((((ggml.dequantize(b, name) - W) ** 2) * importance).sum())
                 for label, b in (("plain", plain), ("weighted", weighted))}
        assert error["weighted"] < 0.95 * error["plain"], (name, error)


def test_non_linear_levels_beat_q4_0_at_the_same_size_on_bell_shaped_weights():
    W = np.random.default_rng(0).standard_normal((64, 1024)).astype(np.float32)
    error = {name: float(((ggml.dequantize(ggml.quantize(W, name), name) - W) ** 2).sum() / (W**2).sum())
             for name in ("Q4_0", "IQ4_NL", "IQ4_XS")}
    assert ggml.block_info("IQ4_NL")[2] == ggml.block_info("Q4_0")[2] == 4.5  # same bits per weight
    assert error["IQ4_NL"] < 0.85 * error["Q4_0"], error  # measured 0.00585 against 0.00744
    assert error["IQ4_XS"] < 0.85 * error["Q4_0"] and ggml.block_info("IQ4_XS")[2] == 4.25  # fewer bits, too


def test_ternary_weights_come_back_exactly_and_take_their_bits():
    rng = np.random.default_rng(2)
    scale = np.float16(0.02).astype(np.float32)
    W = (rng.integers(-1, 2, (8, 512)) * scale).astype(np.float32)
    W[:, 0] = scale  # every row reaches the scale
    for name, bpw in (("TQ1_0", 1.6875), ("TQ2_0", 2.0625)):
        fmt = qt.formats.get(name)
        q = fmt.encode(W)
        np.testing.assert_array_equal(q.dequantize(), W)
        assert fmt.bits_per_weight() == bpw and q.codes.nbytes * 8 == bpw * W.size


@pytest.mark.parametrize("name", TYPES)
def test_every_new_type_is_a_format_the_reader_can_dequantize(name):
    fmt = qt.formats.get(name)
    assert name.lower() in qt.formats.block_types() and name in DEQUANTIZABLE
    W = np.random.default_rng(3).standard_normal((4, 256)).astype(np.float32)
    q = qt.quantize_tensor(W, name)
    assert q.dequantize().shape == W.shape and q.bits_per_weight == fmt.bits_per_weight()
    with pytest.raises(ValueError, match="not a multiple"):
        fmt.encode(W[:, :200] if name != "IQ4_NL" else W[:, :40])


def test_bad_importance_matrices_are_clear_errors():
    W = np.random.default_rng(4).standard_normal((2, 256)).astype(np.float32)
    with pytest.raises(ValueError, match="one per input column"):
        ggml.quantize(W, "IQ4_XS", np.ones(128))
    for bad in (-np.ones(256), np.full(256, np.nan)):
        with pytest.raises(ValueError, match="finite and >= 0"):
            ggml.quantize(W, "IQ4_NL", bad)
    with pytest.raises(ValueError, match="does not use an importance matrix"):
        ggml.quantize(W, "TQ2_0", np.ones(256))


def test_ternary_rounding_is_c_s_lroundf_just_below_a_half():
    # SmolLM2's layer-0 down_proj has a weight at exactly -half its block's maximum: x / d in float32 is
    # -0.49999997, which C's lroundf rounds to 0 (floor(|x| + 0.5) would give 1: the float sum rounds up)
    from qtutor.formats.base import round_half_away

    x = np.array([-0.49999997, 0.49999997, 0.5, -0.5, 2.4999998, -2.5], np.float32)
    np.testing.assert_array_equal(round_half_away(x), [0, 0, 1, -1, 2, -3])
    block = np.zeros((1, 256), np.float32)
    block[0, 0], block[0, 1] = 0.45898438, -0.22949219  # the SmolLM2 pair: x * (1 / d) = -0.49999997
    for name in ("TQ1_0", "TQ2_0"):
        assert ggml.dequantize(ggml.quantize(block, name), name)[0, 1] == 0, name
