"""Scaling groups (qtutor.model.scaling): which channels can be rescaled for free, and that folding is free."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import qtutor as qt  # noqa: E402
from qtutor.model import call_again, capture_calls  # noqa: E402
from qtutor.model.scaling import ScaledModel, scaling_groups  # noqa: E402


def logits(model, tokens):
    with torch.no_grad():
        return model(input_ids=torch.as_tensor(np.asarray(tokens)), use_cache=False).logits.float().numpy()


def test_a_llama_block_has_four_groups_and_the_norms_two(tiny):
    model, _ = tiny
    groups = scaling_groups(model)
    assert len(groups) == 24
    block = [group for group in groups if group.block == "model.layers.2"]
    assert {group.source.split(".", 3)[-1]: group.readers for group in block} == {
        "input_layernorm": tuple(f"model.layers.2.self_attn.{p}_proj" for p in "qkv"),
        "self_attn.v_proj": ("model.layers.2.self_attn.o_proj",),
        "post_attention_layernorm": ("model.layers.2.mlp.gate_proj", "model.layers.2.mlp.up_proj"),
        "mlp.up_proj": ("model.layers.2.mlp.down_proj",)}
    assert {group.inspect for group in block} == {"model.layers.2.self_attn", "model.layers.2.self_attn.o_proj",
                                                  "model.layers.2.mlp", "model.layers.2.mlp.down_proj"}
    norms = scaling_groups(model, linear_sources=False)
    assert len(norms) == 12 and not any(group.source_is_linear for group in norms)


def test_grouped_query_attention_has_no_v_to_o_group(architectures):
    sources = [group.source for group in scaling_groups(architectures["llama_gqa"])]
    assert not any(source.endswith("v_proj") for source in sources)  # v_proj has half o_proj's inputs
    assert sum(source.endswith("up_proj") for source in sources) == 2


@pytest.mark.parametrize("kind", ["tiny", "gpt2", "opt", "llama_gqa"])
def test_any_positive_scales_leave_the_float_model_unchanged_and_restore_exactly(tiny, architectures, kind):
    model = tiny[0] if kind == "tiny" else architectures[kind]
    tokens = qt.data.calibration(n_samples=2, seq_len=64)
    before = logits(model, tokens)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    rng = np.random.default_rng(3)
    groups = scaling_groups(model)
    assert len(groups) == {"tiny": 24, "gpt2": 4, "opt": 8, "llama_gqa": 6}[kind]
    with ScaledModel(model) as scaled:
        for group in groups:
            width = dict(model.named_modules())[group.readers[0]]
            width = width.in_features if hasattr(width, "in_features") else width.weight.shape[0]
            scaled.apply(group, np.exp(rng.normal(0, 1, width)).astype(np.float32))
        changed = any(not torch.equal(value, state[key]) for key, value in model.state_dict().items())
        after = logits(model, tokens)
    assert changed
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4 * np.abs(before).max())
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_recorded_calls_replay_to_the_same_outputs_and_stop_early(tiny):
    model, _ = tiny
    tokens = qt.data.calibration(n_samples=3, seq_len=32)
    names = ["model.layers.1.self_attn", "model.layers.1.mlp.down_proj", "model.layers.4.mlp"]
    calls = capture_calls(model, tokens, names, batch_size=2)
    assert [len(calls[name]) for name in names] == [2, 2, 2]  # two batches
    modules = dict(model.named_modules())
    for name in names:
        recorded = np.concatenate([out.float().reshape(-1, out.shape[-1]).numpy() for *_, out in calls[name]])
        np.testing.assert_array_equal(call_again(modules[name], calls[name]), recorded)
    stopped = capture_calls(model, tokens, names, stop_after="model.layers.1")
    assert len(stopped[names[0]]) == 1 and stopped[names[2]] == []  # block 4 never ran
    with pytest.raises(KeyError, match="no module called"):
        capture_calls(model, tokens, ["model.layers.9.mlp"])


def test_opt_scales_fc1_into_fc2_only_through_a_relu(architectures):
    from transformers import OPTConfig, OPTForCausalLM

    sources = [group.source for group in scaling_groups(architectures["opt"])]
    assert sum(source.endswith("fc1") for source in sources) == 2  # llm-awq's fc1 -> fc2, one per block
    gelu = OPTForCausalLM(OPTConfig(vocab_size=256, hidden_size=32, ffn_dim=64, num_hidden_layers=1,
                                    num_attention_heads=2, word_embed_proj_dim=32, activation_function="gelu"))
    assert not any(group.source.endswith("fc1") for group in scaling_groups(gelu))  # gelu(x / s) != gelu(x) / s
