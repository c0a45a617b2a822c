"""Write tests/data/hqq_golden.npz: mobiusml/hqq's own codes, steps and zero points for a few weight matrices.

The hqq package is not a test dependency (its source distribution runs a CUDA build from setup.py, and it pulls
accelerate), so its answers are stored once, as data, and tests/test_hqq.py compares qtutor.methods.hqq with
them. To regenerate (any machine; the package computes in float32 on a CPU):

    pip install --no-deps --target /tmp/hqq hqq==0.2.8.post1 termcolor
    PYTHONPATH=/tmp/hqq python tools/golden_hqq.py

Cases: a heavy-tailed (Student t, 3 degrees of freedom) and a Gaussian matrix with a few outlier columns, at
2, 3, 4 and 8 bits, groups of 64 along the rows (hqq's axis=1, as hqq_base_quant_config), with the package's
default zero rounding (at 4 bits only) and with it forced on, plus a group of constant weights (range 0).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "hqq_golden.npz"
GROUP_SIZE = 64


def weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20261206)
    heavy = (rng.standard_t(3, (48, 256)) * 0.02).astype(np.float32)
    outliers = (rng.standard_normal((48, 256)) * 0.02).astype(np.float32)
    outliers[:, [5, 77, 200]] *= 25
    outliers[3, :64] = 0.125  # one constant group: the range guard
    return {"heavy": heavy, "outliers": outliers}


def main() -> None:
    import hqq
    import torch
    from hqq.core.quantize import Quantizer

    arrays: dict[str, np.ndarray] = {}
    for name, W in weights().items():
        arrays[f"{name}/W"] = W
        for bits in (2, 3, 4, 8):
            for round_zero in (bits == 4, True):
                key = f"{name}/{bits}/{'round' if round_zero else 'float'}"
                if f"{key}/codes" in arrays:
                    continue
                W_q, meta = Quantizer.quantize(torch.from_numpy(W), nbits=bits, group_size=GROUP_SIZE, axis=1,
                                               optimize=True, round_zero=round_zero, bitpack=False, device="cpu")
                arrays[f"{key}/codes"] = W_q.numpy().astype(np.uint8)
                arrays[f"{key}/scale"] = meta["scale"].numpy().astype(np.float32)
                arrays[f"{key}/zero"] = meta["zero"].numpy().astype(np.float32)
    arrays["version"] = np.array(hqq.__version__ if hasattr(hqq, "__version__") else "0.2.8.post1")
    arrays["torch"] = np.array(torch.__version__)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(arrays)} arrays)")


if __name__ == "__main__":
    main()
