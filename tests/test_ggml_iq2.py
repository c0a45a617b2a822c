"""ggml's IQ2_XXS, IQ2_XS and IQ2_S (qtutor/formats/ggml/iq2.py): byte-identical with ggml's own C quantizer
(golden bytes, with the importance matrix these types require), dequantized as gguf-py does, and the claims of
the module's docstring (even sign parity, the least important weight gives up its sign, the imatrix helps)."""
from __future__ import annotations

import numpy as np
import pytest

from qtutor.formats import ggml
from qtutor.formats.ggml import iq2
from qtutor.formats.ggml.layouts import BLOCK

gq = pytest.importorskip("gguf.quants")
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType  # noqa: E402

TYPES = ["IQ2_XXS", "IQ2_XS", "IQ2_S"]
def quantize(name, W, imatrix):
    """Bytes (rows, bytes per row) of ``W`` through the module's own quantizer."""
    return iq2.QUANTIZE[name](W.reshape(-1, 256), imatrix).view(np.uint8).reshape(len(W), -1)


def dequantize(name, data):
    return iq2.DEQUANTIZE[name](np.ascontiguousarray(data).reshape(-1).view(BLOCK[name])).reshape(len(data), -1)


def gguf_dequantize(name, data):
    return gq.dequantize(data, GGMLQuantizationType[name])


def random_layer(seed, rows=8, cols=512):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((rows, cols)).astype(np.float32)
    importance = np.exp(rng.normal(0, 1.5, cols)).astype(np.float32)  # a few columns matter much more
    return W, importance


@pytest.mark.parametrize("name", TYPES)
def test_blocks_have_gguf_s_size_and_dequantize_as_gguf_py_does(name):
    assert BLOCK[name].itemsize == GGML_QUANT_SIZES[GGMLQuantizationType[name]][1]
    W, importance = random_layer(0)
    W[1, :256] = 0  # an all-zero super-block: d = 0
    W[2, :16] = 0  # an all-zero sub-block
    data = quantize(name, W, importance)
    np.testing.assert_array_equal(dequantize(name, data), gguf_dequantize(name, data))
    assert not dequantize(name, data)[1, :256].any()


@pytest.mark.parametrize("name", ["IQ2_XXS", "IQ2_XS"])
def test_seven_stored_signs_give_an_even_count_and_the_least_important_weight_gives_up_its_sign(name):
    W, importance = random_layer(1)
    signs_back = np.signbit(dequantize(name, quantize(name, W, importance))).reshape(-1, 8)
    negative = (W < 0).reshape(-1, 8)
    assert (signs_back.sum(axis=1) % 2 == 0).all()  # every group of 8: an even count of minus signs
    odd = negative.sum(axis=1) % 2 == 1
    changed = signs_back != negative
    np.testing.assert_array_equal(changed.sum(axis=1), odd.astype(int))  # one sign lost where the count was odd
    # ... and it is the weight with the smallest importance-weighted square w x^2, w = imatrix sqrt(sigma^2 + x^2)
    sigma2 = (W.reshape(-1, 256) ** 2).mean(axis=1, keepdims=True)
    w = np.tile(importance, len(W)).reshape(-1, 256) * np.sqrt(sigma2 + W.reshape(-1, 256) ** 2)
    least = np.argmin((w * W.reshape(-1, 256) ** 2).reshape(-1, 8), axis=1)
    np.testing.assert_array_equal(np.argmax(changed[odd], axis=1), least[odd])


def test_iq2_s_stores_all_eight_signs():
    W, importance = random_layer(2)
    back = dequantize("IQ2_S", quantize("IQ2_S", W, importance))
    np.testing.assert_array_equal(np.signbit(back), W < 0)


@pytest.mark.parametrize("name", TYPES)
def test_the_imatrix_lowers_the_error_where_it_says_the_activations_are_large(name):
    W, importance = random_layer(3, rows=16)
    weighted, uniform = quantize(name, W, importance), quantize(name, W, np.ones_like(importance))
    error = {label: float((((dequantize(name, b) - W) ** 2) * importance).sum())
             for label, b in (("weighted", weighted), ("uniform", uniform))}
    assert error["weighted"] < 0.9 * error["uniform"], (name, error)  # measured 0.53 .. 0.66


def test_more_bits_per_weight_give_a_smaller_error():
    W, importance = random_layer(4, rows=16)
    error = [float(((dequantize(name, quantize(name, W, importance)) - W) ** 2).sum() / (W**2).sum())
             for name in TYPES]  # 2.0625, 2.3125, 2.5625 bits per weight
    assert error[0] > error[1] > error[2], error  # measured 0.145, 0.115, 0.077


def test_chunks_and_rows_give_the_same_bytes_as_one_call(monkeypatch):
    W, importance = random_layer(5, rows=6)
    whole = {name: quantize(name, W, importance) for name in TYPES}
    monkeypatch.setattr(iq2, "CHUNK", 5)  # 12 super-blocks in three pieces, cut inside rows
    for name in TYPES:
        np.testing.assert_array_equal(quantize(name, W, importance), whole[name])
        np.testing.assert_array_equal(quantize(name, W[3:4], importance), whole[name][3:4])


@pytest.mark.parametrize("name", TYPES)
def test_without_or_with_a_wrong_importance_matrix_the_error_says_how_to_get_one(name):
    W, importance = random_layer(6, rows=2)
    with pytest.raises(ValueError, match="llama.cpp refuses.*qtutor imatrix --model"):
        iq2.QUANTIZE[name](W.reshape(-1, 256), None)
    with pytest.raises(ValueError, match="one entry per input column"):
        iq2.QUANTIZE[name](W.reshape(-1, 256), importance[:100])


def test_nan_weights_are_refused_before_any_search():
    W, importance = random_layer(7, rows=2)
    W[0, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        iq2.quantize_iq2_xxs(W.reshape(-1, 256), importance)
    if "IQ2_XXS" in ggml.TYPES:  # once registered, ggml.quantize refuses it first, as for every type
        with pytest.raises(ValueError, match="NaN"):
            ggml.quantize(W, "IQ2_XXS", importance)
