"""Round-to-nearest (RTN): the baseline every other method is measured against.

Each weight becomes the grid point nearest to it, group by group, with no data at all:

    s, z = scale and zero point of the group      (see qtutor.formats: s = max|w| / max(grid), ...)
    q_i  = argmin_k |w_i / s + z - grid_k|         (round half to even for the integer grid)
    w_hat_i = s * (grid[q_i] - z)

RTN minimizes every weight's own error |w - w_hat|, independently. It ignores what the layer computes,
y = W x: a small error on a weight that meets a large activation costs more than a large error on a weight
that meets a small one. GPTQ, AWQ and SmoothQuant start from that observation.
"""
from __future__ import annotations

from typing import Any

from qtutor.formats import Format
from qtutor.methods import Method
from qtutor.tensor import QuantizedTensor


def quantize(W: Any, fmt: Format, group_size: int | None = 128, sym: bool | None = None, calib: Any = None,
             name: str = "layer", role: str | None = None, **format_options) -> QuantizedTensor:
    """Round ``W`` to the nearest points of ``fmt``'s grid. ``calib``, ``name`` and ``role`` are accepted and ignored
    (RTN needs no data); ``format_options`` go to the format (e.g. ``double_quant=True`` for NF4)."""
    q = fmt.encode(W, group_size=group_size, sym=sym, **format_options)
    return QuantizedTensor(q.codes, q.scales, q.zeros, q.fmt, q.group_size, q.sym, q.shape, "rtn", q.extra)


# no data, no model phase: each weight on its own, on the model's device when the format encodes there
METHOD = Method("rtn", quantize=quantize, device_arrays=True)
