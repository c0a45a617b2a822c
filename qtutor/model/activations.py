"""Quantize what flows through a model at run time: linear-layer inputs (W8A8, W4A4), LLM.int8()'s
decomposition, and the KV cache.

Weight quantization (:func:`qtutor.quantize_model`) happens once, offline. Activations are new with every token,
so they are quantized *dynamically*, inside the forward pass, with a scale computed from the values at hand.
Here that is simulated with torch hooks on the model's modules, as fake quantization (quantize, then dequantize
back to float32), so perplexity measures the format's error and nothing else:

    with quantized_inputs(model, "int8"):                 # A8: every linear's input, INT8 with a scale per token
        qt.perplexity(model, tok)
    with llm_int8(model, threshold=6.0) as stats:         # the whole LLM.int8() product in every linear
        qt.perplexity(model, tok); stats.outlier_fraction()
    with quantized_kv_cache(model, "int4", keys="channel", values="token"):   # KIVI's choice of axes
        qt.perplexity(model, tok)

Each is a context manager: the hooks are removed on exit, exceptions included, and the model's weights are never
touched. They compose with each other and with ``quantize_model`` (W8A8 = INT8 per-channel weights from
``quantize_model(model, "rtn", "int8", group_size=-1, sym=True)`` plus ``quantized_inputs(model, "int8")``).

Why fake quantization measures the integer kernel's result. For symmetric codes, X_hat = a * CX (a scale per
token) and W_hat = CW * b (a scale per output channel), so in exact arithmetic

    X_hat W_hat^T = a * (CX CW^T) * b^T,

the rescaled integer product an INT8 GEMM with INT32 accumulation computes (its integer sums are exact: they fit
INT32 for in_features up to 131,071 = (2^31 - 1) // 128^2). The simulation is not bit-identical to it: it
multiplies the dequantized float32 values, so every a * cx, cw * b and their product is rounded to float32's 24
significant bits and the terms are added in float order, a relative difference of order 1e-7 per term, many
orders below the quantization error being measured. ``qtutor.methods.llm_int8`` computes the true integer product
where a lesson needs the kernel's own numbers.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from qtutor import formats
from qtutor.model import LinearLayer, get_weight, linear_layers, run_with_input_hooks

GRANULARITIES = ("token", "tensor", "static")  # dynamic per token, dynamic per tensor, calibrated per tensor
BLOCK_FAMILIES = ("microscaling", "normalfloat")  # formats whose scale belongs to a fixed block of elements
CLAMP = 1e-5  # the smallest absmax a scale is computed from, as SmoothQuant: an all-zero token stays zero
KV_AXES = ("token", "channel")


def fake_quantize_activations(x: np.ndarray, fmt: str = "int8", granularity: str = "token",
                              scale: float | None = None) -> np.ndarray:
    """Quantize-dequantize activations ``x (tokens, channels)``, symmetric, one scale per token (row) or per tensor.

    Integer formats: s = max(max|x_t|, 1e-5) / (2^(b-1) - 1) and x_hat = s * clip(round(x / s)), with s kept in
    float32 — SmoothQuant's W8A8 and LLM-QAT's activation quantizer (a weight's scale is stored, as float16; an
    activation's scale is computed on the fly and never stored). Float formats (FP8, FP4) scale each token the
    same way onto their grid; block formats (MXFP4, NVFP4, NF4) use their own blocks, which lie within a token.
    ``granularity="static"``: one ``scale`` fixed in advance (calibrated, :func:`static_input_scales`), as a
    deployed W8A8-FP8 model with static activation scales runs; values beyond ``scale * max`` are clipped to it
    (a plain FP8 cast would turn them into NaN)."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity={granularity!r}: use 'token' (a scale per token, dynamic), 'tensor' (per "
                         "tensor, dynamic) or 'static' (one calibrated scale per tensor)")
    fmt = formats.get(fmt)
    x = np.asarray(x, dtype=np.float32)
    if x.size == 0:
        return x
    if granularity == "static":
        if fmt.family in BLOCK_FAMILIES:
            raise ValueError(f"{fmt.name} has a scale per block by definition; a static per-tensor scale is for "
                             "integer and float formats (int8, fp8_e4m3)")
        if scale is None or not np.isfinite(scale) or scale <= 0:
            raise ValueError(f"granularity='static' needs a finite positive scale, got {scale!r} (calibrate one with "
                             "qtutor.model.activations.static_input_scales)")
        s = np.float32(scale)
        limit = s * np.float32(fmt.qmax_sym if fmt.family == "integer" else fmt.max_value)
        return fmt.dequantize(fmt.quantize(np.clip(x, -limit, limit), s), s).astype(np.float32).reshape(x.shape)
    rows = x.reshape(-1, x.shape[-1]) if granularity == "token" else x.reshape(1, -1)
    if fmt.family == "integer":
        scale = np.maximum(np.abs(rows).max(axis=1, keepdims=True), CLAMP) / np.float32(fmt.qmax_sym)
        return fmt.dequantize(fmt.quantize(rows, scale), scale).reshape(x.shape)
    if fmt.family in BLOCK_FAMILIES:
        if granularity == "tensor":
            raise ValueError(f"{fmt.name} has a scale per block by definition; use granularity='token'")
        return np.asarray(fmt.encode(rows).dequantize(), dtype=np.float32).reshape(x.shape)
    return np.asarray(fmt.encode(rows, group_size=-1).dequantize(), dtype=np.float32).reshape(x.shape)


