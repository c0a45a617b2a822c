"""The importance matrix: collected from a model as llama-imatrix does, saved and read back in llama.cpp's GGUF
format, checked against the model it is used with, and used by the mixes (the K-quants' bytes with an imatrix
are checked against ggml's in tests/test_gguf.py)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import qtutor as qt  # noqa: E402
from qtutor.formats import ggml  # noqa: E402
from qtutor.methods.gguf import imatrix as gguf_imatrix  # noqa: E402
from qtutor.methods.gguf.apply import apply_mix  # noqa: E402
from qtutor.metrics import relative_output_error  # noqa: E402
from qtutor.model import imatrix  # noqa: E402


@pytest.fixture(scope="module")
def collected(tiny):
    model, _ = tiny
    return imatrix.collect(model, qt.data.calibration(n_samples=4, seq_len=64))


def test_each_entry_is_the_mean_squared_input_of_its_columns(tiny, collected):
    model, _ = tiny
    calib = qt.data.calibration(n_samples=4, seq_len=64)
    X = qt.model.capture_inputs(model, calib, ["model.layers.1.mlp.down_proj"])["model.layers.1.mlp.down_proj"]
    np.testing.assert_allclose(collected["blk.1.ffn_down.weight"], (X.astype(np.float64) ** 2).mean(axis=0), rtol=1e-5)
    assert collected.counts["blk.1.ffn_down.weight"] == 4 * 64
    assert "output.weight" not in collected and len(collected.sums) == 7 * model.config.num_hidden_layers


def test_the_file_round_trips_in_llama_cpp_s_format(collected, tmp_path):
    import gguf

    path = collected.save(tmp_path / "tiny.imatrix.gguf")
    back = gguf_imatrix.load(path)
    assert set(back.sums) == set(collected.sums) and back.chunk_size == 64 and back.chunk_count == 4
    for name in collected.sums:
        np.testing.assert_array_equal(back[name], collected[name])
    oracle = gguf.GGUFReader(path)  # llama.cpp's own reader sees the keys and tensor pairs llama-quantize reads
    assert oracle.fields["general.type"].contents() == "imatrix"
    names = {tensor.name for tensor in oracle.tensors}
    assert {"blk.0.attn_q.weight.in_sum2", "blk.0.attn_q.weight.counts"} <= names


def test_a_file_of_another_model_or_another_kind_is_refused(tiny, collected, tmp_path):
    model, _ = tiny
    other = gguf_imatrix.ImportanceMatrix({"blk.0.attn_q.weight": np.ones(7, np.float32)}, {"blk.0.attn_q.weight": 3})
    with pytest.raises(ValueError, match="another model"):
        apply_mix(model, "Q4_K_M", imatrix=other)
    from qtutor.methods.gguf.export import export_gguf

    model_file = tmp_path / "tiny-Q8_0.gguf"
    export_gguf(model, tiny[1], model_file, mix="Q8_0", progress=False)
    with pytest.raises(ValueError, match="not an importance matrix"):
        gguf_imatrix.load(model_file)
    with pytest.raises(ValueError, match="finite and >= 0"):
        gguf_imatrix.check_values([1.0, -2.0])


def test_with_the_imatrix_the_k_quants_keep_a_layer_s_output_closer_on_held_out_text(tiny, collected):
    """Measured on the test split (not the calibration text): the weighted fit's output error is 0.74x (Q2_K),
    0.84x (Q3_K), 0.88x (Q4_K) of the plain one's."""
    model, _ = tiny
    name = "model.layers.2.mlp.down_proj"
    X = qt.model.capture_inputs(model, qt.data.tokens("test")[:4096].reshape(16, 256), [name])[name]
    W = qt.model.get_weight(qt.model.find_layer(model, name))
    for kind, bound in (("Q2_K", 0.8), ("Q3_K", 0.92), ("Q4_K", 0.95)):
        plain = ggml.dequantize(ggml.quantize(W, kind), kind, W.shape)
        weighted = ggml.dequantize(ggml.quantize(W, kind, collected["blk.2.ffn_down.weight"]), kind, W.shape)
        assert relative_output_error(W, weighted, X) < bound * relative_output_error(W, plain, X), kind


def test_the_mix_uses_the_imatrix_and_restores_the_model(tiny, collected):
    model, _ = tiny
    before = qt.model.get_weight(qt.model.find_layer(model, "model.layers.0.mlp.down_proj"))
    with apply_mix(model, "Q4_K_M") as plain:
        W_plain = qt.model.get_weight(qt.model.find_layer(model, "model.layers.0.mlp.down_proj"))
    with apply_mix(model, "Q4_K_M", imatrix=collected) as weighted:
        W_weighted = qt.model.get_weight(qt.model.find_layer(model, "model.layers.0.mlp.down_proj"))
    assert plain.types == weighted.types and not np.array_equal(W_plain, W_weighted)
    np.testing.assert_array_equal(qt.model.get_weight(qt.model.find_layer(model, "model.layers.0.mlp.down_proj")),
                                  before)


def test_calibrating_on_the_evaluation_text_is_flagged():
    test_text = qt.data.tokens("test")[:4 * 64].reshape(4, 64)
    with pytest.warns(UserWarning, match="evaluation text"):
        assert imatrix.warn_if_evaluation_text(test_text)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not imatrix.warn_if_evaluation_text(qt.data.calibration(n_samples=4, seq_len=64))
