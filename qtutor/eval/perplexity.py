"""Perplexity with a sliding window: how surprised the model is by text it has not seen.

    ppl = exp( - (1/N) * sum_i log p(t_i | t_<i) )

A model can only look back ``ctx`` tokens, so a long text is scored window by window (as in the transformers
perplexity guide and llama.cpp's perplexity tool). Windows of ``ctx`` tokens start every ``stride`` tokens;
each window scores only the tokens that no earlier window scored, so every token is scored exactly once, with
at least ``ctx - stride`` tokens of context (except near the start of the text). The very first token of the
text is never scored: nothing precedes it. ``stride == ctx`` gives (almost) non-overlapping chunks — faster,
less context per token, higher perplexity; consecutive windows still share one token, since a window cannot
score its own first token. A smaller stride gives each token more context.

The negative log-likelihoods are summed in float64; the result is deterministic for a given model and text.

How sure is a perplexity? :func:`score` keeps every token's negative log-likelihood (NLL), and with it the
standard error that llama.cpp's perplexity tool prints, ``ppl +/- ppl * sd(NLL) / sqrt(N)`` (the error of the
mean NLL carried through exp; it treats tokens as independent, which neighbouring tokens are not quite, so read
it as a lower bound). Two models scored on the same tokens are compared *paired*, token by token:

    change = exp(mean(NLL_b - NLL_a)) - 1,     its standard error  (1 + change) * sd(NLL_b - NLL_a) / sqrt(N),

far smaller than either perplexity's own error, because most of a token's difficulty is shared by both models.
A change within about two standard errors of zero is noise (:meth:`Score.compare`).
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Score:
    """The outcome of scoring a text: every token's NLL (nats, float64, in text order) and the slice it came
    from. ``ppl`` is the perplexity, ``ppl_stderr`` its standard error."""

    nll: np.ndarray
    split: str | None
    ctx: int
    stride: int

    @property
    def n_tokens(self) -> int:
        return int(self.nll.size)

    @property
    def ppl(self) -> float:
        return math.exp(float(self.nll.mean()))

    @property
    def ppl_stderr(self) -> float:
        return self.ppl * _stderr(self.nll)

    def bits_per_byte(self, n_bytes: int) -> tuple[float, float]:
        """(bits per byte of text, its standard error): the NLL summed over the scored tokens, in bits, over the
        ``n_bytes`` UTF-8 bytes they spell. Unlike perplexity, which is per *token*, this compares models with
        different tokenizers on the same text (a model whose tokens are longer has a higher perplexity per
        token for the same prediction of the text)."""
        if n_bytes <= 0:
            raise ValueError(f"n_bytes={n_bytes}: the scored text's length in UTF-8 bytes, > 0")
        tokens_per_bit_byte = self.n_tokens / (math.log(2) * n_bytes)  # mean NLL (nats) -> bits per byte
        return float(self.nll.mean()) * tokens_per_bit_byte, _stderr(self.nll) * tokens_per_bit_byte

    def describe(self) -> str:
        """Which tokens were scored, e.g. ``4095 tokens of the test split (ctx 256, stride 128)``."""
        where = f"the {self.split} split" if self.split else "the given text"
        return f"{self.n_tokens} tokens of {where} (ctx {self.ctx}, stride {self.stride})"

    def compare(self, baseline: "Score") -> dict:
        """This score's perplexity against ``baseline``'s on the same tokens: the change in percent, its paired
        standard error, and whether the change lies outside two standard errors (``significant``)."""
        if baseline.nll.shape != self.nll.shape:
            raise ValueError(f"scores of {self.n_tokens} and {baseline.n_tokens} tokens: compare scores of the same "
                             "tokens (same text, max_tokens, ctx and stride)")
        difference = self.nll - baseline.nll
        ratio = math.exp(float(difference.mean()))
        stderr = 100 * ratio * _stderr(difference)
        change = 100 * (ratio - 1)
        return {"delta_pct": change, "delta_pct_stderr": stderr, "significant": abs(change) > 2 * stderr}


def _stderr(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else float("nan")


LOGITS_BUDGET = 2**25  # numbers of log-probabilities per batch (256 MB in float64): SmolLM2's 49,152 words at
# ctx 512 fit a batch of one window, the tiny model's 4096 at ctx 256 one of 32


def window_plan(n_tokens: int, ctx: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, end, first_scored) of every window: tokens start..end-1 are fed, first_scored..end-1 scored.

    A window cannot score its own first token (nothing precedes it inside the window), so consecutive windows
    overlap by at least one token, and the last window is moved left to be full length."""
    if ctx < 2 or not 0 < stride <= ctx:
        raise ValueError(f"stride={stride} must be in 1..ctx={ctx}, and ctx >= 2")
    plan, scored_until, start = [], 1, 0  # token 0 has no context and is never scored
    while scored_until < n_tokens:
        end = min(start + ctx, n_tokens)
        plan.append((start, end, scored_until))
        scored_until = end
        start = min(start + stride, end - 1, max(n_tokens - ctx, 0))
    return plan


