"""Quantize, measure, restore: one point of a quality-versus-size table, and tables of many points.

    point = evaluate(model, tokenizer, method="rtn", fmt="int4", group_size=128)
    point["ppl"], point["bits_per_weight"], point["delta_pct"]

Every point quantizes the model's linear layers in place (fake quantization: the weights become the values
their codes stand for), measures perplexity on a split, and puts the original weights back bit for bit,
even if something fails half way. ``bits_per_weight`` and ``bytes`` count the quantized layers only (the
embedding, tied to the output head, stays in float32 in every point, as the ``skip`` default says).
"""
from __future__ import annotations

import time
from typing import Any, Iterable

# the formats of `qtutor tour`: (label, method, format, group size, symmetric)
TOUR = [
    ("FP32", None, "fp32", None, None),
    ("BF16", "rtn", "bf16", None, None),
    ("INT8 per-channel", "rtn", "int8", -1, True),
    ("INT4 g128 sym", "rtn", "int4", 128, True),
    ("INT4 g128 asym", "rtn", "int4", 128, False),
    ("INT4 per-channel", "rtn", "int4", -1, False),
    ("INT4 per-tensor", "rtn", "int4", 0, False),
    ("INT3 g128", "rtn", "int3", 128, False),
    ("INT2 g128", "rtn", "int2", 128, False),
    ("NF4 (64)", "rtn", "nf4", 64, None),
    ("FP4 E2M1 per-channel", "rtn", "fp4_e2m1", -1, None),
    ("MXFP4", "rtn", "mxfp4", 32, None),
    ("NVFP4", "rtn", "nvfp4", 16, None),
]


def evaluate(model: Any, tokenizer: Any = None, method: str | None = "rtn", fmt: str = "int4",
             group_size: Any = "default", sym: bool | None = None, *, split: str = "test", ctx: int = 256,
             stride: int = 128, max_tokens: int | None = None, calib: Any = None, baseline: float | None = None,
             progress: bool = False, **method_kw) -> dict:
    """Perplexity and size of ``model`` quantized with ``method``/``fmt`` (``method=None``: as it is)."""
    from qtutor.eval.perplexity import perplexity
    from qtutor.model.quantize import CALIBRATED, quantize_model

    started = time.time()
    ppl_kw = dict(split=split, ctx=ctx, stride=stride, max_tokens=max_tokens, progress=progress)
    if method is None:
        from qtutor.model import linear_layers

        weights = sum(layer.shape[0] * layer.shape[1] for layer in linear_layers(model) if layer.role != "lm_head")
        point = {"method": "none", "format": "fp32", "group_size": None, "sym": None,
                 "bits_per_weight": 32.0, "bytes": weights * 4, "ppl": perplexity(model, tokenizer, **ppl_kw)}
    elif method == "gguf":  # a whole-model mix such as Q4_K_M (the tied embedding included, as in llama.cpp)
        from qtutor.methods.gguf.apply import apply_mix

        with apply_mix(model, fmt, progress=progress) as report:
            point = {"method": "gguf", "format": report.fmt, "group_size": None, "sym": None,
                     "bits_per_weight": round(report.bits_per_weight, 4), "bytes": int(report.nbytes),
                     "ppl": perplexity(model, tokenizer, **ppl_kw)}
    else:
        calib = calib if method in CALIBRATED else None  # RTN would only spend it on per-layer errors, unused here
        with quantize_model(model, method, fmt, group_size, sym, calib, progress=progress, **method_kw) as report:
            point = {"method": method, "format": report.fmt, "group_size": report.group_size, "sym": report.sym,
                     "bits_per_weight": round(report.bits_per_weight, 4), "bytes": int(report.nbytes),
                     "ppl": perplexity(model, tokenizer, **ppl_kw)}
    if baseline is not None:
        point["delta_pct"] = 100.0 * (point["ppl"] / baseline - 1.0)
    point["seconds"] = round(time.time() - started, 2)
    return point


def sweep(model: Any, tokenizer: Any, configs: Iterable[tuple], *, progress: bool = True, **kw) -> list[dict]:
    """``evaluate`` every (label, method, format, group size, sym) in ``configs``; the first one is the baseline
    for ``delta_pct`` when it is unquantized (method ``None``)."""
    from tqdm.auto import tqdm

    configs = list(configs)
    rows, baseline = [], None
    for label, method, fmt, group_size, sym in tqdm(configs, desc="sweep", disable=not progress):
        point = evaluate(model, tokenizer, method, fmt, group_size, sym, baseline=baseline, **kw)
        if method is None and baseline is None:
            baseline = point["ppl"]
            point["delta_pct"] = 0.0
        rows.append({"label": label, **point})
    return rows
