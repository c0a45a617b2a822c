"""Set-up for every test, the notebooks' (nbval) included: one compute thread per pytest-xdist worker, and each
notebook checked on another CPU configuration than the one that built it."""
from __future__ import annotations

import os
import re

import pytest

THREAD_VARIABLES = ("QTUTOR_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def pytest_configure(config):
    """Under pytest-xdist each worker, and each notebook kernel it starts (kernels inherit the environment),
    computes with one thread. Two workers on two cores with two threads each oversubscribe the cores, and the
    spinning OpenMP/BLAS threads then slow everything several-fold: a notebook cell that takes 48 s alone ran
    past nbval's 300 s cell timeout that way."""
    if hasattr(config, "workerinput"):  # an xdist worker
        for variable in THREAD_VARIABLES:
            os.environ.setdefault(variable, "1")


# The notebooks are built on the machine's own vector kernels with one thread (tools/build_notebooks.py). Their
# checked cells must print the same text on any x86-64 CPU (notebooks/AUTHORING.md), so the suite runs each
# notebook's kernel under another configuration: torch's ATen kernels at AVX2 or with no vectorization at all
# ("default"), MKL limited to AVX2 alike, and every third notebook with two BLAS threads (idle OpenMP threads
# sleep instead of spinning, so the extra thread does not starve the other worker). Which one a notebook gets
# follows from its number, so a failure can be reproduced: see notebook_cpu() and tools/build_notebooks.py
# --verify. QTUTOR_NOTEBOOK_CPU=native checks every notebook on the machine's own configuration instead.
CAPABILITIES = ("avx2", "default")


def notebook_cpu(name: str) -> dict[str, str]:
    """The environment a notebook's kernel is checked under, from its number (``05_outliers...`` -> 5)."""
    match = re.match(r"(\d+)", name)
    number = int(match.group(1)) if match else 0
    capability = CAPABILITIES[number % len(CAPABILITIES)]
    threads = "2" if number % 3 == 2 else "1"
    environment = {"ATEN_CPU_CAPABILITY": capability, "OMP_WAIT_POLICY": "PASSIVE"}
    if capability == "avx2":
        environment["MKL_ENABLE_INSTRUCTIONS"] = "AVX2"
    environment.update({variable: threads for variable in THREAD_VARIABLES})
    return environment


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_setup(item):
    """nbval starts a notebook's kernel while setting up its first cell, with this process's environment: set
    the notebook's CPU configuration for that moment only, then put the environment back."""
    path = str(getattr(item, "path", getattr(item, "fspath", "")))
    if not path.endswith(".ipynb") or os.environ.get("QTUTOR_NOTEBOOK_CPU") == "native":
        yield
        return
    environment = notebook_cpu(os.path.basename(path))
    saved = {variable: os.environ.get(variable) for variable in environment}
    os.environ.update(environment)
    try:
        yield
    finally:
        for variable, value in saved.items():
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value
