"""Quantization-aware training (QAT): train *through* the rounding, so that the weights learn to sit well on the grid.

    report = prepare(model, "int4", group_size=64, step="lsq")   # every linear now fake-quantizes its weight
    ... train the model as usual (loss.backward(), optimizer.step()) ...
    tensors = convert(model)                                      # plain linears with the quantized weights

Everything else in the course is *post-training* quantization (PTQ): the weights are trained in float and
rounded afterwards (RTN, GPTQ, AWQ, ...). QAT rounds them in every forward pass of training, so the loss sees the
quantized model and the gradient steers the float "latent" weights to where their rounding hurts least. Google's
and Meta's QAT releases of Gemma and Llama, and torchao's ``QATConfig(step="prepare" | "convert")``, are this.

**The straight-through estimator (STE).** Rounding has zero gradient almost everywhere, so backpropagation through
Ŵ = s · clamp(round(W / s) + z, 0, q_max) - s z would stop dead. The STE (Bengio et al. 2013) passes the gradient
through the rounding as if it were the identity:

    round_ste(x) = x + (round(x) - x).detach()          forward: round(x); backward: d/dx = 1

so ∂L/∂W = ∂L/∂Ŵ where the code is inside [0, q_max], and 0 where the clamp cut it. With ``step="ste"`` the
scale and zero point are recomputed from the weights at every step, exactly as RTN computes them
(:mod:`qtutor.formats.integer`: min/max, float16 scales rounded up): a converted model is then RTN of the trained
weights, code for code.

**Learned step size (LSQ, Esser et al. 2020).** With ``step="lsq"`` the scale s of every group is a parameter too,
started at RTN's scale (so step 0 *is* RTN) and trained with the gradient the STE implies:

    ∂Ŵ/∂s = round(W/s) - W/s   inside the range,   q_min or q_max (minus z)   where the code was clamped,

scaled by g = 1 / sqrt(n · q_max) (n weights share the scale), which keeps the step's updates in proportion to the
weights' (the paper's gradient scale). A learned s may shrink below RTN's and *clip* the largest weights in
exchange for finer steps for the rest: what GPTQ's and AWQ's clip searches do by hand, learned from the loss. An
asymmetric format also learns its zero point z (rounded to an integer in [0, q_max] in the forward pass, STE
behind), as LSQ+ does with its offset; inside the range z cancels out of (round(W/s) + z - z) s, so it moves only
through the clamped codes, where ∂Ŵ/∂z = -s. The learned scales are rounded to float16 in the forward pass (STE
again), so the converted weights, stored with float16 scales, equal the fake-quantized ones exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from qtutor import formats
from qtutor.formats.base import check_group_size, groups_shape
from qtutor.tensor import QuantizedTensor

STEPS = ("ste", "lsq")
SMALLEST_SCALE = 2.0**-24  # float16's smallest positive (subnormal) number
ROLES = ("q", "k", "v", "o", "gate", "up", "down")  # the lm_head stays float, as in the course's PTQ


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round(x) in the forward pass (half to even, as NumPy's), the identity in the backward pass."""
    return x + (torch.round(x) - x).detach()


def scale_gradient(x: torch.Tensor, factor: float) -> torch.Tensor:
    """x in the forward pass; its gradient multiplied by ``factor`` in the backward pass (LSQ's g)."""
    return (x - x * factor).detach() + x * factor


def to_float16_ste(x: torch.Tensor) -> torch.Tensor:
    """x rounded to the nearest float16 (how the scales are stored), the identity in the backward pass."""
    return x + (x.half().float() - x).detach()


