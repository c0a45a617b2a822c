"""Affine integer formats: scales, zero points, error bounds, granularity, packing, bad input."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qtutor import formats
from qtutor.formats.packing import pack_bits, unpack_bits

finite_weights = hnp.arrays(
    np.float32,
    hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12).map(lambda s: (s[0], s[1] * 8)),
    elements=st.floats(-1e3, 1e3, width=32, allow_subnormal=False),
)


@settings(max_examples=150, deadline=None)
@given(W=finite_weights, bits=st.integers(2, 8), sym=st.booleans(), granularity=st.sampled_from([0, -1, 8]))
def test_round_trip_error_is_at_most_half_a_step_and_codes_in_range(W, bits, sym, granularity):
    fmt = formats.get(f"int{bits}")
    q = fmt.encode(W, group_size=granularity, sym=sym)
    if sym:
        assert q.codes.min() >= -(2 ** (bits - 1) - 1) and q.codes.max() <= 2 ** (bits - 1) - 1
    else:
        assert q.codes.min() >= 0 and q.codes.max() <= 2**bits - 1
        assert np.all(q.zeros == np.round(q.zeros)) and q.zeros.min() >= 0 and q.zeros.max() <= 2**bits - 1
    per_element_scale = np.broadcast_to(
        q.scales.reshape(-1, 1), (q.scales.size, W.size // q.scales.size)
    ).reshape(W.shape)
    error = np.abs(q.dequantize() - W)
    assert np.all(error <= per_element_scale / 2 * (1 + 1e-6) + 1e-30)


@settings(max_examples=100, deadline=None)
@given(codes=hnp.arrays(np.int64, st.integers(1, 200), elements=st.integers(0, 255)), bits=st.sampled_from([2, 3, 4, 8]))
def test_packing_round_trips(codes, bits):
    codes = codes & ((1 << bits) - 1)
    packed = pack_bits(codes, bits)
    assert packed.dtype == np.uint8 and packed.size == -(-codes.size * bits // 8)
    assert np.array_equal(unpack_bits(packed, bits, codes.size), codes)


def test_four_bit_packing_puts_the_first_code_in_the_low_nibble():
    assert pack_bits(np.array([0x1, 0xA]), 4).tolist() == [0xA1]
    assert pack_bits(np.array([1, 2, 3, 0]), 2).tolist() == [0b00111001]
    # 3-bit: 8 codes in 3 bytes, code 2 straddles bytes 0 and 1
    assert pack_bits(np.array([7, 0, 7, 0, 0, 0, 0, 0]), 3).tolist() == [0b11000111, 0b00000001, 0]


def test_signed_codes_pack_in_twos_complement_and_unpack_sign_extended():
    fmt = formats.get("int4")
    q = fmt.encode(np.array([[-7.0, -1.0, 0.0, 7.0]], dtype=np.float32), group_size=-1, sym=True)
    assert q.codes.tolist() == [[-7, -1, 0, 7]]
    packed = fmt.pack(q)
    assert packed.tolist() == [0xF9, 0x70]  # -7 = 0b1001, -1 = 0b1111
    assert np.array_equal(fmt.unpack(packed, (1, 4), sym=True), q.codes)


def test_symmetric_scale_is_absmax_over_qmax_stored_as_float16_rounded_up():
    W = np.array([[0.3, -1.7, 0.2, 1.0]], dtype=np.float32)
    q = formats.get("int4").encode(W, group_size=-1, sym=True)
    exact = np.float32(1.7) / np.float32(7)
    assert q.scales[0] >= exact and q.scales[0] == np.float32(np.float16(q.scales[0]))
    assert q.scales[0] - exact < np.spacing(np.float16(exact)).astype(np.float32)
    assert q.codes[0, 1] == -7  # the absmax lands on the largest code: nothing clipped


def test_asymmetric_range_always_contains_zero_so_zero_is_exact():
    W = np.array([[2.0, 3.0, 5.0, 4.0]], dtype=np.float32)  # all positive: range widened to [0, 5]
    q = formats.get("int4").encode(W, group_size=-1, sym=False)
    assert q.zeros[0] == 0
    W0 = np.array([[0.0, 0.37, -1.2, 2.9]], dtype=np.float32)
    assert q.format.encode(W0, group_size=-1, sym=False).dequantize()[0, 0] == 0.0


def test_zero_range_groups_do_not_divide_by_zero():
    W = np.zeros((2, 16), dtype=np.float32)
    W[1, 8:] = 3.25  # second group of row 1: all equal and non-zero
    for sym in (True, False):
        q = formats.get("int8").encode(W, group_size=8, sym=sym)
        assert np.all(np.isfinite(q.scales))
        assert np.allclose(q.dequantize(), W, atol=3.25 / 127)
        assert np.array_equal(q.dequantize()[0], W[0])


def test_finer_groups_never_have_larger_error_than_coarser_on_average(rng):
    W = rng.standard_t(3, size=(64, 512)).astype(np.float32)
    fmt = formats.get("int4")
    errors = {g: float(np.mean((fmt.encode(W, group_size=g, sym=True).dequantize() - W) ** 2)) for g in (0, -1, 128, 32)}
    assert errors[32] < errors[128] < errors[-1] < errors[0]


def test_bits_per_weight_counts_scales_and_zero_points():
    fmt = formats.get("int4")
    assert fmt.bits_per_weight((4096, 4096), group_size=128, sym=True) == 4 + 16 / 128
    assert fmt.bits_per_weight((4096, 4096), group_size=128, sym=False) == 4 + 20 / 128
    assert fmt.bits_per_weight((4096, 4096), group_size=-1, sym=True) == 4 + 16 / 4096
    assert fmt.bits_per_weight((10, 10), group_size=None) == 4
    q = fmt.encode(np.ones((8, 256), np.float32), group_size=128, sym=False)
    assert q.nbytes == (8 * 256 * 4 + 16 * 20) / 8 and q.bits_per_weight == 4 + 20 / 128


def test_plain_cast_rounds_half_to_even_and_saturates():
    x = np.array([0.5, 1.5, 2.5, -0.5, -2.5, 100.0, -100.0, 7.49], dtype=np.float32)
    q = formats.get("int4").encode(x)
    assert q.codes.tolist() == [0, 2, 2, 0, -2, 7, -8, 7] and q.scales is None
    assert q.dequantize().dtype == np.float32


def test_group_size_that_does_not_divide_the_row_names_the_fix():
    with pytest.raises(ValueError, match=r"group_size=128 does not divide the row length 200.*group_size=-1"):
        formats.get("int4").encode(np.ones((4, 200), np.float32), group_size=128)
    with pytest.raises(ValueError, match="group_size=-2"):
        formats.get("int4").encode(np.ones((4, 200), np.float32), group_size=-2)


@pytest.mark.parametrize("bits", [0, 1, 9, 16])
def test_bits_outside_2_to_8_are_refused(bits):
    from qtutor.formats.integer import IntegerFormat

    with pytest.raises(ValueError, match="2..8 bits"):
        IntegerFormat(bits)
    with pytest.raises(ValueError, match="unknown format"):
        formats.get(f"int{bits}")


def test_bad_inputs_get_clear_errors():
    fmt = formats.get("int4")
    with pytest.raises(TypeError, match="floating-point.*int64"):
        fmt.encode(np.arange(8).reshape(1, 8), group_size=-1)
    with pytest.raises(ValueError, match="empty"):
        fmt.encode(np.zeros((0, 128), np.float32), group_size=-1)
    bad = np.ones((2, 8), np.float32)
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match=r"1 NaN/Inf.*\(1, 3\)"):
        fmt.encode(bad, group_size=-1)
    bad[1, 3] = np.inf
    with pytest.raises(ValueError, match="NaN/Inf"):
        fmt.encode(bad, group_size=4)
    with pytest.raises(ValueError, match="no NaN"):
        fmt.encode(np.array([np.nan], np.float32))


def test_float64_and_non_contiguous_inputs_give_the_float32_result(rng):
    W = rng.normal(size=(16, 64))
    fmt = formats.get("int3")
    reference = fmt.encode(W.astype(np.float32), group_size=32, sym=False)
    from_float64 = fmt.encode(W, group_size=32, sym=False)
    assert np.array_equal(from_float64.codes, reference.codes)
    Wt = np.asfortranarray(W.astype(np.float32))[:, ::1]
    assert np.array_equal(fmt.encode(Wt, group_size=32, sym=False).codes, reference.codes)
    strided = np.repeat(W.astype(np.float32), 2, axis=1)[:, ::2]
    assert not strided.flags.c_contiguous
    assert np.array_equal(fmt.encode(strided, group_size=32, sym=False).codes, reference.codes)


def test_three_dimensional_tensors_group_along_the_last_axis(rng):
    x = rng.normal(size=(2, 3, 64)).astype(np.float32)
    q = formats.get("int8").encode(x, group_size=16, sym=True)
    assert q.scales.shape == (2, 3, 4) and q.codes.shape == x.shape
    flat = formats.get("int8").encode(x.reshape(6, 64), group_size=16, sym=True)
    assert np.array_equal(q.codes.reshape(6, 64), flat.codes)
