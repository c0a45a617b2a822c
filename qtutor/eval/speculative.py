"""Speculative decoding: a small, fast *draft* model guesses k tokens, the big *target* model checks them at once.

    result = speculate(target, draft, tok, "The capital of France is", max_new_tokens=40, lookahead=4)
    result.text, result.acceptance_rate, result.tokens_per_target_forward

Decoding one token reads every weight of the model once (notebook 14: it is memory-bound), and reading the
weights for 5 positions costs about what reading them for 1 does. Speculative decoding (Leviathan, Kalman and
Matias 2023; Chen et al. 2023) turns that into speed. Each *round*:

1. the draft model proposes ``k`` tokens x_1 … x_k one after another, cheaply, noting its distribution
   q_i(·) at each step;
2. the target runs **once** over the k proposals, which gives its distributions p_1 … p_{k+1} at every
   position (p_i follows the committed text and x_1 … x_{i-1});
3. the proposals are checked left to right. Greedy: x_i is accepted while x_i = argmax p_i. Sampling: x_i is
   accepted with probability min(1, p_i(x_i) / q_i(x_i)); at the first rejection a replacement is drawn from
   the *residual*

       r(v) = max(0, p_i(v) - q_i(v)) / Σ_u max(0, p_i(u) - q_i(u)),

   and the round ends. If all k are accepted, one more token comes free from p_{k+1}.

Every round therefore adds between 1 and k+1 tokens for one target forward. The acceptance rule is what makes
this exact, not an approximation: the token kept at position i is distributed exactly as p_i. (Accepted with
probability Σ_v min(p, q)(v); rejected mass Σ_v max(0, p - q)(v) is resampled from r; the two add to p.) Greedy
speculative decoding gives the target's greedy text token for token, and sampling gives the target's
distribution: a draft changes the speed, never the text (tests/test_speculative.py checks both).

If each proposal is accepted with probability α, independently, a round yields on average

    E[tokens per round] = (1 - α^(k+1)) / (1 - α),

and with a draft forward costing c target forwards, the speed-up over plain decoding is

    S = (1 - α^(k+1)) / ((1 - α) (k c + 1)).

A quantized copy of the target is the natural draft: it shares the vocabulary, agrees with the target on most
tokens, and is cheaper *if* a kernel reads its packed weights (notebook 14 measures both halves: α as the draft
is quantized harder, and c on this machine). This module counts; it does not time: speed is the notebook's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qtutor.eval.generation import prompt_ids


@dataclass
class SpeculativeResult:
    """What one speculative decoding run produced and how much checking it took.

    ``tokens``: the generated ids. ``drafted``: proposals made; ``checked``: proposals the target judged (a round
    stops at its first rejection, so the proposals after it are never judged); ``accepted``: proposals kept.
    ``target_forwards``: calls of the target model (the prompt's prefill included). ``accepted_per_round``: how
    many of the k proposals each round kept (0 … k)."""

    tokens: list[int]
    text: str
    lookahead: int
    drafted: int = 0
    checked: int = 0
    accepted: int = 0
    target_forwards: int = 0
    draft_forwards: int = 0
    accepted_per_round: list[int] = field(default_factory=list)

    @property
    def acceptance_rate(self) -> float:
        """α, the probability that the target keeps a proposal it judges: accepted / checked (the α of the
        module's formula). Not accepted / drafted: that also counts the proposals after a rejection, which are
        thrown away unjudged, and falls with k for the same draft."""
        return self.accepted / self.checked if self.checked else 0.0

    @property
    def kept_fraction(self) -> float:
        """accepted / drafted: the share of the draft's work that ended in the text."""
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_target_forward(self) -> float:
        """Generated tokens per call of the target: 1 for plain decoding, up to k + 1 here."""
        return len(self.tokens) / self.target_forwards if self.target_forwards else 0.0


def expected_tokens_per_round(alpha: float, lookahead: int) -> float:
    """(1 - α^(k+1)) / (1 - α): mean tokens a round yields when each proposal is kept with probability α."""
    if alpha >= 1.0:
        return float(lookahead + 1)
    return (1.0 - alpha ** (lookahead + 1)) / (1.0 - alpha)


def expected_speedup(alpha: float, lookahead: int, cost_ratio: float) -> float:
    """S = (1 - α^(k+1)) / ((1 - α)(k c + 1)): speed-up over plain decoding with a draft costing c targets."""
    return expected_tokens_per_round(alpha, lookahead) / (lookahead * cost_ratio + 1.0)


def check_models(target: Any, draft: Any, tokenizer: Any = None, draft_tokenizer: Any = None) -> None:
    """Refuse a draft that cannot speak for the target: the same vocabulary is needed, id for id. The output
    sizes must agree; given the draft's own tokenizer, its token-to-id table must be the target's too (two
    tokenizers of the same size can still mean different things by the same id)."""
    advice = ("speculative decoding compares their probabilities token id by token id, so the draft must use the "
              "target's tokenizer. Use a smaller or quantized model of the same family (for example the target "
              "quantized: qt.quantize_model on a copy)")
    target_vocab = target.get_output_embeddings().weight.shape[0]
    draft_vocab = draft.get_output_embeddings().weight.shape[0]
    if target_vocab != draft_vocab:
        raise ValueError(f"the draft model has a vocabulary of {draft_vocab:,} tokens and the target of "
                         f"{target_vocab:,}: {advice}")
    if draft_tokenizer is not None and tokenizer is not None and draft_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise ValueError(f"the draft's tokenizer maps tokens to other ids than the target's, although both have "
                         f"{target_vocab:,}: {advice}")


def accept_or_resample(p: np.ndarray, q: np.ndarray, proposed: int, rng: np.random.Generator) -> tuple[bool, int]:
    """The acceptance rule for one proposal: ``(True, proposed)`` kept, or ``(False, replacement)``.

    ``p``, ``q``: the target's and the draft's probabilities over the vocabulary at this position; the draft drew
    ``proposed`` from ``q``. Kept with probability min(1, p(x)/q(x)); else the replacement is drawn from
    max(0, p - q), normalized. Either way the token returned is distributed as ``p``."""
    if rng.random() * q[proposed] < p[proposed]:  # u < p/q without dividing (q(x) > 0: the draft drew x)
        return True, int(proposed)
    residual = np.maximum(p - q, 0.0)
    total = residual.sum()
    if total <= 0.0:  # p == q to rounding: nothing to correct; a draw from p is the same law
        residual, total = p, p.sum()
    return False, int(rng.choice(len(p), p=residual / total))


def probabilities(logits: Any, temperature: float) -> np.ndarray:
    """softmax(logits / T) in float64 (rows: positions), as NumPy."""
    z = logits.detach().double().cpu().numpy() / temperature
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def pick(p: np.ndarray, greedy: bool, rng: np.random.Generator) -> int:
    """argmax p (greedy) or a draw from p."""
    return int(np.argmax(p)) if greedy else int(rng.choice(len(p), p=p))


class Decoder:
    """One model with its KV cache over a prefix of the committed tokens: ``next_logits`` feeds what the cache
    lacks and returns the logits of every fed position; ``keep`` crops the cache after a rejection."""

    def __init__(self, model: Any):
        import inspect

        from transformers import DynamicCache

        self.model = model
        self.cache = DynamicCache()
        # transformers 5 names the argument ``cache``; earlier versions ``past_key_values``
        self.cache_argument = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self.cached = 0  # how many leading tokens the cache holds
        self.forwards = 0

    def next_logits(self, tokens: list[int]) -> Any:
        import torch

        device = next(self.model.parameters()).device
        new = torch.tensor([tokens[self.cached:]], device=device)
        out = self.model(input_ids=new, use_cache=True, **{self.cache_argument: self.cache})
        self.cached = len(tokens)
        self.forwards += 1
        return out.logits[0]

    def keep(self, n: int) -> None:
        """Forget cached positions beyond the first ``n`` (proposals the target rejected)."""
        if self.cached > n:
            self.cache.crop(n - self.cached)  # a negative length: drop that many from the end (every version)
            self.cached = n


def speculate(target: Any, draft: Any, tokenizer: Any, prompt: str, max_new_tokens: int = 40, lookahead: int = 4,
              greedy: bool = True, temperature: float = 1.0, seed: int = 0,
              draft_tokenizer: Any = None) -> SpeculativeResult:
    """Continue ``prompt`` with ``target``'s own decoding, ``draft`` proposing ``lookahead`` tokens per round.

    ``greedy=True``: the result is the target's greedy continuation exactly (the same ids as
    ``generation.greedy_tokens(target, ...)``, up to float rounding between batched and one-token forwards).
    ``greedy=False``: samples from softmax(logits / ``temperature``) of the target, with ``seed``. Stops at
    ``max_new_tokens`` or at the end-of-text token. ``draft_tokenizer``: the draft's own, if it has one, checked
    to be the target's."""
    import torch

    if isinstance(lookahead, bool) or not isinstance(lookahead, int) or lookahead < 1:
        raise ValueError(f"lookahead={lookahead!r}: the draft must propose at least one token per round (an "
                         f"integer k >= 1; 3 to 5 is usual)")
    if not greedy and not temperature > 0:
        raise ValueError(f"temperature={temperature!r}: sampling needs a temperature > 0 (greedy=True for T -> 0)")
    check_models(target, draft, tokenizer, draft_tokenizer)
    ids = prompt_ids(target, tokenizer, prompt, max_new_tokens)  # the last round proposes only what is left
    rng = np.random.default_rng(seed)
    eos = tokenizer.eos_token_id
    tokens = ids[0].tolist()
    start = len(tokens)
    judge, guesser = Decoder(target), Decoder(draft)
    result = SpeculativeResult(tokens=[], text="", lookahead=lookahead)
    target.eval()
    draft.eval()
    with torch.no_grad():
        while len(tokens) - start < max_new_tokens and not (tokens[-1] == eos and len(tokens) > start):
            k = min(lookahead, max_new_tokens - (len(tokens) - start))
            proposals, q = [], []
            for _ in range(k):  # 1. the draft guesses k tokens, one forward each
                q_i = probabilities(guesser.next_logits(tokens + proposals)[-1], temperature)
                proposals.append(pick(q_i, greedy, rng))
                q.append(q_i)
            # 2. one target forward over the proposals: p_1 ... p_{k+1}
            p = probabilities(judge.next_logits(tokens + proposals)[-(k + 1):], temperature)
            # 3. check left to right: each kept proposal, then the target's own token at the first rejection,
            #    or a free token from p_{k+1} when all k are kept
            new, kept = [], 0
            for i, x in enumerate(proposals):
                if greedy:
                    token = int(np.argmax(p[i]))
                    ok = token == x
                else:
                    ok, token = accept_or_resample(p[i], q[i], x, rng)
                new.append(token)
                kept += ok
                result.checked += 1
                if not ok or token == eos:
                    break
            else:
                new.append(pick(p[k], greedy, rng))
            result.drafted += k
            result.accepted += kept
            result.accepted_per_round.append(kept)
            committed = len(tokens) + kept
            tokens.extend(new)
            judge.keep(committed)
            guesser.keep(committed)
    generated = tokens[start:start + max_new_tokens]
    if eos in generated:
        generated = generated[:generated.index(eos) + 1]
    result.tokens = generated
    result.text = tokenizer.decode(generated, skip_special_tokens=True)
    result.target_forwards = judge.forwards
    result.draft_forwards = guesser.forwards
    return result