def _targets(model: Any, roles: tuple[str, ...] | None, skip: tuple[str, ...]) -> list[LinearLayer]:
    chosen = [layer for layer in linear_layers(model)
              if layer.role not in skip and (roles is None or layer.role in roles)]
    if not chosen:
        raise ValueError("no linear layers chosen (check `roles=` and `skip=` against qt.model.linear_layers(model))")
    return chosen


@contextlib.contextmanager
def _hooks(handles: list) -> Iterator[None]:
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _as_tensor_like(values: np.ndarray, like: Any) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(values)).to(dtype=like.dtype, device=like.device)


# ---- A8 / A4: the inputs of every linear layer --------------------------------------------------------------------
def static_input_scales(model: Any, calib: Any, fmt: str = "fp8_e4m3", *, roles: tuple[str, ...] | None = None,
                        skip: tuple[str, ...] = ("lm_head",), batch_size: int = 8) -> dict[str, float]:
    """One static scale per linear's input: max|x| over the calibration text (token ids, n x seq_len) divided by
    the format's largest value (448 for E4M3, 127 for INT8), so the largest calibration activation lands on it."""
    import torch

    if calib is None:
        raise ValueError("static activation scales are calibrated: give calib=qt.data.calibration(32, 256)")
    fmt = formats.get(fmt)
    largest = float(fmt.qmax_sym if fmt.family == "integer" else fmt.max_value)
    chosen = _targets(model, roles, skip)
    absmax = {layer.name: 0.0 for layer in chosen}

    def recorder(name: str):
        def record(module, args):
            x = args[0].detach().float()
            if not bool(torch.isfinite(x).all()):
                raise ValueError(f"the calibration inputs of {name} contain NaN/Inf: a static scale cannot be "
                                 "calibrated on them (check the model in float32, or the calibration text)")
            absmax[name] = max(absmax[name], float(x.abs().max()))
        return record

    run_with_input_hooks(model, calib, {layer.name: recorder(layer.name) for layer in chosen}, batch_size)
    return {name: max(value, CLAMP) / largest for name, value in absmax.items()}


@dataclass
class ClipStats:
    """With static scales: how many activation values fell beyond a layer's calibrated range and were clipped."""

    clipped: dict = field(default_factory=dict)
    seen: dict = field(default_factory=dict)

    def clipped_fraction(self) -> float:
        return sum(self.clipped.values()) / max(sum(self.seen.values()), 1)


