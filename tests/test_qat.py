"""QAT: at step 0 a QAT layer is RTN exactly; the STE passes the gradient of the quantized weight to the latent
weight (finite differences) and stops it where the code is clamped; LSQ's step gradient is the paper's formula
times its gradient scale; LSQ learns to clip heavy tails, which RTN's min/max cannot; a converted model holds
exactly the fake-quantized weights; bad input is refused."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import qtutor as qt
from qtutor.methods import quantize_tensor
from qtutor.training import qat


def linear(out_features=24, in_features=128, seed=0, bias=True):
    torch.manual_seed(seed)
    return torch.nn.Linear(in_features, out_features, bias=bias)


@pytest.mark.parametrize("step", qat.STEPS)
@pytest.mark.parametrize("fmt,group_size,sym", [("int4", 64, False), ("int4", 64, True), ("int3", -1, False),
                                                ("int8", -1, True), ("int2", 0, False)])
def test_step_zero_is_rtn_code_for_code(step, fmt, group_size, sym):
    layer = linear()
    module = qat.QATLinear(layer, fmt, group_size, sym, step)
    rtn = quantize_tensor(layer.weight.detach().numpy(), fmt=fmt, group_size=group_size, sym=sym)
    stored = module.quantized_tensor()
    np.testing.assert_array_equal(stored.codes, rtn.codes)
    np.testing.assert_array_equal(stored.dequantize(), rtn.dequantize())
    np.testing.assert_array_equal(module.fake_quantized_weight().detach().numpy(), rtn.dequantize())
    assert stored.bits_per_weight == rtn.bits_per_weight


def squared_error(weight, x, target):
    return ((x @ weight.T - target) ** 2).sum()


def test_ste_gradient_is_the_gradient_of_the_quantized_weight():
    """∂L/∂W (STE) equals ∂L/∂Ŵ, checked by central differences of L as a function of Ŵ (in float64)."""
    layer = linear(bias=False)
    module = qat.QATLinear(layer, "int3", 32, False, "ste")
    x, target = torch.randn(16, 128), torch.randn(16, 24)
    squared_error(module.fake_quantized_weight(), x, target).backward()
    W_hat = module.fake_quantized_weight().detach().double().numpy()
    xd, td = x.double().numpy(), target.double().numpy()
    loss = lambda W: float(((xd @ W.T - td) ** 2).sum())  # noqa: E731
    rng = np.random.default_rng(0)
    for i, j in zip(rng.integers(0, 24, 20), rng.integers(0, 128, 20)):
        step = np.zeros_like(W_hat)
        step[i, j] = 1e-4
        numeric = (loss(W_hat + step) - loss(W_hat - step)) / 2e-4
        assert module.weight.grad[i, j].item() == pytest.approx(numeric, rel=1e-4, abs=1e-3)


def test_ste_stops_the_gradient_where_the_code_is_clamped():
    layer = linear(bias=False)
    module = qat.QATLinear(layer, "int4", 64, True, "lsq")
    with torch.no_grad():
        module.scale.mul_(0.5)  # half RTN's step: the larger half of the weights now clip at ±7
    module.fake_quantized_weight().sum().backward()
    scale = module.scale_and_zero()[0].detach()
    clipped = (module.grouped(layer.weight.detach()) / scale).abs().round() > 7
    grad = module.grouped(module.weight.grad)
    assert clipped.any() and (~clipped).any()
    assert torch.all(grad[clipped] == 0) and torch.all(grad[~clipped] == 1)


@pytest.mark.parametrize("sym", [True, False])
def test_lsq_step_gradient_is_the_papers_formula_times_its_gradient_scale(sym):
    """Esser et al. (2020), eq. 3: ∂Ŵ/∂s = round(W/s) - W/s inside the range, the clamped code (minus z) outside;
    the step's gradient is multiplied by g = 1 / sqrt(n q_max)."""
    layer = linear(bias=False)
    module = qat.QATLinear(layer, "int3", 32, sym, "lsq")
    with torch.no_grad():
        module.scale.mul_(0.7)  # some codes clamp, some do not: both branches of the formula
    x, target = torch.randn(16, 128), torch.randn(16, 24)
    W_hat = module.fake_quantized_weight()
    W_hat.retain_grad()
    squared_error(W_hat, x, target).backward()
    upstream = module.grouped(W_hat.grad).double()
    scale, zero = (t.detach().double() if t is not None else None for t in module.scale_and_zero())
    W = module.grouped(layer.weight.detach()).double()
    z = 0 if zero is None else zero
    low, high = (-module.code_max, module.code_max) if sym else (0, module.code_max)
    code = torch.round(W / scale) + z
    clamped = (code < low) | (code > high)
    dW_ds = torch.where(clamped, torch.clamp(code, low, high) - z, torch.round(W / scale) - W / scale)
    expected = module.gradient_factor * (upstream * dW_ds).sum(dim=1, keepdim=True)
    assert clamped.any() and (~clamped).any()
    torch.testing.assert_close(module.scale.grad.double(), expected, rtol=1e-4, atol=1e-6)
    if not sym:  # and the zero point: inside the range z cancels, (round(W/s) + z - z) s; where the code is
        # clamped to Q, Ŵ = (Q - z) s, so ∂Ŵ/∂z = -s; times g
        dW_dz = torch.where(clamped, -scale.expand_as(W), torch.zeros_like(W))
        expected_zero = module.gradient_factor * (upstream * dW_dz).sum(1, keepdim=True)
        torch.testing.assert_close(module.zero.grad.double(), expected_zero, rtol=1e-4, atol=1e-6)


