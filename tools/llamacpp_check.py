"""Does llama.cpp agree with qtutor? Export a GGUF mix of a model with qtutor, let llama.cpp score the same
tokens in the same windows, and compare token by token with qtutor's perplexity of the same mix (issue #14:
"the exported Q4_K_M evaluated by llama.cpp agrees with qtutor's perplexity of the same mix within 0.5 %").

llama.cpp runs through node-llama-cpp, whose npm package ships llama.cpp's prebuilt CPU libraries (nothing to
compile). It is a developer's cross-check, not part of the course or of CI:

    npm install --prefix /tmp/llcpp node-llama-cpp@3.22.1          # once; prebuilt binaries from npm
    python tools/llamacpp_check.py --node-modules /tmp/llcpp/node_modules --mix Q4_K_M --tokens 4096

It also scores the model's own file as llama.cpp reads it (SmolLM2's Q4_1), the baseline of the comparison:
llama.cpp's CPU kernels round the *activations* to 8 bits for their dot products (Q8_0 / Q8_K), which qtutor,
computing in float32, does not, so the two differ by that rounding even on the same weights.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

import qtutor as qt
from qtutor.eval.perplexity import score, window_plan
from qtutor.methods.gguf.export import export_gguf
from qtutor.model.gguf_model import gguf_path

ROOT = Path(__file__).resolve().parents[1]


def llama_cpp_nll(gguf: Path, ids: np.ndarray, ctx: int, stride: int, node_modules: Path, work: Path) -> np.ndarray:
    plan = work / "plan.json"
    windows = window_plan(len(ids), ctx, stride)
    plan.write_text(json.dumps({"ids": [int(i) for i in ids], "ctx": ctx, "windows": windows}))
    out = work / f"{gguf.stem}.nll.json"
    script = work / "llamacpp_nll.mjs"  # below node_modules' folder: node finds node-llama-cpp from there
    script.write_text((ROOT / "tools" / "llamacpp_nll.mjs").read_text())
    subprocess.run(["node", str(script), str(gguf), str(plan), str(out)], check=True, cwd=work)
    return np.asarray(json.loads(out.read_text())["nll"])


def paired(nll_llama: np.ndarray, nll_qtutor: np.ndarray) -> dict:
    """llama.cpp's perplexity over qtutor's on the same tokens: change in percent and its paired standard error."""
    difference = nll_llama - nll_qtutor
    ratio = float(np.exp(difference.mean()))
    return {"llama_cpp_ppl": float(np.exp(nll_llama.mean())), "qtutor_ppl": float(np.exp(nll_qtutor.mean())),
            "delta_pct": 100 * (ratio - 1),
            "delta_pct_stderr": 100 * ratio * difference.std(ddof=1) / np.sqrt(difference.size),
            "max_abs_nll_difference": float(np.abs(difference).max())}


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--node-modules", type=Path, required=True, help="where node-llama-cpp is installed")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--mix", default="Q4_K_M")
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--stride", type=int, default=256)
    parser.add_argument("--imatrix", action="store_true", help="weight the mix by an importance matrix from 32 "
                        "windows of the wiki train split (the IQ1/IQ2 mixes and IQ3_XXS need one)")
    args = parser.parse_args()
    model, tokenizer = qt.load_model(args.model)
    importance = None
    if args.imatrix:
        from qtutor.model.imatrix import collect

        importance = collect(model, qt.data.calibration(32, 256, tokenizer=tokenizer), tokenizer=tokenizer)
    ids = qt.data.tokens("test", tokenizer)[: args.tokens]
    window = dict(tokens=ids, ctx=args.ctx, stride=args.stride, progress=False)
    result = {"model": args.model, "mix": args.mix, "imatrix": args.imatrix, "tokens": int(len(ids)) - 1, "ctx": args.ctx,
              "stride": args.stride}
    with tempfile.TemporaryDirectory(dir=args.node_modules.parent) as folder:
        work = Path(folder)
        own_file = gguf_path(args.model)
        theirs = llama_cpp_nll(own_file, ids, args.ctx, args.stride, args.node_modules, work)
        result["own_file"] = {"file": own_file.name, **paired(theirs, score(model, tokenizer, **window).nll)}
        exported = work / f"{args.model}.{args.mix}.gguf"
        export_gguf(model, tokenizer, exported, mix=args.mix, progress=False, imatrix=importance)  # export-gguf's
        with qt.quantize_weights(model, "gguf", args.mix, progress=False, imatrix=importance):
            ours = score(model, tokenizer, **window).nll
        theirs = llama_cpp_nll(exported, ids, args.ctx, args.stride, args.node_modules, work)
        result["exported_mix"] = {"file": exported.name, "bytes": exported.stat().st_size, **paired(theirs, ours)}
    for key in ("own_file", "exported_mix"):
        row = result[key]
        print(f"{row['file']}: llama.cpp {row['llama_cpp_ppl']:.3f}, qtutor {row['qtutor_ppl']:.3f}: "
              f"{row['delta_pct']:+.2f} % +- {row['delta_pct_stderr']:.2f} (paired, {result['tokens']} tokens)")
    return result


if __name__ == "__main__":
    print(json.dumps(main()))
