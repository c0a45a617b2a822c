"""The table of formats by name: ``qtutor.formats`` fills it, ``QuantizedTensor`` reads it to decode itself.

Each entry is a function that builds the format on first use (a format family is imported only when one of its
formats is asked for). This module imports no family: the families build QuantizedTensors, so a table that
imported them would close a loop (tensor -> table -> family -> tensor).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

_MAKERS: dict[str, Callable[[], Any]] = {}


def register(name: str, make: Callable[[], Any]) -> None:
    """Add the format ``name`` (lower case), built by ``make()`` the first time it is asked for."""
    _MAKERS[name] = make


def names() -> list[str]:
    """The name of every format, in the order the course meets them."""
    return list(_MAKERS)


@functools.lru_cache(maxsize=None)
def by_name(name: str) -> Any:
    """The format called ``name`` (any case). Format objects are stateless and shared."""
    key = str(name).lower()
    if key not in _MAKERS:
        raise ValueError(f"unknown format {name!r}; the formats are: {', '.join(_MAKERS)}")
    return _MAKERS[key]()
