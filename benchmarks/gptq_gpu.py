"""GPTQ of one 4096 x 4096 layer on the GPU: ours (CuPy: kernels/gptq.cu for the column loop, cuBLAS for the lazy
updates) against the same algorithm written in PyTorch, run in the same process on the same Hessian.

Target (GPTQ issue): time(ours) / time(PyTorch) <= 1.0, INT4 groups of 128, asymmetric, block 128, calibration
128 x 2048 tokens. Also printed: where our time goes (the Hessian, the Cholesky factorization of H^-1 with its
dampening, and the column loop with the lazy updates).

    python benchmarks/gptq_gpu.py            # needs a CUDA device, CuPy and torch
"""
from __future__ import annotations

import json
import sys

import numpy as np

from _timing import gpu_time

ROWS = COLUMNS = 4096
TOKENS = 128 * 2048
BITS, GROUP, BLOCK, PERCDAMP = 4, 128, 128, 0.01


def torch_gptq(W, H):
    """GPTQ, asymmetric INT4 g128, lazy blocks of 128, in PyTorch (our own transcription of the algorithm)."""
    import torch

    W = W.clone()
    H = H.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += PERCDAMP * torch.mean(torch.diag(H)) * torch.eye(COLUMNS, device=H.device, dtype=H.dtype)
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True).float()
    maxq = 2**BITS - 1
    Q = torch.zeros_like(W)
    for start in range(0, COLUMNS, BLOCK):
        end = min(start + BLOCK, COLUMNS)
        W1, Err = W[:, start:end].clone(), torch.zeros(ROWS, end - start, device=W.device)
        for k in range(end - start):
            if (start + k) % GROUP == 0:
                group = W1[:, k:k + GROUP] if k + GROUP <= end - start else W[:, start + k:start + k + GROUP]
                low = torch.clamp(group.min(dim=1).values, max=0)
                high = torch.clamp(group.max(dim=1).values, min=0)
                scale = ((high - low) / maxq).half().float()
                scale[scale == 0] = 1
                zero = torch.clamp(torch.round(-low / scale), 0, maxq)
            w = W1[:, k]
            q = (torch.clamp(torch.round(w / scale) + zero, 0, maxq) - zero) * scale
            Q[:, start + k] = q
            err = (w - q) / U[start + k, start + k]
            W1[:, k:] -= err[:, None] * U[start + k, start + k:end][None, :]
            Err[:, k] = err
        W[:, end:] -= Err @ U[start:end, end:]
    return Q


def main() -> None:
    import cupy
    import torch

    from qtutor import formats
    from qtutor.methods.gptq import GPTQ, Hessian

    rng = cupy.random.default_rng(0)
    W = (rng.standard_normal((ROWS, COLUMNS), dtype=cupy.float32) * 0.02)
    fmt = formats.get(f"int{BITS}")

    def hessian():
        h = Hessian(COLUMNS)
        for _ in range(TOKENS // 16384):  # in chunks of 16k tokens, as calibration batches arrive
            h.add(rng.standard_normal((16384, COLUMNS), dtype=cupy.float32))
        return h

    H = hessian()
    seconds = {
        "hessian": gpu_time(hessian, repeats=1),
        "setup_cholesky": gpu_time(lambda: GPTQ(W, H, fmt, GROUP, False, BLOCK, PERCDAMP), repeats=3),
        "ours_total": gpu_time(lambda: GPTQ(W, H, fmt, GROUP, False, BLOCK, PERCDAMP).run(), repeats=3),
    }
    seconds["column_loop_and_updates"] = seconds["ours_total"] - seconds["setup_cholesky"]
    W_torch = torch.from_dlpack(W)
    H_torch = torch.from_dlpack(H.H)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch_gptq(W_torch, H_torch)  # warm-up
    start.record()
    for _ in range(3):
        torch_gptq(W_torch, H_torch)
    end.record()
    torch.cuda.synchronize()
    seconds["torch_total"] = start.elapsed_time(end) / 1e3 / 3
    result = {"layer": [ROWS, COLUMNS], "tokens": TOKENS, "format": f"int{BITS} g{GROUP} asym",
              "seconds": {k: round(v, 4) for k, v in seconds.items()},
              "ours_over_torch": round(seconds["ours_total"] / seconds["torch_total"], 3), "target": "<= 1.0"}
    print(f"GPTQ {ROWS}x{COLUMNS}: ours {seconds['ours_total']:.3f} s (Cholesky and set-up "
          f"{seconds['setup_cholesky']:.3f} s, column loop and updates {seconds['column_loop_and_updates']:.3f} s), "
          f"PyTorch {seconds['torch_total']:.3f} s: ratio {result['ours_over_torch']} (target <= 1.0)")
    print(json.dumps(result))


if __name__ == "__main__":
    try:
        import cupy  # noqa: F401
        import torch

        if not torch.cuda.is_available():
            raise ImportError("torch sees no CUDA device")
    except ImportError as error:
        print(json.dumps({"skipped": f"needs a CUDA device with CuPy and torch ({error})"}))
        sys.exit(0)
    main()
