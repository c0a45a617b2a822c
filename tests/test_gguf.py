"""ggml block types against gguf-py (quantize and dequantize) and ggml's own K-quant bytes; the mixes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import qtutor as qt
from qtutor.eval.footprint import LLAMA_SHAPES, llama_tensor_shapes
from qtutor.formats import ggml
from qtutor.formats.ggml.layouts import BLOCK
from qtutor.methods import gguf
from qtutor.methods.gguf import mixes

gq = pytest.importorskip("gguf.quants")
from gguf import GGMLQuantizationType  # noqa: E402

LEGACY = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "MXFP4"]
KQUANTS = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
SUBSET = Path(__file__).parent / "data" / "ggml_kquants_subset.npz"
FULL = Path(__file__).resolve().parents[2] / "shared" / "golden" / "ggml_kquants.npz"


def families(rows=16, cols=512):
    rng = np.random.default_rng(0)
    zeros = rng.standard_normal((rows, cols)).astype(np.float32)
    zeros[::2] = 0
    zeros[1, :32] = 0
    return {
        "randn": rng.standard_normal((rows, cols)).astype(np.float32),
        "student_t2": rng.standard_t(2, (rows, cols)).astype(np.float32),
        "integers": rng.integers(-8, 8, (rows, cols)).astype(np.float32),
        "half_integers": (rng.integers(-16, 16, (rows, cols)) / 2).astype(np.float32),
        "tiny": (1e-6 * rng.standard_normal((rows, cols))).astype(np.float32),
        "zeros": zeros,
    }


@pytest.mark.parametrize("name", LEGACY)
@pytest.mark.parametrize("family", list(families()))
def test_legacy_quantize_is_byte_identical_to_gguf_py(name, family):
    x = families()[family]
    ours = gguf.quantize(x, name)
    np.testing.assert_array_equal(ours, gq.quantize(x, GGMLQuantizationType[name]))
    np.testing.assert_array_equal(gguf.dequantize(ours, name), gq.dequantize(ours, GGMLQuantizationType[name]))


def golden_cases():
    path = FULL if FULL.is_file() else SUBSET
    data = np.load(path)
    return [(case, key[2:], path) for key in data.files if key.startswith("x/")
            for case in (*KQUANTS, *(f"{name}+imatrix" for name in KQUANTS)) if f"{case}/{key[2:]}" in data.files]


@pytest.mark.parametrize("case,family,path", golden_cases())
def test_kquants_are_byte_identical_to_ggml_with_and_without_the_importance_matrix(case, family, path):
    data = np.load(path)
    name, imatrix = case.split("+")[0], data["imatrix"] if case.endswith("+imatrix") else None
    x, expected = data[f"x/{family}"], data[f"{case}/{family}"]
    np.testing.assert_array_equal(gguf.quantize(x, name, imatrix), expected)


@pytest.mark.parametrize("name", KQUANTS + LEGACY)
def test_dequantize_equals_gguf_py_on_our_blocks_and_on_random_bytes(name):
    x = families()["student_t2"]
    ours = gguf.quantize(x, name)
    np.testing.assert_array_equal(gguf.dequantize(ours, name), gq.dequantize(ours, GGMLQuantizationType[name]))
    block, size, _ = gguf.block_info(name)
    noise = np.random.default_rng(1).integers(0, 256, (4, size * (512 // block)), dtype=np.uint8)
    for field in ("d", "dmin", "m"):  # random fp16 scales can be NaN/Inf; keep them finite
        structured = noise.reshape(-1).view(BLOCK[name])
        if field in structured.dtype.names:
            structured[field] = np.float16(0.5)
    if name == "MXFP4":  # a random E8M0 byte is a scale up to 2^128: the product overflows float32 in both codes
        structured = noise.reshape(-1).view(BLOCK[name])
        structured["e"] = 127 + structured["e"] % 64 - 32  # scales 2^-32 .. 2^31, finite products
    np.testing.assert_array_equal(gguf.dequantize(noise, name), gq.dequantize(noise, GGMLQuantizationType[name]))


def test_kquants_beat_legacy_types_of_the_same_size():
    """Why K-quants won: Q4_K (4.5 bits) against Q4_0 (4.5 bits), on weights with per-row scale spread."""
    rng = np.random.default_rng(2)
    W = (rng.standard_normal((64, 1024)) * np.exp(rng.normal(0, 0.5, (64, 1)))).astype(np.float32)
    mse = {name: float(np.mean((gguf.dequantize(gguf.quantize(W, name), name) - W) ** 2))
           for name in ("Q4_0", "Q4_K", "Q3_K", "Q5_K", "Q6_K")}
    assert mse["Q4_K"] < mse["Q4_0"]
    assert mse["Q6_K"] < mse["Q5_K"] < mse["Q4_K"] < mse["Q3_K"]


def test_importance_matrix_protects_the_columns_that_matter():
    rng = np.random.default_rng(3)
    W = rng.standard_normal((32, 512)).astype(np.float32)
    importance = np.where(np.arange(512) % 16 == 0, 100.0, 1.0).astype(np.float32)
    for name in ("Q4_K", "Q3_K"):
        def weighted_error(data):
            return float((((gguf.dequantize(data, name) - W) ** 2) * importance).sum())
        assert weighted_error(gguf.quantize(W, name, imatrix=importance)) < weighted_error(gguf.quantize(W, name))


@pytest.mark.parametrize("size", ["7B", "13B", "70B"])
def test_mix_bits_per_weight_match_llama_cpp_published_figures(size):
    shapes = llama_tensor_shapes(**LLAMA_SHAPES[size])
    for mix, published in mixes.PUBLISHED_BPW[size].items():
        if mix == "Q2_K":
            continue  # published under older rules (see mixes.PUBLISHED_BPW)
        assert mixes.mix_bits_per_weight(mix, shapes) == pytest.approx(published, abs=0.05), mix


def test_q4_k_m_gives_more_bits_where_llama_cpp_does():
    types = mixes.assign_types("Q4_K_M", llama_tensor_shapes(**LLAMA_SHAPES["7B"]))
    more = {i for i in range(32) if types[f"blk.{i}.attn_v.weight"] == "Q6_K"}
    assert more == {0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31}
    assert types["output.weight"] == "Q6_K" and types["blk.5.attn_q.weight"] == "Q4_K"
    assert types["blk.0.attn_norm.weight"] == "F32"
    small = mixes.assign_types("Q4_K_M", {"blk.0.attn_q.weight": (64, 96), "output.weight": (100, 96)})
    assert small == {"blk.0.attn_q.weight": "Q5_0", "output.weight": "Q8_0"}  # llama.cpp's fallbacks
    low = mixes.assign_types("Q2_K", {"blk.0.attn_q.weight": (64, 96), "blk.0.ffn_down.weight": (64, 40)})
    assert low == {"blk.0.attn_q.weight": "Q4_0", "blk.0.ffn_down.weight": "F16"}  # 40 is not a multiple of 32


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="not a multiple of its block of 256"):
        gguf.quantize(np.ones((2, 300), np.float32), "Q4_K")
    with pytest.raises(ValueError, match="unknown ggml type 'Q4_K_M'"):
        gguf.quantize(np.ones((2, 256), np.float32), "Q4_K_M")
    with pytest.raises(ValueError, match="truncated"):
        gguf.dequantize(np.zeros(143, np.uint8), "Q4_K")
    with pytest.raises(ValueError, match="NaN/Inf"):
        gguf.quantize(np.full((1, 32), np.nan, np.float32), "Q8_0")
    with pytest.raises(ValueError, match="unknown mix"):
        mixes.assign_types("Q4_K_X", {})


def test_every_ggml_block_type_is_a_format_whose_tensor_holds_the_bytes_llama_cpp_stores():
    W = np.random.default_rng(11).standard_normal((4, 512)).astype(np.float32)
    assert qt.formats.block_types() == [ggml.format_name(t).lower() for t in gguf.TYPES]
    assert not set(qt.formats.block_types()) & set(qt.formats.names())
    for name in qt.formats.block_types():
        fmt = qt.formats.get(name.upper())
        importance = np.ones(512, np.float32) if fmt.key in ggml.REQUIRES_IMATRIX else None  # ggml's rule
        q = fmt.encode(W, imatrix=importance)
        assert np.array_equal(q.codes, gguf.quantize(W, fmt.key, importance)) and q.format is fmt
        np.testing.assert_array_equal(q.dequantize(), gguf.dequantize(q.codes, fmt.key))
        assert q.bits_per_weight == fmt.bits_per_weight() == gguf.block_info(fmt.key)[2]
    # RTN through the common entry point gives the same blocks
    assert np.array_equal(qt.quantize_tensor(W, "Q4_K").codes, gguf.quantize(W, "Q4_K"))


def test_a_block_type_refuses_what_its_blocks_fix_and_says_which_format_to_use_instead():
    W = np.random.default_rng(12).standard_normal((4, 512)).astype(np.float32)
    with pytest.raises(ValueError, match="fixed blocks of 256"):
        qt.quantize_tensor(W, "Q4_K", group_size=128)
    with pytest.raises(ValueError, match="leave sym out"):
        qt.formats.get("Q4_1").encode(W, sym=False)
    with pytest.raises(TypeError, match="element format such as int4"):
        qt.quantize_tensor(W, "Q4_K", method="gptq", calib=np.ones((600, 512), np.float32))


def test_legacy_types_take_the_importance_matrix_as_llama_cpp_does():
    # checked once against llama.cpp's own ggml_quantize_chunk (node-llama-cpp 3.22.1): 62 of 62 fresh cases
    # byte-identical (Q4_0 ... Q5_1 with and without the matrix, Q8_0, TQ1_0, TQ2_0; rows 256, 576, 1536)
    rng = np.random.default_rng(7)
    W = (rng.standard_t(3, (16, 576)) * 0.02).astype(np.float32)
    importance = np.exp(rng.normal(0, 1.5, 576)).astype(np.float32)
    for name in ("Q4_0", "Q4_1", "Q5_0", "Q5_1"):
        plain, weighted = gguf.quantize(W, name), gguf.quantize(W, name, importance)
        error = {label: float((((gguf.dequantize(b, name) - W) ** 2) * importance).sum())
                 for label, b in (("plain", plain), ("weighted", weighted))}
        assert error["weighted"] < 0.95 * error["plain"], (name, error)
    for name in ("Q8_0", "MXFP4"):
        with pytest.raises(ValueError, match="does not use an importance matrix"):
            gguf.quantize(W, name, importance)
