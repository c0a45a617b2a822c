"""What a checked notebook cell prints must be the same on any x86-64 CPU (notebooks/AUTHORING.md): the helpers
that print claims and changes, and the CPU configurations the suite checks the notebooks under."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from qtutor import notebook

ROOT = Path(__file__).resolve().parents[1]


def test_a_claim_prints_its_statement_when_it_holds_and_fails_the_cell_when_it_does_not(capsys):
    assert notebook.claim("AWQ beats RTN in KL by a tenth", 0.8 < 0.9) is None  # no stray `True` under the cell
    assert capsys.readouterr().out == "holds: AWQ beats RTN in KL by a tenth\n"
    with pytest.raises(notebook.ClaimFailed, match="AWQ beats RTN"):
        notebook.claim("AWQ beats RTN in KL by a tenth", 0.95 < 0.9)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("change, text", [(-0.004, "+0.0 %"), (0.0, "+0.0 %"), (-0.0, "+0.0 %"), (0.04, "+0.0 %"),
                                          (-0.06, "-0.1 %"), (1.26, "+1.3 %"), (-12.0, "-12.0 %")])
def test_percent_never_prints_a_signed_zero(change, text):
    assert notebook.percent(change) == text


def test_fmt_never_prints_a_signed_zero():
    assert notebook.fmt(-0.0) == "0.0" and notebook.fmt(-1e-9, 2) == "-1e-09" and notebook.fmt(0.08692) == "0.08692"


def load_root_conftest():
    spec = importlib.util.spec_from_file_location("root_conftest", ROOT / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_suite_checks_the_notebooks_under_avx2_and_no_vectorization_with_one_and_two_threads():
    conftest = load_root_conftest()
    configurations = {(env["ATEN_CPU_CAPABILITY"], env["OMP_NUM_THREADS"])
                      for env in (conftest.notebook_cpu(path.name) for path in (ROOT / "notebooks").glob("*.ipynb"))}
    assert {capability for capability, _ in configurations} == {"avx2", "default"}
    assert {threads for _, threads in configurations} == {"1", "2"}


def test_a_notebook_kernel_starts_under_its_configuration_and_the_environment_comes_back(monkeypatch):
    """nbval starts the kernel inside the setup of a notebook's first cell: the hook sets the environment for
    exactly that moment."""
    import os
    from types import SimpleNamespace

    conftest = load_root_conftest()
    monkeypatch.delenv("QTUTOR_NOTEBOOK_CPU", raising=False)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx512")
    monkeypatch.delenv("MKL_ENABLE_INSTRUCTIONS", raising=False)
    hook = conftest.pytest_runtest_setup(SimpleNamespace(path=ROOT / "notebooks" / "05_outliers_llm_int8.ipynb"))
    next(hook)  # what the kernel would start with
    during = {v: os.environ.get(v) for v in ("ATEN_CPU_CAPABILITY", "QTUTOR_THREADS", "MKL_ENABLE_INSTRUCTIONS")}
    with pytest.raises(StopIteration):
        next(hook)
    assert during == {"ATEN_CPU_CAPABILITY": "default", "QTUTOR_THREADS": "2", "MKL_ENABLE_INSTRUCTIONS": None}
    assert os.environ["ATEN_CPU_CAPABILITY"] == "avx512" and "MKL_ENABLE_INSTRUCTIONS" not in os.environ


def test_perplexity_against_rtn_prints_paired_changes_and_the_gap_closed(capsys):
    import math

    import numpy as np

    from qtutor.eval.perplexity import Score

    rng = np.random.default_rng(0)
    base = rng.uniform(1.0, 5.0, 4000)
    fp = Score(base, "test", 512, 256)
    rtn = Score(base + 0.2 + rng.normal(0, 0.05, base.size), "test", 512, 256)  # +22 % perplexity
    method = Score(base + 0.05 + rng.normal(0, 0.05, base.size), "test", 512, 256)  # +5 %, closes ~3/4
    result = notebook.perplexity_against_rtn("GPTQ", fp, rtn, method, "INT3 g64", float_label="float (Q4_1)")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("float (Q4_1)") and "on 4000 tokens of the test split (ctx 512, stride 256)" in lines[0]
    assert lines[1].startswith("RTN INT3 g64") and lines[2].startswith("GPTQ INT3 g64")
    rtn_change = 100 * (math.exp(float((rtn.nll - base).mean())) - 1)
    assert result["rtn"]["delta_pct"] == rtn.compare(fp)["delta_pct"] and f"+{rtn_change:.1f} %" in lines[1]
    assert result["GPTQ"]["ppl"] == method.ppl and result["against_rtn"] == method.compare(rtn)
    assert result["closed"] == 1 - result["GPTQ"]["delta_pct"] / result["rtn"]["delta_pct"]
    assert 0.7 < result["closed"] < 0.8 and lines[3].endswith(f"gap closed: {result['closed']:.0%}")
    assert lines[3].startswith("GPTQ against RTN, token by token: -") and "noise" not in lines[3]
    same = notebook.perplexity_against_rtn("AWQ", fp, rtn, Score(rtn.nll + rng.normal(0, 0.01, base.size), "test",
                                                                   512, 256), "INT3 g64")
    assert not same["against_rtn"]["significant"] and "(inside the noise)" in capsys.readouterr().out
