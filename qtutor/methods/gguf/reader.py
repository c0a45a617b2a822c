"""Reading a .gguf file, byte by byte: llama.cpp's one-file model format (metadata, tokenizer and weights).

    gguf_file = read_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")
    gguf_file.metadata["llama.block_count"]              # 30: every hyper-parameter is a key/value pair
    tensor = gguf_file.tensors["blk.0.attn_q.weight"]    # name, shape, ggml type, raw bytes (no copy)
    W = dequantize_tensor(tensor)                        # float32, numpy shape (576, 576)

A GGUF file (spec: ggml's ``docs/gguf.md``) is four parts, one after the other, all little-endian:

    1. header         magic "GGUF" | version: u32 (3) | tensor_count: u64 | metadata_kv_count: u64
    2. metadata       metadata_kv_count times:   key: string | value_type: u32 | value
    3. tensor infos   tensor_count times:   name: string | n_dims: u32 | ne[n_dims]: u64 | ggml_type: u32 | offset: u64
    4. tensor data    zero padding up to a multiple of the alignment (``general.alignment``, default 32), then
                      the bytes of every tensor at  data_start + offset  (each offset a multiple of the alignment)

A *string* is its length (u64) followed by that many UTF-8 bytes, with no terminating zero. A *value* has one of
thirteen types:

    0 uint8   1 int8   2 uint16   3 int16   4 uint32   5 int32   6 float32   7 bool (one byte)   8 string
    9 array (element type: u32 | count: u64 | count values, arrays of arrays allowed)   10 uint64   11 int64
    12 float64

The tokenizer lives in the metadata too (``tokenizer.ggml.tokens``: an array of 49,152 strings for SmolLM2).

Shapes are listed **innermost first**: ggml's ``ne[0]`` is the length of a row, i.e. the number of input features
of a weight. A PyTorch ``Linear(in, out)`` weight of shape (out, in) is stored as ``ne = [in, out]``; its bytes are
the ``out`` rows one after the other, each row a sequence of blocks (``layouts.py``: 32 weights in 20 bytes for
Q4_1), so the numpy shape is ``reversed(ne)`` and a row must hold a whole number of blocks.

The file is memory-mapped: a tensor's ``data`` is a view of the file's bytes, read from disk only when touched.
The dequantizers are qtutor's own (``qtutor.methods.gguf.dequantize``); F32, F16 and BF16 are plain casts.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qtutor.formats.ggml import TYPES

MAGIC = b"GGUF"
VERSIONS = (2, 3)  # version 2 and 3 share this layout (3 added big-endian files, which we refuse)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS

# ggml type id -> (name, weights per block, bytes per block), as in ggml.h / gguf-py's GGML_QUANT_SIZES.
# Every type is listed so that any file parses; the ones qtutor dequantizes are DEQUANTIZABLE below.
GGML_TYPES = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40), 10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110), 22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17), 40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18),
}
FLOAT_TYPES = ("F32", "F16", "BF16")
DEQUANTIZABLE = FLOAT_TYPES + tuple(TYPES)

# metadata value type id -> (name, struct format of one scalar; None for string and array)
VALUE_TYPES = {
    0: ("uint8", "<B"), 1: ("int8", "<b"), 2: ("uint16", "<H"), 3: ("int16", "<h"), 4: ("uint32", "<I"),
    5: ("int32", "<i"), 6: ("float32", "<f"), 7: ("bool", "<?"), 8: ("string", None), 9: ("array", None),
    10: ("uint64", "<Q"), 11: ("int64", "<q"), 12: ("float64", "<d"),
}
STRING, ARRAY = 8, 9


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a GGUF file: where its bytes are and how to read them."""

    name: str
    ne: tuple[int, ...]  # ggml's shape, innermost (row length) first
    type_name: str  # "Q4_1", "F32", ...
    offset: int  # absolute position of the first byte in the file
    data: np.ndarray = field(repr=False)  # uint8 (rows, bytes per row): a view of the memory-mapped file

    @property
    def shape(self) -> tuple[int, ...]:
        """The numpy / PyTorch shape: ``ne`` reversed (a weight's (out_features, in_features))."""
        return tuple(reversed(self.ne))

    @property
    def nbytes(self) -> int:
        return int(self.data.size)

    @property
    def n_weights(self) -> int:
        return int(np.prod(self.ne, dtype=np.int64))