class QATLinear(torch.nn.Module):
    """A linear layer whose weight is fake-quantized in every forward pass: y = x Ŵ^T + b, with Ŵ of the format's
    grid in groups of ``group_size`` along the input (see the module). ``weight`` is the float latent weight the
    optimizer updates; with ``step="lsq"`` also ``scale`` (one per group, started at RTN's) and, if asymmetric,
    ``zero``."""

    def __init__(self, linear: torch.nn.Linear, fmt: str = "int4", group_size: int = 64, sym: bool = False,
                 step: str = "lsq"):
        super().__init__()
        self.format = formats.get(fmt)
        if getattr(self.format, "family", None) != "integer":
            raise ValueError(f"QAT here trains integer grids (int2 ... int8), not {fmt!r}")
        if step not in STEPS:
            raise ValueError(f"step={step!r}: one of {', '.join(STEPS)}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.group_size = check_group_size(group_size, (self.out_features, self.in_features), self.format.name)
        if self.group_size is None:
            raise ValueError("QAT needs a scale: group_size N > 0, -1 (per channel) or 0 (per tensor)")
        self.group_width = {-1: self.in_features, 0: self.in_features * self.out_features}.get(self.group_size,
                                                                                              self.group_size)
        self.sym, self.step = bool(sym), step
        self.weight = torch.nn.Parameter(linear.weight.detach().clone())
        self.bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.detach().clone())
        if step == "lsq":
            scale, zero = self.rtn_parameters()
            self.scale = torch.nn.Parameter(scale)
            self.zero = None if self.sym else torch.nn.Parameter(zero)
            self.gradient_factor = 1.0 / math.sqrt(self.group_width * self.code_max)

    @property
    def code_max(self) -> int:
        return self.format.qmax_sym if self.sym else self.format.maxq

    def grouped(self, W: torch.Tensor) -> torch.Tensor:
        """(out, in) -> (groups, g): one row per group, as the formats lay them out."""
        return W.reshape(-1, self.group_width)

    def rtn_parameters(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """RTN's scale and zero point of the current weight, per group (by the format's own code)."""
        groups = self.grouped(self.weight.detach()).float().cpu().numpy()
        scale, zero = self.format.find_params(groups, self.sym)
        device = self.weight.device
        return (torch.from_numpy(scale).to(device),
                None if zero is None else torch.from_numpy(np.asarray(zero, np.float32)).to(device))

    def scale_and_zero(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The scale s and integer zero point z the forward pass uses now (with gradients where learned)."""
        if self.step == "ste":
            return self.rtn_parameters()
        positive = torch.clamp(self.scale, min=SMALLEST_SCALE)  # a step pushed through zero stops at float16's least
        scale = to_float16_ste(scale_gradient(positive, self.gradient_factor))
        if self.sym:
            return scale, None
        return scale, torch.clamp(round_ste(scale_gradient(self.zero, self.gradient_factor)), 0, self.code_max)

    def codes(self, scale: torch.Tensor, zero: torch.Tensor | None) -> torch.Tensor:
        """q = clamp(round(W / s) + z, ...) per group, rounded straight through."""
        q = round_ste(self.grouped(self.weight) / scale)
        if zero is None:
            return torch.clamp(q, -self.code_max, self.code_max)
        return torch.clamp(q + zero, 0, self.code_max)

    def fake_quantized_weight(self) -> torch.Tensor:
        """Ŵ = (q - z) s, in the weight's shape: what the forward pass multiplies by."""
        scale, zero = self.scale_and_zero()
        q = self.codes(scale, zero)
        q = q if zero is None else q - zero
        return (q * scale).reshape(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.fake_quantized_weight().to(x.dtype), self.bias)

    def quantized_tensor(self) -> QuantizedTensor:
        """The layer's weight as the format stores it: the codes, float16 scales and zero points that Ŵ is made of."""
        with torch.no_grad():
            scale, zero = self.scale_and_zero()
            codes = self.codes(scale, zero)
        shape = (self.out_features, self.in_features)
        per_group = groups_shape(shape, self.group_size)
        return QuantizedTensor(
            codes=codes.cpu().numpy().astype(np.int8 if self.sym else np.uint8).reshape(shape),
            scales=scale.cpu().numpy().astype(np.float32).reshape(per_group),
            zeros=None if zero is None else zero.cpu().numpy().astype(np.float32).reshape(per_group),
            fmt=self.format.name, group_size=self.group_size, sym=self.sym, shape=shape, method=f"qat-{self.step}")

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, {self.format.name} "
                f"g{self.group_size} {'sym' if self.sym else 'asym'}, step={self.step}")


@dataclass
class QATReport:
    """What ``prepare`` did: the format, the layers now training through their rounding, and how many trainable
    numbers the scales and zero points added."""

    fmt: str
    group_size: int
    sym: bool
    step: str
    layers: list[str] = field(default_factory=list)
    added_parameters: int = 0


def prepare(model: Any, fmt: str = "int4", group_size: int = 64, sym: bool = False, step: str = "lsq",
            roles: tuple[str, ...] = ROLES) -> QATReport:
    """Put a :class:`QATLinear` in place of every ``nn.Linear`` of ``roles`` (torchao's "prepare" step); the model
    then trains as usual, through its rounding. Undo with :func:`convert` (quantized weights) or by reloading."""
    from qtutor.model import linear_layers, replace_module

    report = QATReport(fmt=fmt, group_size=group_size, sym=sym, step=step)
    layers = [layer for layer in linear_layers(model) if layer.role in roles and not layer.transposed]
    if not layers:
        raise ValueError(f"the model has no linear layers of roles {', '.join(roles)} to train through rounding")
    for layer in layers:
        replacement = QATLinear(layer.module, fmt, group_size, sym, step)
        replace_module(model, layer.name, replacement)
        report.layers.append(layer.name)
        report.added_parameters += sum(p.numel() for name, p in replacement.named_parameters()
                                       if name not in ("weight", "bias"))
    return report


def convert(model: Any) -> dict[str, QuantizedTensor]:
    """Replace every :class:`QATLinear` by a plain ``nn.Linear`` holding its fake-quantized weight Ŵ (torchao's
    "convert" step), and return each layer's :class:`~qtutor.tensor.QuantizedTensor`, whose ``dequantize()`` is
    that weight exactly."""
    from qtutor.model import replace_module

    tensors = {}
    for name, module in list(model.named_modules()):
        if not isinstance(module, QATLinear):
            continue
        tensors[name] = module.quantized_tensor()
        plain = torch.nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
        plain = plain.to(device=module.weight.device, dtype=module.weight.dtype)
        with torch.no_grad():
            plain.weight.copy_(torch.from_numpy(tensors[name].dequantize()))
            if module.bias is not None:
                plain.bias.copy_(module.bias)
        replace_module(model, name, plain)
    return tensors


def learn_steps(weight: np.ndarray, inputs: np.ndarray, fmt: str = "int3", group_size: int = -1, sym: bool = True,
                steps: int = 200, lr: float = 1e-3) -> dict:
    """LSQ on one layer with its weights frozen: train only the steps s (from RTN's) to minimise the layer's output
    error mean((X Ŵᵀ − X Wᵀ)²) on ``inputs``. Returns RTN's and the learned error, the learned / RTN step of every
    group (below 1: the step shrank and now clips the largest weights), and the error per step."""
    W = torch.as_tensor(np.asarray(weight, dtype=np.float32))
    X = torch.as_tensor(np.asarray(inputs, dtype=np.float32)).reshape(-1, W.shape[1])
    if not lr > 0 or steps < 1:
        raise ValueError(f"lr={lr!r}, steps={steps!r}: give lr > 0 and at least one step")
    layer = QATLinear(torch.nn.Linear(W.shape[1], W.shape[0], bias=False), fmt, group_size, sym, "lsq")
    with torch.no_grad():
        layer.weight.copy_(W)
        layer.scale.copy_(layer.rtn_parameters()[0])
    layer.weight.requires_grad_(False)
    rtn_scale = layer.scale.detach().clone()
    target = X @ W.T
    optimizer = torch.optim.Adam([p for name, p in layer.named_parameters() if name in ("scale", "zero")], lr=lr)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = ((layer(X) - target) ** 2).mean()
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        losses.append(((layer(X) - target) ** 2).mean().item())  # after the last step
        learned = layer.scale_and_zero()[0]
    return {"rtn_error": losses[0], "lsq_error": losses[-1], "losses": losses,
            "scale_ratio": (learned / rtn_scale).numpy().ravel()}