@contextlib.contextmanager
def quantized_inputs(model: Any, fmt: str = "int8", granularity: str = "token", *,
                     roles: tuple[str, ...] | None = None, skip: tuple[str, ...] = ("lm_head",),
                     rotation_seed: int | None = None, scales: dict[str, float] | None = None) -> Iterator[Any]:
    """Within the block, every chosen linear layer sees its input fake-quantized to ``fmt`` (dynamic, a scale per
    token by default). The output head is skipped by default, as in SmoothQuant's ``quantize_llama_like``.
    With ``rotation_seed``, each input is quantized in a rotated basis, Q(x R) R^T
    (:mod:`qtutor.methods.rotation`; the weights must be rotated with the same seed). ``granularity="static"``
    takes each layer's calibrated scale from ``scales`` (:func:`static_input_scales`) and yields a
    :class:`ClipStats`."""
    formats.get(fmt)  # an unknown format fails here, before any hook is installed
    chosen = _targets(model, roles, skip)
    if granularity == "static":
        missing = [layer.name for layer in chosen if scales is None or layer.name not in scales]
        if missing:
            raise ValueError(f"granularity='static' needs a calibrated scale for every layer; none for {missing[0]} "
                             "(scales=qtutor.model.activations.static_input_scales(model, calib, fmt))")
        fake_quantize_activations(np.ones((1, 64), np.float32), fmt, granularity, scale=1.0)
    else:
        fake_quantize_activations(np.ones((1, 64), np.float32), fmt, granularity)  # a bad granularity fails here
    stats = ClipStats()

    from qtutor.methods.rotation import rotated_fake_quantize

    chosen_format = formats.get(fmt)
    largest = chosen_format.qmax_sym if chosen_format.family == "integer" else chosen_format.max_value

    def quantize_input_of(name: str):
        scale = None if scales is None else scales.get(name)

        def fake_quantize(rows: np.ndarray) -> np.ndarray:
            if granularity == "static":
                limit = scale * largest
                stats.clipped[name] = stats.clipped.get(name, 0) + int((np.abs(rows) > limit).sum())
                stats.seen[name] = stats.seen.get(name, 0) + rows.size
            return fake_quantize_activations(rows, fmt, granularity, scale=scale)

        def quantize_input(module, args):
            x = args[0]
            flat = x.detach().float().reshape(-1, x.shape[-1]).cpu().numpy()
            if rotation_seed is None:
                x_hat = fake_quantize(flat)
            else:
                x_hat = rotated_fake_quantize(flat, fake_quantize, rotation_seed)
            x_hat = x_hat.reshape(tuple(x.shape))
            return (_as_tensor_like(x_hat, x), *args[1:])
        return quantize_input

    handles = [layer.module.register_forward_pre_hook(quantize_input_of(layer.name)) for layer in chosen]
    with _hooks(handles):
        yield stats if granularity == "static" else model


# ---- LLM.int8(): vector-wise INT8 with the outlier features in 16 bits --------------------------------------------
@dataclass
class Int8Stats:
    """What LLM.int8() did in each layer: how many input columns went to the 16-bit path, over all calls."""

    threshold: float
    outlier_columns: dict = field(default_factory=dict)  # layer name -> number of outlier columns, summed over calls
    columns: dict = field(default_factory=dict)  # layer name -> number of input columns, summed over calls

    def outlier_fraction(self, layer: str | None = None) -> float:
        """Fraction of feature dimensions kept in 16 bits (of one layer, or of every call of every layer)."""
        names = [layer] if layer is not None else list(self.columns)
        total = sum(self.columns[name] for name in names)
        return sum(self.outlier_columns[name] for name in names) / max(total, 1)


@contextlib.contextmanager
def llm_int8(model: Any, threshold: float = 6.0, outlier_weights: str = "fp", *,
             roles: tuple[str, ...] | None = None, skip: tuple[str, ...] = ("lm_head",)) -> Iterator[Int8Stats]:
    """Within the block, every chosen linear computes Y = X W^T the LLM.int8() way
    (:func:`qtutor.methods.llm_int8.matmul`: INT8 codes per token and per output channel, INT32 products, and the
    input columns with a value >= ``threshold`` in 16 bits). Yields the outlier statistics."""
    from qtutor.methods import llm_int8 as method

    method.outlier_columns(np.zeros((1, 1), np.float32), threshold)  # threshold <= 0: a clear error, here
    stats = Int8Stats(float(threshold))
    chosen = _targets(model, roles, skip)

    def int8_forward(name: str, module: Any, W: np.ndarray):
        """The layer's forward replaced by the LLM.int8() product: its weight quantized once, no float product."""
        quantized = method.quantize_weight(W)
        bias = getattr(module, "bias", None)
        bias = None if bias is None else bias.detach().float().cpu().numpy()

        def forward(x):
            A = x.detach().float().reshape(-1, x.shape[-1]).cpu().numpy()
            Y = method.matmul(A, W, threshold, outlier_weights, quantized=quantized)
            if bias is not None:
                Y = Y + bias
            outliers = len(method.outlier_columns(A, threshold)) if np.isfinite(threshold) else 0
            stats.outlier_columns[name] = stats.outlier_columns.get(name, 0) + outliers
            stats.columns[name] = stats.columns.get(name, 0) + A.shape[1]
            return _as_tensor_like(Y.reshape(*x.shape[:-1], Y.shape[-1]), x)
        return forward

    for layer in chosen:  # an instance attribute shadows the class's forward; deleting it restores the layer
        layer.module.forward = int8_forward(layer.name, layer.module, get_weight(layer))
    try:
        yield stats
    finally:
        for layer in chosen:
            del layer.module.forward


