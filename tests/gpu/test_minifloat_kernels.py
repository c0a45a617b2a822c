"""Minifloat casts on the GPU (kernels/minifloat.cu) against the NumPy twin: codes bit-exact, decode exact."""
from __future__ import annotations

import numpy as np
import pytest

from qtutor import formats

pytestmark = pytest.mark.gpu
cupy = pytest.importorskip("cupy")

NAMES = ["fp16", "bf16", "fp8_e4m3", "fp8_e5m2", "fp6_e3m2", "fp6_e2m3", "fp4_e2m1"]


def inputs(fmt, n=200_003, seed=0):
    rng = np.random.default_rng(seed)
    grid = fmt.grid.astype(np.float64)
    ties = (grid[1:] + grid[:-1]) / 2
    random = np.exp(rng.uniform(np.log(fmt.min_subnormal) - 4, np.log(fmt.max_value) + 2, n)) * rng.choice([-1, 1], n)
    specials = [0.0, -0.0, np.inf, -np.inf] + ([np.nan] if fmt.has_nan else [])
    with np.errstate(over="ignore"):
        return np.concatenate([grid, ties, random, specials]).astype(np.float32)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("saturate", [True, False])
def test_cast_kernel_matches_numpy_bit_for_bit(name, saturate):
    fmt = formats.get(name)
    x = inputs(fmt)
    np.testing.assert_array_equal(fmt.cast(cupy.asarray(x), saturate).get(), fmt.cast(x, saturate))


@pytest.mark.parametrize("name", NAMES)
def test_decode_kernel_matches_the_table_for_every_code(name):
    fmt = formats.get(name)
    codes = np.arange(2**fmt.bits).astype(fmt.code_dtype)
    np.testing.assert_array_equal(fmt.values(cupy.asarray(codes)).get(), fmt.values(codes))


@pytest.mark.parametrize("name", ["fp8_e4m3", "fp4_e2m1"])
def test_scaled_encode_on_gpu_equals_numpy(name):
    fmt = formats.get(name)
    W = np.random.default_rng(1).standard_normal((33, 256)).astype(np.float32)
    cpu = fmt.encode(W, group_size=32)
    gpu = fmt.encode(cupy.asarray(W), group_size=32)
    np.testing.assert_array_equal(cpu.scales, gpu.scales.get())
    np.testing.assert_array_equal(cpu.codes, gpu.codes.get())
