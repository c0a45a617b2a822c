"""The table of formats by name: ``qtutor.formats`` fills it, ``QuantizedTensor`` reads it to decode itself.

Each entry is a function that builds the format on first use (a format family is imported only when one of its
formats is asked for). This module imports no family: the families build QuantizedTensors, so a table that
imported them would close a loop (tensor -> table -> family -> tensor).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

_MAKERS: dict[str, Callable[[], Any]] = {}
_BLOCK_TYPES: list[str] = []  # formats whose scales live inside fixed blocks of bytes (ggml's Q4_K ...)
_CODEBOOKS: list[str] = []  # formats whose values are vectors from a table (QuIP#'s E8P, learned codebooks)


def register(name: str, make: Callable[[], Any], block_type: bool = False, codebook: bool = False) -> None:
    """Add the format ``name`` (lower case), built by ``make()`` the first time it is asked for. A
    ``block_type`` (ggml's) or a ``codebook`` format is left out of :func:`names`, which lists the formats with
    an element grid."""
    _MAKERS[name] = make
    if block_type:
        _BLOCK_TYPES.append(name)
    if codebook:
        _CODEBOOKS.append(name)


def names() -> list[str]:
    """The name of every element format (one code per number, on a grid), in the order the course meets them."""
    return [name for name in _MAKERS if name not in _BLOCK_TYPES and name not in _CODEBOOKS]


def codebook_formats() -> list[str]:
    """The name of every codebook format (vectors of weights coded as entries of tables)."""
    return list(_CODEBOOKS)


def block_types() -> list[str]:
    """The name of every block type (ggml's: ``q4_0`` ... ``q6_k``), each a format of its own."""
    return list(_BLOCK_TYPES)


def by_name(name: str) -> Any:
    """The format called ``name`` (any case). Format objects are stateless and shared: one per format."""
    key = str(name).lower()
    if key not in _MAKERS:
        raise ValueError(f"unknown format {name!r}; the formats are: {', '.join(_MAKERS)}")
    return _built(key)


@functools.lru_cache(maxsize=None)
def _built(key: str) -> Any:
    return _MAKERS[key]()
