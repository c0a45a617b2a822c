"""KV-cache fake quantization: axes, groups, error bounds, and why keys prefer per-channel scales."""
from __future__ import annotations

import numpy as np
import pytest

from qtutor.methods import kv_cache


def keys_with_outlier_channels(tokens=128, channels=64, seed=0):
    rng = np.random.default_rng(seed)
    K = rng.normal(size=(2, tokens, channels)).astype(np.float32)
    K[..., [3, 17]] *= 25.0  # KIVI's observation: a few key channels are large in every token
    return K


def test_per_token_error_is_within_half_a_step_of_each_tokens_scale():
    K = keys_with_outlier_channels()
    K_hat = kv_cache.fake_quantize(K, "int8", axis="token", sym=True)
    step = np.abs(K).max(axis=-1, keepdims=True) / 127
    assert np.all(np.abs(K_hat - K) <= step / 2 * (1 + 1e-3) + 1e-7)


def test_keys_with_outlier_channels_prefer_per_channel_scales_at_low_bits():
    K = keys_with_outlier_channels()
    per_token = np.mean((kv_cache.fake_quantize(K, "int4", axis="token") - K) ** 2)
    per_channel = np.mean((kv_cache.fake_quantize(K, "int4", axis="channel") - K) ** 2)
    assert per_channel < per_token / 2


def test_groups_must_divide_the_head_dimension():
    K = keys_with_outlier_channels(channels=64)
    assert kv_cache.fake_quantize(K, "int4", axis="token", group_size=32).shape == K.shape
    with pytest.raises(ValueError, match="group_size=48 does not divide the 64 channels"):
        kv_cache.fake_quantize(K, "int4", axis="token", group_size=48)
    with pytest.raises(ValueError, match="axis="):
        kv_cache.fake_quantize(K, "int4", axis="head")


def test_smaller_groups_lower_the_error():
    K = keys_with_outlier_channels()
    errors = [np.mean((kv_cache.fake_quantize(K, "int4", "token", g) - K) ** 2) for g in (None, 32, 16, 8)]
    assert errors == sorted(errors, reverse=True)


def test_bits_per_element_count_the_scales():
    assert kv_cache.kv_bits_per_element("int4", 128, sym=True) == 4 + 16 / 128
    assert kv_cache.kv_bits_per_element("int8", 64, sym=False) == 8 + 24 / 64


def test_evaluate_passes_the_chunk_of_tokens_per_key_scale_to_the_cache():
    import qtutor as qt
    from qtutor.eval.sweep import evaluate

    model, tokenizer = qt.load_model("tiny")
    window = dict(ctx=64, stride=64, max_tokens=256, kv_format="int2", kv_keys="channel")
    whole = evaluate(model, tokenizer, None, **window)
    chunked = evaluate(model, tokenizer, None, kv_token_group=16, **window)
    assert whole["kv_token_group"] is None and chunked["kv_token_group"] == 16
    assert chunked["ppl"] != whole["ppl"]  # a scale per 16 tokens is not the window's one scale per channel
    with pytest.raises(ValueError, match="token_group"):
        evaluate(model, tokenizer, None, kv_token_group=0, **window)
