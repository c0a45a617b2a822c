"""KV-cache quantization: store the attention keys and values in 8, 4 or 2 bits.

During generation every layer keeps the keys K and values V of all previous tokens: 2 x layers x kv_heads x
head_dim x context numbers, which at long context outweighs the (quantized) weights. Quantizing the cache
shrinks it; the question is along which axis to put the scales.

* Per token (LLM-QAT, Liu et al. 2023, arXiv:2305.17888): each new token's K and V get their own scale(s) over
  the channel axis, optionally in groups of ``group_size`` channels. Natural for streaming: a token is
  quantized once, when it arrives.
* Per channel (KIVI, Liu et al. 2024, arXiv:2402.02750): keys have a few *channels* with large magnitude
  across all tokens (the same outlier-feature pattern as activations), so one scale per channel over a group
  of tokens fits keys better; values have no such channels, and their errors are averaged by the attention
  weights, so values stay per token. KIVI: keys per channel, values per token.

All quantizers here are fake-quant (quantize then dequantize) on arrays of shape (..., tokens, channels), with
the integer formats of :mod:`qtutor.formats` (asymmetric by default, as KIVI; LLM-QAT uses symmetric) or FP8.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from qtutor import formats
from qtutor.backend import array_namespace

AXES = ("token", "channel")


def fake_quantize(x: Any, fmt: str = "int8", axis: str = "token", group_size: int | None = None,
                  sym: bool | None = None) -> Any:
    """Quantize-dequantize ``x (..., tokens, channels)``.

    ``axis="token"``: one scale per token over its channels (in groups of ``group_size`` channels if given,
    which must divide the channel count, e.g. the head dimension). ``axis="channel"``: one scale per channel over
    the tokens (in groups of ``group_size`` tokens if given: KIVI quantizes keys in chunks of tokens)."""
    if axis not in AXES:
        raise ValueError(f"axis={axis!r}: use 'token' (a scale per token) or 'channel' (a scale per channel)")
    fmt = formats.get(fmt)
    xp = array_namespace(x)
    x = xp.asarray(x, dtype=np.float32)
    if x.ndim < 2:
        raise ValueError(f"expected (..., tokens, channels), got shape {tuple(x.shape)}")
    if axis == "channel":
        return xp.swapaxes(fake_quantize(xp.swapaxes(x, -1, -2), fmt.name, "token", group_size, sym), -1, -2)
    channels = x.shape[-1]
    if group_size is not None and (group_size <= 0 or channels % group_size):
        raise ValueError(f"KV group_size={group_size} does not divide the {channels} channels (head_dim); "
                         f"use a divisor of {channels} or None (one scale per token)")
    q = fmt.encode(xp.ascontiguousarray(x), group_size=group_size or -1, sym=sym)
    return q.dequantize().reshape(x.shape)


def kv_bits_per_element(fmt: str = "int4", group_size: int | None = 128, sym: bool | None = None) -> float:
    """Bits per cached number, scales and zero points included (a float16 scale per group)."""
    f = formats.get(fmt)
    return f.bits_per_weight((1, group_size or 128), group_size=group_size or -1, sym=sym)
