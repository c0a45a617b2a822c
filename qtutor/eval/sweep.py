"""Quantize, measure, restore: one point of a quality-versus-size table, and tables of many points.

    point = evaluate(model, tokenizer, method="rtn", fmt="int4", group_size=128)
    point["ppl"], point["bits_per_weight"], point["delta_pct"]

Every point quantizes the model's linear layers in place (fake quantization: the weights become the values
their codes stand for), measures perplexity on a split, and puts the original weights back bit for bit,
even if something fails half way. ``bits_per_weight`` and ``bytes`` count the quantized layers only (the
embedding, tied to the output head, stays in float32 in every point, as the ``skip`` default says).
"""
from __future__ import annotations

import contextlib
import time
from typing import Any, Iterable

# the formats of `qtutor tour`: (label, method, format, group size, symmetric). "default" groups are the
# format's usual size where it divides the model's rows (128 on the tiny model, 64 on SmolLM2's 576-wide rows),
# and "{g}" in a label becomes the group size that was used
TOUR = [
    ("FP32", None, "fp32", None, None),
    ("BF16", "rtn", "bf16", None, None),
    ("INT8 per-channel", "rtn", "int8", -1, True),
    ("INT4 g{g} sym", "rtn", "int4", "default", True),
    ("INT4 g{g} asym", "rtn", "int4", "default", False),
    ("INT4 per-channel", "rtn", "int4", -1, False),
    ("INT4 per-tensor", "rtn", "int4", 0, False),
    ("INT3 g{g}", "rtn", "int3", "default", False),
    ("INT2 g{g}", "rtn", "int2", "default", False),
    ("NF4 (64)", "rtn", "nf4", 64, None),
    ("FP4 E2M1 per-channel", "rtn", "fp4_e2m1", -1, None),
    ("MXFP4", "rtn", "mxfp4", 32, None),
    ("NVFP4", "rtn", "nvfp4", 16, None),
]


