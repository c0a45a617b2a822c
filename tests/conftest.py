"""Shared test set-up: a fixed seed, the `gpu` marker skipped when no device answers."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing downloads in tests
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_collection_modifyitems(config, items):
    from qtutor.backend import has_gpu

    if has_gpu():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device and CuPy (run on a GPU machine: pytest -m gpu tests/gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def tiny():
    """The embedded model and its tokenizer, loaded once per test process. Tests that quantize it restore it
    (quantize_model, the activation hooks and smooth_model are all context managers)."""
    import qtutor as qt

    return qt.load_model("tiny")


@pytest.fixture
def architectures():
    """Fresh random two-layer GPT-2, OPT and grouped-query Llama models (not the embedded one), with random norm
    weights and biases: a fresh model's 1 and 0 would hide a mistake in folding a scale into them."""
    import torch
    from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, OPTConfig,
                              OPTForCausalLM)

    torch.manual_seed(0)
    models = {
        "gpt2": GPT2LMHeadModel(GPT2Config(vocab_size=4096, n_positions=128, n_embd=64, n_layer=2, n_head=2)),
        "opt": OPTForCausalLM(OPTConfig(vocab_size=4096, hidden_size=64, ffn_dim=128, num_hidden_layers=2,
                                        num_attention_heads=2, max_position_embeddings=128, word_embed_proj_dim=64)),
        "llama_gqa": LlamaForCausalLM(LlamaConfig(vocab_size=4096, hidden_size=64, intermediate_size=128,
                                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                                  max_position_embeddings=128)),
    }
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for model in models.values():
            model.eval()
            for name, parameter in model.named_parameters():
                if parameter.ndim == 1 and name.endswith("weight"):  # norms
                    parameter.copy_(torch.rand(parameter.shape, generator=generator) * 3 + 0.1)
                elif name.endswith("bias"):
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return models
