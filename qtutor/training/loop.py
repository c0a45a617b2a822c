"""One small training loop for every way the course trains a model (QAT now; LLM-QAT and QLoRA use it too).

    history = train(model, qt.data.tokens("train", tokenizer), steps=60, lr=1e-4)

Each step draws ``batch`` windows of ``seq_len`` tokens at random (seeded) from the token stream and takes one
AdamW step on the next-token cross-entropy, ``model(input_ids=x, labels=x).loss`` (transformers shifts the labels).
The data may also be a 2-D array of separate sequences (rows), such as the text LLM-QAT's float model writes for
itself: a window is then drawn within one row, never across two. Another objective is a ``loss(model, ids)`` that
returns a scalar: knowledge distillation (:func:`qtutor.training.llm_qat.distill`) passes the KL divergence from a
teacher's next-token distribution.
Only parameters with ``requires_grad`` are trained, so a frozen base (QLoRA) or frozen latent weights (LSQ's steps
alone) need nothing special. A loss that turns NaN or infinite stops the run with a message, and the weights go
back to those of the last finite step: nothing is lost.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch


@dataclass
class TrainingHistory:
    """Loss per step (nats per token), tokens seen, and why the run stopped early (``None`` if it did not)."""

    losses: list[float] = field(default_factory=list)
    tokens: int = 0
    stopped: str | None = None


def random_windows(tokens: np.ndarray, batch: int, seq_len: int, rng: np.random.Generator) -> torch.Tensor:
    """``batch`` windows of ``seq_len`` consecutive tokens, starting at random positions: of one token stream
    (1-D), or, for a 2-D array of sequences, each within a row drawn at random."""
    if tokens.ndim == 2:
        rows = rng.integers(0, tokens.shape[0], batch)
        starts = rng.integers(0, tokens.shape[1] - seq_len + 1, batch)
        return torch.from_numpy(np.stack([tokens[r, s:s + seq_len] for r, s in zip(rows, starts)]).astype(np.int64))
    starts = rng.integers(0, len(tokens) - seq_len + 1, batch)
    return torch.from_numpy(np.stack([tokens[s:s + seq_len] for s in starts]).astype(np.int64))


def next_token_loss(model: Any, ids: torch.Tensor) -> torch.Tensor:
    """The language-modelling loss: mean cross-entropy of each next token (nats per token)."""
    return model(input_ids=ids, labels=ids).loss


def train(model: Any, tokens: Any, steps: int = 100, lr: float = 1e-4, batch: int = 8, seq_len: int = 256,
          seed: int = 0, progress: bool = True,
          loss: Callable[[Any, torch.Tensor], torch.Tensor] | None = None) -> TrainingHistory:
    """Train ``model``'s trainable parameters for ``steps`` AdamW steps (no weight decay: the scales and zero
    points of QAT must not be pulled towards zero) on windows of ``tokens`` (a token stream, or a 2-D array of
    sequences), minimising ``loss(model, ids)`` (default :func:`next_token_loss`). Returns the
    :class:`TrainingHistory`."""
    from tqdm.auto import tqdm

    tokens = np.asarray(tokens)
    if not lr > 0:
        raise ValueError(f"lr={lr!r}: the learning rate must be > 0 (1e-4 is a usual start for QAT)")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r}: train for at least one step (an integer >= 1)")
    if tokens.ndim == 2:
        if tokens.shape[0] < 1 or tokens.shape[1] < seq_len:
            raise ValueError(f"{tokens.shape[0]} sequences of {tokens.shape[1]} tokens: give at least one sequence "
                             f"of seq_len={seq_len} tokens (or a smaller seq_len)")
    elif tokens.ndim != 1 or len(tokens) < seq_len + 1:
        raise ValueError(f"{tokens.size} tokens of training data: give at least one sequence of seq_len={seq_len} "
                         f"tokens and the one after it (or a smaller seq_len)")
    objective = next_token_loss if loss is None else loss
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError("the model has no trainable parameters (every requires_grad is False): nothing to train")
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    history = TrainingHistory()
    last_good = [p.detach().clone() for p in parameters]
    model.train()
    bar = tqdm(range(steps), desc="training", disable=not progress, leave=False)
    for step in bar:
        ids = random_windows(tokens, batch, seq_len, rng).to(device)
        optimizer.zero_grad()
        value = objective(model, ids)
        if not math.isfinite(value.item()):
            with torch.no_grad():
                for parameter, good in zip(parameters, last_good):
                    parameter.copy_(good)
            history.stopped = (f"step {step}: the loss is {value.item()}; stopped, and the weights are back to the "
                               f"last ones whose loss was finite. Try a smaller lr (now {lr:g})")
            break
        value.backward()
        with torch.no_grad():
            for parameter, good in zip(parameters, last_good):
                good.copy_(parameter)
        optimizer.step()
        history.losses.append(value.item())
        history.tokens += ids.numel()
        bar.set_postfix(loss=f"{value.item():.3f}")
    model.eval()
    if history.stopped:
        import warnings

        warnings.warn(history.stopped, stacklevel=2)
    return history