def output_error(weight, x, target):
    return float(((x @ weight.T - target) ** 2).mean())


@pytest.mark.parametrize("fmt,group_size", [("int3", -1), ("int4", -1), ("int3", 64)])
def test_lsq_learns_to_clip_heavy_tails_and_converts_exactly(fmt, group_size):
    """Laplace weights (heavy tails, as trained weights have) at 3-4 bits: RTN's min/max step wastes levels on a
    few large weights. LSQ, training only the step on the layer's output error, learns a smaller step that clips
    them (measured: INT3 per channel 0.0329 -> 0.0176, INT4 0.0071 -> 0.0053, INT3 g64 0.0218 -> 0.0156). The
    converted layer then holds exactly the fake-quantized weight, float16 scales included."""
    torch.manual_seed(0)
    teacher = linear(32, 256, bias=False)
    with torch.no_grad():
        teacher.weight.copy_(torch.distributions.Laplace(0.0, 0.02).sample((32, 256)))
    x = torch.randn(1024, 256)
    target = x @ teacher.weight.detach().T
    rtn = quantize_tensor(teacher.weight.detach().numpy(), fmt=fmt, group_size=group_size, sym=True)
    model = torch.nn.Sequential()
    model.add_module("down_proj", teacher)
    report = qat.prepare(model, fmt, group_size, sym=True, step="lsq")
    groups = 32 * (1 if group_size == -1 else 256 // group_size)
    assert report.layers == ["down_proj"] and report.added_parameters == groups  # one step per group
    module = model.down_proj
    module.weight.requires_grad_(False)
    optimizer = torch.optim.Adam([module.scale], lr=1e-3)
    for _ in range(200):
        optimizer.zero_grad()
        ((model(x) - target) ** 2).mean().backward()
        optimizer.step()
    trained = module.fake_quantized_weight().detach()
    assert output_error(trained, x, target) < 0.8 * output_error(torch.from_numpy(rtn.dequantize()), x, target)
    assert float((module.scale_and_zero()[0].detach() / torch.from_numpy(rtn.scales.reshape(-1, 1))).mean()) < 0.9
    tensors = qat.convert(model)
    assert type(model.down_proj) is torch.nn.Linear and set(tensors) == {"down_proj"}
    np.testing.assert_array_equal(model.down_proj.weight.detach().numpy(), trained.numpy())
    np.testing.assert_array_equal(tensors["down_proj"].dequantize(), trained.numpy())
    assert tensors["down_proj"].method == "qat-lsq"
    scales = tensors["down_proj"].scales
    assert np.array_equal(scales.astype(np.float16).astype(np.float32), scales)  # stored as float16 exactly


def test_prepare_swaps_the_tiny_models_linears_and_they_train():
    model, tokenizer = qt.load_model("tiny")
    report = qat.prepare(model, "int4", 64, step="lsq")
    assert len(report.layers) == 7 * model.config.num_hidden_layers  # lm_head stays float
    ids = torch.tensor([tokenizer.encode("The market opened higher on Monday as investors")])
    loss = model(ids, labels=ids).loss
    loss.backward()
    module = model.get_submodule(report.layers[0])
    assert module.weight.grad is not None and module.scale.grad is not None and module.zero.grad is not None
    tensors = qat.convert(model)
    assert len(tensors) == len(report.layers)
    assert not any(isinstance(m, qat.QATLinear) for m in model.modules())


def test_bad_input():
    layer = linear()
    with pytest.raises(ValueError, match="integer grids"):
        qat.QATLinear(layer, "nf4", 64)
    with pytest.raises(ValueError, match="step='adam'"):
        qat.QATLinear(layer, "int4", 64, step="adam")
    with pytest.raises(ValueError, match="does not divide the row length 128"):
        qat.QATLinear(layer, "int4", 48)
    with pytest.raises(ValueError, match="no linear layers"):
        qat.prepare(torch.nn.Sequential(torch.nn.ReLU()))


def test_learn_steps_starts_at_rtn_and_learns_to_clip():
    """The notebook's one-layer LSQ: the first error is RTN's own (computed here from RTN's codes), and 100 steps
    of training the step alone cut it (measured on Laplace weights, INT3 per channel: 0.0330 -> 0.0174 in 200)."""
    torch.manual_seed(0)
    W = torch.distributions.Laplace(0.0, 0.02).sample((16, 128)).numpy()
    X = torch.randn(512, 128).numpy()
    result = qat.learn_steps(W, X, "int3", -1, steps=100)
    rtn = quantize_tensor(W, fmt="int3", group_size=-1, sym=True).dequantize()
    expected = float(np.mean((X.astype(np.float64) @ (rtn - W).T.astype(np.float64)) ** 2))
    assert result["rtn_error"] == pytest.approx(expected, rel=1e-4)
    assert len(result["losses"]) == 101 and result["lsq_error"] < 0.8 * result["rtn_error"]
    assert result["scale_ratio"].shape == (16,) and result["scale_ratio"].mean() < 0.9
    with pytest.raises(ValueError, match="lr > 0"):
        qat.learn_steps(W, X, lr=0)
