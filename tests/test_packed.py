"""Packed CPU kernels: torch's int8/int4 weight-only kernels compute x Ŵ^T with Ŵ our RTN weights (scales in
bfloat16, so within a fraction of a grid step); the swap is undone on exit and on error; a torch without the
kernel gets a note and an untouched model; group sizes the kernel cannot read are refused before torch is called."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import qtutor as qt
from qtutor.methods import quantize_tensor
from qtutor.model import packed


def layer(N=96, K=256, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((N, K)) * 0.05).astype(np.float32), rng.standard_normal((3, K)).astype(np.float32)


def reference(W, x, fmt, group_size):
    """x @ Ŵ^T with Ŵ our RTN dequantized weights, in float64."""
    q = quantize_tensor(W, fmt=fmt, group_size=group_size if fmt == "int4" else -1, sym=fmt == "int8")
    return x.astype(np.float64) @ q.dequantize().astype(np.float64).T, q


def rounded(a, dtype):
    """``a`` rounded to ``dtype`` (as the kernel holds it), back in float64."""
    return torch.from_numpy(np.asarray(a, dtype=np.float64)).to(dtype).double().numpy()


def kernel_reference(q, x, fmt, group_size, dtype):
    """What the kernel should compute exactly, in float64: our codes, with the scales (and int4's offsets
    m = (8 - z) s) and the activations rounded to the kernel's dtype."""
    N, K = q.codes.shape
    if fmt == "int8":
        weights = q.codes * rounded(q.scales.reshape(N, 1), dtype)
    else:
        scales = q.scales.reshape(N, K // group_size, 1)
        offsets = rounded((8.0 - q.zeros.reshape(N, K // group_size, 1)) * scales, dtype)
        codes = q.codes.reshape(N, K // group_size, group_size).astype(np.float64)
        weights = ((codes - 8) * rounded(scales, dtype) + offsets).reshape(N, K)
    return rounded(x, dtype) @ weights.T


@pytest.mark.parametrize("fmt,group_size", [("int8", -1), ("int4", 32), ("int4", 64), ("int4", 128)])
@pytest.mark.parametrize("activations", [torch.float32, torch.bfloat16])
def test_kernel_computes_our_rtn_weights(fmt, group_size, activations):
    if not packed.kernel_available(fmt)[0]:
        pytest.skip(packed.kernel_available(fmt)[1])
    W, x = layer()
    ours, q = reference(W, x, fmt, group_size)
    expected = kernel_reference(q, x, fmt, group_size, activations)
    linear = torch.nn.Linear(W.shape[1], W.shape[0], bias=False)
    linear.weight.data = torch.from_numpy(W)
    got = packed.PackedLinear(linear, fmt, group_size, activations)(torch.from_numpy(x)).double().numpy()
    assert got.shape == expected.shape
    # Left to the kernel: float32 sums and, with bf16 activations, the output rounded to 8 bits of mantissa
    # (half a unit in the last place: 2^-9 relative). The bound allows twice that, plus float32 sums over K terms.
    magnitude = np.abs(rounded(x, activations)) @ np.abs(q.dequantize().astype(np.float64)).T
    output_rounding = 2.0 ** -8 if activations == torch.bfloat16 else 2.0 ** -20
    tolerance = output_rounding * np.abs(expected) + 1e-5 * magnitude
    assert np.all(np.abs(got - expected) <= tolerance)
    # the bound can fail: the float32 weights before rounding, or our float32 scales instead of the kernel's
    # rounded ones (with bf16 activations), miss it somewhere
    unrounded = rounded(x, activations) @ W.astype(np.float64).T
    assert np.any(np.abs(unrounded - expected) > tolerance)
    if activations == torch.bfloat16:
        assert np.any(np.abs(ours - expected) > tolerance)


def test_bias_and_leading_shape_are_kept():
    if not packed.kernel_available("int8")[0]:
        pytest.skip(packed.kernel_available("int8")[1])
    W, _ = layer(32, 64)
    linear = torch.nn.Linear(64, 32)
    linear.weight.data = torch.from_numpy(W)
    x = torch.randn(2, 5, 64)
    with torch.no_grad():
        y = packed.PackedLinear(linear, "int8", -1, torch.float32)(x)
        without_bias = packed.PackedLinear(torch.nn.Linear(64, 32, bias=False), "int8", -1, torch.float32)
    assert y.shape == (2, 5, 32) and y.dtype == x.dtype
    expected, _ = reference(W, x.reshape(-1, 64).numpy(), "int8", -1)
    np.testing.assert_allclose(y.reshape(-1, 32).numpy(), expected + linear.bias.detach().numpy(), atol=2e-3)
    assert without_bias.bias is None


@pytest.mark.parametrize("group_size", [48, 512, 0, -1])
def test_int4_group_sizes_the_kernel_cannot_read_are_refused(group_size):
    W, _ = layer(64, 1024)
    with pytest.raises(ValueError, match="groups of 32, 64, 128, 256"):
        packed.pack_int4(W, group_size)


def test_int4_group_must_divide_the_rows():
    W, _ = layer(64, 96)
    with pytest.raises(ValueError, match="K=96"):
        packed.pack_int4(W, 64)


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="int8, int4"):
        packed.kernel_available("nf4")


@pytest.fixture(scope="module")
def tiny():
    return qt.load_model("tiny")


def linear_modules(model):
    return {name: module for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}


def test_packed_linears_swaps_every_role_and_restores(tiny):
    model, tokenizer = tiny
    if not packed.kernel_available("int4")[0]:
        pytest.skip(packed.kernel_available("int4")[1])
    before = linear_modules(model)
    ids = torch.tensor([tokenizer.encode("The market opened")])
    with torch.no_grad():
        float_logits = model(ids).logits
        with packed.packed_linears(model, "int4", 64) as report:
            swapped = {name for name, module in model.named_modules() if isinstance(module, packed.PackedLinear)}
            packed_logits = model(ids).logits
    assert report.kernel == packed.KERNELS["int4"][0] and report.note == ""
    assert set(report.layers) == swapped and len(swapped) == 7 * model.config.num_hidden_layers
    assert report.packed_bytes < report.float32_bytes / 6  # 4 bits + two bf16 numbers per 64 weights
    assert linear_modules(model) == before  # the very same modules are back
    # the packed model is a quantized model: close to the float one, not identical to it
    assert 0 < (packed_logits - float_logits).abs().max() < 0.2 * float_logits.abs().max()


def test_packed_linears_restores_on_error(tiny):
    model, _ = tiny
    if not packed.kernel_available("int8")[0]:
        pytest.skip(packed.kernel_available("int8")[1])
    before = linear_modules(model)
    with pytest.raises(RuntimeError, match="inside"):
        with packed.packed_linears(model, "int8"):
            raise RuntimeError("inside")
    assert linear_modules(model) == before


def test_missing_kernel_gives_a_note_and_leaves_the_model(tiny, monkeypatch):
    model, _ = tiny
    monkeypatch.delattr(torch, "_weight_int8pack_mm", raising=False)
    ok, note = packed.kernel_available("int8")
    assert not ok and "fake-quantized" in note and torch.__version__ in note
    before = linear_modules(model)
    with packed.packed_linears(model, "int8") as report:
        assert linear_modules(model) == before
    assert report.kernel is None and report.note == note and report.layers == []


def test_int4_rows_must_come_in_tiles_of_16():
    W, _ = layer(40, 128)
    with pytest.raises(ValueError, match="N=40 is not a multiple of 16"):
        packed.pack_int4(W, 64)


def test_layers_the_int4_kernel_cannot_read_stay_float():
    model = torch.nn.Sequential()
    model.add_module("up_proj", torch.nn.Linear(128, 40, bias=False))  # 40 rows: not a multiple of 16
    model.add_module("down_proj", torch.nn.Linear(40, 32, bias=False))  # K = 40: groups of 32 do not divide it
    model.add_module("o_proj", torch.nn.Linear(32, 64, bias=False))
    with packed.packed_linears(model, "int4", 32) as report:
        kinds = {name: type(module).__name__ for name, module in model.named_children()}
    assert kinds == {"up_proj": "Linear", "down_proj": "Linear", "o_proj": "PackedLinear"}
    assert report.layers == ["o_proj"]
    assert "N=40" in report.skipped["up_proj"] and "K=40" in report.skipped["down_proj"]
    with pytest.raises(ValueError, match="group_size=48"):
        with packed.packed_linears(model, "int4", 48):
            pass


def test_without_a_kernel_the_same_codes_are_dequantized_every_call(tiny):
    """kernel=False: DequantizeLinear computes x Ŵ^T with our RTN INT4 weights exactly (float32 product), and the
    swap is undone like the kernel's."""
    W, x = layer(48, 128)  # 48 rows: the kernel would refuse them, dequantizing does not care
    linear = torch.nn.Linear(128, 48, bias=False)
    linear.weight.data = torch.from_numpy(W)
    expected, _ = reference(W, x, "int4", 64)
    got = packed.DequantizeLinear(linear, 64)(torch.from_numpy(x)).double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    model, _ = tiny
    before = linear_modules(model)
    with packed.packed_linears(model, "int4", 64, kernel=False) as report:
        kinds = {type(m).__name__ for n, m in model.named_modules() if n in report.layers}
    assert kinds == {"DequantizeLinear"} and report.kernel is None and "dequantized" in report.note
    assert linear_modules(model) == before
    with pytest.raises(ValueError, match="int4"):
        with packed.packed_linears(model, "int8", kernel=False):
            pass


def test_missing_int4_kernel_gives_a_note(monkeypatch):
    import types

    monkeypatch.setattr(packed.torch.ops, "aten", types.SimpleNamespace())  # an aten without the int4 operators
    ok, note = packed.kernel_available("int4")
    assert not ok and "_weight_int4pack_mm_for_cpu" in note
