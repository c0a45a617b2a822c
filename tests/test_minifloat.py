"""FP16 .. FP4 against ml_dtypes, bit for bit: every code decoded, dense sweeps of inputs encoded."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qtutor import formats

ml_dtypes = pytest.importorskip("ml_dtypes")

ORACLE = {
    "fp16": np.float16,
    "bf16": ml_dtypes.bfloat16,
    "fp8_e4m3": ml_dtypes.float8_e4m3fn,
    "fp8_e5m2": ml_dtypes.float8_e5m2,
    "fp6_e3m2": ml_dtypes.float6_e3m2fn,
    "fp6_e2m3": ml_dtypes.float6_e2m3fn,
    "fp4_e2m1": ml_dtypes.float4_e2m1fn,
}
NAMES = list(ORACLE)


def oracle_codes(values: np.ndarray, dtype) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        cast = values.astype(dtype)
    return cast.view(np.uint16 if np.dtype(dtype).itemsize == 2 else np.uint8).astype(np.int64)


def sweep(fmt, seed=0) -> np.ndarray:
    """Every grid value, every tie between neighbours and the floats just either side of it, +-max, just above
    max, max * 1.03, subnormal ties, signed zeros, and random values over many binades."""
    rng = np.random.default_rng(seed)
    grid = fmt.grid.astype(np.float64)
    ties = ((grid[1:] + grid[:-1]) / 2).astype(np.float32)
    parts = [grid, -grid, ties, np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(-np.inf)),
             [fmt.max_value, -fmt.max_value, fmt.max_value * 1.03, -fmt.max_value * 1.03, 0.0, -0.0],
             [np.nextafter(np.float32(fmt.max_value), np.float32(np.inf)), fmt.min_subnormal / 2,
              fmt.min_subnormal * 1.5, fmt.min_subnormal / 2 * 1.0001],
             np.exp(rng.uniform(np.log(fmt.min_subnormal) - 4, np.log(fmt.max_value) + 2, 50_000))
             * rng.choice([-1.0, 1.0], 50_000),
             rng.standard_normal(20_000) * fmt.max_value / 4]
    with np.errstate(over="ignore"):  # bf16's max * 1.03 is beyond float32: it becomes inf, which is tested too
        return np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in parts]).astype(np.float32)


@pytest.mark.parametrize("name", NAMES)
def test_every_code_decodes_like_ml_dtypes(name):
    fmt = formats.get(name)
    codes = np.arange(2**fmt.bits, dtype=np.uint16 if fmt.bits > 8 else np.uint8)
    expected = codes.view(ORACLE[name]).astype(np.float32) if fmt.bits in (8, 16) else \
        codes.astype(np.uint8).view(ORACLE[name]).astype(np.float32)
    np.testing.assert_array_equal(fmt.values(codes), expected)  # NaN positions must match too


@pytest.mark.parametrize("name", NAMES)
def test_encoding_without_saturation_is_bit_exact_with_ml_dtypes(name):
    fmt = formats.get(name)
    x = sweep(fmt)
    specials = [np.inf, -np.inf] + ([np.nan, -np.nan] if fmt.has_nan else [])
    x = np.concatenate([x, np.array(specials, dtype=np.float32)])
    np.testing.assert_array_equal(fmt.cast(x, saturate=False).astype(np.int64), oracle_codes(x, ORACLE[name]))


@pytest.mark.parametrize("name", NAMES)
def test_saturating_encoding_is_ml_dtypes_after_clipping(name):
    fmt = formats.get(name)
    x = sweep(fmt, seed=1)
    clipped = np.clip(x, -fmt.max_value, fmt.max_value)
    np.testing.assert_array_equal(fmt.cast(x, saturate=True).astype(np.int64), oracle_codes(clipped, ORACLE[name]))
    assert fmt.values(fmt.cast(np.array([np.inf, -np.inf], np.float32), saturate=True)).tolist() == [
        fmt.max_value, -fmt.max_value]


def test_the_documented_ranges_and_ties():
    e4m3, e5m2, e2m1 = formats.get("fp8_e4m3"), formats.get("fp8_e5m2"), formats.get("fp4_e2m1")
    assert (e4m3.max_value, e5m2.max_value, e2m1.max_value) == (448.0, 57344.0, 6.0)
    assert (e4m3.min_subnormal, e5m2.min_subnormal, e2m1.min_subnormal) == (2**-9, 2**-16, 0.5)
    assert e2m1.grid.tolist() == [-6, -4, -3, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 3, 4, 6]
    ties = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0], np.float32)
    assert e2m1.values(e2m1.cast(ties)).tolist() == [0, 1, 1, 2, 2, 4, 4]
    assert e4m3.values(e4m3.cast(np.array([464.0, 465.0], np.float32), saturate=False)).tolist()[0] == 448
    assert np.isnan(e4m3.values(e4m3.cast(np.array([465.0], np.float32), saturate=False)))[0]
    assert np.isinf(e5m2.values(e5m2.cast(np.array([61440.0], np.float32), saturate=False)))[0]


@settings(max_examples=200, deadline=None)
@given(value=st.floats(-1e6, 1e6, width=32), name=st.sampled_from(NAMES))
def test_a_cast_lands_on_the_nearest_grid_value(value, name):
    fmt = formats.get(name)
    x = np.float32(value)
    result = float(fmt.values(fmt.cast(np.array([x]), saturate=True))[0])
    target = float(np.clip(x, -fmt.max_value, fmt.max_value))
    nearest = np.min(np.abs(fmt.grid.astype(np.float64) - target))
    assert abs(result - target) == pytest.approx(nearest, abs=1e-12 * max(1.0, abs(target)))


def test_default_saturation_per_format():
    x = np.array([1e6], np.float32)
    assert np.isinf(formats.get("fp16").encode(x).dequantize())[0]  # IEEE half overflows to infinity
    assert formats.get("fp8_e4m3").encode(x).dequantize()[0] == 448  # FP8 saturates (OCP SAT mode)
    assert np.isnan(formats.get("fp8_e4m3").encode(x, saturate=False).dequantize())[0]


def test_nan_is_kept_where_the_format_has_one_and_refused_where_it_has_none():
    x = np.array([1.0, np.nan], np.float32)
    assert np.isnan(formats.get("fp8_e4m3").encode(x).dequantize()[1])
    assert np.isnan(formats.get("bf16").encode(x).dequantize()[1])
    for name in ("fp6_e3m2", "fp4_e2m1"):
        with pytest.raises(ValueError, match="no NaN encoding"):
            formats.get(name).encode(x)
    assert formats.get("fp4_e2m1").encode(np.array([np.inf], np.float32)).dequantize()[0] == 6.0


@pytest.mark.parametrize("name", ["fp8_e4m3", "fp8_e5m2", "fp4_e2m1"])
@pytest.mark.parametrize("group_size", [0, -1, 32])
def test_scaled_encodes_put_each_groups_max_on_the_formats_max(name, group_size):
    fmt = formats.get(name)
    W = np.random.default_rng(2).standard_normal((16, 128)).astype(np.float32)
    q = fmt.encode(W, group_size=group_size)
    assert q.scales.dtype == np.float32
    W_hat = q.dequantize()
    from qtutor.formats.base import to_groups

    np.testing.assert_allclose(np.abs(to_groups(W_hat, group_size)).max(axis=1),
                               np.abs(to_groups(W, group_size)).max(axis=1), rtol=1e-6)
    assert np.mean((W_hat - W) ** 2) < np.mean(W**2) * {"fp8_e4m3": 1e-3, "fp8_e5m2": 4e-3, "fp4_e2m1": 0.05}[name]


def test_bits_per_weight_count_the_float32_scales():
    fmt = formats.get("fp8_e4m3")
    assert fmt.bits_per_weight((4096, 4096), group_size=-1) == 8 + 32 / 4096
    assert fmt.bits_per_weight((4096, 4096), group_size=None) == 8
    assert formats.get("fp4_e2m1").bits_per_weight((16, 64), group_size=32) == 4 + 32 / 32


def test_fp4_codes_pack_two_per_byte_low_nibble_first():
    fmt = formats.get("fp4_e2m1")
    q = fmt.encode(np.array([0.5, -6.0, 1.0, 3.0], np.float32))
    packed = fmt.pack(q)
    assert packed.tolist() == [0xF1, 0x52]
    np.testing.assert_array_equal(fmt.unpack(packed, (4,)), q.codes)


def test_symmetric_only_formats_refuse_zero_points():
    with pytest.raises(ValueError, match="symmetric by construction"):
        formats.get("fp8_e4m3").encode(np.ones((2, 4), np.float32), group_size=-1, sym=False)
