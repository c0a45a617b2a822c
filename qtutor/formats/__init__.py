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

import functools
from typing import Callable

from qtutor.formats.base import Format


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


_REGISTRY: dict[str, Callable[[], Format]] = {f"int{b}": _integer(b) for b in range(2, 9)}
_REGISTRY.update({
    name: _from("minifloat", name)
    for name in ("fp16", "bf16", "fp8_e4m3", "fp8_e5m2", "fp6_e3m2", "fp6_e2m3", "fp4_e2m1")
})
_REGISTRY.update({
    name: _from("microscaling", name)
    for name in ("mxfp4", "mxfp6", "mxfp6_e3m2", "mxfp8", "mxfp8_e5m2", "mxint8", "nvfp4")
})
_REGISTRY.update({name: _from("normalfloat", name) for name in ("nf4", "bnb_fp4")})


def names() -> list[str]:
    """The name of every format, in the order the course meets them."""
    return list(_REGISTRY)


@functools.lru_cache(maxsize=None)
def get(name: str) -> Format:
    """The format called ``name`` (see :func:`names`). Format objects are stateless and shared."""
    if isinstance(name, Format):
        return name
    key = str(name).lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown format {name!r}; the formats are: {', '.join(_REGISTRY)}")
    return _REGISTRY[key]()


__all__ = ["Format", "get", "names"]
