"""Speculative decoding: greedy output is the target's greedy output token for token, whatever the draft; the
sampling rule reproduces the target's distribution (chi-square); the speed-up formula; bad input refused."""
from __future__ import annotations

import copy

import numpy as np
import pytest
from scipy import stats

import qtutor as qt
from qtutor.eval import generation, speculative
from qtutor.eval.speculative import accept_or_resample, expected_speedup, expected_tokens_per_round, speculate

NEW_TOKENS = 30


@pytest.fixture(scope="module")
def models():
    """The tiny model in float64 (batched and one-token forwards then agree far below any logit gap) as target,
    and a float64 copy quantized to INT3 per tensor as a poor draft, so that every lookahead sees rejections (INT2
    g64 still agrees on every token at k = 1 on this prompt)."""
    import torch

    model, tokenizer = qt.load_model("tiny", dtype=torch.float64)
    draft = copy.deepcopy(model)
    qt.quantize_model(draft, "rtn", "int3", 0, progress=False)
    return model, draft, tokenizer


@pytest.fixture(scope="module")
def prompt():
    return qt.data.text("test")[:200]


@pytest.mark.parametrize("lookahead", [1, 2, 4, 7])
def test_greedy_speculative_equals_target_greedy(models, prompt, lookahead):
    target, draft, tokenizer = models
    expected = generation.greedy_tokens(target, tokenizer, prompt, NEW_TOKENS)
    result = speculate(target, draft, tokenizer, prompt, NEW_TOKENS, lookahead)
    assert result.tokens == expected
    assert result.text == tokenizer.decode(expected, skip_special_tokens=True)
    # the INT3 draft is wrong often enough that rejections were exercised, right often enough to help
    assert 0.0 < result.acceptance_rate < 1.0
    assert result.accepted == sum(result.accepted_per_round)
    # each round adds its kept proposals plus one token of the target's (a correction or the free one); the last
    # round's free token may run past max_new_tokens and is cut
    assert NEW_TOKENS <= result.accepted + len(result.accepted_per_round) <= NEW_TOKENS + 1
    assert result.tokens_per_target_forward == NEW_TOKENS / result.target_forwards
    assert result.draft_forwards == result.drafted  # one draft forward per proposal
    assert result.target_forwards == len(result.accepted_per_round)
    # judged = kept + one rejection per round that stopped short (the last round may also stop at the length)
    short = sum(kept < lookahead for kept in result.accepted_per_round[:-1])
    assert 0 <= result.checked - result.accepted - short <= 1
    assert result.accepted <= result.checked <= result.drafted


def test_acceptance_rate_is_per_judged_proposal_and_does_not_fall_with_k(models, prompt):
    """α = accepted / judged is a property of the draft: about the same at k = 1 and k = 7. The share of all
    proposals kept falls with k (after a rejection the rest of the round is thrown away unjudged)."""
    target, draft, tokenizer = models
    one, seven = (speculate(target, draft, tokenizer, prompt, 60, k) for k in (1, 7))
    assert one.checked == one.drafted and one.acceptance_rate == one.kept_fraction
    assert seven.kept_fraction < seven.acceptance_rate - 0.15
    assert abs(seven.acceptance_rate - one.acceptance_rate) < 0.15


def test_a_draft_equal_to_the_target_is_always_accepted(models, prompt):
    target, _, tokenizer = models
    result = speculate(target, target, tokenizer, prompt, 20, 4)
    assert result.acceptance_rate == 1.0
    assert result.accepted_per_round == [4, 4, 4, 4]  # 4 kept + 1 free token per round: 20 tokens in 4 rounds
    assert result.tokens_per_target_forward == 5.0
    sampled = speculate(target, target, tokenizer, prompt, 20, 4, greedy=False, seed=3)
    assert sampled.acceptance_rate == 1.0  # p == q: min(1, p/q) = 1


def test_sampling_is_seeded_and_differs_from_greedy(models, prompt):
    target, draft, tokenizer = models
    first = speculate(target, draft, tokenizer, prompt, 20, 3, greedy=False, seed=7)
    again = speculate(target, draft, tokenizer, prompt, 20, 3, greedy=False, seed=7)
    assert first.tokens == again.tokens
    assert first.tokens != generation.greedy_tokens(target, tokenizer, prompt, 20)


@pytest.mark.parametrize("case", range(3))
def test_the_acceptance_rule_reproduces_the_target_distribution(case):
    """Draw x ~ q, keep it or resample: the kept tokens follow p (chi-square, 30,000 draws). Keeping every
    proposal (the rule without its test) would follow q, which this test rejects."""
    rng = np.random.default_rng(case)
    p, q = rng.dirichlet(np.ones(6)), rng.dirichlet(np.ones(6))
    draws = 30_000
    kept = np.zeros(6)
    accepted = 0
    for _ in range(draws):
        x = int(rng.choice(6, p=q))
        ok, token = accept_or_resample(p, q, x, rng)
        kept[token] += 1
        accepted += ok
    assert stats.chisquare(kept, draws * p).pvalue > 1e-4
    assert stats.chisquare(kept, draws * q).pvalue < 1e-6  # the test can tell p from q
    # accepted with probability sum_v min(p, q)(v), within 4 standard errors
    alpha = np.minimum(p, q).sum()
    assert abs(accepted / draws - alpha) < 4 * np.sqrt(alpha * (1 - alpha) / draws)


