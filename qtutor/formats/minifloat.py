"""Floating-point formats from 16 bits down to 4: FP16, BF16, FP8 (E4M3, E5M2), FP6 (E3M2, E2M3), FP4 (E2M1).

One generic "minifloat" covers them all. A code has a sign bit, E exponent bits and M mantissa bits:

    [ s | e e e e | m m m ]      E4M3: 1 + 4 + 3 = 8 bits

    normal     (e > 0):   value = (-1)^s * 2^(e - bias) * (1 + m / 2^M)
    subnormal  (e = 0):   value = (-1)^s * 2^(1 - bias) * (m / 2^M)        (evenly spaced down to 0)

with bias = 2^(E-1) - 1. Each binade [2^k, 2^(k+1)) holds 2^M evenly spaced values, so the relative precision
is the same everywhere (about 2^-M) — unlike an integer grid, whose relative precision is poor near zero.
More exponent bits buy range, more mantissa bits buy precision: E5M2 reaches 57344 with 4 values per binade,
E4M3 only 448 but with 8.

What the all-ones exponent means differs, and is where formats disagree:
  * IEEE-like (FP16, BF16, E5M2): all-ones exponent is infinity (m = 0) or NaN (m != 0);
  * E4M3FN ("finite"): no infinity; only s.1111.111 is NaN, so s.1111.110 = 448 is the largest value;
  * FP6 and FP4 (OCP MX element types): no infinity, no NaN — every code is a number.

Rounding: to the nearest representable value, ties to the even mantissa (IEEE's default, used by ml_dtypes,
PyTorch and NVIDIA's converters), subnormals included. Overflow: with ``saturate=True`` (OCP's SAT mode, the
"satfinite" of NVIDIA's converters, and what quantization wants) values beyond the largest finite value
become that value, +-infinity included; with ``saturate=False`` a cast follows the IEEE/ml_dtypes rule:
overflow gives infinity where the format has it, NaN in E4M3FN. FP6 and FP4 always saturate (they have
neither). NaN input stays NaN where the format has a NaN and is refused where it has none.

Defaults: FP16 and BF16 cast like IEEE (``saturate=False``); FP8, FP6 and FP4 saturate. The scaled variants
(``group_size`` given) divide each group by s = max|x| / max_value, so the group's largest magnitude lands
on the format's largest value, and store s in float32 (per-tensor FP8 as in Transformer Engine and torchao).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from qtutor.backend import array_namespace, is_cupy
from qtutor.formats.base import Format
from qtutor.formats.packing import pack_bits, unpack_bits
from qtutor.tensor import QuantizedTensor

# name: (exponent bits, mantissa bits, special values, saturate by default, description)
SPECS = {
    "fp16": (5, 10, "ieee", False, "IEEE half precision"),
    "bf16": (8, 7, "ieee", False, "bfloat16: float32's range, 8 bits of precision"),
    "fp8_e4m3": (4, 3, "fn", True, "FP8 E4M3FN: more precision, max 448, no infinity"),
    "fp8_e5m2": (5, 2, "ieee", True, "FP8 E5M2: more range, max 57344, with infinity"),
    "fp6_e3m2": (3, 2, "none", True, "FP6 E3M2 (OCP MX element): max 28"),
    "fp6_e2m3": (2, 3, "none", True, "FP6 E2M3 (OCP MX element): max 7.5"),
    "fp4_e2m1": (2, 1, "none", True, "FP4 E2M1 (OCP MX / NVFP4 element): 0, 0.5, 1, 1.5, 2, 3, 4, 6"),
}


class Minifloat(Format):
    """A sign / exponent / mantissa format with round-to-nearest-even and optional saturation."""

    family = "minifloat"
    symmetric_only = True
    scale_bits = 32

    def __init__(self, name: str, exponent_bits: int, mantissa_bits: int, special: str = "ieee",
                 saturate: bool = True, description: str = ""):
        if special not in ("ieee", "fn", "none"):
            raise ValueError(f"special={special!r}: use 'ieee', 'fn' or 'none'")
        self.name, self.description = name, description
        self.exponent_bits, self.mantissa_bits, self.special = exponent_bits, mantissa_bits, special
        self.bits = 1 + exponent_bits + mantissa_bits
        self.bias = 2 ** (exponent_bits - 1) - 1
        self.min_exponent = 1 - self.bias  # exponent of the smallest normal value
        self.has_inf = special == "ieee"
        self.has_nan = special in ("ieee", "fn")
        self.saturates_inf = True  # in saturating mode; see cast
        self.default_saturate = saturate
        # the largest finite value: exponent field all ones minus one (IEEE) or all ones (FN, none)
        top_exponent = 2**exponent_bits - (2 if special == "ieee" else 1) - self.bias
        top_mantissa = 2**mantissa_bits - (2 if special == "fn" else 1)
        self.max_normal = 2.0**top_exponent * (1 + top_mantissa / 2**mantissa_bits)
        self.min_normal = 2.0**self.min_exponent
        self.min_subnormal = 2.0 ** (self.min_exponent - mantissa_bits)
        self.sign_bit = 1 << (self.bits - 1)
        self.code_dtype = np.uint8 if self.bits <= 8 else np.uint16
        self.nan_code = self._nan_code()
        self.inf_code = ((2**exponent_bits - 1) << mantissa_bits) if self.has_inf else None
        self._table = None

    def _nan_code(self) -> int | None:
        if self.special == "ieee":  # quiet NaN: exponent all ones, mantissa's top bit set
            return ((2**self.exponent_bits - 1) << self.mantissa_bits) | (1 << (self.mantissa_bits - 1))
        if self.special == "fn":
            return (1 << (self.bits - 1)) - 1
        return None

    # ---- decode: code -> value --------------------------------------------------------------------------
    def value_of_code(self, codes: np.ndarray) -> np.ndarray:
        """The formula of the module docstring, applied to every code (float64)."""
        codes = np.asarray(codes, dtype=np.int64)
        sign = np.where(codes & self.sign_bit, -1.0, 1.0)
        exponent = (codes >> self.mantissa_bits) & (2**self.exponent_bits - 1)
        mantissa = codes & (2**self.mantissa_bits - 1)
        fraction = mantissa / 2.0**self.mantissa_bits
        value = np.where(exponent == 0, 2.0**self.min_exponent * fraction,
                         2.0 ** (exponent - self.bias) * (1 + fraction)) * sign
        top = exponent == 2**self.exponent_bits - 1
        if self.special == "ieee":
            value = np.where(top & (mantissa == 0), sign * np.inf, value)
            value = np.where(top & (mantissa != 0), np.nan, value)
        elif self.special == "fn":
            value = np.where(top & (mantissa == 2**self.mantissa_bits - 1), np.nan, value)
        return value

    @property
    def table(self) -> np.ndarray:
        """float32 value of every code (2^bits entries)."""
        if self._table is None:
            self._table = self.value_of_code(np.arange(2**self.bits)).astype(np.float32)
        return self._table

    @property
    def grid(self) -> np.ndarray:
        values = self.table[np.isfinite(self.table)]
        return np.unique(values)  # -0 and +0 are one value

    @property
    def max_value(self) -> float:
        return float(self.max_normal)

    def values(self, codes: Any) -> Any:
        if is_cupy(codes):
            return _gpu_decode(self, codes)
        return self.table[np.asarray(codes).astype(np.int64)]

    # ---- encode: value -> code --------------------------------------------------------------------------
    def cast(self, x: Any, saturate: bool | None = None) -> Any:
        """Codes of the values nearest to ``x`` (round to nearest, ties to even); see the module docstring."""
        saturate = self.default_saturate if saturate is None else saturate
        if self.special == "none":
            saturate = True  # nothing else to overflow to
        if is_cupy(x):
            return _gpu_cast(self, x, saturate)
        x = np.asarray(x, dtype=np.float32)
        magnitude = np.abs(x).astype(np.float64)
        negative = np.signbit(x)
        finite = np.isfinite(magnitude)
        safe = np.where(finite, magnitude, 0.0)
        # the binade of each value (at least the smallest normal one, below which the spacing stays fixed)
        _, exponent = np.frexp(safe)
        binade = np.maximum(exponent - 1, self.min_exponent)
        spacing = np.ldexp(1.0, binade - self.mantissa_bits)
        rounded = np.rint(safe / spacing) * spacing  # exact in float64: RNE on the mantissa
        overflow = rounded > self.max_normal
        code = self._code_of_value(np.minimum(rounded, self.max_normal))
        if saturate:
            pass  # already clamped to max_normal
        elif self.has_inf:
            code = np.where(overflow, self.inf_code, code)
        else:  # E4M3FN without saturation: overflow is NaN, as ml_dtypes and PyTorch do
            code = np.where(overflow, self.nan_code, code)
        infinite = np.isinf(magnitude)
        if self.has_inf and not saturate:
            code = np.where(infinite, self.inf_code, code)
        elif not saturate:  # E4M3FN: infinity -> NaN
            code = np.where(infinite, self.nan_code, code)
        else:
            code = np.where(infinite, self._code_of_value(np.float64(self.max_normal)), code)
        if self.nan_code is not None:
            code = np.where(np.isnan(x), self.nan_code, code)
        code = np.where(negative, code | self.sign_bit, code)  # the sign is kept, -0 and -NaN included
        return code.astype(self.code_dtype)

    def _code_of_value(self, value: np.ndarray) -> np.ndarray:
        """Bit pattern of non-negative values that are exactly representable."""
        value = np.asarray(value, dtype=np.float64)
        _, exponent = np.frexp(value)
        binade = exponent - 1
        normal = (binade >= self.min_exponent) & (value > 0)
        exponent_field = np.where(normal, binade + self.bias, 0)
        significand = np.where(normal, value / np.ldexp(1.0, binade) - 1.0, value / self.min_normal)
        mantissa = np.rint(significand * 2**self.mantissa_bits).astype(np.int64)
        return (exponent_field.astype(np.int64) << self.mantissa_bits) | mantissa

    def check_cast_input(self, x: Any) -> None:
        from qtutor.formats.base import check_finite

        xp = array_namespace(x)
        if not self.has_nan and bool(xp.isnan(x).any()):
            check_finite(x, self.name, f"{self.name} has no NaN encoding")

    def encode(self, x: Any, group_size: int | None = "default", sym: bool | None = None,
               saturate: bool | None = None) -> QuantizedTensor:
        """Plain cast (no ``group_size``) or scaled per tensor / channel / group; see the module docstring."""
        if group_size == "default":
            group_size = self.default_group_size
        if group_size is None and saturate is not None:
            from qtutor.formats.base import as_float32

            x = as_float32(x, self.name)
            self.check_cast_input(x)
            self.resolve_sym(sym)
            return QuantizedTensor(self.cast(x, saturate), None, None, self.name, None, True, tuple(x.shape), "cast",
                                   {"saturate": saturate})
        return super().encode(x, group_size, sym)

    # ---- packing (FP4 and FP6 codes are narrower than a byte) -------------------------------------------
    def pack(self, q: QuantizedTensor) -> Any:
        return pack_bits(q.codes, self.bits)

    def unpack(self, packed: Any, shape: tuple[int, ...]) -> Any:
        return unpack_bits(packed, self.bits, int(np.prod(shape))).astype(self.code_dtype).reshape(shape)


def make(name: str) -> Minifloat:
    exponent_bits, mantissa_bits, special, saturate, description = SPECS[name]
    return Minifloat(name, exponent_bits, mantissa_bits, special, saturate, description)


# ---- GPU path (kernels/minifloat.cu) ---------------------------------------------------------------------------
def _launch_arguments(fmt: Minifloat) -> tuple:
    return (np.int32(fmt.exponent_bits), np.int32(fmt.mantissa_bits), np.int32({"ieee": 0, "fn": 1, "none": 2}[fmt.special]))


def _gpu_cast(fmt: Minifloat, x: Any, saturate: bool) -> Any:
    import cupy

    from qtutor.kernels import THREADS, blocks_for, function

    x = cupy.ascontiguousarray(x, dtype=cupy.float32)
    codes = cupy.empty(x.shape, dtype=cupy.uint16)
    function("minifloat", "minifloat_cast")((blocks_for(x.size),), (THREADS,),
                                            (x, np.int64(x.size), *_launch_arguments(fmt), np.int32(saturate), codes))
    return codes.astype(fmt.code_dtype)


def _gpu_decode(fmt: Minifloat, codes: Any) -> Any:
    import cupy

    from qtutor.kernels import THREADS, blocks_for, function

    codes16 = cupy.ascontiguousarray(codes).astype(cupy.uint16)
    out = cupy.empty(codes16.shape, dtype=cupy.float32)
    function("minifloat", "minifloat_decode")((blocks_for(codes16.size),), (THREADS,),
                                              (codes16, np.int64(codes16.size), *_launch_arguments(fmt), out))
    return out