def perplexity(model: Any, tokenizer: Any = None, split: str = "test", *, text: str | None = None,
               tokens: Any = None, ctx: int = 256, stride: int = 128, max_tokens: int | None = None,
               batch_size: int = 16, progress: bool = True) -> float:
    """Sliding-window perplexity of ``model`` on a corpus split (default), a ``text`` or ``tokens`` (ids)."""
    return score(model, tokenizer, split, text=text, tokens=tokens, ctx=ctx, stride=stride, max_tokens=max_tokens,
                 batch_size=batch_size, progress=progress).ppl


def score(model: Any, tokenizer: Any = None, split: str = "test", *, text: str | None = None,
          tokens: Any = None, ctx: int = 256, stride: int = 128, max_tokens: int | None = None,
          batch_size: int = 16, progress: bool = True) -> Score:
    """Like :func:`perplexity`, but keep every token's NLL: a :class:`Score` with the perplexity, its standard
    error and the slice it was measured on."""
    import torch
    from tqdm.auto import tqdm

    ids = _token_ids(tokenizer, split, text, tokens)
    if max_tokens is not None:
        ids = ids[:max_tokens]
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    if limit is not None and ctx > limit:
        raise ValueError(f"ctx={ctx} is longer than the model's {limit} positions; use ctx <= {limit}")
    if len(ids) < ctx:
        raise ValueError(f"the text has {len(ids)} tokens, fewer than one window of ctx={ctx}; "
                         f"use a longer text or a smaller ctx")
    plan = window_plan(len(ids), ctx, stride)
    device = next(model.parameters()).device
    vocabulary = getattr(model.config, "vocab_size", None)
    if vocabulary:  # a batch's log-probabilities in float64 stay within LOGITS_BUDGET numbers
        batch_size = max(1, min(batch_size, LOGITS_BUDGET // (ctx * vocabulary)))
    accepts = inspect.signature(model.forward).parameters
    nll = []
    model.eval()
    with torch.no_grad():
        for first in tqdm(range(0, len(plan), batch_size), desc="perplexity", disable=not progress, leave=False):
            batch = plan[first:first + batch_size]
            length = max(end - start for start, end, _ in batch)
            inputs = np.zeros((len(batch), length), dtype=np.int64)
            for row, (start, end, _) in enumerate(batch):
                inputs[row, : end - start] = ids[start:end]
            # position p predicts token start + p + 1; only positions scored - start - 1 .. end - start - 2 count,
            # so the output head runs on the last positions of the window only (the earlier ones are context)
            first_needed = min(scored - start - 1 for start, _, scored in batch)
            options = {"logits_to_keep": length - first_needed} if "logits_to_keep" in accepts else {}
            if "use_cache" in accepts:
                options["use_cache"] = False
            logits = model(input_ids=torch.from_numpy(inputs).to(device), **options).logits
            offset = length - logits.shape[1]  # the position of logits[:, 0]
            log_probs = torch.log_softmax(logits[:, first_needed - offset:length - 1 - offset].double(), dim=-1)
            targets = torch.from_numpy(inputs[:, first_needed + 1:]).to(device)
            token_log_probs = log_probs.gather(-1, targets[..., None])[..., 0]
            for row, (start, end, scored) in enumerate(batch):
                kept = slice(scored - start - 1 - first_needed, end - start - 1 - first_needed)
                nll.append(-token_log_probs[row, kept].cpu().numpy())
    source = split if text is None and tokens is None else None
    return Score(np.concatenate(nll).astype(np.float64), source, ctx, stride)


def _token_ids(tokenizer: Any, split: str, text: str | None, tokens: Any) -> np.ndarray:
    if tokens is not None:
        return np.asarray(tokens, dtype=np.int64).ravel()
    if text is not None:
        if tokenizer is None:
            raise ValueError("text= needs the tokenizer")
        return np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64)
    from qtutor import data

    return data.tokens(split, tokenizer)  # cached on disk per tokenizer
