"""Block formats with a shared scale: OCP Microscaling (MXFP4, MXFP6, MXFP8, MXINT8) and NVIDIA's NVFP4.

A 4-bit float has only 15 distinct values; on its own it cannot cover the range of a weight matrix. The block
formats give every small block of consecutive elements its own scale, stored next to the elements, and make
that scale itself a tiny number so that it costs almost nothing.

**MX (OCP Microscaling Formats v1.0).** Blocks of 32 elements share one E8M0 scale: an 8-bit *exponent only*
(a power of two, X = 2^(e - 127)). For a block V_1..V_32 whose element format has largest binade emax_elem:

    shared_exp = floor(log2(max_i |V_i|)) - emax_elem        (clamped to >= -127; an all-zero block gets -127)
    X          = 2^shared_exp                                 (stored as the byte shared_exp + 127)
    P_i        = element_cast(V_i / X)                        (round to nearest even, saturating)
    V_i ~= X * P_i

emax_elem is 2 for FP4 E2M1 (max 6 = 1.5 * 2^2), 2 for FP6 E2M3, 4 for FP6 E3M2, 8 for FP8 E4M3, 15 for
FP8 E5M2. The rule puts max|V| / X in [2^emax, 2^(emax+1)): for FP4 that is [4, 8), so a block's largest
values between 6X and 8X *saturate* to 6X — the known clipping cost of the spec's scale choice. Dividing by
a power of two is exact, so all the rounding happens in the element cast. MXINT8's elements are 8-bit
integers with an implied scale of 2^-6 (values -127/64 .. 127/64), emax_elem = 0.

Storage: 32 elements at 4/6/8 bits plus one 8-bit scale: 4.25, 6.25, 8.25 bits per weight.

**NVFP4.** Blocks of 16 FP4 E2M1 elements share an FP8 E4M3 scale (a real mantissa, unlike E8M0), and the
whole tensor has one float32 scale that keeps the block scales inside E4M3's range:

    s_enc = 448 * 6 / max|X|                                  (per tensor, float32)
    s_b   = e4m3_cast(s_enc * max_block|x| / 6)               (per block of 16)
    q_i   = e2m1_cast(clip(x_i * s_enc / s_b, -6, 6))
    x_i  ~= q_i * s_b / s_enc

Storage: 16 x 4 bits + 8 bits = 4.5 bits per weight (plus 32 bits per tensor).

Codes are the element codes (uint8); ``QuantizedTensor.scales`` holds each block's float32 scale (X for MX,
s_b / s_enc for NVFP4, for plotting and error analysis) and ``extra["scale_codes"]`` the stored scale bytes
(E8M0 or E4M3); NVFP4 adds ``extra["tensor_scale"]`` = s_enc. Decoding uses the stored bytes.
On a GPU the element casts run in ``kernels/minifloat.cu`` and the block reductions in CuPy.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from qtutor.backend import array_namespace
from qtutor.formats.base import Format, as_float32, check_finite, check_group_size, groups_shape, to_groups
from qtutor.formats.minifloat import Minifloat
from qtutor.formats.minifloat import make as make_minifloat
from qtutor.tensor import QuantizedTensor

E8M0_BIAS = 127
MXINT8_STEP = 2.0**-6  # MXINT8 element value = code * 2^-6

# name: (element format, largest binade of the element format, description)
MX_SPECS = {
    "mxfp4": ("fp4_e2m1", 2, "OCP MX: 32 x FP4 E2M1 + one E8M0 power-of-two scale"),
    "mxfp6": ("fp6_e2m3", 2, "OCP MX: 32 x FP6 E2M3 + one E8M0 scale"),
    "mxfp6_e3m2": ("fp6_e3m2", 4, "OCP MX: 32 x FP6 E3M2 + one E8M0 scale"),
    "mxfp8": ("fp8_e4m3", 8, "OCP MX: 32 x FP8 E4M3 + one E8M0 scale"),
    "mxfp8_e5m2": ("fp8_e5m2", 15, "OCP MX: 32 x FP8 E5M2 + one E8M0 scale"),
    "mxint8": ("int8", 0, "OCP MX: 32 x INT8 (step 2^-6) + one E8M0 scale"),
}


def floor_log2(x: Any) -> Any:
    """floor(log2(x)) for positive float32 ``x``, exactly (from the binary exponent, not a rounded log)."""
    xp = array_namespace(x)
    _, exponent = xp.frexp(x)  # x = m * 2^exponent with m in [0.5, 1)
    return exponent.astype(np.int32) - 1


class BlockFormat(Format):
    """What MX and NVFP4 share: a fixed block along the row, elements of a smaller format, a stored scale byte."""

    symmetric_only = True
    block: int = 32

    def _check_block(self, group_size: Any) -> int:
        if group_size in ("default", None):
            return self.block
        if group_size != self.block:
            raise ValueError(f"{self.name} has blocks of {self.block} elements by definition; got group_size="
                             f"{group_size!r}. Leave group_size out (or pass {self.block}).")
        return self.block

    def _check_input(self, x: Any, group_size: Any) -> tuple[Any, int]:
        x = as_float32(x, self.name)
        block = self._check_block(group_size)
        check_group_size(block, tuple(x.shape), self.name)
        check_finite(x, self.name, "a NaN or Inf would poison the shared scale of its whole block")
        return x, block

    def _stored_scale_codes(self, scales: Any) -> Any:
        raise NotImplementedError

    def tensor_from_params(self, codes: Any, scales: Any, zeros: Any, group_size: Any, sym: bool,
                           shape: tuple[int, ...], method: str, extra: dict | None = None,
                           column_order: Any = None) -> QuantizedTensor:
        """A tensor of codes on scales from :meth:`find_params`, with the stored scale bytes those scales are."""
        if column_order is not None:
            raise ValueError(f"{self.name} decodes its blocks in stored order; a column permutation (act_order) is "
                             "not supported for block formats: quantize with act_order=False")
        self._check_block(group_size)
        extra = {**(extra or {}), **self._stored_scale_codes(scales)}
        return QuantizedTensor(codes, scales, None, self.name, self.block, True, tuple(shape), method, extra)

    def storage_bits(self, q: QuantizedTensor) -> int:
        numel = math.prod(q.shape)
        return numel * self.bits + (numel // self.block) * self.scale_bits + 32 * ("tensor_scale" in q.extra)

    def bits_per_weight(self, shape: tuple[int, ...] = (4096, 4096), group_size: Any = "default",
                        sym: bool | None = None) -> float:
        self._check_block(group_size)
        return self.bits + self.scale_bits / self.block

    @property
    def weight_group_size(self) -> int:
        return self.block


class MXFormat(BlockFormat):
    """An OCP MX format: 32-element blocks, E8M0 shared scale, FP or INT8 elements (see the module docstring)."""

    family = "microscaling"
    block = 32
    scale_bits = 8

    def __init__(self, name: str, element: str, emax_elem: int, description: str):
        self.name, self.description, self.emax_elem = name, description, emax_elem
        self.element: Minifloat | None = None if element == "int8" else make_minifloat(element)
        self.bits = 8 if self.element is None else self.element.bits
        self.default_group_size = self.block

    # ---- the element level --------------------------------------------------------------------------------
    @property
    def grid(self) -> np.ndarray:
        if self.element is None:
            return (np.arange(-127, 128) * MXINT8_STEP).astype(np.float32)
        return self.element.grid

    @property
    def max_value(self) -> float:
        return 127 * MXINT8_STEP if self.element is None else self.element.max_value

    def cast(self, x: Any) -> Any:
        """Element codes of ``x`` (already divided by the block scale), saturating at the largest element."""
        if self.element is not None:
            return self.element.cast(x, saturate=True)
        xp = array_namespace(x)
        codes = xp.clip(xp.rint(x / np.float32(MXINT8_STEP)), -127, 127)
        return codes.astype(np.int8)

    def values(self, codes: Any) -> Any:
        if self.element is not None:
            return self.element.values(codes)
        return codes.astype(np.float32) * np.float32(MXINT8_STEP)

    # ---- the block level ----------------------------------------------------------------------------------
    def scale_exponents(self, G: Any) -> Any:
        """E8M0 byte of each block (row of ``G``): floor(log2 max|V|) - emax_elem + 127, clamped to 0..254."""
        xp = array_namespace(G)
        absmax = xp.abs(G).max(axis=1)
        tiny = np.float32(np.finfo(np.float32).tiny)  # an all-zero block: the spec's "FP32 min normal"
        shared = floor_log2(xp.maximum(absmax, tiny)) - self.emax_elem
        return (xp.clip(shared, -E8M0_BIAS, E8M0_BIAS) + E8M0_BIAS).astype(np.uint8)

    def find_params(self, G: Any, sym: bool = True) -> tuple[Any, Any]:
        return e8m0_values(self.scale_exponents(G))[:, None], None

    def encode(self, x: Any, group_size: Any = "default", sym: bool | None = None) -> QuantizedTensor:
        """Quantize ``x`` block by block along its last axis (which 32 must divide)."""
        self.resolve_sym(sym)
        x, block = self._check_input(x, group_size)
        G = to_groups(x, block)
        exponents = self.scale_exponents(G)
        scale = e8m0_values(exponents)[:, None]
        codes = self.cast(G / scale).reshape(x.shape)
        shape_of_blocks = groups_shape(tuple(x.shape), block)
        return QuantizedTensor(codes, scale.reshape(shape_of_blocks), None, self.name, block, True, tuple(x.shape),
                               "rtn", {"scale_codes": exponents.reshape(shape_of_blocks)})

    def _stored_scale_codes(self, scales: Any) -> dict:
        """The E8M0 byte of each power-of-two block scale X = 2^(e - 127)."""
        xp = array_namespace(scales)
        return {"scale_codes": (floor_log2(xp.asarray(scales, dtype=np.float32)) + E8M0_BIAS).astype(np.uint8)}

    def decode(self, q: QuantizedTensor) -> Any:
        if q.fmt != self.name:
            raise ValueError(f"this QuantizedTensor is {q.fmt}, not {self.name}; call q.dequantize() instead")
        G = to_groups(q.codes, self.block)
        scale = e8m0_values(q.extra["scale_codes"].reshape(-1))[:, None]
        return (self.values(G) * scale).reshape(q.shape).astype(np.float32)


def e8m0_values(exponents: Any) -> Any:
    """float32 value 2^(e - 127) of E8M0 bytes (0xFF, NaN in the spec, never produced here)."""
    xp = array_namespace(exponents)
    return xp.ldexp(xp.ones(exponents.shape, dtype=np.float32), exponents.astype(np.int32) - E8M0_BIAS)


class NVFP4Format(BlockFormat):
    """NVIDIA's NVFP4: 16 x FP4 E2M1, an E4M3 scale per block, a float32 scale per tensor (module docstring)."""

    family = "microscaling"
    name = "nvfp4"
    description = "NVFP4: 16 x FP4 E2M1 + one FP8 E4M3 scale, and one FP32 scale per tensor"
    block = 16
    bits = 4
    scale_bits = 8
    default_group_size = 16

    def __init__(self):
        self.element = make_minifloat("fp4_e2m1")
        self.scale_format = make_minifloat("fp8_e4m3")

    @property
    def grid(self) -> np.ndarray:
        return self.element.grid

    def cast(self, x: Any) -> Any:
        return self.element.cast(x, saturate=True)

    def values(self, codes: Any) -> Any:
        return self.element.values(codes)

    fixed_tensor_scale: Any = None  # s_enc of the tensor being rounded group by group (see for_tensor)

    def tensor_scale(self, x: Any) -> np.float32:
        """s_enc = 448 * 6 / max|x|: maps the tensor's largest block scale onto E4M3's largest value."""
        if self.fixed_tensor_scale is not None:
            return self.fixed_tensor_scale
        absmax = float(array_namespace(x).abs(x).max())
        if absmax == 0.0:
            return np.float32(1.0)  # an all-zero tensor: every block scale is 0, any s_enc decodes it
        return np.float32(self.scale_format.max_value * self.element.max_value) / np.float32(absmax)

    def encode(self, x: Any, group_size: Any = "default", sym: bool | None = None) -> QuantizedTensor:
        self.resolve_sym(sym)
        x, block = self._check_input(x, group_size)
        xp = array_namespace(x)
        s_enc = self.tensor_scale(x)
        G = to_groups(x, block)
        block_absmax = xp.abs(G).max(axis=1, keepdims=True)
        scale_codes = self.scale_format.cast(s_enc * (block_absmax / np.float32(6.0)), saturate=True)
        s_block = self.scale_format.values(scale_codes)
        out_scale = xp.where(s_block == 0, np.float32(0.0), s_enc / xp.where(s_block == 0, 1, s_block))
        codes = self.cast(xp.clip(G * out_scale.astype(np.float32), -6.0, 6.0)).reshape(x.shape)
        shape_of_blocks = groups_shape(tuple(x.shape), block)
        return QuantizedTensor(codes, (s_block / s_enc).reshape(shape_of_blocks), None, self.name, block, True,
                               tuple(x.shape), "rtn",
                               {"scale_codes": scale_codes.reshape(shape_of_blocks), "tensor_scale": s_enc})

    def decode(self, q: QuantizedTensor) -> Any:
        if q.fmt != self.name:
            raise ValueError(f"this QuantizedTensor is {q.fmt}, not {self.name}; call q.dequantize() instead")
        G = to_groups(q.codes, self.block)
        s_block = self.scale_format.values(q.extra["scale_codes"].reshape(-1))[:, None]
        return ((self.values(G) * s_block) / np.float32(q.extra["tensor_scale"])).reshape(q.shape).astype(np.float32)

    def for_tensor(self, W: Any) -> "NVFP4Format":
        """This format with s_enc fixed from the whole of ``W``: then :meth:`find_params` on any of W's groups
        gives the block scales :meth:`encode` would, and :meth:`tensor_from_params` stores that s_enc."""
        bound = NVFP4Format()
        bound.fixed_tensor_scale = NVFP4Format().tensor_scale(W)
        return bound

    def _stored_scale_codes(self, scales: Any) -> dict:
        """The E4M3 byte of each block scale s_b = scale * s_enc, and s_enc."""
        if self.fixed_tensor_scale is None:
            raise ValueError("nvfp4: scales found group by group need the tensor's s_enc: use fmt.for_tensor(W)")
        s_enc = self.fixed_tensor_scale
        codes = self.scale_format.cast(array_namespace(scales).asarray(scales, dtype=np.float32) * s_enc,
                                       saturate=True)
        return {"scale_codes": codes, "tensor_scale": s_enc}

    def find_params(self, G: Any, sym: bool = True) -> tuple[Any, Any]:
        """Per-block scales with the tensor scale taken from ``G`` itself, or the one fixed by :meth:`for_tensor`
        (used by methods that fake-quantize)."""
        s_enc = self.tensor_scale(G)
        absmax = array_namespace(G).abs(G).max(axis=1, keepdims=True)
        s_block = self.scale_format.values(self.scale_format.cast(s_enc * (absmax / np.float32(6.0)), saturate=True))
        xp = array_namespace(G)
        return xp.where(s_block == 0, np.float32(1.0), s_block / s_enc).astype(np.float32), None


def make(name: str) -> Format:
    if name == "nvfp4":
        return NVFP4Format()
    element, emax_elem, description = MX_SPECS[name]
    return MXFormat(name, element, emax_elem, description)
