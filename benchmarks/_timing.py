"""Timing helpers shared by the benchmark scripts: best-of-n wall time, and GPU timing with CUDA events."""
from __future__ import annotations

from typing import Callable

from qtutor.eval.speed import best_of  # noqa: F401  (the benchmarks' best-of-n wall time)


def gpu_time(function: Callable[[], object], repeats: int = 20) -> float:
    """Mean seconds per call on the GPU, measured with CUDA events after a warm-up call."""
    import cupy

    function()
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    for _ in range(repeats):
        function()
    end.record()
    end.synchronize()
    return cupy.cuda.get_elapsed_time(start, end) / 1e3 / repeats


def copy_bandwidth(n_bytes: int = 1 << 28) -> float:
    """Device-to-device copy bandwidth (bytes/s, read + write counted) of this GPU."""
    import cupy

    source = cupy.empty(n_bytes, dtype=cupy.uint8)
    target = cupy.empty_like(source)
    seconds = gpu_time(lambda: target.__setitem__(Ellipsis, source))
    return 2 * n_bytes / seconds
