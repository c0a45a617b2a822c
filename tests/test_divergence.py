"""KL divergence and top-token agreement with the float model: zero and 100 % for the model itself, and worse
the harder the weights are rounded."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

import qtutor as qt  # noqa: E402
from qtutor.eval.divergence import compare, reference  # noqa: E402


def test_the_float_model_agrees_with_itself_and_rounding_moves_it_away_in_order(tiny):
    model, tokenizer = tiny
    ref = reference(model, max_tokens=1024)
    itself = compare(model, ref)
    assert itself["kl"] == pytest.approx(0, abs=1e-9) and itself["same_top_pct"] == 100
    assert itself["overlap_pct"] == pytest.approx(100, abs=1e-6)
    measured = {}
    for fmt in ("int8", "int4", "int2"):
        with qt.quantize_model(model, "rtn", fmt, -1 if fmt == "int8" else 128, progress=False):
            measured[fmt] = compare(model, ref)
    assert 0 < measured["int8"]["kl"] < measured["int4"]["kl"] < measured["int2"]["kl"]
    assert measured["int8"]["same_top_pct"] > 97 > measured["int2"]["same_top_pct"]
    assert measured["int2"]["same_top_pct"] < measured["int4"]["same_top_pct"]
    # the overlap Σ min(P, Q) (speculative sampling's acceptance) falls as the rounding gets coarser
    assert 100 > measured["int8"]["overlap_pct"] > measured["int4"]["overlap_pct"] > measured["int2"]["overlap_pct"]


def test_overlap_is_one_minus_the_total_variation_distance():
    import torch

    from qtutor.eval.divergence import Reference

    P = torch.log_softmax(torch.randn(2, 5, 7, dtype=torch.float64), dim=-1).float()
    Q = torch.log_softmax(torch.randn(2, 5, 7, dtype=torch.float64), dim=-1).float()

    class Fixed(torch.nn.Module):  # a "model" whose logits are Q whatever the input
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))  # where the model lives: the CPU

        def forward(self, input_ids, **_):
            return type("Out", (), {"logits": Q[: input_ids.shape[0]]})()

    ref = Reference(tokens=np.zeros((2, 5), dtype=np.int64), log_probs=P)
    got = compare(Fixed(), ref)
    total_variation = 0.5 * (P.double().exp() - Q.double().exp()).abs().sum(-1).mean()
    assert got["overlap_pct"] == pytest.approx(100 * (1 - float(total_variation)), rel=1e-6)
