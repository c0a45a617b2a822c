// Affine integer quantization (INT2..INT8): the GPU twins of qtutor/formats/integer.py and packing.py.
//
// Layout: the input is viewed as G (groups, group_len), row-major float32; every row of G shares one scale
// (and, asymmetric, one zero point). Codes are one byte each (int8 symmetric, uint8 asymmetric).
//
// Bit-exactness with NumPy: every step is the same IEEE float32 operation in the same order as the twin
// (division with __fdiv_rn, products with __fmul_rn so that no multiply-add is contracted, rintf = round half
// to even), and min/max reductions are order-independent. Compile without --use_fast_math.
#include <cuda_fp16.h>

#define THREADS 256

// Block-wide max or min of one float per thread; every thread gets the result.
__device__ float block_reduce(float value, bool take_max) {
    __shared__ float partial[THREADS / 32];
    for (int offset = 16; offset > 0; offset >>= 1) {
        float other = __shfl_xor_sync(0xffffffffu, value, offset);
        value = take_max ? fmaxf(value, other) : fminf(value, other);
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) partial[warp] = value;
    __syncthreads();
    value = partial[0];
    for (int w = 1; w < THREADS / 32; ++w) value = take_max ? fmaxf(value, partial[w]) : fminf(value, partial[w]);
    __syncthreads();
    return value;
}

// The float16 storage of a scale, rounded up so that max|x| / s never exceeds the largest code.
__device__ float store_scale_float16(float scale) {
    __half h = __float2half_rn(scale);
    if (__half2float(h) < scale) h = __ushort_as_half((unsigned short)(__half_as_ushort(h) + 1));
    return __half2float(h);
}

// twin: qtutor.formats.integer.IntegerFormat.find_params
// One block per group. Symmetric: s = max|x| / qmax. Asymmetric (zero != nullptr): the range widened to
// contain 0, s = (high - low) / maxq, z = clip(rint(-low / s), 0, maxq). All-zero groups get s = 1.
extern "C" __global__ void affine_find_params(const float* __restrict__ G, long long group_len, float code_max,
                                              float* __restrict__ scale, float* __restrict__ zero) {
    const float* row = G + (long long)blockIdx.x * group_len;
    bool symmetric = (zero == nullptr);
    float high = symmetric ? 0.0f : -INFINITY, low = INFINITY;
    for (long long i = threadIdx.x; i < group_len; i += THREADS) {
        float x = row[i];
        if (symmetric) {
            high = fmaxf(high, fabsf(x));
        } else {
            high = fmaxf(high, x);
            low = fminf(low, x);
        }
    }
    high = block_reduce(high, true);
    if (!symmetric) low = block_reduce(low, false);
    if (threadIdx.x != 0) return;
    if (symmetric) {
        float s = __fdiv_rn(high, code_max);
        scale[blockIdx.x] = store_scale_float16(s == 0.0f ? 1.0f : s);
        return;
    }
    low = fminf(low, 0.0f);
    high = fmaxf(high, 0.0f);
    float s = __fdiv_rn(__fsub_rn(high, low), code_max);
    s = store_scale_float16(s == 0.0f ? 1.0f : s);
    float z = rintf(__fdiv_rn(-low, s));
    scale[blockIdx.x] = s;
    zero[blockIdx.x] = fminf(fmaxf(z, 0.0f), code_max);
}

// twin: qtutor.formats.integer.IntegerFormat.quantize
// code = clip(rint(x / s), -qmax, qmax) symmetric, clip(rint(x / s) + z, 0, maxq) asymmetric.
extern "C" __global__ void affine_quantize(const float* __restrict__ G, const float* __restrict__ scale,
                                           const float* __restrict__ zero, long long groups, long long group_len,
                                           float code_low, float code_high, signed char* __restrict__ codes) {
    long long n = groups * group_len;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        long long g = i / group_len;
        float q = rintf(__fdiv_rn(G[i], scale[g]));
        if (zero != nullptr) q = __fadd_rn(q, zero[g]);
        q = fminf(fmaxf(q, code_low), code_high);
        codes[i] = (signed char)(int)q;  // asymmetric codes up to 255 keep their low 8 bits: the same byte as uint8
    }
}

// twin: qtutor.formats.integer.IntegerFormat.dequantize
// x_hat = (q - z) * s, exact in float32 for |q - z| < 2^24.
extern "C" __global__ void affine_dequantize(const signed char* __restrict__ codes, const float* __restrict__ scale,
                                             const float* __restrict__ zero, long long groups, long long group_len,
                                             int is_signed, float* __restrict__ out) {
    long long n = groups * group_len;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        long long g = i / group_len;
        float q = is_signed ? (float)codes[i] : (float)(unsigned char)codes[i];
        if (zero != nullptr) q = __fsub_rn(q, zero[g]);
        out[i] = __fmul_rn(q, scale[g]);
    }
}

// twin: qtutor.formats.packing.pack_bits
// One thread per output byte: byte k holds bits 8k .. 8k+7 of the little-endian stream of `bits`-bit codes.
extern "C" __global__ void pack_bits(const unsigned char* __restrict__ codes, long long count, int bits,
                                     unsigned char* __restrict__ packed, long long n_bytes) {
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n_bytes; k += (long long)gridDim.x * blockDim.x) {
        unsigned int byte = 0;
        for (int b = 0; b < 8; ++b) {
            long long stream_bit = 8 * k + b;
            long long j = stream_bit / bits;
            if (j < count) byte |= ((codes[j] >> (stream_bit % bits)) & 1u) << b;
        }
        packed[k] = (unsigned char)byte;
    }
}

// twin: qtutor.formats.packing.unpack_bits
// One thread per code; signed codes are sign-extended from `bits` bits.
extern "C" __global__ void unpack_bits(const unsigned char* __restrict__ packed, long long count, int bits,
                                       int is_signed, long long* __restrict__ codes) {
    for (long long j = blockIdx.x * (long long)blockDim.x + threadIdx.x; j < count; j += (long long)gridDim.x * blockDim.x) {
        long long value = 0;
        for (int b = 0; b < bits; ++b) {
            long long stream_bit = j * bits + b;
            value |= (long long)((packed[stream_bit / 8] >> (stream_bit % 8)) & 1u) << b;
        }
        if (is_signed) {
            long long sign_bit = 1LL << (bits - 1);
            value = (value ^ sign_bit) - sign_bit;
        }
        codes[j] = value;
    }
}
