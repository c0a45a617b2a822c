"""KL divergence from the float model: how far quantization moves the whole next-token distribution.

    KL(P || Q) = (1/N) sum_i sum_v P_i(v) (log P_i(v) - log Q_i(v))      (nats per token, >= 0)

P_i is the float model's distribution over the vocabulary after the i-th prefix, Q_i the quantized model's,
on the same tokens. Perplexity looks only at the probability of the token that actually came next, and the
small changes of a 4-bit model raise some of those probabilities and lower others: on a small model the
perplexity of two good quantizations can differ by less than that noise, in either direction. The KL divergence
compares whole distributions, is zero only when nothing moved, and grows with every error, so it orders
methods that perplexity cannot tell apart (llama.cpp's ``perplexity --kl-divergence`` reports it for the same
reason).

    ref = qt.eval.divergence.reference(model)          # the float model's log-probabilities, kept in memory
    with qt.quantize_model(model, "awq", "int4", 128, calib=calib):
        print(qt.eval.divergence.kl_divergence(model, ref))

Next to it, :func:`compare` gives llama.cpp's "same top p": the share of positions where the quantized model's
most likely next token is the float model's, the number that decides what greedy decoding writes.

The reference keeps n_tokens x vocabulary float32 log-probabilities (8192 tokens of the tiny model: 134 MB;
SmolLM2's vocabulary of 49,152 makes that 1.6 GB, so measure it on 2048 tokens there: 400 MB).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Reference:
    """The float model's log-probabilities on ``tokens`` (windows x ctx): what a quantized model is held to."""

    tokens: np.ndarray
    log_probs: Any  # torch.Tensor (windows, ctx, vocabulary), float32

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.size)


def _log_probs(model: Any, tokens: np.ndarray, batch_size: int, progress: bool, desc: str):
    import torch
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    parts = []
    model.eval()
    with torch.no_grad():
        for start in tqdm(range(0, len(tokens), batch_size), desc=desc, disable=not progress, leave=False):
            batch = torch.from_numpy(tokens[start:start + batch_size]).to(device)
            parts.append(torch.log_softmax(model(input_ids=batch, use_cache=False).logits.float(), dim=-1).cpu())
    return torch.cat(parts)


def reference(model: Any, tokenizer: Any = None, split: str = "test", *, tokens: Any = None, ctx: int = 256,
              max_tokens: int = 8192, batch_size: int = 8, progress: bool = False) -> Reference:
    """Run the (float) model on the first ``max_tokens`` tokens of a split (or ``tokens``), in windows of
    ``ctx``, and keep its log-probabilities."""
    from qtutor.eval.perplexity import _token_ids

    ids = _token_ids(tokenizer, split, None, tokens)
    windows = min(len(ids), max_tokens) // ctx
    if windows == 0:
        raise ValueError(f"{len(ids)} tokens (max_tokens={max_tokens}) do not fill one window of ctx={ctx}")
    ids = np.ascontiguousarray(ids[: windows * ctx].reshape(windows, ctx))
    return Reference(ids, _log_probs(model, ids, batch_size, progress, "float reference"))


def kl_divergence(model: Any, ref: Reference, batch_size: int = 8, progress: bool = False) -> float:
    """Mean KL(P_float || Q_model) per token, in nats, over the reference's tokens (summed in float64)."""
    return compare(model, ref, batch_size, progress)["kl"]


def compare(model: Any, ref: Reference, batch_size: int = 8, progress: bool = False) -> dict:
    """``kl``: the mean KL(P_float || Q_model) per token in nats; ``same_top_pct``: the percentage of positions
    whose most likely next token is the float model's (llama.cpp's "same top p"); ``overlap_pct``: the mean of
    Σ_v min(P(v), Q(v)) = 1 - total variation distance, in percent. The last two are the acceptance rates of
    speculative decoding with this model drafting for the float one (greedy, and sampling at temperature 1):
    :mod:`qtutor.eval.speculative`."""
    import torch

    Q = _log_probs(model, ref.tokens, batch_size, progress, "KL divergence")
    if Q.shape != ref.log_probs.shape:
        raise ValueError(f"the model gives {tuple(Q.shape)} log-probabilities, the reference "
                         f"{tuple(ref.log_probs.shape)}: make the reference with the same model")
    P = ref.log_probs
    per_token = (P.exp() * (P - Q)).sum(dim=-1, dtype=torch.float64)
    same_top = (P.argmax(dim=-1) == Q.argmax(dim=-1)).double().mean()
    overlap = torch.minimum(P, Q).exp().sum(dim=-1, dtype=torch.float64).mean()
    return {"kl": float(per_token.mean()), "same_top_pct": 100 * float(same_top), "overlap_pct": 100 * float(overlap)}
