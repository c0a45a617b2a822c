"""The .gguf export: read back with gguf-py's own reader and dequantizer, it is our quantized model."""
from __future__ import annotations

import numpy as np
import pytest

import qtutor as qt
from qtutor.methods import gguf
from qtutor.methods.gguf import export

gguf_py = pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model, tokenizer = qt.load_model("tiny")
    path = tmp_path_factory.mktemp("gguf") / "tiny-Q4_K_M.gguf"
    summary = export.export_gguf(model, tokenizer, path, mix="Q4_K_M", progress=False)
    return model, tokenizer, summary, gguf_py.GGUFReader(str(path))


def test_every_tensor_reads_back_as_our_dequantized_weights(exported):
    model, _, summary, reader = exported
    ours = export.model_tensors(model)
    assert {t.name for t in reader.tensors} == set(ours)
    for tensor in reader.tensors:
        type_name = tensor.tensor_type.name
        assert type_name == summary["types"][tensor.name]
        weights = ours[tensor.name]
        if type_name == "F32":
            np.testing.assert_array_equal(np.asarray(tensor.data).reshape(weights.shape), weights)
            continue
        theirs = gguf_py.quants.dequantize(np.asarray(tensor.data), tensor.tensor_type).reshape(weights.shape)
        np.testing.assert_array_equal(theirs, gguf.dequantize(gguf.quantize(weights, type_name), type_name))


def test_file_size_is_metadata_plus_aligned_tensor_bytes(exported):
    _, _, summary, reader = exported
    padded = sum(-(-int(t.n_bytes) // 32) * 32 for t in reader.tensors[:-1]) + int(reader.tensors[-1].n_bytes)
    assert summary["file_bytes"] == reader.data_offset + padded
    assert summary["tensor_bytes"] == sum(int(t.n_bytes) for t in reader.tensors)


def test_metadata_and_tokenizer_are_what_llama_cpp_needs(exported):
    model, tokenizer, _, reader = exported
    fields = reader.fields

    def scalar(key):
        field = fields[key]
        return field.parts[field.data[0]][0]

    assert bytes(fields["general.architecture"].parts[-1]).decode() == "llama"
    assert scalar("llama.block_count") == model.config.num_hidden_layers
    assert scalar("llama.attention.head_count") == model.config.num_attention_heads
    assert scalar("general.file_type") == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    assert len(fields["tokenizer.ggml.tokens"].data) == len(tokenizer.get_vocab()) == 4096


def test_rope_permutation_pairs_the_halves_of_each_head():
    W = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)  # one head of 8 rows: halves 0-3 and 4-7
    permuted = export.rope_permute(W, n_heads=1)
    np.testing.assert_array_equal(permuted[:, 0], [0, 12, 3, 15, 6, 18, 9, 21])


def test_cli_export_reports_sizes(tmp_path, capsys):
    import json

    from qtutor import cli

    assert cli.main(["export-gguf", "--type", "Q8_0", str(tmp_path / "t.gguf"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"] == {"Q8_0": 43, "F32": 13} and 8.4 < summary["bits_per_weight"] < 8.6
