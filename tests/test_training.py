"""The training loop and QAT on the tiny model: QAT at INT2 g64 recovers most of what RTN loses in a few dozen
steps (perplexity, paired standard error); bad input and a NaN loss are handled without losing the weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import qtutor as qt
from qtutor.eval.perplexity import score
from qtutor.training import qat
from qtutor.training.loop import train

WINDOW = dict(ctx=256, stride=128, max_tokens=4096, progress=False)


def test_qat_int2_beats_rtn_on_the_tiny_model():
    """Measured (4096 test tokens): float 194.4; RTN INT2 g64 209.4 (+7.7 %); LSQ QAT, 60 steps of 8 x 256 train
    tokens at lr 1e-4, 198.1 (+1.9 %). Here 40 steps; the change must be less than half RTN's, outside the noise.
    Part of the gain is plain further training (the tiny model was trained briefly: the float model itself gains
    3.2 % in 200 such steps, QAT INT2 1.35 %), so this checks the artefact QAT ships, not QAT against GPTQ."""
    torch.manual_seed(0)
    model, tokenizer = qt.load_model("tiny")
    base = score(model, tokenizer, **WINDOW)
    with qt.quantize_model(model, "rtn", "int2", 64, progress=False):
        rtn = score(model, tokenizer, **WINDOW).compare(base)
    qat.prepare(model, "int2", 64, step="lsq")
    history = train(model, qt.data.tokens("train", tokenizer), steps=40, lr=1e-4, progress=False)
    assert history.stopped is None and len(history.losses) == 40 and history.tokens == 40 * 8 * 256
    qat.convert(model)  # the plain linears with the quantized weights: what would be shipped
    trained = score(model, tokenizer, **WINDOW).compare(base)
    assert rtn["delta_pct"] > 5  # INT2 g64 costs the tiny model something
    assert trained["delta_pct"] < rtn["delta_pct"] / 2
    assert rtn["delta_pct"] - trained["delta_pct"] > 2 * np.hypot(rtn["delta_pct_stderr"], trained["delta_pct_stderr"])


class Diverging(torch.nn.Module):
    """A 'model' whose loss is finite for two steps and NaN from the third on."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(3))
        self.calls = 0

    def forward(self, input_ids, labels):
        self.calls += 1
        loss = (self.weight ** 2).sum() * (float("nan") if self.calls > 2 else 1.0)
        return type("Output", (), {"loss": loss})()


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_weights():
    model = Diverging()
    tokens = np.arange(100)
    with pytest.warns(UserWarning, match="step 2: the loss is nan.*smaller lr"):
        history = train(model, tokens, steps=10, lr=0.1, batch=2, seq_len=8, progress=False)
    assert len(history.losses) == 2 and history.stopped.startswith("step 2")
    # the weights under which the last finite loss was computed: after the first update, before the second
    first = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([first], lr=0.1, weight_decay=0.0)
    (first ** 2).sum().backward()
    optimizer.step()
    torch.testing.assert_close(model.weight.detach(), first.detach())


def test_bad_input():
    model = Diverging()
    tokens = np.arange(100)
    for lr in (0, -1e-4, float("nan")):
        with pytest.raises(ValueError, match="learning rate must be > 0"):
            train(model, tokens, lr=lr, progress=False)
    with pytest.raises(ValueError, match="at least one step"):
        train(model, tokens, steps=0, progress=False)
    with pytest.raises(ValueError, match="at least one sequence of seq_len=256"):
        train(model, np.arange(200), progress=False)
    model.weight.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train(model, tokens, seq_len=8, progress=False)