@dataclass
class GGUFFile:
    """A parsed GGUF file: its metadata (key -> Python value), the type of every value, and its tensors."""

    path: Path
    version: int
    alignment: int
    data_start: int  # where part 4, the tensor data, begins
    metadata: dict[str, Any]
    value_types: dict[str, str]  # key -> "uint32", "string", "array[string]", ...
    tensors: dict[str, TensorInfo]  # in file order

    def dequantize(self, name: str) -> np.ndarray:
        if name not in self.tensors:
            raise KeyError(f"{self.path.name} has no tensor {name!r}; it has e.g. "
                           f"{', '.join(list(self.tensors)[:4])} ({len(self.tensors)} in all)")
        return dequantize_tensor(self.tensors[name])


class _Cursor:
    """Reads the file front to back; every read checks that the bytes are there."""

    def __init__(self, buffer: memoryview, path: Path):
        self.buffer, self.path, self.position = buffer, path, 0

    def take(self, n: int, what: str) -> memoryview:
        end = self.position + n
        if n < 0 or end > len(self.buffer):
            raise ValueError(f"{self.path} is truncated: {what} needs {n} bytes at offset {self.position}, but the "
                             f"file ends at {len(self.buffer)}; download or copy the file again")
        view = self.buffer[self.position:end]
        self.position = end
        return view

    def scalar(self, form: str, what: str) -> Any:
        return struct.unpack(form, self.take(struct.calcsize(form), what))[0]

    def string(self, what: str) -> str:
        length = self.scalar("<Q", f"the length of {what}")
        raw = self.take(length, what)
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"{self.path}: {what} is not valid UTF-8 ({error}); the file is corrupt") from None

    def value(self, type_id: int, what: str) -> tuple[Any, str]:
        """(value, its type's name) of a metadata value of type ``type_id``."""
        if type_id not in VALUE_TYPES:
            raise ValueError(f"{self.path}: {what} has value type {type_id}, not one of GGUF's 0..12; "
                             f"the file is corrupt or from a newer GGUF version")
        name, form = VALUE_TYPES[type_id]
        if type_id == STRING:
            return self.string(what), name
        if type_id == ARRAY:
            element_type = self.scalar("<I", f"the element type of {what}")
            count = self.scalar("<Q", f"the length of {what}")
            if element_type in VALUE_TYPES and VALUE_TYPES[element_type][1] is not None:
                # numbers: one frombuffer for the whole array instead of one unpack per element
                element_form = VALUE_TYPES[element_type][1]
                size = struct.calcsize(element_form)
                raw = self.take(count * size, what)
                values = np.frombuffer(raw, dtype=np.dtype(element_form), count=count).tolist()
                return values, f"array[{VALUE_TYPES[element_type][0]}]"
            items = [self.value(element_type, f"element {i} of {what}") for i in range(count)]
            element_name = items[0][1] if items else VALUE_TYPES.get(element_type, ("?",))[0]
            return [item for item, _ in items], f"array[{element_name}]"
        return self.scalar(form, what), name


