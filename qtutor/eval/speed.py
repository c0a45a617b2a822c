"""Why a quantized model is fast, or not: decode is a matrix–vector product, and a matrix–vector product reads.

    bandwidth = copy_bandwidth()            # bytes/s this machine moves (read + write), NumPy
    peak = matmul_peak()                     # flop/s of a large float32 matmul, torch
    rows = gemv_times(1536, 576)             # one decode-shaped layer in every variant, with ratios
    roofline(intensity, bandwidth, peak)     # the speed a kernel of that arithmetic intensity can reach

At batch M, a linear layer y = x W^T with W of N × K does 2 M N K flops and must read the N K weights once:

    arithmetic intensity I = flops / bytes read = 2 M N K / (N K · b / 8) = 16 M / b   flop per byte

for weights of b bits (activations are small beside the weights at small M). A processor reaches at most

    attainable flop/s = min(peak flop/s, I × memory bandwidth)      (the roofline, Williams et al. 2009).

A CPU core does tens of flops for each byte its memory delivers; at M = 1 and b = 32, I = 0.5 flop/byte, so
decode sits deep on the bandwidth slope: the time is the weight bytes divided by the bandwidth. Halving the
bytes (bfloat16) or dividing them by 4 or 8 (int8, int4) divides the time alike, **if** a kernel reads the
packed codes and turns them into numbers in registers. Without one, a 4-bit format must first be unpacked to a
float matrix in memory (fake-quantization, "dequantize then matmul"), which reads the codes, *writes* the float
matrix and reads it again: slower than float, which is what bitsandbytes and torchao users meet when their
format has no kernel for their device.

Timings here are live and vary from run to run and machine to machine (nothing about them is checked); the
ratios measured in one run are what carry over. :data:`STORED_H100` holds the GPU figures of the project's
kernel report for machines without a GPU.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from qtutor.formats.normalfloat import NF4_TABLE


def best_of(function: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Smallest wall time of ``repeats`` calls (seconds), after ``warmup`` untimed calls: the least disturbed."""
    for _ in range(warmup):
        function()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def copy_bandwidth(n_bytes: int = 1 << 29, repeats: int = 5) -> float:
    """Memory bandwidth of this machine (bytes/s), read + write counted, from a STREAM-like copy in NumPy.

    The copy touches 2 × ``n_bytes`` (1 GiB by default), more than a CPU's last-level cache holds (480 MiB on
    the course's Xeon, 8-36 MiB on a laptop), so the bytes come from DRAM. A layer small enough to stay in
    cache between calls is read faster than this: it lands above the roofline."""
    source = np.ones(n_bytes // 8, dtype=np.float64)
    target = np.empty_like(source)
    seconds = best_of(lambda: np.copyto(target, source), repeats)
    return 2 * source.nbytes / seconds


def matmul_peak(n: int = 1024, repeats: int = 5) -> float:
    """Float32 flop/s of an n × n × n matmul in torch (2 n^3 flops): the compute roof, as far as torch reaches it."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / best_of(lambda: torch.mm(a, b), repeats)


def roofline(intensity: Any, bandwidth: float, peak: float) -> Any:
    """min(peak, intensity × bandwidth): the flop/s reachable at ``intensity`` flop/byte (array or scalar)."""
    return np.minimum(peak, np.asarray(intensity, dtype=np.float64) * bandwidth)


def intensity(batch: int, bits_per_weight: float) -> float:
    """Flops per weight byte of a linear layer at batch ``batch``: 2 M / (b / 8) = 16 M / b."""
    return 16.0 * batch / bits_per_weight


def gemv_variants(N: int, K: int, group_size: int = 64, batch: int = 1, seed: int = 0) -> dict[str, dict]:
    """One layer of N × K in every way this course can run it, as ``label -> {"call", "bytes", "note"}``.

    ``call()`` computes y = x W^T for x of ``batch`` rows; ``bytes``: what it must read of the weights (codes
    and scales). The int8/int4 *kernel* variants use torch's packed CPU kernels (:mod:`qtutor.model.packed`);
    ``fake-quant`` variants store the codes and dequantize to a float matrix on every call, as a format without
    a kernel must; ``nf4`` has no CPU kernel at all (a 16-entry table lookup, then a float matmul)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    W = torch.randn(N, K, generator=generator) * 0.02
    x = torch.randn(batch, K, generator=generator)
    Wb, xb = W.bfloat16(), x.bfloat16()
    groups = N * K // group_size
    variants = {
        "float32": {"call": lambda: x @ W.T, "bytes": 4 * N * K, "note": "torch matmul (BLAS)"},
        "bfloat16": {"call": lambda: xb @ Wb.T, "bytes": 2 * N * K, "note": "torch matmul, bf16 weights"},
    }
    # fake-quant: int4 codes (one byte each, as NumPy keeps them), float32 group scales and zero points;
    # dequantized to a float32 matrix on every call
    codes4 = torch.randint(0, 16, (N, K // group_size, group_size), generator=generator, dtype=torch.uint8)
    scale4 = torch.rand(N, K // group_size, 1, generator=generator) * 0.01
    zero4 = torch.full((N, K // group_size, 1), 8.0)
    variants["int4 fake-quant"] = {
        "call": lambda: x @ ((codes4.float() - zero4) * scale4).reshape(N, K).T,
        "bytes": N * K + 8 * groups, "note": "dequantize to float32, then matmul: no kernel"}
    nf4_table = torch.from_numpy(NF4_TABLE.astype(np.float32))
    variants["nf4 (no CPU kernel)"] = {
        "call": lambda: x @ (nf4_table[codes4.long()] * scale4).reshape(N, K).T,
        "bytes": N * K + 4 * groups, "note": "table lookup to float32, then matmul"}
    for fmt in ("int8", "int4"):
        variants.update(kernel_variants(fmt, W.numpy(), x, group_size))
    return variants


def kernel_variants(fmt: str, W: np.ndarray, x: Any, group_size: int) -> dict[str, dict]:
    """The packed-kernel variants of one format: with bfloat16 activations (the path the kernel was written
    for) and with float32 ones (its generic path); one entry with ``call=None`` and the reason if torch lacks it."""
    import torch

    from qtutor.model import packed

    ok, note = packed.kernel_available(fmt)
    if not ok:
        return {f"{fmt} kernel": {"call": None, "bytes": 0, "note": note}}
    N, K = W.shape
    if fmt == "int8":
        codes, scales = packed.pack_int8(W)
        weight_bytes = N * K + 4 * N

        def run(a, s):
            return lambda: torch._weight_int8pack_mm(a, codes, s)
    else:
        codes, scales = packed.pack_int4(W, group_size)
        weight_bytes = N * K // 2 + 4 * (N * K // group_size)

        def run(a, s):
            return lambda: torch.ops.aten._weight_int4pack_mm_for_cpu(a, codes, group_size, s)
    return {f"{fmt} kernel, bf16 activations": {"call": run(x.bfloat16(), scales.bfloat16()), "bytes": weight_bytes,
                                                "note": note},
            f"{fmt} kernel, fp32 activations": {"call": run(x.float(), scales), "bytes": weight_bytes,
                                                "note": note + " (its generic float32 path)"}}


def gemv_times(N: int, K: int, group_size: int = 64, batch: int = 1, repeats: int = 5) -> list[dict]:
    """Time every variant of :func:`gemv_variants`: rows of ``label``, ``seconds`` (best of ``repeats``),
    ``bytes``, ``bytes_per_s`` (weights read / time), ``flops_per_s``, ``vs_float32`` (float32 time / this
    time: above 1 is faster) and ``note``. A variant without a kernel has ``seconds=None`` and says why."""
    import torch

    rows = []
    with torch.no_grad():
        for label, variant in gemv_variants(N, K, group_size, batch).items():
            if variant["call"] is None:
                rows.append({"label": label, "seconds": None, "bytes": 0, "bytes_per_s": None,
                             "flops_per_s": None, "vs_float32": None, "note": variant["note"]})
                continue
            seconds = best_of(variant["call"], repeats)
            rows.append({"label": label, "seconds": seconds, "bytes": variant["bytes"],
                         "bytes_per_s": variant["bytes"] / seconds, "flops_per_s": 2 * batch * N * K / seconds,
                         "note": variant["note"]})
    float_seconds = rows[0]["seconds"]
    for row in rows:
        row["vs_float32"] = None if row["seconds"] is None else float_seconds / row["seconds"]
    return rows


def decode_tokens_per_second(model: Any, tokenizer: Any, prompt: str, new_tokens: int = 32) -> float:
    """Greedy decode speed at batch 1, the prompt's prefill taken out: (``new_tokens`` - 1) / (time to generate
    ``new_tokens`` - time to generate 1), never stopping early. (The prefill runs the prompt's tokens as one
    batch, where a kernel's speed is another matter: notebook 14's batch-16 figures.)"""
    from qtutor.eval.generation import greedy_tokens

    if new_tokens < 2:
        raise ValueError(f"new_tokens={new_tokens}: time at least 2 tokens (the first one comes with the prefill)")

    def seconds(n):
        started = time.perf_counter()
        greedy_tokens(model, tokenizer, prompt, n, stop_at_end=False)
        return time.perf_counter() - started

    prefill = seconds(1)
    return (new_tokens - 1) / max(seconds(new_tokens) - prefill, 1e-9)


# The GPU picture, from ../shared/KERNELS.md (H100 80GB HBM3, measured with CUDA graphs and a cold L2, or quoted
# from the named source). Times in microseconds per call; "vs bf16" is the bf16 time over the variant's time.
STORED_H100 = {
    "hbm_bytes_per_s": 3.04e12,         # 1 GiB streamed read [measured, KERNELS.md section 0]
    "bf16_flops_per_s": 7.83e14,        # cuBLAS bf16 GEMM 8192^3, 781-785 TFLOP/s [measured, section 0]
    "gemv": [  # N x K, batch M, cuBLAS bf16 us, tinygemm int4 g128 us [measured, section 1.2]
        {"shape": "4096 x 4096", "M": 1, "bf16_us": 16.1, "int4_us": 7.0},
        {"shape": "11008 x 4096", "M": 1, "bf16_us": 38.0, "int4_us": 15.1},
        {"shape": "28672 x 8192", "M": 1, "bf16_us": 166.5, "int4_us": 62.9},
        {"shape": "4096 x 4096", "M": 16, "bf16_us": 16.9, "int4_us": 22.1},
        {"shape": "28672 x 8192", "M": 16, "bf16_us": 167.2, "int4_us": 268.1},
    ],
    "end_to_end": [  # whole-model decode at batch 1 [published, section 1.2-1.3]
        {"model": "Llama-3.1-8B on H100 (torchao)", "float_tok_s": 126.9, "int4_tok_s": 241.4},
        {"model": "Llama-2-7B on A100 (torchao)", "float_tok_s": 107.4, "int4_tok_s": 201.1},
        {"model": "Llama-7B on RTX 4090 (llama.cpp Q4_0 vs F16)", "float_tok_s": 61.8, "int4_tok_s": 154.0},
    ],
    "notes": ["Marlin (IST-DASLab): close to the ideal 3.87x over fp16 up to batch 16-32 on an A10; on H100 "
              "1.8-2.2x bf16 at M = 1, flat to M = 16 [published]",
              "tinygemm (torch int4 kernel) is best at M <= 2 and slower than bf16 at M = 16 [measured]"],
}


def stored_gpu_rows() -> list[dict]:
    """The stored H100 GEMV figures as table rows with the int4 speed-up over bf16 (ratio of the stored times)."""
    return [{**row, "int4_vs_bf16": row["bf16_us"] / row["int4_us"]} for row in STORED_H100["gemv"]]


def live_gpu_rows(repeats: int = 50) -> tuple[list[dict] | None, str]:
    """The stored GEMV table measured again on this machine's CUDA GPU: ``(rows, note)`` with the same keys as
    :func:`stored_gpu_rows`, or ``(None, why not)`` without a GPU or without torch's int4 CUDA kernel (tinygemm,
    ``torch._weight_int4pack_mm``). Times are CUDA-event means over ``repeats`` calls (the L2 cache stays warm
    between calls here, unlike the stored figures, so small shapes come out faster than HBM allows)."""
    import torch

    if not torch.cuda.is_available():
        return None, "no CUDA GPU here: the table shows the stored H100 figures"
    if not (hasattr(torch, "_weight_int4pack_mm") and hasattr(torch, "_convert_weight_to_int4pack")):
        return None, f"torch {torch.__version__} has no int4 CUDA kernel: the table shows the stored H100 figures"

    def cuda_time(function):
        function()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            function()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) * 1e3 / repeats  # microseconds

    rows, group_size = [], 128
    try:
        for stored in STORED_H100["gemv"]:
            N, K = (int(n) for n in stored["shape"].split(" x "))
            x = torch.randn(stored["M"], K, device="cuda", dtype=torch.bfloat16)
            W = torch.randn(N, K, device="cuda", dtype=torch.bfloat16) * 0.02
            codes = torch.randint(0, 16, (N, K), device="cuda", dtype=torch.int32)
            packed = torch._convert_weight_to_int4pack((codes[:, ::2] << 4 | codes[:, 1::2]).to(torch.uint8), 8)
            scales_and_zeros = torch.rand(K // group_size, N, 2, device="cuda", dtype=torch.bfloat16) * 0.01
            bf16_us = cuda_time(lambda: x @ W.T)
            int4_us = cuda_time(lambda: torch._weight_int4pack_mm(x, packed, group_size, scales_and_zeros))
            rows.append({"shape": stored["shape"], "M": stored["M"], "bf16_us": bf16_us, "int4_us": int4_us,
                         "int4_vs_bf16": bf16_us / int4_us})
    except RuntimeError as error:  # a torch whose kernel wants another layout or device generation
        return None, f"the int4 CUDA kernel did not run here ({error}): the table shows the stored H100 figures"
    return rows, f"measured now on {torch.cuda.get_device_name()} (int4: tinygemm g{group_size}, bf16: cuBLAS)"
