"""The ``qtutor`` command: the course's numbers from a terminal.

    qtutor formats                     every number format: bits, bits per weight, range, NaN/Inf
    qtutor tour                        the embedded model's perplexity and size at FP32, INT8, INT4 g128, ...
                                       (on the first 8192 test tokens: about a minute on 2 CPU cores)
    qtutor ppl --method rtn --format int4 --group-size 128
    qtutor sweep --methods rtn,gptq --formats int2,int3,int4,int8 --group-sizes -1,128
    qtutor export-gguf --type Q4_K_M out.gguf
    qtutor lab                         JupyterLab at the course

Every command takes ``--json`` and then prints exactly one JSON object on stdout (progress goes to stderr).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

COMMANDS: dict[str, Callable[[argparse.Namespace], dict]] = {}


def command(name: str):
    def register(function: Callable[[argparse.Namespace], dict]):
        COMMANDS[name] = function
        return function

    return register


def print_table(rows: list[dict], columns: list[str] | None = None, file=None) -> None:
    """A plain fixed-width table (no dependency) of a list of dicts."""
    if not rows:
        return
    file = file or sys.stdout
    columns = columns or list(rows[0])
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)), file=file)
    print("  ".join("-" * w for w in widths), file=file)
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)), file=file)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return str(value)


@command("formats")
def formats_command(args: argparse.Namespace) -> dict:
    """Table of every number format: element bits, bits per weight at its usual granularity, range."""
    from qtutor import formats

    rows = []
    for name in formats.names():
        fmt = formats.get(name)
        group = fmt.default_group_size if fmt.default_group_size is not None else (128 if fmt.family == "integer" else None)
        if fmt.family == "minifloat" and fmt.bits >= 16:
            group = None
        granularity = {None: "cast", 0: "tensor", -1: "channel"}.get(group, f"g{group}")
        rows.append({
            "format": name,
            "family": fmt.family,
            "bits": fmt.bits,
            "granularity": granularity,
            "bits_per_weight": round(fmt.bits_per_weight((4096, 4096), group_size=group), 4),
            "max": fmt.max_value,
            "levels": int(len(fmt.grid)),
            "nan": fmt.has_nan,
            "inf": fmt.has_inf,
            "description": fmt.description,
        })
    if not args.json:
        print_table(rows)
        print("\nbits_per_weight: for a 4096 x 4096 weight at the granularity shown, scales and zero points included.")
    return {"formats": rows}


def _group_size(text: str | None) -> Any:
    if text is None or text == "default":
        return "default"
    if text.lower() in ("none", "cast"):
        return None
    return int(text)


def _sym(text: str | None) -> bool | None:
    return None if text is None else {"sym": True, "asym": False, "true": True, "false": False}[text.lower()]


def _load(args: argparse.Namespace):
    import qtutor as qt

    return qt.load_model(args.model)


def _calibration(args: argparse.Namespace, method: str):
    from qtutor import data
    from qtutor.eval.sweep import NEEDS_CALIBRATION

    if method not in NEEDS_CALIBRATION:
        return None
    return data.calibration(n_samples=args.calib_samples, seq_len=256, source=args.calib_source)


def _runtime(args: argparse.Namespace) -> dict:
    """What is quantized at run time, and the options of SmoothQuant and LLM.int8()."""
    return dict(act_format=args.act_format, kv_format=args.kv_format, kv_keys=args.kv_keys,
                kv_values=args.kv_values, kv_group_size=args.kv_group_size, alpha=args.alpha,
                smooth_linears=args.smooth_linears, threshold=args.threshold)


KL_TOKENS = 8192  # the float reference keeps tokens x vocabulary log-probabilities in memory


def _reference(args: argparse.Namespace, model):
    """The float model's next-token distributions, when --kl asks for the divergence from them."""
    if not args.kl:
        return None
    from qtutor.eval.divergence import reference

    return reference(model, split=args.split, max_tokens=min(args.max_tokens or KL_TOKENS, KL_TOKENS))


@command("tour")
def tour_command(args: argparse.Namespace) -> dict:
    """The embedded model's perplexity and size at FP32, BF16, INT8, INT4, INT3, INT2, NF4, FP4, MXFP4, NVFP4."""
    from qtutor.eval.sweep import TOUR, sweep

    model, tokenizer = _load(args)
    rows = sweep(model, tokenizer, TOUR, max_tokens=args.max_tokens, progress=not args.json)
    if not args.json:
        print(f"model {args.model}: perplexity on the first {args.max_tokens} test tokens (ctx 256, stride 128); "
              f"sizes of the quantized linear layers")
        print_table([{k: row[k] for k in ("label", "bits_per_weight", "bytes", "ppl", "delta_pct", "seconds")}
                     for row in rows])
    return {"model": args.model, "max_tokens": args.max_tokens, "rows": rows}


@command("ppl")
def ppl_command(args: argparse.Namespace) -> dict:
    """Perplexity of one quantized variant of a model."""
    from qtutor.eval.sweep import evaluate

    model, tokenizer = _load(args)
    method = None if args.method == "none" else args.method
    point = evaluate(model, tokenizer, method, args.format, _group_size(args.group_size), _sym(args.sym),
                     split=args.split, max_tokens=args.max_tokens, calib=_calibration(args, args.method),
                     progress=not args.json, reference=_reference(args, model), **_runtime(args))
    result = {"model": args.model, **point}
    if not args.json:
        print_table([result])
    return result


