"""Perplexity: the sliding window scores every token once, and known models give known values."""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import qtutor as qt  # noqa: E402
from qtutor.eval.perplexity import perplexity, window_plan  # noqa: E402


class Uniform(torch.nn.Module):
    """A model that predicts every token with probability 1/vocab: its perplexity is exactly vocab."""

    def __init__(self, vocab=4096, positions=512):
        super().__init__()
        self.config = type("Config", (), {"max_position_embeddings": positions})()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.vocab = vocab

    def forward(self, input_ids):
        return type("Out", (), {"logits": torch.zeros(*input_ids.shape, self.vocab)})()


@pytest.mark.parametrize("n,ctx,stride", [(1000, 256, 128), (1000, 256, 256), (257, 256, 64), (700, 100, 1)])
def test_every_token_but_the_first_is_scored_exactly_once(n, ctx, stride):
    scored = np.zeros(n, dtype=int)
    for start, end, first in window_plan(n, ctx, stride):
        assert end - start <= ctx and start <= first - 1
        scored[first:end] += 1
    assert scored[0] == 0 and np.all(scored[1:] == 1)


def test_a_uniform_model_has_perplexity_equal_to_the_vocabulary():
    tokens = np.random.default_rng(0).integers(0, 4096, 3000)
    assert perplexity(Uniform(), tokens=tokens, ctx=256, stride=100, progress=False) == pytest.approx(4096, rel=1e-9)


def test_the_embedded_model_is_far_better_than_chance_and_stride_matters_as_documented():
    model, tokenizer = qt.load_model("tiny")
    overlapping = perplexity(model, tokenizer, "test", ctx=256, stride=128, max_tokens=4000, progress=False)
    chunks = perplexity(model, tokenizer, "test", ctx=256, stride=256, max_tokens=4000, progress=False)
    assert overlapping < 400 and overlapping < chunks  # more context per token, lower perplexity
    assert math.isfinite(overlapping)


def test_one_window_covering_the_text_equals_plain_next_token_cross_entropy():
    model, _ = qt.load_model("tiny")
    tokens = qt.data.tokens("valid")[:300]
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(tokens[None, :])).logits.double()[0, :-1]
    nll = torch.nn.functional.cross_entropy(logits, torch.from_numpy(tokens[1:])).item()
    assert perplexity(model, tokens=tokens, ctx=300, stride=300, progress=False) == pytest.approx(math.exp(nll),
                                                                                                   rel=1e-9)


def test_short_texts_and_long_windows_are_clear_errors():
    model, tokenizer = qt.load_model("tiny")
    with pytest.raises(ValueError, match="fewer than one window"):
        perplexity(model, tokenizer, text="Too short.", ctx=256, progress=False)
    with pytest.raises(ValueError, match="longer than the model's 512 positions"):
        perplexity(model, tokenizer, ctx=1024, progress=False)
    with pytest.raises(ValueError, match="stride"):
        perplexity(model, tokenizer, ctx=256, stride=300, max_tokens=1000, progress=False)