# ---- the KV cache ----------------------------------------------------------------------------------------------------
def head_dim_of(model: Any) -> int:
    config = model.config
    head_dim = getattr(config, "head_dim", None)
    return int(head_dim or config.hidden_size // config.num_attention_heads)


def fake_quantize_cache(x: np.ndarray, head_dim: int, fmt: str, axis: str, group_size: int | None,
                        sym: bool | None) -> np.ndarray:
    """Quantize-dequantize a key or value projection ``x (batch, tokens, heads * head_dim)``.

    ``axis="token"``: each token of each head gets its own scale over the head's channels (in groups of
    ``group_size`` channels if given). ``axis="channel"``: each channel gets one scale per chunk of ``group_size``
    tokens (the whole sequence when None; the last chunk may be shorter), as KIVI does for keys."""
    from qtutor.methods.kv_cache import fake_quantize

    batch, tokens, width = x.shape
    heads = x.reshape(batch, tokens, width // head_dim, head_dim).transpose(0, 2, 1, 3)  # (batch, heads, tokens, d)
    if axis == "token":
        out = fake_quantize(heads, fmt, "token", group_size, sym)
    else:
        chunk = group_size or tokens
        out = np.concatenate([fake_quantize(heads[:, :, start:start + chunk], fmt, "channel", None, sym)
                              for start in range(0, tokens, chunk)], axis=2)
    return np.asarray(out, dtype=np.float32).transpose(0, 2, 1, 3).reshape(batch, tokens, width)


@contextlib.contextmanager
def quantized_kv_cache(model: Any, fmt: str = "int8", keys: str = "channel", values: str = "token",
                       group_size: int | None = None, token_group: int | None = None,
                       sym: bool | None = None) -> Iterator[Any]:
    """Within the block, the keys and values every attention layer stores are fake-quantized to ``fmt``.

    The hooks sit on the outputs of ``k_proj`` and ``v_proj``: the cache is simulated *before* RoPE, where
    LLM-QAT quantizes it (KIVI quantizes the rotated keys it caches; RoPE mixes channels in pairs, so the two
    choices differ slightly for per-channel keys). ``keys``/``values``: ``"token"`` or ``"channel"``;
    ``group_size`` divides the head dimension (per-token groups of channels), ``token_group`` is the chunk of
    tokens that shares a per-channel scale (the whole window when None: simulated, so a scale may see tokens
    later than the one it quantizes — KIVI keeps the newest tokens in 16 bits until a chunk is full)."""
    for axis in (keys, values):
        if axis not in KV_AXES:
            raise ValueError(f"KV axis {axis!r}: use 'token' (a scale per token) or 'channel' (a scale per channel)")
    formats.get(fmt)
    head_dim = head_dim_of(model)
    if group_size is not None and (group_size <= 0 or head_dim % group_size):
        raise ValueError(f"KV group_size={group_size} does not divide the head dimension {head_dim}; "
                         f"use a divisor of {head_dim} or None (one scale per token and head)")
    if token_group is not None and token_group <= 0:
        raise ValueError(f"token_group={token_group} must be a positive number of tokens, or None")
    projections = [layer for layer in linear_layers(model) if layer.role in ("k", "v")]
    if not projections:
        raise ValueError("no separate k_proj / v_proj layers found: KV-cache simulation needs them "
                         "(a fused qkv projection such as GPT-2's c_attn is not supported)")

    def quantize_output(axis: str):
        groups = group_size if axis == "token" else token_group

        def hook(module, args, output):
            y = output.detach().float().cpu().numpy()
            y = y.reshape(1, *y.shape) if y.ndim == 2 else y
            y_hat = fake_quantize_cache(y, head_dim, fmt, axis, groups, sym).reshape(tuple(output.shape))
            return _as_tensor_like(y_hat, output)
        return hook

    handles = [layer.module.register_forward_hook(quantize_output(keys if layer.role == "k" else values))
               for layer in projections]
    with _hooks(handles):
        yield model

