"""Set-up for every test, the notebooks' (nbval) included: one compute thread per pytest-xdist worker."""
from __future__ import annotations

import os


def pytest_configure(config):
    """Under pytest-xdist each worker, and each notebook kernel it starts (kernels inherit the environment),
    computes with one thread. Two workers on two cores with two threads each oversubscribe the cores, and the
    spinning OpenMP/BLAS threads then slow everything several-fold: a notebook cell that takes 48 s alone ran
    past nbval's 300 s cell timeout that way."""
    if hasattr(config, "workerinput"):  # an xdist worker
        for variable in ("QTUTOR_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ.setdefault(variable, "1")
