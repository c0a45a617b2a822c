"""Bit packing: b-bit codes stored back to back in bytes.

Byte diagram (little-endian bit stream: code j occupies stream bits j*b .. j*b+b-1, and stream bit k is
bit k % 8 of byte k // 8):

    4-bit:  byte 0 = [ c1 c1 c1 c1 | c0 c0 c0 c0 ]     c0 in the low nibble, c1 in the high nibble
    2-bit:  byte 0 = [ c3 c3 | c2 c2 | c1 c1 | c0 c0 ]
    3-bit:  8 codes -> 3 bytes; c2 straddles bytes 0 and 1, c5 straddles bytes 1 and 2
    8-bit:  one code per byte

The low-nibble-first order is the one NVIDIA and PyTorch use for FP4 (``float4_e2m1fn_x2``); ggml splits a
block in halves and bitsandbytes puts the first element in the high nibble — those layouts live with their
formats. Signed codes are stored in two's complement (INT4 -1 is the nibble 0b1111), as int4 hardware does.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from qtutor.backend import array_namespace, is_cupy

SUPPORTED_BITS = (1, 2, 3, 4, 5, 6, 7, 8)


def pack_bits(codes: Any, bits: int) -> Any:
    """Pack integer codes (any shape, row-major order) into ``ceil(n * bits / 8)`` bytes.

    Only the low ``bits`` bits of each code are kept, so two's-complement negative codes pack as-is.
    """
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits={bits} cannot be packed; use 1..8")
    if is_cupy(codes):
        return _gpu_pack_bits(codes, bits)
    xp = array_namespace(codes)
    flat = xp.asarray(codes).astype(np.int64).ravel() & ((1 << bits) - 1)
    if bits == 8:
        return flat.astype(np.uint8)
    # one row of `bits` little-endian bits per code, then the rows concatenated form the stream
    shifts = xp.arange(bits, dtype=np.int64)
    stream = ((flat[:, None] >> shifts) & 1).astype(np.uint8).ravel()
    pad = (-stream.size) % 8
    if pad:
        stream = xp.concatenate([stream, xp.zeros(pad, dtype=np.uint8)])
    weights = (1 << xp.arange(8, dtype=np.int64)).astype(np.uint8)
    return (stream.reshape(-1, 8) * weights).sum(axis=1, dtype=np.uint8)


def unpack_bits(packed: Any, bits: int, count: int, signed: bool = False) -> Any:
    """Inverse of :func:`pack_bits`: ``count`` codes as int64 (sign-extended when ``signed``)."""
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits={bits} cannot be unpacked; use 1..8")
    xp = array_namespace(packed)
    packed = xp.asarray(packed, dtype=np.uint8).ravel()
    needed = -(-count * bits // 8)
    if packed.size < needed:
        raise ValueError(f"{count} codes of {bits} bits need {needed} bytes, got {packed.size} (truncated data?)")
    if is_cupy(packed):
        return _gpu_unpack_bits(packed, bits, count, signed)
    if bits == 8:
        codes = packed[:count].astype(np.int64)
    else:
        stream = ((packed[:needed, None] >> xp.arange(8, dtype=np.uint8)) & 1).astype(np.int64).ravel()
        stream = stream[: count * bits].reshape(count, bits)
        codes = (stream << xp.arange(bits, dtype=np.int64)).sum(axis=1)
    if signed:
        sign_bit = 1 << (bits - 1)
        codes = (codes ^ sign_bit) - sign_bit
    return codes


# ---- GPU path (kernels/affine.cu: pack_bits, unpack_bits) ----------------------------------------------------
def _gpu_pack_bits(codes: Any, bits: int) -> Any:
    import cupy

    from qtutor.kernels import THREADS, blocks_for, function

    flat = cupy.ascontiguousarray(codes.ravel()).astype(cupy.int64).astype(cupy.uint8)  # keeps the low 8 bits
    n_bytes = -(-flat.size * bits // 8)
    packed = cupy.empty(n_bytes, dtype=cupy.uint8)
    function("affine", "pack_bits")((blocks_for(n_bytes),), (THREADS,),
                                     (flat, np.int64(flat.size), np.int32(bits), packed, np.int64(n_bytes)))
    return packed


def _gpu_unpack_bits(packed: Any, bits: int, count: int, signed: bool) -> Any:
    import cupy

    from qtutor.kernels import THREADS, blocks_for, function

    codes = cupy.empty(count, dtype=cupy.int64)
    function("affine", "unpack_bits")((blocks_for(count),), (THREADS,),
                                       (cupy.ascontiguousarray(packed), np.int64(count), np.int32(bits),
                                        np.int32(signed), codes))
    return codes
