"""ggml's IQ3_XXS and IQ3_S (qtutor/formats/ggml/iq3.py): byte-identical with ggml's own C quantizer (golden bytes,
with and without an importance matrix), dequantized as gguf-py does, and the claims of the module docstring."""
from __future__ import annotations

import numpy as np
import pytest

from qtutor.formats.ggml import iq3

gq = pytest.importorskip("gguf.quants")
from gguf import GGMLQuantizationType  # noqa: E402

TYPES = ["IQ3_XXS", "IQ3_S"]
def quantize(x, name, imatrix=None):
    """ggml bytes (rows, bytes per row) of x (rows, a multiple of 256 columns)."""
    return iq3.QUANTIZE[name](x.reshape(-1, 256), imatrix).view(np.uint8).reshape(len(x), -1)


def dequantize(data, name):
    return iq3.DEQUANTIZE[name](np.ascontiguousarray(data).reshape(-1).view(iq3.BLOCK[name])).reshape(len(data), -1)


@pytest.mark.parametrize("name", TYPES)
def test_dequantize_is_gguf_py_s_on_random_bytes(name):
    raw = np.random.default_rng(5).integers(0, 256, (3, 16 * iq3.BLOCK[name].itemsize), dtype=np.uint8)
    blocks = raw.reshape(-1).view(iq3.BLOCK[name])
    blocks["d"] = np.random.default_rng(6).uniform(-1, 1, len(blocks)).astype(np.float16)  # no inf / NaN scales
    np.testing.assert_array_equal(dequantize(raw, name), gq.dequantize(raw, GGMLQuantizationType[name]))


def test_iq3_xxs_signs_have_even_parity_and_flip_the_least_important_weight():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 256)).astype(np.float32)
    sub, weight = iq3.subblock_inputs(x, None, "IQ3_XXS")
    magnitude, signs = iq3.even_parity_signs(sub, weight)
    groups, magnitude = sub.reshape(-1, 8), magnitude.reshape(-1, 8)
    flipped = magnitude < 0
    odd = (groups < 0).sum(axis=1) % 2 == 1
    assert (flipped.sum(axis=1) == odd).all() and odd.any()  # exactly one weight flipped in every odd group
    least = np.argmin((weight.reshape(-1, 8) * groups) * groups, axis=1)
    assert (np.argmax(flipped, axis=1)[odd] == least[odd]).all()
    np.testing.assert_array_equal(np.abs(magnitude), np.abs(groups))
    assert signs.max() < 128  # 7 bits; the dequantized weights of every group of 8 have an even count of negatives
    W = dequantize(quantize(x, "IQ3_XXS"), "IQ3_XXS")
    assert ((W.reshape(-1, 8) < 0).sum(axis=1) % 2 == 0).all()


def test_the_imatrix_changes_the_bytes_and_lowers_the_weighted_error():
    rng = np.random.default_rng(2)
    W = rng.standard_normal((16, 512)).astype(np.float32)
    importance = np.exp(rng.normal(0, 1.5, 512)).astype(np.float32)  # a few columns matter much more
    for name in TYPES:
        plain, weighted = quantize(W, name), quantize(W, name, importance)
        assert not np.array_equal(plain, weighted)
        error = {label: float((((dequantize(b, name) - W) ** 2) * importance).sum())
                 for label, b in (("plain", plain), ("weighted", weighted))}
        assert error["weighted"] < 0.5 * error["plain"], (name, error)  # measured 0.38 of it for both


def test_iq3_s_spends_its_extra_bits_on_a_smaller_error():
    W = np.random.default_rng(3).standard_normal((16, 1024)).astype(np.float32)
    error = {name: float(((dequantize(quantize(W, name), name) - W) ** 2).sum() / (W ** 2).sum()) for name in TYPES}
    assert iq3.BLOCK["IQ3_XXS"].itemsize * 8 / 256 == 3.0625 and iq3.BLOCK["IQ3_S"].itemsize * 8 / 256 == 3.4375
    assert error["IQ3_XXS"] < 0.05 and error["IQ3_S"] < 0.8 * error["IQ3_XXS"], error  # measured 0.045, 0.028


def test_iq3_s_writes_the_next_sub_block_into_the_slot_of_an_all_zero_one():
    # ggml's quirk: a zero sub-block does not advance where indices and signs go (its 9th index bits stay put)
    rng = np.random.default_rng(4)
    full = rng.standard_normal((1, 256)).astype(np.float32)
    holed = full.copy()
    holed[0, 64:96] = 0  # sub-block 2
    a = quantize(full, "IQ3_S").reshape(-1).view(iq3.BLOCK["IQ3_S"])[0]
    b = quantize(holed, "IQ3_S").reshape(-1).view(iq3.BLOCK["IQ3_S"])[0]
    qs_a, qs_b = a["qs"].reshape(8, 8), b["qs"].reshape(8, 8)
    signs_a, signs_b = a["signs"].reshape(8, 4), b["signs"].reshape(8, 4)
    np.testing.assert_array_equal(qs_b[:2], qs_a[:2])
    np.testing.assert_array_equal(qs_b[2:7], qs_a[3:8])
    np.testing.assert_array_equal(signs_b[2:7], signs_a[3:8])
    assert not qs_b[7].any() and not signs_b[7].any() and b["qh"][2] == 0
    np.testing.assert_array_equal(np.delete(b["qh"], 2), np.delete(a["qh"], 2))


@pytest.mark.parametrize("name", TYPES)
def test_an_all_zero_super_block_is_all_zero_bytes(name):
    x = np.zeros((2, 256), np.float32)
    x[1] = np.random.default_rng(7).standard_normal(256)
    data = quantize(x, name)
    assert not data[0].any() and data[1].any()
    np.testing.assert_array_equal(dequantize(data, name)[0], 0)


@pytest.mark.parametrize("name", TYPES)
def test_an_imatrix_of_the_wrong_length_is_a_clear_error(name):
    x = np.random.default_rng(8).standard_normal((2, 512)).astype(np.float32)
    for bad in (np.ones(128, np.float32), np.ones(768, np.float32), np.ones(0, np.float32)):
        with pytest.raises(ValueError, match="one entry per input column"):
            quantize(x, name, bad)
