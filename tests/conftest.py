"""Shared test set-up: a fixed seed, the `gpu` marker skipped when no device answers."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing downloads in tests
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_collection_modifyitems(config, items):
    from qtutor.backend import has_gpu

    if has_gpu():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device and CuPy (run on a GPU machine: pytest -m gpu tests/gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def tiny():
    """The embedded model and its tokenizer, loaded once per test process. Tests that quantize it restore it
    (quantize_model, the activation hooks and smooth_model are all context managers)."""
    import qtutor as qt

    return qt.load_model("tiny")
