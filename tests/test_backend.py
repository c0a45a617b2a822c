"""Backend: array namespaces, host/device moves, torch <-> NumPy through DLPack."""
from __future__ import annotations

import numpy as np
import pytest

from qtutor import backend


def test_numpy_arrays_use_numpy():
    assert backend.array_namespace(np.zeros(3), np.ones(2), None, 1.0) is np


def test_has_gpu_is_a_bool_and_matches_the_cpu_namespace():
    assert isinstance(backend.has_gpu(), bool)
    assert backend.xp_for("cpu") is np
    with pytest.raises(ValueError, match="use 'cpu' or 'gpu'"):
        backend.xp_for("tpu")


@pytest.mark.skipif(backend.has_gpu(), reason="checks the message given without a GPU")
def test_asking_for_the_gpu_without_one_says_so():
    with pytest.raises(RuntimeError, match="no CUDA device"):
        backend.xp_for("gpu")
    with pytest.raises(RuntimeError, match="qtutor\\[gpu\\]"):
        backend.to_device(np.zeros(3))


def test_torch_round_trip_shares_memory_on_the_cpu():
    torch = pytest.importorskip("torch")
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    a = backend.from_torch(t)
    assert isinstance(a, np.ndarray) and a.shape == (2, 3)
    a[0, 0] = 42.0
    assert t[0, 0].item() == 42.0  # zero copy
    back = backend.to_torch(a)
    assert back.data_ptr() == t.data_ptr()


def test_bfloat16_tensors_are_widened_exactly():
    torch = pytest.importorskip("torch")
    t = torch.tensor([1.0, 1.0078125, -3.5], dtype=torch.bfloat16)
    assert backend.from_torch(t).tolist() == [1.0, 1.0078125, -3.5]


def test_to_host_accepts_numpy_lists_and_torch():
    torch = pytest.importorskip("torch")
    assert backend.to_host([1, 2]).tolist() == [1, 2]
    assert backend.to_host(torch.ones(2)).tolist() == [1.0, 1.0]
