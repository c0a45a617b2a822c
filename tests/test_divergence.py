"""KL divergence and top-token agreement with the float model: zero and 100 % for the model itself, and worse
the harder the weights are rounded."""
from __future__ import annotations

import pytest

pytest.importorskip("torch")

import qtutor as qt  # noqa: E402
from qtutor.eval.divergence import compare, reference  # noqa: E402


def test_the_float_model_agrees_with_itself_and_rounding_moves_it_away_in_order(tiny):
    model, tokenizer = tiny
    ref = reference(model, max_tokens=1024)
    itself = compare(model, ref)
    assert itself["kl"] == pytest.approx(0, abs=1e-9) and itself["same_top_pct"] == 100
    measured = {}
    for fmt in ("int8", "int4", "int2"):
        with qt.quantize_model(model, "rtn", fmt, -1 if fmt == "int8" else 128, progress=False):
            measured[fmt] = compare(model, ref)
    assert 0 < measured["int8"]["kl"] < measured["int4"]["kl"] < measured["int2"]["kl"]
    assert measured["int8"]["same_top_pct"] > 97 > measured["int2"]["same_top_pct"]
    assert measured["int2"]["same_top_pct"] < measured["int4"]["same_top_pct"]
