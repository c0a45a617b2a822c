"""The ``qtutor`` command: the course's numbers from a terminal.

    qtutor formats                     every number format: bits, bits per weight, range, NaN/Inf
    qtutor tour                        the embedded model's perplexity and size at FP32, INT8, INT4 g128, ...
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


def print_table(rows: list[dict], columns: list[str] | None = None, file=sys.stdout) -> None:
    """A plain fixed-width table (no dependency) of a list of dicts."""
    if not rows:
        return
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
