"""The first cell of every notebook: seeds, threads, plotting defaults, and a banner saying where we run.

    import qtutor as qt
    qt.setup_notebook(seed=0)

Everything a checked cell prints must come out the same on every x86-64 CPU and thread count (nbval compares
it), so this pins the seeds, the number of threads, matplotlib's figure size and DPI, turns progress bars and
advisory warnings off, and offers the two ways a checked cell states a result (notebooks/AUTHORING.md):

* :func:`claim` asserts what the lesson says about the numbers just measured ("GPTQ beats RTN in KL") and
  prints the statement, which is the same text on any machine; the cell fails if the claim stops holding.
* :func:`fmt` and :func:`percent` print a value at fixed precision (and never a signed zero), for values that
  do not move with the processor: exact sizes, and NumPy results on small synthetic arrays.

Figures measured on a model (perplexity, KL, output errors of real layers) move in their last digits between
AVX2 and AVX-512 kernels; print them in cells that nbval does not check, and claim in a checked cell.
"""
from __future__ import annotations

import os
import platform
import random
import sys
import warnings
from typing import Any

import numpy as np

SIGNIFICANT_DIGITS = 4


def fmt(value: float, digits: int = SIGNIFICANT_DIGITS) -> str:
    """A number with ``digits`` significant digits: the one way notebooks print measured values."""
    if value == 0 or not np.isfinite(value):
        return str(abs(value) if value == 0 else value)  # never "-0.0"
    text = f"{value:.{digits}g}"
    return text.lstrip("-") if float(text) == 0 else text


def percent(change: float, decimals: int = 1) -> str:
    """A signed change in percent, ``+1.3 %``; a change that rounds to zero prints ``+0.0 %``, never ``-0.0 %``
    (the sign of a rounded zero is the last bit of a sum, and differs between processors)."""
    text = f"{change:+.{decimals}f}"
    if float(text) == 0:
        text = "+" + text[1:]
    return f"{text} %"


class ClaimFailed(AssertionError):
    """A lesson's claim does not hold on the numbers this run measured."""


def claim(statement: str, holds: Any) -> None:
    """Check a lesson's claim on the numbers just measured, and print it.

    A checked notebook cell prints claims, not last digits: the statement is the same text on every machine,
    and the cell fails (nbval reports it) when the claim stops holding, e.g. when a method no longer beats
    another. Write the margin into the claim (``kl_awq < 0.9 * kl_rtn``, "a tenth lower"), so that the noise of
    one processor's float sums cannot flip it.

    Returns nothing, so that a claim on a cell's last line adds no ``True`` under the sentence it printed."""
    if not bool(holds):
        raise ClaimFailed(f"the lesson claims: {statement!r}, and this run's numbers do not show it")
    print(f"holds: {statement}")


def banner() -> str:
    """One line: CPU or GPU, and the versions that decide the numbers."""
    import qtutor
    from qtutor.backend import gpu_name, has_gpu

    parts = [f"qtutor {qtutor.__version__}", f"Python {platform.python_version()}", f"NumPy {np.__version__}"]
    try:
        import torch

        parts.append(f"torch {torch.__version__.split('+')[0]}")
    except ImportError:
        parts.append("torch missing: pip install 'qtutor[lab]'")
    device = f"GPU ({gpu_name()})" if has_gpu() else "CPU (no GPU: every cell runs on NumPy)"
    line = f"{device} | " + " | ".join(parts)
    print(line)
    return line


def check_lab_extras() -> None:
    """Fail early, with the command that fixes it, when a notebook is opened without the ``lab`` extras."""
    missing = []
    for module, package in (("ipywidgets", "ipywidgets"), ("matplotlib", "matplotlib")):
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    if missing:
        raise ImportError(
            f"this notebook needs {', '.join(missing)}: install the course extras with  pip install 'qtutor[lab]'"
        )


def setup_notebook(seed: int = 0, threads: int | None = None, show_banner: bool = True) -> None:
    """Seeds, threads, plotting defaults, quiet progress bars; then the banner.

    ``threads``: torch's thread count; by default the environment's ``QTUTOR_THREADS``, else 2 (the laptop the
    course is written for). The test suite sets QTUTOR_THREADS=1 when it runs notebooks side by side."""
    if threads is None:
        threads = int(os.environ.get("QTUTOR_THREADS", "2"))
    check_lab_extras()
    random.seed(seed)
    np.random.seed(seed)
    os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars are noise in a saved notebook
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        import torch

        torch.manual_seed(seed)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True, warn_only=True)
    except ImportError:
        pass
    import matplotlib

    backend = os.environ.get("QTUTOR_MPL_BACKEND")  # e.g. "ipympl" for interactive figures in JupyterLab
    if backend:
        matplotlib.use(backend)
    matplotlib.rcParams.update({
        "figure.figsize": (7.5, 3.6),
        "figure.dpi": 80,
        "savefig.dpi": 80,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "font.size": 10,
    })
    np.set_printoptions(precision=4, suppress=True, linewidth=110)
    if show_banner:
        banner()
    sys.stdout.flush()


def perplexity_against_rtn(method: str, fp: Any, rtn: Any, quantized: Any, setting: str,
                           float_label: str = "float") -> dict:
    """Print float, RTN and ``method`` perplexities on the same tokens, and return the numbers a claim needs.

    ``fp``, ``rtn`` and ``quantized`` are :class:`qtutor.eval.perplexity.Score` of the float model, of RTN and
    of the method at the same ``setting`` (e.g. ``"INT3 g64"``). Each change from float carries its paired
    standard error (token by token), the method is compared with RTN the same way, and "gap closed" is the share
    of RTN's increase that the method removes, 1 - change(method) / change(RTN). Measured figures: print them in
    a cell nbval does not check, and state what they show with :func:`claim`.

    Returns ``{"rtn": ..., method: ..., "against_rtn": ...}`` (each a :meth:`Score.compare` dict with ``ppl`` and
    ``ppl_stderr`` added) and ``"closed"``."""
    points = {"rtn": {"ppl": rtn.ppl, "ppl_stderr": rtn.ppl_stderr, **rtn.compare(fp)},
              method: {"ppl": quantized.ppl, "ppl_stderr": quantized.ppl_stderr, **quantized.compare(fp)}}
    against = quantized.compare(rtn)
    closed = 1 - points[method]["delta_pct"] / points["rtn"]["delta_pct"]

    def noise(point: dict) -> str:
        return "" if point["significant"] else " (inside the noise)"

    print(f"{float_label:22s} perplexity {fp.ppl:6.2f} +- {fp.ppl_stderr:.2f}   on {fp.describe()}")
    for label, point in ((f"RTN {setting}", points["rtn"]), (f"{method} {setting}", points[method])):
        print(f"{label:22s} perplexity {point['ppl']:6.2f} +- {point['ppl_stderr']:.2f}   "
              f"{percent(point['delta_pct'])} +- {point['delta_pct_stderr']:.1f} from float{noise(point)}")
    print(f"{method} against RTN, token by token: {percent(against['delta_pct'])} "
          f"+- {against['delta_pct_stderr']:.1f}{noise(against)};  gap closed: {closed:.0%}")
    return {**points, "against_rtn": against, "closed": closed}
