"""ggml's IQ1_S and IQ1_M (qtutor/formats/ggml/iq1.py): byte-identical with ggml's own C quantizer (golden bytes,
with the importance matrix ggml requires), dequantized as gguf-py does."""
from __future__ import annotations

import numpy as np
import pytest

from qtutor.formats.ggml import iq1
from qtutor.formats.ggml.layouts import BLOCK, bits_per_weight

gq = pytest.importorskip("gguf.quants")
from gguf import GGMLQuantizationType  # noqa: E402

TYPES = ["IQ1_S", "IQ1_M"]
def as_blocks(data: np.ndarray, name: str) -> np.ndarray:
    return np.ascontiguousarray(data, dtype=np.uint8).reshape(-1).view(BLOCK[name])


def gguf_dequantize(blocks: np.ndarray, name: str) -> np.ndarray:
    return gq.dequantize(blocks.view(np.uint8), GGMLQuantizationType[name]).reshape(len(blocks), -1)


def weighted_error(W, name, imatrix, importance):
    back = iq1.DEQUANTIZE[name](iq1.QUANTIZE[name](W.reshape(-1, 256), imatrix)).reshape(W.shape)
    return float((((back - W) ** 2) * importance).sum() / ((W**2) * importance).sum())


@pytest.mark.parametrize("name", TYPES)
def test_dequantize_matches_gguf_py_on_arbitrary_blocks(name):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (512, BLOCK[name].itemsize), dtype=np.uint8)
    blocks = as_blocks(raw, name)
    with np.errstate(invalid="ignore"):  # random bytes also make fp16 NaN/Inf scales, times 0 somewhere
        ours, theirs = iq1.DEQUANTIZE[name](blocks), gguf_dequantize(blocks, name)
    finite = np.isfinite(theirs).all(axis=1)
    assert finite.sum() > 400
    np.testing.assert_array_equal(ours[finite], theirs[finite])


def test_bits_per_weight_are_ggml_s():
    assert bits_per_weight("IQ1_S") == 1.5625 and bits_per_weight("IQ1_M") == 1.75


def test_the_imatrix_lowers_the_error_where_it_matters():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((32, 512)).astype(np.float32)
    importance = np.exp(rng.normal(0, 1.5, 512)).astype(np.float32)  # a few columns matter much more
    for name in TYPES:
        flat = weighted_error(W, name, np.ones(512, np.float32), importance)
        weighted = weighted_error(W, name, importance, importance)
        assert weighted < 0.95 * flat, (name, flat, weighted)


def test_iq1_m_s_extra_bits_buy_a_smaller_error():
    rng = np.random.default_rng(2)
    W = rng.standard_normal((32, 1024)).astype(np.float32)
    ones = np.ones(1024, np.float32)
    error = {name: weighted_error(W, name, ones, 1.0) for name in TYPES}
    assert error["IQ1_M"] < 0.95 * error["IQ1_S"] < 0.95 * 0.35, error  # measured 0.23 and 0.26


def test_every_group_is_a_grid_point_plus_its_shift():
    """weight = d (2 l + 1) (g + s delta): dividing out the sub-block scale leaves -1, 0, +1 plus +-1/8."""
    rng = np.random.default_rng(3)
    W = (rng.standard_normal((8, 512)) + 0.3).astype(np.float32)  # skewed: both shifts get used
    block = iq1.quantize_iq1_s(W.reshape(-1, 256), np.ones(512, np.float32))
    qh = block["qh"].astype(np.int32)
    dl = block["d"].astype(np.float32)[:, None] * (2 * ((qh >> 12) & 7) + 1)
    values = iq1.dequantize_iq1_s(block).reshape(len(block), 8, 32) / dl[:, :, None]
    shift = np.where(qh & 0x8000, -0.125, 0.125)[:, :, None]
    np.testing.assert_allclose(np.round(values - shift), values - shift, atol=1e-5)
    assert set(np.unique(np.round(values - shift))) <= {-1.0, 0.0, 1.0}
    assert 0 < (qh & 0x8000).astype(bool).mean() < 1


def test_all_zero_super_blocks_are_all_zero_bytes():
    x = np.zeros((2, 256), np.float32)
    for name in TYPES:
        block = iq1.QUANTIZE[name](x, np.ones(256, np.float32))
        assert not block.view(np.uint8).any()
        assert not iq1.DEQUANTIZE[name](block).any()


@pytest.mark.parametrize("name", TYPES)
def test_missing_or_misfit_importance_matrices_are_clear_errors(name):
    x = np.random.default_rng(4).standard_normal((4, 256)).astype(np.float32)
    with pytest.raises(ValueError, match="without an importance matrix.*qtutor imatrix"):
        iq1.QUANTIZE[name](x, None)
    with pytest.raises(ValueError, match="one entry per input column"):
        iq1.QUANTIZE[name](x, np.ones(128, np.float32))
