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


def test_ppl_runs_smoothquant_llm_int8_and_a_quantized_kv_cache(capsys):
    code, smooth = run(capsys, "ppl", "--method", "smoothquant", "--format", "int8", "--group-size", "-1",
                       "--sym", "sym", "--alpha", "0.8", "--calib-samples", "2", "--max-tokens", "512",
                       "--smooth-linears", "--kl", "--json")
    assert code == 0 and smooth["act_format"] == "int8" and smooth["alpha"] == 0.8 and smooth["smooth_linears"]
    assert 0 < smooth["kl"] < 0.01
    code, int8 = run(capsys, "ppl", "--method", "llm_int8", "--max-tokens", "512", "--json")
    assert code == 0 and int8["format"] == "int8" and 0 <= int8["outlier_fraction"] < 1
    code, kv = run(capsys, "ppl", "--method", "none", "--kv-format", "int2", "--kv-keys", "token",
                   "--max-tokens", "512", "--json")
    assert code == 0 and kv["kv_format"] == "int2" and kv["kv_keys"] == "token"
    code, fp = run(capsys, "ppl", "--method", "none", "--max-tokens", "512", "--kl", "--json")
    assert fp["kl"] == pytest.approx(0, abs=1e-9)  # the float model against itself
    assert kv["ppl"] > fp["ppl"]  # a 2-bit cache costs something
    for point in (smooth, int8):  # 8-bit, both within 1 % of float
        assert abs(point["ppl"] / fp["ppl"] - 1) < 0.01, point


def test_bad_runtime_options_are_errors_not_tracebacks(capsys):
    code, result = run(capsys, "ppl", "--method", "llm_int8", "--threshold", "-1", "--max-tokens", "512", "--json")
    assert code == 2 and "must be > 0" in result["error"]
    code, result = run(capsys, "ppl", "--kv-format", "int4", "--kv-group-size", "48", "--max-tokens", "512", "--json")
    assert code == 2 and "does not divide the head dimension" in result["error"]