@command("sweep")
def sweep_command(args: argparse.Namespace) -> dict:
    """Every method x format x group size, with the unquantized model first."""
    from qtutor.eval.sweep import sweep

    model, tokenizer = _load(args)
    configs = [("FP32", None, "fp32", None, None)]
    for method in args.methods.split(","):
        for fmt in args.formats.split(","):
            for group in args.group_sizes.split(","):
                configs.append((f"{method} {fmt} g{group}", method, fmt, _group_size(group), _sym(args.sym)))
    configs += [(f"gguf {mix}", "gguf", mix, None, None) for mix in filter(None, args.mixes.split(","))]
    from qtutor.eval.sweep import NEEDS_CALIBRATION

    calib = _calibration(args, next((m for m in args.methods.split(",") if m in NEEDS_CALIBRATION), "rtn"))
    rows = sweep(model, tokenizer, configs, max_tokens=args.max_tokens, calib=calib, progress=not args.json,
                 reference=_reference(args, model), **_runtime(args))
    if not args.json:
        columns = ("label", "bits_per_weight", "ppl", "delta_pct") + (("kl",) if args.kl else ()) + ("seconds",)
        print_table([{k: row.get(k) for k in columns} for row in rows])
    return {"model": args.model, "max_tokens": args.max_tokens, "rows": rows}


@command("export-gguf")
def export_gguf_command(args: argparse.Namespace) -> dict:
    """Write the model as a .gguf file quantized with a llama.cpp mix."""
    from qtutor.methods.gguf.export import export_gguf

    model, tokenizer = _load(args)
    summary = export_gguf(model, tokenizer, args.out, mix=args.type, progress=not args.json)
    if not args.json:
        print(f"wrote {summary['path']}: {summary['file_bytes']:,} bytes, {summary['bits_per_weight']:.3f} bits per "
              f"weight, tensors by type: {summary['counts']}")
    return summary


@command("lab")
def lab_command(args: argparse.Namespace) -> dict:
    """Open JupyterLab at notebook 00 of the course."""
    from qtutor.course import launch_lab

    return launch_lab(open_browser=not args.no_browser, port=args.port, dry_run=args.dry_run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qtutor", description="Learn LLM quantization by doing it.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        return p

    add("formats", "table of every number format")

    def add_model(p: argparse.ArgumentParser, max_tokens: int | None) -> None:
        p.add_argument("--model", default="tiny", help="'tiny' (embedded), a local directory or a Hugging Face id")
        p.add_argument("--max-tokens", type=int, default=max_tokens,
                       help="score only the first N tokens of the split (default: %(default)s; all if not given)")
        p.add_argument("--split", default="test", choices=["train", "valid", "test", "news"])
        p.add_argument("--sym", choices=["sym", "asym"], default=None, help="integer formats: zero point or not")
        p.add_argument("--calib-samples", type=int, default=32, help="calibration sequences of 256 tokens")
        p.add_argument("--calib-source", default="wiki", choices=["wiki", "news"])

    add_model(add("tour", "the embedded model at every common format"), 8192)
    ppl = add("ppl", "perplexity of one quantized variant")
    add_model(ppl, None)
    ppl.add_argument("--method", default="rtn", help="none, rtn, gptq, awq, smoothquant, llm_int8, rotation, gguf")
    ppl.add_argument("--format", default="int4")
    ppl.add_argument("--group-size", default="default", help="N > 0, -1 per channel, 0 per tensor, none for a cast")
    sweep = add("sweep", "a table of methods x formats x group sizes")
    add_model(sweep, 8192)
    sweep.add_argument("--methods", default="rtn")
    sweep.add_argument("--formats", default="int2,int3,int4,int8")
    sweep.add_argument("--group-sizes", default="-1,128")
    sweep.add_argument("--mixes", default="", help="GGUF mixes to add, e.g. Q4_K_M,Q5_K_M")
    for p in (ppl, sweep):
        p.add_argument("--act-format", default=None,
                       help="quantize every linear's input at run time, a scale per token (e.g. int8, int4)")
        p.add_argument("--kv-format", default=None, help="quantize the KV cache (e.g. int8, int4, fp8_e4m3)")
        p.add_argument("--kv-keys", default="channel", choices=["token", "channel"], help="axis of the key scales")
        p.add_argument("--kv-values", default="token", choices=["token", "channel"],
                       help="axis of the value scales")
        p.add_argument("--kv-group-size", type=int, default=None, help="channels per KV scale (divides head_dim)")
        p.add_argument("--alpha", type=float, default=0.5, help="SmoothQuant's migration strength, in [0, 1]")
        p.add_argument("--smooth-linears", action="store_true",
                       help="SmoothQuant also smooths o_proj's and down_proj's inputs (folded into v_proj, up_proj)")
        p.add_argument("--threshold", type=float, default=6.0, help="LLM.int8()'s outlier threshold, > 0")
        p.add_argument("--kl", action="store_true",
                       help="also the KL divergence from the float model's next-token distributions (nats per token, on "
                            f"the first {KL_TOKENS} tokens at most)")
    export = add("export-gguf", "write the model as a quantized .gguf file")
    export.add_argument("--model", default="tiny")
    export.add_argument("--type", default="Q4_K_M", help="a llama.cpp mix: Q2_K, Q3_K_M, Q4_K_M, Q5_K_M, Q6_K, Q8_0 ...")
    export.add_argument("out", help="the .gguf file to write")
    lab = add("lab", "open JupyterLab at the course")
    lab.add_argument("--no-browser", action="store_true", help="start the server without opening a browser")
    lab.add_argument("--port", type=int, default=None)
    lab.add_argument("--dry-run", action="store_true", help="print what would be started, start nothing")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, OSError, RuntimeError) as error:
        if getattr(args, "json", False):
            print(json.dumps({"error": str(error)}))
        else:
            print(f"qtutor {args.command}: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, default=_json_default))
    return 0


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


if __name__ == "__main__":
    sys.exit(main())
