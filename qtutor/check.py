"""Self-checks for the notebooks' exercises: write the function, then ``qt.check.<name>(your_function)``.

Each check runs the learner's function on fixed inputs, compares with the library's answer, and prints one
line (PASS/FAIL): what matched, or the first input where it did not and what was expected there.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from qtutor import formats


class CheckResult:
    """PASS/FAIL with a one-line reason; shows itself as that line in a notebook (and is truthy on PASS)."""

    def __init__(self, name: str, ok: bool, detail: str = ""):
        self.name, self.ok, self.detail = name, ok, detail

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'}  {self.name}" + (f": {self.detail}" if self.detail else "")


def _report(name: str, ok: bool, detail: str = "") -> CheckResult:
    return CheckResult(name, ok, detail)


def affine_quantize(function: Callable, bits: int = 4) -> CheckResult:
    """``function(x, bits) -> (codes, scale, zero)``: asymmetric quantization of a 1-D array with its range
    widened to contain 0, scale = (max - min) / (2^bits - 1), zero = round(-min / scale)."""
    x = np.array([-0.71, -0.2, 0.0, 0.13, 0.5, 1.37, 0.9, -0.05], dtype=np.float32)
    codes, scale, zero = function(x, bits)
    fmt = formats.get(f"int{bits}")
    expected_scale, expected_zero = fmt.find_params(x[None, :], sym=False)
    # the library stores the scale as float16 rounded up; accept the exact float32 scale too
    exact_scale = np.float32((max(x.max(), 0) - min(x.min(), 0)) / (2**bits - 1))
    if not (np.isclose(scale, exact_scale, rtol=1e-6) or np.isclose(scale, expected_scale[0, 0], rtol=1e-6)):
        return _report("affine_quantize", False, f"scale {float(scale):.6g}, expected {float(exact_scale):.6g}")
    zero_expected = np.rint(-min(x.min(), 0) / np.float32(scale))
    if int(zero) != int(zero_expected):
        return _report("affine_quantize", False, f"zero point {zero}, expected {int(zero_expected)}")
    expected_codes = np.clip(np.rint(x / np.float32(scale)) + zero_expected, 0, 2**bits - 1)
    codes = np.asarray(codes)
    if codes.shape != x.shape or not np.array_equal(codes.astype(np.int64), expected_codes.astype(np.int64)):
        first = int(np.argmax(codes.astype(np.int64) != expected_codes.astype(np.int64)))
        return _report("affine_quantize", False,
                       f"x[{first}] = {x[first]} gave code {codes[first]}, expected {int(expected_codes[first])}")
    return _report("affine_quantize", True, f"codes {expected_codes.astype(int).tolist()}, zero {int(zero)}")


def symmetric_quantize(function: Callable, bits: int = 8) -> CheckResult:
    """``function(x, bits) -> (codes, scale)``: symmetric, scale = max|x| / (2^(bits-1) - 1)."""
    x = np.array([0.3, -1.2, 0.05, 0.9, -0.4, 1.1], dtype=np.float32)
    codes, scale = function(x, bits)
    qmax = 2 ** (bits - 1) - 1
    expected_scale = np.float32(np.abs(x).max() / qmax)
    if not np.isclose(scale, expected_scale, rtol=1e-3):
        return _report("symmetric_quantize", False, f"scale {float(scale):.6g}, expected {float(expected_scale):.6g}")
    expected = np.clip(np.rint(x / np.float32(scale)), -qmax, qmax)
    if not np.array_equal(np.asarray(codes).astype(np.int64), expected.astype(np.int64)):
        return _report("symmetric_quantize", False, f"codes {np.asarray(codes).tolist()}, expected {expected.astype(int).tolist()}")
    return _report("symmetric_quantize", True, f"codes {expected.astype(int).tolist()}")
