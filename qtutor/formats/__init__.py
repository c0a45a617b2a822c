"""Every number format of the course, by name.

    >>> import qtutor as qt
    >>> qt.formats.names()[:3]
    ['int2', 'int3', 'int4']
    >>> fmt = qt.formats.get("fp8_e4m3")
    >>> q = fmt.encode(W, group_size=-1)      # codes + one scale per row
    >>> W_hat = q.dequantize()

Families, one file each: ``integer`` (INT2..INT8), ``minifloat`` (FP16, BF16, FP8, FP6, FP4),
``microscaling`` (MXFP4/6/8, MXINT8, NVFP4), ``normalfloat`` (NF4 and bitsandbytes' FP4).
"""
from __future__ import annotations

from typing import Callable

from qtutor.formats.base import Format
from qtutor.formats.registry import by_name, names, register


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
del _bits, _name


def get(name: str) -> Format:
    """The format called ``name`` (see :func:`names`); a Format is returned as it is. Formats are shared."""
    if isinstance(name, Format):
        return name
    return by_name(name)


__all__ = ["Format", "get", "names"]
