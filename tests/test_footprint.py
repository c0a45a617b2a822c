"""Memory arithmetic: bytes = parameters x bits per weight / 8, with scales, zero points and GGUF mixes counted."""
from __future__ import annotations

import pytest

from qtutor.eval.footprint import bits_per_weight, footprint, kv_cache_bytes, llama_tensor_shapes, parameter_count, ram_table
from qtutor.eval.footprint import LLAMA_SHAPES


def test_the_seeds_table_recomputed():
    assert footprint(70e9, "fp16").gb == pytest.approx(140.0)
    assert footprint(7e9, "fp32").gb == pytest.approx(28.0)
    assert footprint(70e9, "int4", group_size=128, sym=True).gb == pytest.approx(70e9 * 4.125 / 8 / 1e9)


def test_bits_per_weight_count_scales_zero_points_and_mixes():
    assert bits_per_weight("int4", 128, True) == 4.125
    assert bits_per_weight("int4", 128, False) == pytest.approx(4 + 20 / 128)
    assert bits_per_weight("nf4") == 4.5 and bits_per_weight("Q8_0") == 8.5
    assert 4.8 < bits_per_weight("Q4_K_M") < 4.9
    with pytest.raises(ValueError, match="unknown format"):
        bits_per_weight("int17")


def test_llama_shapes_give_the_known_parameter_counts():
    assert parameter_count(llama_tensor_shapes(**LLAMA_SHAPES["7B"])) == pytest.approx(6.74e9, rel=0.002)
    assert parameter_count(llama_tensor_shapes(**LLAMA_SHAPES["70B"])) == pytest.approx(68.98e9, rel=0.002)


def test_kv_cache_grows_with_context_and_shrinks_with_bits():
    fp16 = kv_cache_bytes(4096)  # Llama-2-7B: 2 x 32 layers x 32 heads x 128 x 4096 tokens x 2 bytes
    assert fp16 == 2 * 32 * 32 * 128 * 4096 * 2
    assert kv_cache_bytes(8192) == 2 * fp16
    assert kv_cache_bytes(4096, bits=4, group_size=64) == pytest.approx(fp16 * (4 + 16 / 64) / 16)


def test_ram_table_rows():
    rows = {row["model"]: row for row in ram_table({"7B": 7e9})}
    assert rows["7B"]["fp16"] == 14.0 and rows["7B"]["Q8_0"] == pytest.approx(7.44, abs=0.01)
    assert rows["7B"]["Q2_K"] < rows["7B"]["Q4_K_M"] < rows["7B"]["Q6_K"] < rows["7B"]["Q8_0"]