def evaluate(model: Any, tokenizer: Any = None, method: str | None = "rtn", fmt: Any = "default",
             group_size: Any = "default", sym: bool | None = None, *, split: str = "test", ctx: int = 256,
             stride: int = 128, max_tokens: int | None = None, calib: Any = None, baseline: float | None = None,
             progress: bool = False, act_format: str | None = None, act_granularity: str = "token",
             kv_format: str | None = None,
             kv_keys: str = "channel", kv_values: str = "token", kv_group_size: int | None = None,
             kv_token_group: int | None = None, alpha: float = 0.5, smooth_linears: bool = False,
             threshold: float = 6.0, reference: Any = None,
             keep_score: bool = False, **method_kw) -> dict:
    """Perplexity and size of ``model`` quantized with ``method``/``fmt`` (``method=None``: as it is).

    Weight methods: ``rtn``, ``gptq``, ``awq`` (any format; ``fmt="default"`` is INT4), ``gguf`` (``fmt`` is a
    mix such as ``Q4_K_M``). ``smoothquant``: smoothing with migration strength ``alpha`` folded into the norms
    (and with ``smooth_linears`` into v_proj and up_proj too, for o_proj's and down_proj's inputs), then RTN
    weights in ``fmt`` and activations in ``act_format`` (INT8 per token when not given): W8A8 with
    ``fmt="int8"``, ``group_size=-1``. ``llm_int8``: every linear computes the LLM.int8() product
    (``threshold``); its weights are INT8 per channel by definition, and another ``fmt`` is an error.
    ``rotation``: weights and activations (``act_format``; ``fmt`` when not given) rounded in a randomly rotated
    basis (QuaRot; :mod:`qtutor.methods.rotation`). What each method needs and runs comes from its declaration
    (:mod:`qtutor.methods`; the model-level phases are in :mod:`qtutor.model.phases`). On top of any of them:
    ``act_format`` quantizes every linear's input per token (``act_granularity="token"``, dynamic), per tensor
    (``"tensor"``, dynamic) or with one calibrated scale per layer (``"static"``: max|x| on ``calib`` of the model
    as it runs, weights quantized; the point adds ``clipped_pct``, the share of test activations beyond it),
    ``kv_format`` the KV cache (keys along
    ``kv_keys``, values along ``kv_values``, ``kv_group_size`` channels or, for per-channel scales,
    ``kv_token_group`` tokens a scale; see :func:`qtutor.model.activations.quantized_kv_cache`). With a
    ``reference`` (:func:`qtutor.eval.divergence.reference` of the float model) the point also has ``kl``, the
    mean KL divergence from the float model's next-token distributions, and ``same_top_pct``, how often the most
    likely next token is the float model's.

    Every point carries ``ppl_stderr`` (llama.cpp's standard error of a perplexity) and ``tokens``, the number
    of tokens scored. ``baseline``: the float model's perplexity, for ``delta_pct``; or its
    :class:`~qtutor.eval.perplexity.Score` (``keep_score=True`` puts a point's score under ``"score"``), which
    compares token by token and adds ``delta_pct_stderr`` and ``significant`` (outside two standard errors)."""
    from qtutor.eval.perplexity import Score, score
    from qtutor.methods import declaration
    from qtutor.model import activations, phases
    from qtutor.model.quantize import quantize_weights

    started = time.time()
    ppl_kw = dict(split=split, ctx=ctx, stride=stride, max_tokens=max_tokens, progress=progress)
    declared = None if method is None else declaration(method)
    options: dict = {}
    if declared is not None:
        fmt, group_size, sym = declared.resolve(fmt, group_size, sym)
        run_options = dict(alpha=alpha, smooth_linears=smooth_linears, threshold=threshold)
        options = {name: run_options[name] for name in declared.options}
        if act_format is None and declared.act_format is not None:
            act_format = fmt if declared.act_format == "weights" else declared.act_format
    after_run = None  # a hook's report, read once the model has run
    with contextlib.ExitStack() as stack:
        if declared is None:
            from qtutor.model import linear_layers

            weights = sum(layer.shape[0] * layer.shape[1] for layer in linear_layers(model) if layer.role != "lm_head")
            point = {"method": "none", "format": "fp32", "group_size": None, "sym": None,
                     "bits_per_weight": 32.0, "bytes": weights * 4}
        else:
            if declared.hook is not None:  # installed first, so that it multiplies with the float weights
                after_run = stack.enter_context(phases.HOOKS[declared.hook](model, options))
            # the run options go to the transform that reads them; quantize_weights gives calibration only to the
            # methods that use it (RTN would spend it on per-layer errors) and runs a whole-model replacement
            # (a GGUF mix, the tied embedding too) as such
            transform_options = options if declared.transform is not None else {}
            report = stack.enter_context(quantize_weights(model, method, fmt, group_size, sym, calib,
                                                          progress=progress, **method_kw, **transform_options))
            point = {"method": method, "format": report.fmt, "group_size": report.group_size, "sym": report.sym,
                     "bits_per_weight": round(report.bits_per_weight, 4), "bytes": int(report.nbytes)}
        clip_stats = None
        if act_format is not None:
            basis = "plain" if declared is None else declared.activations
            act_options = {**method_kw, **options, "act_granularity": act_granularity}
            if act_granularity == "static":
                if calib is None:
                    raise ValueError("act_granularity='static' calibrates one scale per layer: give "
                                     "calib=qt.data.calibration(32, 256)")
                act_options["act_scales"] = activations.static_input_scales(model, calib, act_format)
            installed = stack.enter_context(phases.ACTIVATIONS[basis](model, act_format, act_options))
            clip_stats = installed if isinstance(installed, activations.ClipStats) else None
            point["act_format"] = act_format
            if act_granularity != "token":
                point["act_granularity"] = act_granularity
        if kv_format is not None:
            stack.enter_context(activations.quantized_kv_cache(model, kv_format, kv_keys, kv_values, kv_group_size,
                                                               token_group=kv_token_group))
            point.update(kv_format=kv_format, kv_keys=kv_keys, kv_values=kv_values, kv_token_group=kv_token_group)
        point.update(options)
        measured = score(model, tokenizer, **ppl_kw)
        point.update(ppl=measured.ppl, ppl_stderr=measured.ppl_stderr, tokens=measured.n_tokens)
        if reference is not None:
            from qtutor.eval.divergence import compare

            point.update(compare(model, reference))
        if after_run is not None:
            point.update(after_run())
        if clip_stats is not None:
            point["clipped_pct"] = 100.0 * clip_stats.clipped_fraction()
    if isinstance(baseline, Score):
        point.update(measured.compare(baseline))
    elif baseline is not None:
        point["delta_pct"] = 100.0 * (point["ppl"] / baseline - 1.0)
    if keep_score:
        point["score"] = measured
    point["seconds"] = round(time.time() - started, 2)
    return point


def sweep(model: Any, tokenizer: Any, configs: Iterable[tuple], *, progress: bool = True, **kw) -> list[dict]:
    """``evaluate`` every (label, method, format, group size, sym) in ``configs``; the first one is the baseline
    for ``delta_pct`` when it is unquantized (method ``None``). The baseline is the float model itself: run-time
    quantization (``act_format``, ``kv_format``) applies to the other rows only."""
    from tqdm.auto import tqdm

    configs = list(configs)
    rows, baseline = [], None
    for label, method, fmt, group_size, sym in tqdm(configs, desc="sweep", disable=not progress):
        first_float = method is None and baseline is None
        options = {**kw, "act_format": None, "kv_format": None} if first_float else kw
        point = evaluate(model, tokenizer, method, fmt, group_size, sym, baseline=baseline, keep_score=first_float,
                         **options)
        if first_float:
            baseline = point.pop("score")
            point.update(delta_pct=0.0, delta_pct_stderr=0.0, significant=False)
        rows.append({"label": label.format(g=point["group_size"]), **point})
    return rows
