"""Every number format of the course, by name.

    >>> import qtutor as qt
    >>> qt.formats.names()[:3]
    ['int2', 'int3', 'int4']
    >>> fmt = qt.formats.get("fp8_e4m3")
    >>> q = fmt.encode(W, group_size=-1)      # codes + one scale per row
    >>> W_hat = q.dequantize()

Families, one file each: ``integer`` (INT2..INT8), ``minifloat`` (FP16, BF16, FP8, FP6, FP4),
``microscaling`` (MXFP4/6/8, MXINT8, NVFP4), ``normalfloat`` (NF4 and bitsandbytes' FP4), and ``ggml``
(llama.cpp's block types Q4_0 ... Q6_K, listed by :func:`block_types`: their scales live inside each block),
and ``codebook`` (vectors of weights coded as entries of tables: QuIP#'s E8P; listed by
:func:`codebook_formats`).
"""
from __future__ import annotations

from typing import Callable

from qtutor.formats.base import Format
from qtutor.formats.registry import block_types, by_name, codebook_formats, names, register


def _integer(bits: int) -> Callable[[], Format]:
    def make() -> Format:
        from qtutor.formats.integer import IntegerFormat

        return IntegerFormat(bits)

    return make


def _from(module: str, name: str) -> Callable[[], Format]:
    def make() -> Format:
        import importlib

        return importlib.import_module(f"qtutor.formats.{module}").make(name)

    return make


for _bits in range(2, 9):
    register(f"int{_bits}", _integer(_bits))
for _name in ("fp16", "bf16", "fp8_e4m3", "fp8_e5m2", "fp6_e3m2", "fp6_e2m3", "fp4_e2m1"):
    register(_name, _from("minifloat", _name))
for _name in ("mxfp4", "mxfp6", "mxfp6_e3m2", "mxfp8", "mxfp8_e5m2", "mxint8", "nvfp4"):
    register(_name, _from("microscaling", _name))
for _name in ("nf4", "bnb_fp4"):
    register(_name, _from("normalfloat", _name))
# ggml's block types (its MXFP4 block is "ggml_mxfp4": "mxfp4" above is the OCP format, the same numbers)
for _name in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "ggml_MXFP4", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
              "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "IQ3_XXS", "IQ3_S",
              "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ1_S", "IQ1_M"):  # ggml.TYPES, in its order (tests/test_gguf.py checks)
    register(_name.lower(), _from("ggml", _name), block_type=True)
# vector codebooks (listed by codebook_formats()): QuIP#'s fixed lattice tables, AQLM's and VPTQ's learned ones
# (tables per tensor), any4/any3 (a learned scalar table per row, qtutor.methods.any4)
for _name in ("e8p", "e8p_rvq3", "aqlm_2x8", "aqlm_1x16", "vptq_v4_3bit", "vptq_v8_2bit", "any4", "any3"):
    register(_name, _from("codebook", _name), codebook=True)
del _bits, _name


def get(name: str) -> Format:
    """The format called ``name`` (see :func:`names`); a Format is returned as it is. Formats are shared."""
    if isinstance(name, Format):
        return name
    return by_name(name)


__all__ = ["Format", "block_types", "get", "names"]
