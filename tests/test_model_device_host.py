"""The host side of the model's GPU path, checked on any machine: which methods get the weights where the model
keeps them (``Method.device_arrays`` and ``Format.encodes_on_device``), and get_weight's device branch (a clone
handed over through DLPack). On a GPU, tests/gpu/test_model_on_gpu.py runs the model on the device."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import qtutor as qt  # noqa: E402
import qtutor.model  # noqa: E402
from qtutor.model.quantize import quantize_model  # noqa: E402


@pytest.mark.parametrize("method,fmt,wants_device", [("rtn", "int4", True), ("gptq", "int4", True),
                                                     ("rtn", "Q4_K", False), ("awq", "int4", False),
                                                     ("rotation", "int4", False), ("smoothquant", "int8", True)])
def test_quantize_model_asks_for_device_weights_only_where_method_and_format_take_them(
        tiny, monkeypatch, method, fmt, wants_device):
    model, _ = tiny
    asked = []
    real = qtutor.model.get_weight

    def spy(layer, device=False):
        asked.append(device)
        return real(layer, device)

    monkeypatch.setattr(qtutor.model, "get_weight", spy)
    calib = qt.data.calibration(n_samples=1, seq_len=32)
    layers = ["model.layers.0.mlp.down_proj"] if method != "smoothquant" else None
    group_size = 256 if fmt == "Q4_K" else "default"
    with quantize_model(model, method, fmt, group_size, calib=calib, layers=layers, progress=False) as report:
        rounded = len(report.layers)
    assert rounded and set(asked[-rounded:]) == {wants_device}  # the rounding loop (a transform reads host copies)


def test_get_weight_on_the_device_branch_is_a_copy_with_the_same_values(tiny, monkeypatch):
    model, _ = tiny
    layer = qt.model.find_layer(model, "model.layers.1.self_attn.q_proj")
    host = qt.model.get_weight(layer)
    monkeypatch.setattr(qtutor.model, "on_device", lambda layer: True)  # as if the model were on a GPU
    handed = qt.model.get_weight(layer, device=True)  # the DLPack branch (on the CPU, backend.from_torch)
    np.testing.assert_array_equal(handed, host)
    handed[0, 0] += 1.0
    assert float(layer.module.weight.detach()[0, 0]) == host[0, 0]  # the model's own weight is not shared
