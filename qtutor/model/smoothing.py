"""SmoothQuant on a whole model: measure max|X_j| on calibration text, fold the smoothing scales into the norms.

The mathematics is in :mod:`qtutor.methods.smoothquant` (arrays in, arrays out: ``activation_scales``,
``smoothing_scales``, ``difficulty``); this is the model's half, which runs the calibration text through the model
and folds every scale in (:mod:`qtutor.model.scaling`, shared with AWQ).
``qt.quantize_model(model, "smoothquant", ...)`` runs it before rounding the weights.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from qtutor.methods.smoothquant import activation_scales, check_alpha, difficulty, smoothing_scales
from qtutor.model import capture_inputs, find_layer, get_weight
from qtutor.model.scaling import SCALING_GROUPS, ScaledModel, scaling_groups


def smooth_model(model: Any, calib: Any, alpha: float = 0.5, linear_sources: bool = False) -> ScaledModel:
    """Smooth every scaling group of ``model`` in place (``smooth_ln_fcs``); returns a restorable handle.

    max|X_j| comes from running ``calib`` (token ids, n_samples x seq_len) through the unmodified model, and
    every s is computed from the original weights before any is folded (norm weight and bias / s, each reader's
    column j x s_j). The float model computes the same function as before, up to float rounding; only the
    quantization difficulty moves. ``linear_sources=True`` also smooths the inputs of o_proj (folded into
    v_proj) and down_proj (folded into up_proj), which the paper leaves alone; see
    :mod:`qtutor.model.scaling`."""
    alpha = check_alpha(alpha)
    if calib is None:
        raise ValueError("SmoothQuant needs calibration data: calib=qt.data.calibration(n_samples=32, seq_len=256)")
    groups = scaling_groups(model, linear_sources)
    if not groups:
        raise ValueError("no norm followed by linear layers found; SmoothQuant knows Llama-, OPT- and GPT-2-style "
                         f"blocks ({', '.join(sorted({source for source, _, _ in SCALING_GROUPS}))})")
    inputs = capture_inputs(model, calib, [group.readers[0] for group in groups])
    found = []
    for group in groups:
        X = inputs[group.readers[0]]
        if X.shape[0] == 0:
            raise ValueError(f"no calibration activations reached {group.readers[0]}: give longer calibration text")
        weights = [get_weight(find_layer(model, reader)) for reader in group.readers]
        found.append((group, X, weights, smoothing_scales(activation_scales(X), weights, alpha)))
    smoothed = ScaledModel(model)
    try:
        for group, X, weights, s in found:
            smoothed.apply(group, s)
            smoothed.difficulty[group.source] = {
                "before": difficulty(X, np.concatenate(weights, axis=0)),
                "after": difficulty(X / s, np.concatenate([W * s[None, :] for W in weights], axis=0))}
    except BaseException:
        smoothed.restore()
        raise
    return smoothed
