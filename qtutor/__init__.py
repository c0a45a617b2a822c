"""qtutor: learn LLM quantization by doing it.

    import qtutor as qt
    qt.formats.names()                                  # every number format
    q = qt.quantize_tensor(W, fmt="int4", group_size=128)
    model, tok = qt.load_model("tiny")                  # the embedded model, offline
    qt.perplexity(model, tok, split="test")
    report = qt.quantize_model(model, method="gptq", fmt="int4", calib=qt.data.calibration(128, 256))

Heavy modules (torch, transformers) load on first use, so ``import qtutor`` stays fast.
"""
from __future__ import annotations

import importlib
from typing import Any

from qtutor import formats
from qtutor.backend import has_gpu
from qtutor.methods import quantize_tensor
from qtutor.tensor import QuantizedTensor

__version__ = "0.1.0"

_LAZY = {
    "data": ("qtutor.data", None),
    "zoo": ("qtutor.zoo", None),
    "load_model": ("qtutor.model", "load_model"),
    "perplexity": ("qtutor.eval.perplexity", "perplexity"),
    "quantize_model": ("qtutor.model.quantize", "quantize_model"),
    "quantize_weights": ("qtutor.model.quantize", "quantize_weights"),
    "footprint": ("qtutor.eval.footprint", "footprint"),
    "banner": ("qtutor.notebook", "banner"),
    "setup_notebook": ("qtutor.notebook", "setup_notebook"),
    "viz": ("qtutor.viz", None),
    "synth": ("qtutor.synth", None),
    "check": ("qtutor.check", None),
    "notebook": ("qtutor.notebook", None),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'qtutor' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


__all__ = ["QuantizedTensor", "formats", "has_gpu", "quantize_tensor", *_LAZY]
