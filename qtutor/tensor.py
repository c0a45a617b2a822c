"""QuantizedTensor: what every format and every method hands back.

A quantized tensor is a few arrays and a recipe: integer *codes* (one per weight), the *scales* (and, for
asymmetric integer formats, the *zero points*) shared by a group of weights, and the name of the format that
turns them back into numbers. ``dequantize()`` follows the recipe; ``nbytes`` counts what storing it honestly
costs, scales and zero points included, so that ``bits_per_weight`` is the number a memory table should use.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qtutor.formats.registry import by_name


@dataclass(frozen=True, eq=False)
class QuantizedTensor:
    """Codes + scales (+ zero points) of one tensor, in the layout its format defines.

    Attributes:
        codes: integer array with the original tensor's shape (unpacked: one code per element).
        scales: float32 scale of each group, shape ``groups_shape`` (``None`` for a plain cast).
        zeros: zero point of each group (asymmetric integer formats), same shape as ``scales``, else ``None``.
        fmt: the format's name, e.g. ``"int4"``, ``"fp8_e4m3"``, ``"nf4"`` (see ``qtutor.formats.names()``).
        group_size: ``None`` plain cast, ``0`` one scale per tensor, ``-1`` one per output channel (row),
            ``N > 0`` one per ``N`` consecutive elements of a row.
        sym: symmetric (no zero point) or asymmetric.
        shape: shape of the original tensor.
        method: the method that chose the codes (``"cast"``, ``"rtn"``, ``"gptq"``, ...).
        extra: format- or method-specific extras (e.g. NVFP4's per-tensor scale, NF4's double-quantization
            state). Documented by whoever writes them. ``extra["side_bits"]``: bits the method stores besides
            what the format counts (QuIP#'s sign vectors, AffineQuant's share of a run-time matrix); they count
            in ``nbytes`` and ``bits_per_weight``.
        column_order: ``None``, or a permutation of the last axis: the codes (and their groups) are stored with
            the columns in this order, stored column ``k`` being original column ``column_order[k]``, and
            ``dequantize`` puts them back. A method that quantizes columns in its own order (GPTQ's act-order)
            keeps each group contiguous that way instead of scattering it.
    """

    codes: Any
    scales: Any
    zeros: Any
    fmt: str
    group_size: int | None
    sym: bool
    shape: tuple[int, ...]
    method: str = "cast"
    extra: dict = field(default_factory=dict)
    column_order: Any = None

    @property
    def format(self):
        """The Format object named by ``fmt`` (from the table of :mod:`qtutor.formats.registry`)."""
        return by_name(self.fmt)

    def dequantize(self):
        """Float32 values the codes stand for (same shape as the original tensor)."""
        return self.format.decode(self)

    @property
    def storage_bits(self) -> int:
        """Bits to store it: the format's codes, scales and zero points at their widths, plus the method's
        ``extra["side_bits"]``."""
        return self.format.storage_bits(self) + int(self.extra.get("side_bits", 0))

    @property
    def nbytes(self) -> float:
        """Bytes needed to store codes, scales and zero points at their storage widths (and any side bits)."""
        return self.storage_bits / 8

    @property
    def bits_per_weight(self) -> float:
        """Storage bits divided by the number of weights: 4.125 for INT4 with a 16-bit scale per 128."""
        numel = 1
        for n in self.shape:
            numel *= n
        return self.storage_bits / numel

    def __repr__(self) -> str:
        granularity = {None: "cast", 0: "per-tensor", -1: "per-channel"}.get(self.group_size, f"g{self.group_size}")
        kind = "sym" if self.sym else "asym"
        return (
            f"QuantizedTensor({self.fmt}, {granularity}, {kind}, shape={self.shape}, method={self.method!r}, "
            f"{self.bits_per_weight:.3f} bits/weight)"
        )
