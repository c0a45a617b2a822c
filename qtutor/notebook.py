"""The first cell of every notebook: seeds, threads, plotting defaults, and a banner saying where we run.

    import qtutor as qt
    qt.setup_notebook(seed=0)

Everything a notebook prints should come out the same on every machine (nbval checks it), so this pins the
seeds, the number of threads, matplotlib's figure size and DPI, turns progress bars and advisory warnings off,
and formats numbers through one function (:func:`fmt`) with fixed significant digits.
"""
from __future__ import annotations

import os
import platform
import random
import sys
import warnings

import numpy as np

SIGNIFICANT_DIGITS = 4


def fmt(value: float, digits: int = SIGNIFICANT_DIGITS) -> str:
    """A number with ``digits`` significant digits: the one way notebooks print measured values."""
    if value == 0 or not np.isfinite(value):
        return str(value)
    return f"{value:.{digits}g}"


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
