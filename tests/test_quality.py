"""What RTN does to the embedded model: the orderings the seeds' quality table promises (issue 3).

Measured on the first 16k test tokens; the figures themselves are in the model card, not here."""
from __future__ import annotations

import pytest

import qtutor as qt
from qtutor.eval.sweep import sweep

CONFIGS = [
    ("FP32", None, "fp32", None, None),
    ("INT8 per-channel", "rtn", "int8", -1, True),
    ("INT4 g128", "rtn", "int4", 128, False),
    ("INT4 per-tensor", "rtn", "int4", 0, False),
    ("INT3 g128", "rtn", "int3", 128, False),
    ("INT2 g128", "rtn", "int2", 128, False),
]


@pytest.fixture(scope="module")
def table():
    model, tokenizer = qt.load_model("tiny")
    rows = sweep(model, tokenizer, CONFIGS, max_tokens=16384, progress=False)
    return {row["label"]: row for row in rows}


def test_int8_is_within_one_percent_of_fp32(table):
    assert abs(table["INT8 per-channel"]["delta_pct"]) < 1.0


def test_groups_beat_one_scale_per_tensor_and_fewer_bits_cost_more(table):
    ppl = {label: row["ppl"] for label, row in table.items()}
    assert ppl["INT4 g128"] < ppl["INT4 per-tensor"]
    assert ppl["FP32"] < ppl["INT4 g128"] < ppl["INT3 g128"] < ppl["INT2 g128"]
    loss = {label: ppl[label] / ppl["FP32"] - 1 for label in ppl}
    assert loss["INT2 g128"] > 3 * loss["INT3 g128"]  # "far worse": the loss grows much faster than the bits drop


def test_sizes_are_honest(table):
    assert table["FP32"]["bits_per_weight"] == 32.0
    assert 4.0 < table["INT4 g128"]["bits_per_weight"] < 4.2  # 4 bits + (16-bit scale + 4-bit zero) / 128
    assert 3.0 < table["INT3 g128"]["bits_per_weight"] < 3.2
    assert table["INT4 g128"]["bytes"] < table["INT8 per-channel"]["bytes"] / 1.9
