"""Quantization methods, one file each: how to choose the codes once the format is fixed.

Every method module exposes ``quantize(W, fmt, group_size, sym, calib=None, **options) -> QuantizedTensor``:
``rtn`` rounds every weight to its nearest grid point; calibrated methods (``gptq``, ``awq``, ...) use
activations ``calib`` (tokens x in_features) to choose codes that keep the layer's *output* close.
"""
from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from qtutor.tensor import QuantizedTensor

METHODS = ("rtn", "gptq", "awq", "llm_int8", "rotation")  # SmoothQuant is a model transform (methods.smoothquant)


def get(method: str):
    """The module implementing ``method`` (e.g. ``qtutor.methods.rtn``)."""
    name = str(method).lower()
    try:
        return importlib.import_module(f"qtutor.methods.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"qtutor.methods.{name}":
            raise
        available = [m for m in METHODS if importlib.util.find_spec(f"qtutor.methods.{m}") is not None]
        raise ValueError(f"unknown method {method!r}; the methods are: {', '.join(available)}") from None


def quantize_tensor(W: Any, fmt: str = "int4", method: str = "rtn", group_size: int | None | str = "default",
                    sym: bool | None = None, calib: Any = None, **method_kw) -> QuantizedTensor:
    """Quantize one weight ``W (out_features, in_features)`` to ``fmt`` with ``method``.

    ``group_size``: N > 0 groups of N along the input dimension, -1 one scale per output channel, 0 one scale
    per tensor, None a plain cast; ``"default"`` picks the format's usual granularity (int: 128, MX: 32,
    NVFP4: 16, NF4: 64, FP8: per channel). ``sym=None`` picks the format's default (integers: asymmetric,
    as GPTQ and AWQ; float formats are always symmetric).
    """
    from qtutor import formats

    fmt = formats.get(fmt)
    if group_size == "default":
        group_size = fmt.weight_group_size
    return get(method).quantize(W, fmt, group_size=group_size, sym=sym, calib=calib, **method_kw)
