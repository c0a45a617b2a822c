"""Activation outliers: do a few input channels of a layer carry far larger values than the rest?

LLM.int8() and SmoothQuant exist because large models grow *outlier features*: a handful of hidden channels
whose activations are 10-100x the typical one, in every token. The statistic used here (and in the model
card) is, for the inputs X (tokens x channels) of a linear layer,

    ratio = max_j max_t |X_tj|  /  median_j max_t |X_tj|

the largest channel's peak over the typical channel's peak: about 1-3 without outlier channels, 20+ with.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def channel_peaks(X: np.ndarray) -> np.ndarray:
    """max_t |X_tj| for every channel j."""
    return np.abs(np.asarray(X, dtype=np.float32)).max(axis=0)


def outlier_ratio(X: np.ndarray) -> float:
    peaks = channel_peaks(X)
    return float(peaks.max() / max(float(np.median(peaks)), 1e-12))


def outlier_table(model: Any, tokens: Any, roles: tuple[str, ...] | None = None) -> list[dict]:
    """Per linear layer: the outlier ratio of its inputs, its peak channel and that channel's peak value."""
    from qtutor.model import capture_inputs, linear_layers

    chosen = [layer.name for layer in linear_layers(model) if roles is None or layer.role in roles]
    inputs = capture_inputs(model, tokens, chosen)
    rows = []
    for name in chosen:
        peaks = channel_peaks(inputs[name])
        rows.append({"layer": name, "ratio": float(peaks.max() / max(float(np.median(peaks)), 1e-12)),
                     "channel": int(peaks.argmax()), "peak": float(peaks.max()), "median_peak": float(np.median(peaks))})
    return rows
