"""GPTQ on the embedded model: every layer's output error at most RTN's, and the perplexity orderings of the
GPTQ issue (GPTQ beats RTN at INT3 g128 and at INT4 per channel)."""
from __future__ import annotations

import pytest

import qtutor as qt
from qtutor import formats
from qtutor.eval.sweep import evaluate
from qtutor.methods import gptq
from qtutor.model import capture_inputs, get_weight, linear_layers
from qtutor.eval.layer_error import gptq_vs_rtn


@pytest.fixture(scope="module")
def calib():
    return qt.data.calibration(n_samples=16, seq_len=256)


def test_every_layer_of_the_tiny_model_has_no_larger_output_error_than_rtn(tiny, calib):
    model, _ = tiny
    layers = [layer for layer in linear_layers(model) if layer.role != "lm_head"]
    inputs = capture_inputs(model, calib[:8], [layer.name for layer in layers])
    fmt = formats.get("int3")
    for layer in layers:
        losses = gptq_vs_rtn(get_weight(layer), inputs[layer.name], fmt, 128, sym=False)
        assert losses["gptq"] <= losses["rtn"], (layer.name, losses)


@pytest.mark.parametrize("fmt,group_size", [("int3", 128), ("int4", -1)])
def test_gptq_beats_rtn_in_perplexity(tiny, calib, fmt, group_size):
    model, tokenizer = tiny
    rtn = evaluate(model, tokenizer, "rtn", fmt, group_size, max_tokens=4096)
    ours = evaluate(model, tokenizer, "gptq", fmt, group_size, calib=calib, max_tokens=4096)
    assert ours["ppl"] < rtn["ppl"], (ours, rtn)
    assert ours["bits_per_weight"] == rtn["bits_per_weight"]  # the same storage: only the codes differ
