"""Our NumPy casts against ml_dtypes' C++ casts, same inputs, same run (a ratio, not a timed test).

    python benchmarks/formats_cpu.py            # prints one line per format and a JSON summary

qtutor's casts are written for reading (round in float64, then build the code), ml_dtypes' for speed; the
ratio says what readability costs. Both must give the same codes (asserted here as well as in the tests).
"""
from __future__ import annotations

import json

import ml_dtypes
import numpy as np

from _timing import best_of
from qtutor import formats

PEERS = {"fp8_e4m3": ml_dtypes.float8_e4m3fn, "fp8_e5m2": ml_dtypes.float8_e5m2, "fp4_e2m1": ml_dtypes.float4_e2m1fn,
         "bf16": ml_dtypes.bfloat16}


def main(n: int = 1 << 22) -> dict:
    x = (np.random.default_rng(0).standard_normal(n) * 4).astype(np.float32)
    rows = []
    for name, peer in PEERS.items():
        fmt = formats.get(name)
        saturate = name != "bf16"
        clipped = np.clip(x, -fmt.max_value, fmt.max_value) if saturate else x
        ours = best_of(lambda: fmt.cast(x, saturate=saturate), 3)
        theirs = best_of(lambda: clipped.astype(peer), 3)
        assert np.array_equal(fmt.cast(x, saturate=saturate).astype(np.uint16),
                              clipped.astype(peer).view(np.uint8 if fmt.bits <= 8 else np.uint16).astype(np.uint16))
        decode_ours = best_of(lambda: fmt.values(fmt.cast(x[:1024], saturate=saturate)), 3)
        rows.append({"format": name, "elements": n, "ours_s": ours, "ml_dtypes_s": theirs,
                     "ratio_ours_over_ml_dtypes": ours / theirs, "ours_melem_per_s": n / ours / 1e6,
                     "decode_1k_s": decode_ours})
        print(f"{name:9s} encode: qtutor {n / ours / 1e6:7.1f} Melem/s, ml_dtypes {n / theirs / 1e6:7.1f} Melem/s, "
              f"ratio {ours / theirs:.1f}x slower")
    return {"benchmark": "formats_cpu", "rows": rows}


if __name__ == "__main__":
    print(json.dumps(main()))
