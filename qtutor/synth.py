"""Synthetic tensors for demonstrations the tiny model cannot give, clearly labelled as synthetic.

Large language models grow a few activation channels that are 10-100x larger than the rest (Dettmers et al.
2022; Xiao et al. 2022). Our 6 M-parameter model has milder ones, so the notebooks show the model's real
statistics first and then, where a mechanism needs the strong phenomenon, use these planted versions — never
an altered copy of the model.
"""
from __future__ import annotations

import numpy as np


def llm_like_weights(rows: int = 256, columns: int = 1024, seed: int = 0, outlier_fraction: float = 0.002,
                     outlier_scale: float = 30.0, std: float = 0.02) -> np.ndarray:
    """Gaussian weights (std 0.02, as trained LLM linears roughly are) with a fraction of them scaled up,
    the heavy tail that makes per-tensor scales wasteful."""
    rng = np.random.default_rng(seed)
    W = rng.normal(0.0, std, size=(rows, columns))
    mask = rng.random((rows, columns)) < outlier_fraction
    W[mask] *= outlier_scale
    return W.astype(np.float32)


def activations_with_outlier_channels(tokens: int = 512, channels: int = 256, outlier_channels: int = 4,
                                      outlier_scale: float = 40.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Activations (tokens x channels) where a few fixed channels are ``outlier_scale`` times larger in every
    token — the systematic outlier features of LLM.int8() and SmoothQuant. Returns (X, outlier channel indices)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(tokens, channels))
    chosen = np.sort(rng.choice(channels, size=outlier_channels, replace=False))
    X[:, chosen] *= outlier_scale
    X[:, chosen] += np.sign(rng.normal(size=outlier_channels)) * outlier_scale  # outliers keep their sign
    return X.astype(np.float32), chosen


def skewed_activations(tokens: int = 4096, seed: int = 0) -> np.ndarray:
    """Post-GELU-like activations: mostly small, a long positive tail, a short negative one — the case where an
    asymmetric (zero-point) grid beats a symmetric one."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=tokens)
    gelu = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    return gelu.astype(np.float32)
