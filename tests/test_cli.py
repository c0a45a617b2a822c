"""The `qtutor` command: each subcommand prints one JSON object with --json, and errors are clear."""
from __future__ import annotations

import json

import pytest

from qtutor import cli


def run(capsys, *argv) -> tuple[int, dict]:
    code = cli.main(list(argv))
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_formats_lists_every_format_with_its_bits_per_weight(capsys):
    import qtutor as qt

    code, result = run(capsys, "formats", "--json")
    rows = {row["format"]: row for row in result["formats"]}
    assert code == 0 and list(rows) == qt.formats.names()
    assert rows["mxfp4"]["bits_per_weight"] == 4.25 and rows["nf4"]["bits_per_weight"] == 4.5


def test_ppl_reports_the_contracted_fields(capsys):
    code, result = run(capsys, "ppl", "--format", "int8", "--group-size", "-1", "--max-tokens", "1024", "--json")
    assert code == 0
    assert {"model", "method", "format", "group_size", "ppl", "bits_per_weight", "bytes", "seconds"} <= set(result)
    assert result["format"] == "int8" and result["group_size"] == -1 and 8 < result["bits_per_weight"] < 8.2


def test_a_group_size_that_does_not_divide_is_an_error_not_a_traceback(capsys):
    code, result = run(capsys, "ppl", "--format", "int4", "--group-size", "100", "--max-tokens", "512", "--json")
    assert code == 2 and "does not divide" in result["error"]


def test_tour_prints_a_table_with_the_unquantized_baseline_first(capsys):
    code = cli.main(["tour", "--max-tokens", "512"])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert "FP32" in lines[3] and any("NVFP4" in line for line in lines)
