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


def test_a_score_keeps_every_token_and_its_standard_error_is_llama_cpps():
    from qtutor.eval.perplexity import score

    ids = np.random.default_rng(0).integers(0, 4096, 1000)
    result = score(Uniform(), tokens=ids, ctx=256, stride=128, progress=False)
    assert result.n_tokens == 999 and result.ppl == pytest.approx(4096, rel=1e-12)
    assert result.ppl_stderr == pytest.approx(0, abs=1e-9)  # every token equally surprising
    assert result.describe() == "999 tokens of the given text (ctx 256, stride 128)"
    bits, stderr = result.bits_per_byte(999 * 4)  # 12 bits a token spread over 4 bytes a token: 3 bits a byte
    assert bits == pytest.approx(3.0, rel=1e-12) and stderr == pytest.approx(0, abs=1e-9)
    with pytest.raises(ValueError, match="n_bytes=0"):
        result.bits_per_byte(0)


def test_a_paired_comparison_is_far_tighter_than_either_perplexitys_own_error(tiny):
    from qtutor.eval.perplexity import score

    model, tokenizer = tiny
    fp = score(model, tokenizer, max_tokens=2048, progress=False)
    assert fp.describe() == "2047 tokens of the test split (ctx 256, stride 128)"
    assert fp.ppl == pytest.approx(perplexity(model, tokenizer, max_tokens=2048, progress=False), rel=1e-12)
    with qt.quantize_model(model, "rtn", "int2", 128, progress=False):
        int2 = score(model, tokenizer, max_tokens=2048, progress=False)
    with qt.quantize_model(model, "rtn", "int8", -1, progress=False):
        int8 = score(model, tokenizer, max_tokens=2048, progress=False)
    broken, fine, same = int2.compare(fp), int8.compare(fp), fp.compare(fp)
    assert broken["significant"] and broken["delta_pct"] > 2  # INT2 hurts, far outside the noise
    assert not fine["significant"] and abs(fine["delta_pct"]) < 0.5  # INT8 costs nothing measurable
    assert same == {"delta_pct": 0.0, "delta_pct_stderr": 0.0, "significant": False}
    assert broken["delta_pct_stderr"] < 0.25 * 100 * fp.ppl_stderr / fp.ppl  # paired beats unpaired
    with pytest.raises(ValueError, match="same tokens"):
        int2.compare(score(model, tokenizer, max_tokens=1024, progress=False))
