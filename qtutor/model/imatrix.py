"""Collect llama.cpp's importance matrix from a model: the mean squared input of every weight's columns.

    im = collect(model, qt.data.calibration(32, 256, tokenizer=tokenizer), tokenizer=tokenizer)

Forward pre-hooks on every linear layer add up x_j^2 over the calibration tokens (in float64) and count the
tokens, as ``llama-imatrix`` does; the result is keyed by the weights' GGUF names, so that a mix can look up
each tensor's entry (:class:`qtutor.methods.gguf.imatrix.ImportanceMatrix`). The tied output head reads the
final hidden state; llama.cpp leaves it out by default (``--process-output``), and so does this.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from qtutor.methods.gguf.export import gguf_name
from qtutor.methods.gguf.imatrix import ImportanceMatrix
from qtutor.model import linear_layers


def collect(model: Any, calib: Any, tokenizer: Any = None, batch_size: int = 8, progress: bool = False,
            dataset: str = "calibration") -> ImportanceMatrix:
    """The importance matrix of ``model`` on calibration token ids ``calib`` (n_sequences x seq_len).

    ``tokenizer`` (None: the embedded one) is the one that encoded ``calib``; with it the calibration text is
    checked against the course's evaluation text, and a warning explains the leak if they overlap."""
    import torch
    from tqdm.auto import tqdm

    tokens = torch.as_tensor(np.asarray(calib, dtype=np.int64))
    if tokens.ndim == 1:
        tokens = tokens[None, :]
    if tokens.numel() == 0:
        raise ValueError("no calibration tokens: pass calib=qt.data.calibration(32, 256, tokenizer=tokenizer)")
    warn_if_evaluation_text(tokens.numpy(), tokenizer)
    layers = [layer for layer in linear_layers(model) if layer.role != "lm_head"
              and gguf_name(f"{layer.name}.weight") is not None]
    if not layers:
        raise ValueError("the model has no linear layer that GGUF stores (a Llama model is expected)")
    sums = {layer.name: np.zeros(layer.in_features, dtype=np.float64) for layer in layers}
    counts = {layer.name: 0 for layer in layers}

    def recorder(name: str):
        def record(module, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            sums[name] += (x * x).sum(dim=0).cpu().numpy()
            counts[name] += x.shape[0]
        return record

    handles = [layer.module.register_forward_pre_hook(recorder(layer.name)) for layer in layers]
    try:
        with torch.no_grad():
            for start in tqdm(range(0, tokens.shape[0], batch_size), desc="imatrix", disable=not progress,
                              leave=False):
                model(input_ids=tokens[start:start + batch_size].to(model.device))
    finally:
        for handle in handles:
            handle.remove()
    names = {layer.name: gguf_name(f"{layer.name}.weight") for layer in layers}
    return ImportanceMatrix(sums={names[name]: value.astype(np.float32) for name, value in sums.items()},
                            counts={names[name]: count for name, count in counts.items()},
                            datasets=[dataset], chunk_size=int(tokens.shape[1]), chunk_count=int(tokens.shape[0]))


def warn_if_evaluation_text(calib: np.ndarray, tokenizer: Any = None, probe: int = 32) -> bool:
    """Warn (and return True) when a calibration sequence is a stretch of the course's evaluation text."""
    from qtutor import data

    test = np.ascontiguousarray(data.tokens("test", tokenizer), dtype=np.int64).tobytes()
    leaked = sum(np.ascontiguousarray(row[:probe], dtype=np.int64).tobytes() in test
                 for row in np.atleast_2d(calib) if len(row) >= probe)
    if leaked:
        warnings.warn(f"{leaked} of {len(np.atleast_2d(calib))} calibration sequences are taken from the evaluation "
                      "text (the test split): an importance matrix computed on it tunes the rounding to exactly the "
                      "tokens it is then measured on, and the perplexity flatters it. Calibrate on other text, e.g. "
                      "qt.data.calibration(32, 256, tokenizer=tokenizer), which reads the train split",
                      stacklevel=3)
    return bool(leaked)
