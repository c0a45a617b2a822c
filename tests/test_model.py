"""Loading models (embedded, local GPT-2 and OPT directories), walking linears, capturing, swapping weights."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import qtutor as qt  # noqa: E402
from qtutor import model as qm  # noqa: E402


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """Small randomly initialised GPT-2 (Conv1D, transposed weights) and OPT models saved as safetensors."""
    from transformers import GPT2Config, GPT2LMHeadModel, OPTConfig, OPTForCausalLM

    root = tmp_path_factory.mktemp("models")
    tokenizer = qt.data.load_tokenizer()
    torch.manual_seed(0)
    models = {
        "gpt2": GPT2LMHeadModel(GPT2Config(vocab_size=4096, n_positions=128, n_embd=64, n_layer=2, n_head=2,
                                           bos_token_id=0, eos_token_id=0)),
        "opt": OPTForCausalLM(OPTConfig(vocab_size=4096, hidden_size=64, ffn_dim=128, num_hidden_layers=2,
                                        num_attention_heads=2, max_position_embeddings=128, word_embed_proj_dim=64,
                                        bos_token_id=0, eos_token_id=0, pad_token_id=0)),
    }
    for name, model in models.items():
        model.save_pretrained(root / name, safe_serialization=True)
        tokenizer.save_pretrained(root / name)
    return root


def test_the_embedded_model_is_a_6m_llama_with_dimensions_multiple_of_256(tiny):
    model, tokenizer = tiny
    assert type(model).__name__ == "LlamaForCausalLM"
    assert 6.0e6 < sum(p.numel() for p in model.parameters()) < 6.4e6
    layers = qm.linear_layers(model)
    assert [layer.role for layer in layers[:7]] == ["q", "k", "v", "o", "gate", "up", "down"]
    assert all(layer.in_features % 256 == 0 and layer.out_features % 256 == 0 for layer in layers)
    assert tokenizer.vocab_size == model.config.vocab_size == 4096


@pytest.mark.parametrize("kind", ["gpt2", "opt"])
def test_local_directories_of_other_architectures_load_and_walk(saved_models, kind):
    model, _ = qt.load_model(str(saved_models / kind))
    layers = qm.linear_layers(model)
    roles = {layer.role for layer in layers}
    assert {"o", "up", "down", "lm_head"} <= roles and ("qkv" in roles or {"q", "k", "v"} <= roles)
    for layer in layers[:4]:
        W = qm.get_weight(layer)
        assert W.shape == (layer.out_features, layer.in_features)
        qm.set_weight(layer, W * 0.5)
        np.testing.assert_allclose(qm.get_weight(layer), W * 0.5)


def test_gpt2_conv1d_weights_are_presented_as_out_by_in(saved_models):
    model, _ = qt.load_model(str(saved_models / "gpt2"))
    layer = qm.find_layer(model, "transformer.h.0.attn.c_attn")
    assert layer.transposed and layer.shape == (192, 64)
    np.testing.assert_array_equal(qm.get_weight(layer), layer.module.weight.detach().numpy().T)
    x = torch.randn(3, 64)
    np.testing.assert_allclose(layer.module(x).detach().numpy(),
                               x.numpy() @ qm.get_weight(layer).T + layer.module.bias.detach().numpy(), rtol=1e-5,
                               atol=1e-5)


def test_captured_inputs_are_what_the_layer_sees(saved_models):
    model, _ = qt.load_model(str(saved_models / "opt"))
    tokens = np.random.default_rng(0).integers(0, 4096, size=(3, 10))
    name = "model.decoder.layers.1.fc2"
    X = qm.capture_inputs(model, tokens, [name], batch_size=2)[name]
    assert X.shape == (30, 128)
    seen = []
    handle = qm.find_layer(model, name).module.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    with torch.no_grad():  # the same batches as the capture: BLAS sums in a batch-size-dependent order
        for start in (0, 2):
            model(input_ids=torch.from_numpy(tokens[start:start + 2]))
    handle.remove()
    reference = torch.cat([s.reshape(-1, 128) for s in seen]).numpy()
    np.testing.assert_allclose(X, reference, rtol=1e-6, atol=1e-7)


def test_swapped_weights_are_restored_bit_exactly_even_after_an_exception(tiny):
    model, _ = tiny
    layer = qm.linear_layers(model)[0]
    original = layer.module.weight.detach().clone()
    with pytest.raises(RuntimeError, match="boom"):
        with qm.swapped_weights(model, {layer.name: np.zeros(layer.shape, np.float32)}):
            assert float(layer.module.weight.detach().abs().sum()) == 0.0
            raise RuntimeError("boom")
    assert torch.equal(layer.module.weight, original)


def test_an_unknown_model_id_offline_names_the_embedded_default():
    with pytest.raises(qm.loading.ModelNotAvailableError, match=r"load_model\('tiny'\).*local directory|directory"):
        qt.load_model("no-such-org/no-such-model")


def test_pickle_only_and_corrupt_checkpoints_are_refused(tmp_path, saved_models):
    import shutil

    pickled = tmp_path / "pickled"
    shutil.copytree(saved_models / "opt", pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(qm.loading.ModelNotAvailableError, match="pickle files are not loaded"):
        qt.load_model(str(pickled))
    corrupt = tmp_path / "corrupt"
    shutil.copytree(saved_models / "opt", corrupt)
    weights = corrupt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(qm.loading.ModelNotAvailableError, match="truncated or corrupt"):
        qt.load_model(str(corrupt))


def test_the_default_group_size_is_the_formats_when_it_divides_the_rows_else_a_smaller_power_of_two():
    from qtutor import formats
    from qtutor.model.quantize import default_group_size

    int4, nf4, mxfp4 = formats.get("int4"), formats.get("nf4"), formats.get("mxfp4")
    assert default_group_size(int4, [256, 768]) == 128  # the tiny model
    assert default_group_size(int4, [576, 1536]) == 64  # SmolLM2: 576 = 2^6 * 9
    assert default_group_size(int4, [200]) == -1  # 200 = 2^3 * 25: groups of 8 would cost more than they give
    assert default_group_size(nf4, [576]) == 64 and default_group_size(mxfp4, [576]) == 32


def test_blockwise_inputs_equal_a_full_forward_and_follow_the_quantized_blocks_before(tiny):
    """GPTQ's sequential mode: block i's inputs come from blocks < i as they are when block i's turn comes, and
    carrying the hidden states block by block gives what a full forward pass of that model would capture."""
    model, _ = tiny
    calib = qt.data.calibration(n_samples=2, seq_len=64)
    layers = [layer for layer in qm.linear_layers(model) if layer.role != "lm_head"]
    plain = qm.capture_inputs(model, calib, [layer.name for layer in layers])
    with qt.quantize_model(model, "rtn", "int2", 128, layers=[l.name for l in layers if ".layers.0." in l.name],
                           progress=False):
        after_int2_block0 = qm.capture_inputs(model, calib, [layer.name for layer in layers])
    backup = qm.WeightBackup(model)
    try:
        seen = []
        for block, inputs in qm.blockwise_inputs(model, calib, layers):
            seen.append(block)
            expected = plain if block == "model.layers.0" else after_int2_block0
            for name, X in inputs.items():
                np.testing.assert_allclose(X, expected[name], rtol=1e-5, atol=1e-5)
            if block == "model.layers.0":  # quantize it before the next block is fed
                for layer in layers[:7]:
                    W = qm.get_weight(layer)
                    qm.set_weight(layer, qt.quantize_tensor(W, "int2", group_size=128).dequantize())
        assert seen == [f"model.layers.{i}" for i in range(6)]
    finally:
        backup.restore()
