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


@pytest.mark.parametrize("file_type", ["F32", "F16", "BF16"])
def test_float_files_hold_every_weight_cast_and_read_back_through_our_reader(tiny, tmp_path, file_type):
    """The float files llama.cpp's own quantizer takes as input: every 2-D tensor cast, round to nearest even."""
    import ml_dtypes

    from qtutor.methods.gguf.reader import dequantize_tensor, read_gguf

    model, tokenizer = tiny
    path = tmp_path / f"tiny-{file_type}.gguf"
    summary = export.export_gguf(model, tokenizer, path, mix=file_type, progress=False)
    expected_counts = {"F32": 56} if file_type == "F32" else {file_type: 56 - 13, "F32": 13}  # norms stay F32
    assert summary["counts"] == expected_counts
    cast = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}[file_type]
    ours = export.model_tensors(model)
    read = read_gguf(path)
    for name, tensor in read.tensors.items():
        expected = ours[name] if ours[name].ndim == 1 else ours[name].astype(cast).astype(np.float32)
        np.testing.assert_array_equal(dequantize_tensor(tensor).reshape(expected.shape), expected)
    assert read.metadata["general.file_type"] == {"F32": 0, "F16": 1, "BF16": 32}[file_type]


def test_the_pre_tokenizer_is_named_as_llama_cpp_names_it(tiny):
    assert export.tokenizer_metadata(tiny[1])["pre"] == "default"  # the embedded tokenizer: GPT-2's rule alone
    digits_apart = {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
                                                          {"type": "ByteLevel"}]}
    assert export._pre_tokenizer_name(digits_apart) == "smollm"  # SmolLM2's: every digit cut apart first