class Letters:
    """A tokenizer over a 6-token vocabulary for the random models below: every prompt is the ids [0, 1]."""

    eos_token_id = None

    def __call__(self, prompt, return_tensors="pt"):
        import torch

        return {"input_ids": torch.tensor([[0, 1]])}

    def decode(self, ids, skip_special_tokens=True):
        return "".join("abcdef"[i] for i in ids)


def random_llama(seed):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=6, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16)
    model = LlamaForCausalLM(config).to(torch.float64).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)  # sharper distributions, so that p and q differ clearly
    return model


@pytest.mark.parametrize("lookahead", [1, 2])
def test_speculative_sampling_draws_the_targets_joint_distribution(lookahead):
    """End to end: the first two sampled tokens, over 2,000 seeds, follow the target's exact joint distribution
    p(x1) p(x2 | x1) (chi-square), and not the draft's."""
    import torch

    target, draft, letters = random_llama(0), random_llama(1), Letters()

    def joint(model):
        with torch.no_grad():
            first = torch.softmax(model(torch.tensor([[0, 1]])).logits[0, -1], -1).numpy()
            second = np.stack([torch.softmax(model(torch.tensor([[0, 1, x]])).logits[0, -1], -1).numpy()
                               for x in range(6)])
        return (first[:, None] * second).ravel()

    counts = np.zeros(36)
    for seed in range(2000):
        tokens = speculate(target, draft, letters, "ab", 2, lookahead, greedy=False, seed=seed).tokens
        counts[6 * tokens[0] + tokens[1]] += 1
    expected, wrong = 2000 * joint(target), 2000 * joint(draft)
    seen = expected > 5  # chi-square wants expected counts of 5 or more: pool the rest
    observed = np.append(counts[seen], counts[~seen].sum())
    assert stats.chisquare(observed, np.append(expected[seen], expected[~seen].sum())).pvalue > 1e-4
    assert stats.chisquare(observed, np.append(wrong[seen], wrong[~seen].sum()) + 1e-9).pvalue < 1e-6


def test_expected_tokens_and_speedup():
    assert expected_tokens_per_round(0.0, 4) == 1.0
    assert expected_tokens_per_round(1.0, 4) == 5.0
    assert expected_tokens_per_round(0.5, 2) == pytest.approx(1.75)  # 1 + 0.5 + 0.25
    assert expected_speedup(0.8, 4, 0.0) == pytest.approx((1 - 0.8**5) / 0.2)
    assert expected_speedup(0.0, 4, 0.25) == pytest.approx(0.5)  # all rejected, 4 draft forwards of 1/4: 2x cost
    # against a simulation of independent acceptances
    rng = np.random.default_rng(0)
    alpha, k = 0.7, 4
    first_rejection = np.argmin(np.hstack([rng.random((20000, k)) < alpha, np.zeros((20000, 1), bool)]), axis=1)
    assert np.mean(first_rejection + 1) == pytest.approx(expected_tokens_per_round(alpha, k), rel=0.02)


def test_bad_input(models, prompt):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    target, draft, tokenizer = models
    other = LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2)).to(torch.float64)
    with pytest.raises(ValueError, match="vocabulary of 100 tokens.*same family"):
        speculate(target, other, tokenizer, prompt, 5, 2)
    class Shuffled:  # a tokenizer of the same size that gives two tokens each other's ids
        def get_vocab(self):
            vocab = dict(tokenizer.get_vocab())
            a, b = list(vocab)[:2]
            vocab[a], vocab[b] = vocab[b], vocab[a]
            return vocab

    with pytest.raises(ValueError, match="other ids than the target's"):
        speculate(target, draft, tokenizer, prompt, 5, 2, draft_tokenizer=Shuffled())
    assert speculate(target, draft, tokenizer, prompt, 3, 2, draft_tokenizer=tokenizer).tokens  # the same one: fine
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="at least one token per round"):
            speculate(target, draft, tokenizer, prompt, 5, bad)
    with pytest.raises(ValueError, match="temperature"):
        speculate(target, draft, tokenizer, prompt, 5, 2, greedy=False, temperature=0)
    context = target.config.max_position_embeddings
    with pytest.raises(ValueError, match="shorten the prompt"):
        speculate(target, draft, tokenizer, qt.data.text("test")[:context * 8], 5, 2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        speculate(target, draft, tokenizer, prompt, 0, 2)
    assert speculative.SpeculativeResult([], "", 3).acceptance_rate == 0.0
