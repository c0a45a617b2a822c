"""Does qtutor write the file llama.cpp would write? Run llama.cpp's own quantizer (``llama_model_quantize``,
what ``llama-quantize`` calls) and qtutor's export on the same float model, with the same importance matrix,
and compare every tensor's type and bytes (issue #17: "bytes equal ggml's", "bits per weight per mix within 0.01
of llama.cpp's own figures for the same model").

llama.cpp's libraries come prebuilt with node-llama-cpp's npm package (nothing to compile); they are called
here through ctypes. It is a developer's cross-check, not part of the course or of CI:

    npm install --prefix /tmp/llcpp node-llama-cpp@3.22.1          # once; prebuilt binaries from npm
    python tools/llamacpp_quantize.py --node-modules /tmp/llcpp/node_modules --model smollm2 \\
        --mix Q4_K_M IQ4_XS IQ3_S --imatrix-mix IQ2_XXS IQ3_XXS Q2_K

The float model goes to llama.cpp as qtutor's F32 export (the q/k rows already in ggml's order); rows are
quantized one by one, so the thread count does not change the bytes. ``--imatrix-mix`` mixes get an importance
matrix collected by qtutor on the wiki train split (``--calib-samples`` windows of 256 tokens), handed to both.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import qtutor as qt
from qtutor.methods.gguf import mixes, reader
from qtutor.methods.gguf.export import export_gguf

LIBRARIES = "@node-llama-cpp/linux-x64/bins/linux-x64"


class ImatrixEntry(ctypes.Structure):  # llama.h: struct llama_model_imatrix_data
    _fields_ = [("name", ctypes.c_char_p), ("data", ctypes.POINTER(ctypes.c_float)), ("size", ctypes.c_size_t)]


class QuantizeParams(ctypes.Structure):
    """llama_model_quantize_params, as bytes: nthread (int32 at 0), ftype (int32 at 4), imatrix (a pointer at
    24, after two type fields and six flags). Larger than the struct, so the library's defaults fit."""
    _fields_ = [("raw", ctypes.c_ubyte * 128)]

    def set(self, offset: int, value: ctypes._SimpleCData) -> None:
        ctypes.memmove(ctypes.addressof(self) + offset, ctypes.byref(value), ctypes.sizeof(value))


def load_llama(node_modules: Path) -> ctypes.CDLL:
    folder = node_modules / LIBRARIES
    ggml = ctypes.CDLL(str(folder / "libggml.v0.5.0.so"), mode=ctypes.RTLD_GLOBAL)
    ggml.ggml_backend_load_all_from_path(str(folder).encode())
    llama = ctypes.CDLL(str(folder / "libllama.v0.5.0.so"))
    llama.llama_backend_init()
    llama.llama_model_quantize_default_params.restype = QuantizeParams
    llama.llama_model_quantize.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(QuantizeParams)]
    return llama


def llama_cpp_quantize(llama: ctypes.CDLL, source: Path, out: Path, mix: str, importance=None) -> None:
    params = llama.llama_model_quantize_default_params()
    params.set(0, ctypes.c_int32(2))
    params.set(4, ctypes.c_int32(mixes.FTYPES[mix][1]))
    keep = []  # the arrays must outlive the call
    if importance is not None:
        entries = (ImatrixEntry * (len(importance.sums) + 1))()
        for entry, name in zip(entries, importance.sums):
            values = np.ascontiguousarray(importance[name], dtype=np.float32)
            keep.append(values)
            entry.name = name.encode()
            entry.data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            entry.size = values.size
        keep.append(entries)
        params.set(24, ctypes.c_void_p(ctypes.addressof(entries)))
    if llama.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params)) != 0:
        raise RuntimeError(f"llama.cpp could not quantize {source} to {mix} (its log above says why)")


def bits_per_weight(model_file: reader.GGUFFile) -> float:
    tensors = model_file.tensors.values()
    return sum(t.data.nbytes for t in tensors) * 8 / sum(int(np.prod(t.shape)) for t in tensors)


def compare(ours: Path, theirs: Path) -> dict:
    a, b = reader.read_gguf(ours), reader.read_gguf(theirs)
    types = {name: (t.type_name, b.tensors[name].type_name) for name, t in a.tensors.items()}
    other_type = [name for name, (x, y) in types.items() if x != y]
    other_bytes = [name for name, t in a.tensors.items()
                   if name not in other_type and not np.array_equal(t.data, b.tensors[name].data)]
    return {"tensors": len(types), "other_type": other_type[:5], "n_other_type": len(other_type),
            "other_bytes": other_bytes[:5], "n_other_bytes": len(other_bytes),
            "qtutor_bpw": round(bits_per_weight(a), 4), "llama_cpp_bpw": round(bits_per_weight(b), 4),
            "types": mixes.type_counts({name: x for name, (x, _) in types.items()})}


def main() -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--node-modules", type=Path, required=True, help="where node-llama-cpp is installed")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--mix", nargs="*", default=["Q4_K_M"], help="mixes made without an importance matrix")
    parser.add_argument("--imatrix-mix", nargs="*", default=[], help="mixes made with one")
    parser.add_argument("--calib-samples", type=int, default=32)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    llama = load_llama(args.node_modules)
    model, tokenizer = qt.load_model(args.model)
    importance = None
    if args.imatrix_mix:
        from qtutor.model.imatrix import collect

        calib = qt.data.calibration(args.calib_samples, 256, tokenizer=tokenizer)
        importance = collect(model, calib, tokenizer=tokenizer)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        source = work / "f32.gguf"
        export_gguf(model, tokenizer, source, mix="F32", progress=False)
        for mix, weighted in [(m, False) for m in args.mix] + [(m, True) for m in args.imatrix_mix]:
            ours, theirs = work / f"{mix}.qtutor.gguf", work / f"{mix}.llama.gguf"
            start = time.perf_counter()
            export_gguf(model, tokenizer, ours, mix=mix, progress=False, imatrix=importance if weighted else None)
            seconds_qtutor = time.perf_counter() - start
            start = time.perf_counter()
            llama_cpp_quantize(llama, source, theirs, mix, importance if weighted else None)
            seconds_llama = time.perf_counter() - start
            row = {"model": args.model, "mix": mix, "imatrix": weighted, **compare(ours, theirs),
                   "seconds_qtutor": round(seconds_qtutor, 1), "seconds_llama_cpp": round(seconds_llama, 1)}
            print(json.dumps(row), flush=True)
            results.append(row)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
