"""GGUF dequantization: our NumPy against gguf-py's NumPy on the CPU, and on a GPU our kernel's GB/s as a
fraction of the device's copy bandwidth (target >= 0.7 for large tensors).

    python benchmarks/gguf_dequantize.py
"""
from __future__ import annotations

import json

import numpy as np

from _timing import best_of, copy_bandwidth, gpu_time
from qtutor.backend import has_gpu
from qtutor.methods import gguf


def main(rows: int = 1024, cols: int = 4096) -> dict:
    import gguf as gguf_py

    W = (np.random.default_rng(0).standard_normal((rows, cols)) * 0.02).astype(np.float32)
    results = []
    bandwidth = copy_bandwidth() if has_gpu() else None
    for name in gguf.TYPES:
        data = gguf.quantize(W, name)
        kind = gguf_py.GGMLQuantizationType[name]
        ours = best_of(lambda: gguf.dequantize(data, name), 3)
        theirs = best_of(lambda: gguf_py.quants.dequantize(data, kind), 3)
        row = {"type": name, "weights": W.size, "numpy_ours_s": ours, "numpy_gguf_py_s": theirs,
               "ratio_ours_over_gguf_py": ours / theirs}
        if bandwidth:
            import cupy

            big = cupy.asarray(gguf.quantize(np.tile(W, (16, 1)), name))  # 2^26 weights
            seconds = gpu_time(lambda: gguf.dequantize(big, name))
            moved = big.nbytes + big.size // gguf.block_info(name)[1] * gguf.block_info(name)[0] * 4
            row.update(gpu_gb_per_s=moved / seconds / 1e9, fraction_of_copy=moved / seconds / bandwidth)
        results.append(row)
        print(json.dumps(row))
    return {"benchmark": "gguf_dequantize", "copy_bandwidth_gb_s": bandwidth and bandwidth / 1e9, "rows": results}


if __name__ == "__main__":
    print(json.dumps(main()))
