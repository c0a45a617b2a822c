"""Measure the embedded model and write qtutor/zoo/MODEL_CARD.md (every figure in it comes from this script).

    python tools/model_card.py            # about 10 minutes on 2 CPU cores

Perplexities are on the full valid and test splits, ctx 256, stride 128 (qt.perplexity's defaults). The
quantized variants quantize the 42 linear layers (the tied embedding/output stays float32); GPTQ uses 32
calibration windows of 256 tokens from the train split.
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np

import qtutor as qt
from qtutor.eval.outliers import outlier_table
from qtutor.eval.sweep import TOUR, evaluate
from qtutor.zoo.train import CONFIG, MODEL_DIR

VARIANTS = TOUR[1:]  # label, method, format, group size, sym: the rows of `qtutor tour` after FP32
GPTQ = {"INT4 g{g} asym", "INT4 per-channel", "INT3 g{g}", "INT2 g{g}"}


def main() -> None:
    model, tokenizer = qt.load_model("tiny")
    log = json.loads((MODEL_DIR / "training_log.json").read_text())
    sizes = qt.data.split_sizes()
    started = time.time()
    fp32 = {split: qt.perplexity(model, tokenizer, split, progress=False) for split in ("valid", "test", "news")}
    ppl_seconds = time.time() - started
    calib = qt.data.calibration(32, 256)
    rows = []
    for label, method, fmt, group, sym in VARIANTS:
        point = evaluate(model, tokenizer, method, fmt, group, sym, baseline=fp32["test"])
        if label in GPTQ:
            gptq = evaluate(model, tokenizer, "gptq", fmt, group, sym, calib=calib, baseline=fp32["test"])
            point["gptq_ppl"], point["gptq_delta_pct"], point["gptq_seconds"] = gptq["ppl"], gptq["delta_pct"], gptq["seconds"]
        rows.append({"label": label.format(g=point["group_size"]), **point})
        print(json.dumps(rows[-1]), flush=True)
    outliers = outlier_table(model, qt.data.calibration(16, 256))
    write_card(log, sizes, fp32, ppl_seconds, rows, outliers)


def write_card(log, sizes, fp32, ppl_seconds, rows, outliers) -> None:
    by_role: dict[str, list[float]] = {}
    for row in outliers:
        by_role.setdefault(row["layer"].split(".")[-1], []).append(row["ratio"])
    best = log["best"]
    words = log["command"].split()  # "python -m qtutor.zoo.train model --lr 0.001 --warmup 30 ..."
    args = {word[2:]: value for word, value in zip(words, words[1:]) if word.startswith("--")}
    lines = [
        "# Model card: qtutor \"tiny\"",
        "",
        "A small Llama trained from scratch for the course, so that every lesson runs offline on a laptop CPU.",
        "It is a teaching instrument, not a useful language model: it writes fluent-looking nonsense.",
        "",
        "## Architecture",
        "",
        "`transformers.LlamaForCausalLM`: RMSNorm, rotary position embeddings, SwiGLU MLP, tied input/output embeddings.",
        "",
        "| | |", "|---|---|",
        *[f"| {key} | {value} |" for key, value in CONFIG.items()],
        f"| parameters | {sum(p.numel() for p in qt.load_model('tiny')[0].parameters()):,} |",
        "",
        "Every weight dimension is a multiple of 256, so GGUF's K-quants apply to every tensor.",
        "",
        "## Data",
        "",
        "The shortened English Wikipedia dump inside the `gensim` wheel (markup stripped with `mwparserfromhell`,",
        "redirects, tables and reference lists dropped), split by article: articles 0, 20, 40, ... test; 10, 30, 50, ...",
        "valid; the rest train. Out-of-domain: the news text `lee_background.cor` from the same folder.",
        "Tokenizer: byte-level BPE, 4096 tokens, trained on the train split (`qtutor/zoo/tokenizer.json`).",
        "",
        "| split | articles | characters | tokens |", "|---|---|---|---|",
        *[f"| {split} | {s['articles'] or '-'} | {s['characters']:,} | {s['tokens']:,} |" for split, s in sizes.items()],
        "",
        "## Training",
        "",
        f"Command: `{log['command']}` (seed {log['seed']}, {log['threads']} threads, float32).",
        f"Machine: 2 CPU cores (AMD EPYC, AVX2, no bf16 instructions), torch {log['torch']}.",
        f"{log['steps']} steps of {log['tokens_per_step']:,} tokens ({log['tokens_seen']:,} tokens, "
        f"{log['tokens_seen'] / sizes['train']['tokens']:.1f} passes over the train split) in "
        f"{log['seconds'] / 60:.1f} minutes ({log['tokens_per_second']:,.0f} tokens/s).",
        f"AdamW (lr {args['lr']}, betas 0.9/0.95, weight decay 0.1), {args['warmup']} warm-up steps then cosine decay "
        "to 10 %, gradient clipping 1.0,",
        f"attention dropout {args.get('attention-dropout', '0.1')} during training (0 in the saved config). The "
        "checkpoint with the best valid",
        f"perplexity is kept: step {best['step']} (valid perplexity {best['valid_ppl']} measured during training on",
        "non-overlapping windows of 256).",
        "",
        "## Perplexity",
        "",
        f"`qt.perplexity(model, tokenizer, split)`: sliding windows of 256 tokens, stride 128, every token but the",
        f"first scored once (all three splits took {ppl_seconds:.0f} s on 2 cores).",
        "",
        "| split | perplexity |", "|---|---|",
        *[f"| {split} | {value:.2f} |" for split, value in fp32.items()],
        "",
        "## Quantization (measured by `tools/model_card.py`)",
        "",
        "Test-split perplexity with the 42 linear layers quantized (the tied embedding stays float32; sizes count",
        "those layers only, scales and zero points included). GPTQ: 32 calibration windows of 256 train tokens,",
        "1 % dampening, blocks of 128, no act-order.",
        "",
        "| variant | bits/weight | MiB | RTN perplexity | RTN Δ | GPTQ perplexity | GPTQ Δ |",
        "|---|---|---|---|---|---|---|",
        f"| FP32 | 32 | {5111808 * 4 / 2**20:.2f} | {fp32['test']:.2f} | – | | |",
    ]
    for row in rows:
        gptq = (f"{row['gptq_ppl']:.2f} | {row['gptq_delta_pct']:+.1f} %" if "gptq_ppl" in row else " | ")
        lines.append(f"| {row['label']} | {row['bits_per_weight']:.3f} | {row['bytes'] / 2**20:.2f} | {row['ppl']:.2f} | "
                     f"{row['delta_pct']:+.1f} % | {gptq} |")
    lines += [
        "",
        "## Activation outliers",
        "",
        "Per linear layer, the ratio of the largest input channel's peak |activation| to the median channel's peak,",
        "over 16 × 256 calibration tokens (about 1-3 means no outlier channels; models of billions of parameters",
        "reach 20-100 in their attention inputs):",
        "",
        "| inputs of | min | median | max |", "|---|---|---|---|",
        *[f"| {role} | {min(v):.1f} | {float(np.median(v)):.1f} | {max(v):.1f} |" for role, v in sorted(by_role.items())],
        "",
        "The attention and MLP inputs (after RMSNorm) are tame. The inputs of `down_proj` (the SwiGLU product) carry",
        "a few channels far above the rest: that is where this model's outliers are. The mechanisms of LLM.int8()",
        "and SmoothQuant that need strong outliers in attention inputs are shown on labelled synthetic layers.",
        "",
        f"_Written by `python tools/model_card.py` on {time.strftime('%Y-%m-%d')}, {platform.python_version()}._",
        "",
    ]
    (MODEL_DIR.parent / "MODEL_CARD.md").write_text("\n".join(lines))
    print("wrote", MODEL_DIR.parent / "MODEL_CARD.md")


if __name__ == "__main__":
    main()
