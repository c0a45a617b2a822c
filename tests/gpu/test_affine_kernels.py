"""INT2..INT8 on the GPU (kernels/affine.cu) against the NumPy twin: codes, scales, zeros and packed bytes exact."""
from __future__ import annotations

import numpy as np
import pytest

from qtutor import formats
from qtutor.formats.packing import pack_bits, unpack_bits

pytestmark = pytest.mark.gpu
cupy = pytest.importorskip("cupy")


def weights(shape, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.standard_t(3, size=shape).astype(np.float32)
    W[0, : shape[1] // 2] = 0.0  # an all-zero group
    W[-1, :] = 0.125  # all-equal groups
    W[1, 3] = np.float32(2.5) * 0.1  # and a few values on rounding ties of common scales
    return W


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("group_size", [0, -1, 32, 128])
@pytest.mark.parametrize("shape", [(7, 256), (64, 1024)])
def test_encode_on_gpu_is_bit_exact_with_numpy(bits, sym, group_size, shape):
    fmt = formats.get(f"int{bits}")
    W = weights(shape)
    cpu = fmt.encode(W, group_size=group_size, sym=sym)
    gpu = fmt.encode(cupy.asarray(W), group_size=group_size, sym=sym)
    assert np.array_equal(cpu.codes, gpu.codes.get())
    assert np.array_equal(cpu.scales, gpu.scales.get())
    if not sym:
        assert np.array_equal(cpu.zeros, gpu.zeros.get())
    assert np.array_equal(cpu.dequantize(), gpu.dequantize().get())


@pytest.mark.parametrize("sym", [True, False])
def test_dequantize_kernel_writes_every_element(sym):
    fmt = formats.get("int4")
    W = weights((33, 128), seed=1)
    q = fmt.encode(cupy.asarray(W), group_size=32, sym=sym)
    from qtutor.formats.base import to_groups

    G = to_groups(q.codes, 32)
    out = fmt.dequantize(G, q.scales.reshape(-1, 1), None if sym else q.zeros.reshape(-1, 1))
    assert not bool(cupy.isnan(out).any())
    expected = fmt.dequantize(to_groups(q.codes.get(), 32), q.scales.get().reshape(-1, 1),
                              None if sym else q.zeros.get().reshape(-1, 1))
    assert np.array_equal(out.get(), expected)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("count", [1, 7, 8, 1000, 4099])
def test_packing_kernels_match_numpy(bits, count):
    rng = np.random.default_rng(bits * count)
    codes = rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), size=count)
    cpu = pack_bits(codes, bits)
    gpu = pack_bits(cupy.asarray(codes.astype(np.int8)), bits)
    assert np.array_equal(cpu, gpu.get())
    for signed in (True, False):
        assert np.array_equal(unpack_bits(cpu, bits, count, signed), unpack_bits(gpu, bits, count, signed).get())
