"""Packed weights read by real CPU kernels: where weight-only quantization becomes *speed*.

    with packed_linears(model, "int4", group_size=64) as report:   # torch's int4 kernel reads 4-bit codes
        model.generate(...)                                           # fewer bytes per token -> faster decode
    report.kernel, report.note

Everything else in the course *fake-quantizes*: it rounds a weight to the grid and stores the rounded value
back as float32. That shows the accuracy of a format and nothing of its speed: the model still reads 4 bytes
per weight, plus the time to dequantize. Decoding one token at batch 1 is a matrix–vector product per layer,

    y = W x,   W: (N, K),   2 N K flops for N K weights read,

so a CPU spends its time *reading W* (notebook 14 draws the roofline): a format is fast only where a kernel
reads its packed codes and dequantizes them in registers, on the fly. PyTorch ships two such CPU kernels:

- ``torch._weight_int8pack_mm(x, Q, s)``: Q int8 (N, K), one scale per output row: y = (x Q^T) * s.
  This is RTN INT8 symmetric per channel (:mod:`qtutor.formats.integer`), codes taken as they are.
- ``torch.ops.aten._weight_int4pack_mm_for_cpu(x, Q4, g, sz)``: codes 0..15 packed two per byte, groups of
  g along K, each with a scale s and an offset m: w = (q - 8) s + m. Our asymmetric INT4 stands for
  w = (q - z) s, so m = (8 - z) s: the same grid, written another way.

Both are written for **bfloat16 activations**; a float32 input takes a slow generic path (notebook 14 times
both). The kernels keep their scales in the activation dtype, so the packed model's weights are our RTN
weights with bfloat16 scales: within a fraction of a grid step, not bit for bit (``tests/test_packed.py``).
A torch without these operators gets a note and no swap: the model stays as it was, float and correct.

``packed_linears(model, "int4", kernel=False)`` shows the other case, a format with no kernel on the device:
:class:`DequantizeLinear` keeps the same codes and scales and rebuilds the float32 matrix on every call before
the product, as a library must when it has nothing that reads its format directly.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch

KERNELS = {  # format -> (torch operator, what it computes)
    "int8": ("torch._weight_int8pack_mm", "int8 codes per output channel, symmetric"),
    "int4": ("torch.ops.aten._weight_int4pack_mm_for_cpu", "int4 codes packed two per byte, asymmetric groups"),
}

INT4_GROUP_SIZES = (32, 64, 128, 256)  # what the int4 CPU kernel accepts


def kernel_available(fmt: str) -> tuple[bool, str]:
    """``(True, operator)`` if the installed torch has the CPU kernel for ``fmt`` (``"int8"``, ``"int4"``), else
    ``(False, why)``: what the notebook prints instead of a crash."""
    if fmt not in KERNELS:
        raise ValueError(f"no packed kernel for {fmt!r}: torch's CPU kernels read {', '.join(KERNELS)}")
    name = KERNELS[fmt][0]
    found = (hasattr(torch, "_weight_int8pack_mm") if fmt == "int8" else
             hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu")
             and hasattr(torch.ops.aten, "_convert_weight_to_int4pack_for_cpu"))
    if found:
        return True, name
    return False, (f"torch {torch.__version__} has no {name}: the {fmt} weights stay fake-quantized (float), "
                   f"correct but not faster; a newer torch ships the kernel")


def pack_int8(W: np.ndarray) -> tuple[Any, Any]:
    """RTN INT8, symmetric, one scale per row: (codes int8 (N, K), scales float32 (N,)) as torch tensors."""
    from qtutor.methods import quantize_tensor

    q = quantize_tensor(W, fmt="int8", group_size=-1, sym=True)
    return torch.from_numpy(q.codes.astype(np.int8)), torch.from_numpy(q.scales.reshape(-1).astype(np.float32))


def int4_shape_problem(N: int, K: int, group_size: int) -> str | None:
    """Why torch's int4 kernel cannot read an N × K weight in groups of ``group_size``, or ``None`` if it can."""
    if group_size not in INT4_GROUP_SIZES or K % group_size:
        return (f"torch's int4 kernel reads groups of {', '.join(map(str, INT4_GROUP_SIZES))} that divide the rows: "
                f"K={K}, group_size={group_size}")
    if N % 16:
        return f"torch's int4 kernel packs output rows in tiles of 16: N={N} is not a multiple of 16"
    return None


