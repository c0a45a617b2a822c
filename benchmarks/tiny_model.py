"""The course's CPU budgets on the embedded model (issue targets; ratios and seconds printed, never asserted):

* perplexity of the full test split (ctx 256, stride 128) within 60 s on 2 cores;
* GPTQ (INT4 g128, 32 calibration samples) of every linear layer within 60 s on 2 cores, compared with RTN.

    python benchmarks/tiny_model.py
"""
from __future__ import annotations

import json
import time

import qtutor as qt
from qtutor.methods import declaration


def main() -> dict:
    model, tokenizer = qt.load_model("tiny")
    started = time.perf_counter()
    ppl = qt.perplexity(model, tokenizer, "test", ctx=256, stride=128, progress=False)
    ppl_seconds = time.perf_counter() - started
    tokens = len(qt.data.tokens("test"))
    calib = qt.data.calibration(32, 256)
    timings = {}
    for method in ("rtn", "gptq"):
        started = time.perf_counter()
        report = qt.quantize_model(model, method, "int4", 128, calib=calib if declaration(method).calibration else None,
                                   progress=False)
        timings[method] = time.perf_counter() - started
        report.restore()
    result = {"benchmark": "tiny_model", "test_tokens": tokens, "test_ppl": ppl, "perplexity_s": ppl_seconds,
              "perplexity_tokens_per_s": tokens / ppl_seconds, "rtn_int4_g128_s": timings["rtn"],
              "gptq_int4_g128_s": timings["gptq"], "gptq_over_rtn": timings["gptq"] / timings["rtn"]}
    print(f"perplexity of the test split ({tokens} tokens): {ppl:.2f} in {ppl_seconds:.1f} s (target <= 60 s)")
    print(f"GPTQ INT4 g128, all linear layers: {timings['gptq']:.1f} s (target <= 60 s); RTN {timings['rtn']:.2f} s")
    return result


if __name__ == "__main__":
    print(json.dumps(main()))