def read_gguf(path: str | Path) -> GGUFFile:
    """Parse the header, metadata and tensor infos of a .gguf file; tensor bytes stay on disk (memory-mapped)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no such GGUF file: {path}" + (" (it is a directory)" if path.is_dir() else ""))
    size = path.stat().st_size
    if size < 24:
        raise ValueError(f"{path} is truncated: {size} bytes, fewer than the 24 of a GGUF header")
    mapped = np.memmap(path, dtype=np.uint8, mode="r")
    cursor = _Cursor(memoryview(mapped), path)

    # 1. header
    magic = bytes(cursor.take(4, "the magic number"))
    if magic != MAGIC:
        raise ValueError(f"{path} is not a GGUF file: it starts with {magic!r}, not {MAGIC!r}")
    version = cursor.scalar("<I", "the version")
    if version not in VERSIONS:
        if version & 0xFFFF == 0 and version >> 24 in VERSIONS:
            raise ValueError(f"{path} is a big-endian GGUF file; qtutor reads little-endian files only "
                             f"(convert it again with llama.cpp on a little-endian machine)")
        raise ValueError(f"{path}: GGUF version {version} is not supported; qtutor reads versions "
                         f"{', '.join(map(str, VERSIONS))} (convert the model again with a current llama.cpp)")
    tensor_count = cursor.scalar("<Q", "the tensor count")
    kv_count = cursor.scalar("<Q", "the metadata count")

    # 2. metadata
    metadata: dict[str, Any] = {}
    value_types: dict[str, str] = {}
    for index in range(kv_count):
        key = cursor.string(f"metadata key {index}")
        type_id = cursor.scalar("<I", f"the value type of {key!r}")
        metadata[key], value_types[key] = cursor.value(type_id, f"metadata value {key!r}")
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise ValueError(f"{path}: general.alignment = {alignment!r} must be a power of two (32 by default)")

    # 3. tensor infos (positions relative to the data section, which starts after them)
    infos = []
    for index in range(tensor_count):
        name = cursor.string(f"the name of tensor {index}")
        n_dims = cursor.scalar("<I", f"the rank of tensor {name!r}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise ValueError(f"{path}: tensor {name!r} has {n_dims} dimensions; ggml allows 1 to {MAX_DIMS}")
        ne = tuple(cursor.scalar("<Q", f"the shape of tensor {name!r}") for _ in range(n_dims))
        type_id = cursor.scalar("<I", f"the type of tensor {name!r}")
        relative = cursor.scalar("<Q", f"the offset of tensor {name!r}")
        if type_id not in GGML_TYPES:
            raise ValueError(f"{path}: tensor {name!r} has ggml type id {type_id}, which qtutor does not know "
                             f"(a newer llama.cpp type); the known ids are {sorted(GGML_TYPES)}")
        infos.append((name, ne, type_id, relative))

    # 4. tensor data
    data_start = -(-cursor.position // alignment) * alignment
    tensors: dict[str, TensorInfo] = {}
    for name, ne, type_id, relative in infos:
        type_name, block_weights, block_bytes = GGML_TYPES[type_id]
        if relative % alignment:
            raise ValueError(f"{path}: tensor {name!r} starts at offset {relative}, not a multiple of the "
                             f"alignment {alignment}; the file is corrupt")
        if ne[0] % block_weights:
            raise ValueError(f"{path}: tensor {name!r} ({type_name}) has rows of {ne[0]} weights, not a whole "
                             f"number of {block_weights}-weight blocks; the file is corrupt")
        rows = int(np.prod(ne[1:], dtype=np.int64))
        row_bytes = ne[0] // block_weights * block_bytes
        start, end = data_start + relative, data_start + relative + rows * row_bytes
        if end > size:
            raise ValueError(f"{path} is truncated: tensor {name!r} needs bytes {start}..{end}, but the file ends "
                             f"at {size}; download or copy the file again")
        if name in tensors:
            raise ValueError(f"{path}: tensor {name!r} appears twice; the file is corrupt")
        tensors[name] = TensorInfo(name, ne, type_name, start, mapped[start:end].reshape(rows, row_bytes))
    return GGUFFile(path, version, alignment, data_start, metadata, value_types, tensors)


def dequantize_tensor(tensor: TensorInfo) -> np.ndarray:
    """float32 values of a tensor, in its numpy shape (a new array, not a view of the file)."""
    from qtutor.formats.ggml import dequantize

    kind, raw = tensor.type_name, tensor.data
    if kind == "F32":
        values = raw.view("<f4").astype(np.float32)  # astype copies: the result does not pin the file
    elif kind == "F16":
        values = raw.view("<f2").astype(np.float32)
    elif kind == "BF16":
        # bfloat16 is the top half of a float32: put its 16 bits back on top
        values = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
    elif kind in TYPES:
        values = dequantize(raw, kind)
    else:
        raise ValueError(f"tensor {tensor.name!r} is stored as {kind}, which qtutor cannot dequantize; it reads "
                         f"{', '.join(DEQUANTIZABLE)} (re-quantize the model to one of them with llama-quantize)")
    return values.reshape(tensor.shape)


__all__ = ["DEQUANTIZABLE", "GGML_TYPES", "GGUFFile", "TensorInfo", "dequantize_tensor", "read_gguf"]