def pack_int4(W: np.ndarray, group_size: int) -> tuple[Any, Any]:
    """RTN INT4, asymmetric, groups of ``group_size`` along K: (packed uint8 (N, K/2), scales-and-offsets
    float32 (K/g, N, 2)), the layout torch's int4 CPU kernel reads."""
    from qtutor.methods import quantize_tensor

    N, K = W.shape
    problem = int4_shape_problem(N, K, group_size)
    if problem:
        raise ValueError(problem)
    q = quantize_tensor(W, fmt="int4", group_size=group_size, sym=False)
    codes = torch.from_numpy(q.codes.astype(np.int32))
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
    scales = q.scales.reshape(N, K // group_size)
    offsets = (8.0 - q.zeros.reshape(N, K // group_size)) * scales  # w = (q - z) s = (q - 8) s + (8 - z) s
    both = np.stack([scales.T, offsets.T], axis=-1).astype(np.float32)
    return packed, torch.from_numpy(np.ascontiguousarray(both))


class PackedLinear(torch.nn.Module):
    """Stands in for an ``nn.Linear``: y = x Ŵ^T + b computed by a packed-weight kernel (see the module)."""

    def __init__(self, linear: Any, fmt: str, group_size: int, activations: Any):
        super().__init__()
        W = linear.weight.detach().float().cpu().numpy()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.fmt, self.group_size, self.activations = fmt, group_size, activations
        self.bias = linear.bias
        codes, scales = pack_int8(W) if fmt == "int8" else pack_int4(W, group_size)
        self.register_buffer("codes", codes)
        self.register_buffer("scales", scales.to(activations))

    def forward(self, x: Any) -> Any:
        flat = x.reshape(-1, self.in_features).to(self.activations)
        if self.fmt == "int8":
            y = torch._weight_int8pack_mm(flat, self.codes, self.scales)
        else:
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.codes, self.group_size, self.scales)
        y = y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        group = "per channel" if self.fmt == "int8" else f"g{self.group_size}"
        return (f"in_features={self.in_features}, out_features={self.out_features}, {self.fmt} {group}, "
                f"activations={self.activations}")


class DequantizeLinear(torch.nn.Module):
    """The same RTN INT4 codes with no kernel to read them: Ŵ = (q - z) s rebuilt in float32 on every call, then
    y = x Ŵ^T + b. Codes stay one per byte (uint8), scales and zero points float32, as NumPy keeps them."""

    def __init__(self, linear: Any, group_size: int):
        super().__init__()
        from qtutor.methods import quantize_tensor

        W = linear.weight.detach().float().cpu().numpy()
        self.in_features, self.out_features, self.group_size = linear.in_features, linear.out_features, group_size
        self.bias = linear.bias
        q = quantize_tensor(W, fmt="int4", group_size=group_size, sym=False)
        groups = (self.out_features, self.in_features // group_size, 1)
        self.register_buffer("codes", torch.from_numpy(q.codes.astype(np.uint8).reshape(*groups[:2], group_size)))
        self.register_buffer("scales", torch.from_numpy(q.scales.astype(np.float32).reshape(groups)))
        self.register_buffer("zeros", torch.from_numpy(q.zeros.astype(np.float32).reshape(groups)))

    def forward(self, x: Any) -> Any:
        weight = ((self.codes.float() - self.zeros) * self.scales).reshape(self.out_features, self.in_features)
        return torch.nn.functional.linear(x, weight.to(x.dtype), self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, int4 g{self.group_size}, "
                f"dequantized on every call (no kernel)")


@dataclass
class PackedReport:
    """What ``packed_linears`` did: the kernel used (or ``None`` and the ``note`` why not), the layers swapped
    and the bytes their weights now take (codes + scales) against float32."""

    fmt: str
    kernel: str | None
    note: str
    layers: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # layer -> why the kernel cannot read it (kept float)
    packed_bytes: int = 0
    float32_bytes: int = 0


def shape_problem(fmt: str, kernel: bool, N: int, K: int, group_size: int) -> str | None:
    """Why an N × K layer cannot be stored as ``fmt`` here (``None`` if it can): int8 takes any shape; int4
    needs groups that divide K, and the kernel also wants its group sizes and rows in tiles of 16."""
    if fmt == "int8":
        return None
    if kernel:
        return int4_shape_problem(N, K, group_size)
    return None if group_size > 0 and K % group_size == 0 else f"K={K}: groups of {group_size} do not divide it"


@contextlib.contextmanager
def packed_linears(model: Any, fmt: str = "int4", group_size: int = 64, activations: Any = "bfloat16",
                   roles: tuple[str, ...] = ("q", "k", "v", "o", "gate", "up", "down"),
                   kernel: bool = True) -> Iterator[PackedReport]:
    """Swap the model's linear layers of ``roles`` for packed-kernel ones while the block runs, then put the
    originals back (even on error). ``fmt``: ``"int8"`` (per channel) or ``"int4"`` (groups of
    ``group_size``); ``activations``: the dtype the kernel computes in (``"bfloat16"``: the fast path).
    Without the kernel in the installed torch the model is left as it is and ``report.note`` says why; a layer
    whose shape the int4 kernel cannot read stays float, listed in ``report.skipped``. GPT-2's Conv1D layers
    (weights stored transposed) are left as they are. ``kernel=False`` (``"int4"`` only): the layers become
    :class:`DequantizeLinear`, the same codes dequantized on every call, for the speed of a format without one."""
    from qtutor.model import linear_layers, replace_module

    if not kernel:
        if fmt != "int4":
            raise ValueError(f"kernel=False shows int4 without a kernel; {fmt!r} is not offered that way")
        ok, kernel_or_note = False, "no kernel: the int4 codes are dequantized to float32 on every call"
    else:
        ok, kernel_or_note = kernel_available(fmt)
    report = PackedReport(fmt=fmt, kernel=kernel_or_note if ok else None, note="" if ok else kernel_or_note)
    if not ok and kernel:
        yield report
        return
    if fmt == "int4" and kernel and group_size not in INT4_GROUP_SIZES:
        raise ValueError(f"group_size={group_size}: torch's int4 kernel reads groups of "
                         f"{', '.join(map(str, INT4_GROUP_SIZES))}")
    dtype = getattr(torch, activations) if isinstance(activations, str) else activations
    swapped = []  # (layer name, original module)
    try:
        for layer in linear_layers(model):
            if layer.role not in roles or layer.transposed:
                continue
            problem = shape_problem(fmt, kernel, layer.out_features, layer.in_features, group_size)
            if problem:
                report.skipped[layer.name] = problem
                continue
            packed = (PackedLinear(layer.module, fmt, group_size, dtype) if kernel
                      else DequantizeLinear(layer.module, group_size))
            swapped.append((layer.name, replace_module(model, layer.name, packed)))
            report.layers.append(layer.name)
            report.packed_bytes += sum(b.numel() * b.element_size() for b in packed.buffers())
            report.float32_bytes += 4 * layer.in_features * layer.out_features
        yield report
    finally:
        for name, original in reversed(swapped):
            replace_module(model, name, original)
