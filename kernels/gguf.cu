// GGUF block dequantization: the GPU twin of qtutor/methods/gguf (legacy.dequantize, kquants.DEQUANTIZE).
//
// One thread per weight: it finds its block (blocks are contiguous along a row, so block = weight / QK), reads
// the block's scales and its own code straight from the packed bytes, and writes one float. The byte layouts
// are those of qtutor/methods/gguf/layouts.py (ggml's), little-endian, fp16 scales decoded from their bits.
//
// Bit-exactness with NumPy: every product and difference is rounded on its own (__fmul_rn / __fsub_rn /
// __fadd_rn), because nvcc would otherwise fuse "d * q - m" into one FMA, which rounds once instead of twice.

#define QK 32
#define QK_K 256

enum GgufType { Q4_0 = 0, Q4_1, Q5_0, Q5_1, Q8_0, MXFP4, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K };

__device__ __forceinline__ float half_to_float(const unsigned char* p) {
    unsigned int h = (unsigned int)p[0] | ((unsigned int)p[1] << 8);
    unsigned int sign = (h & 0x8000u) << 16, exponent = (h >> 10) & 0x1Fu, mantissa = h & 0x3FFu;
    unsigned int bits;
    if (exponent == 0) {
        if (mantissa == 0) {
            bits = sign;
        } else {  // subnormal: normalize
            int e = -1;
            do { mantissa <<= 1; ++e; } while ((mantissa & 0x400u) == 0);
            bits = sign | ((unsigned int)(127 - 15 - e) << 23) | ((mantissa & 0x3FFu) << 13);
        }
    } else if (exponent == 31) {
        bits = sign | 0x7F800000u | (mantissa << 13);
    } else {
        bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
    }
    return __uint_as_float(bits);
}

__device__ __forceinline__ int nibble_split_halves(const unsigned char* qs, int i) {  // legacy / MXFP4 layout
    return i < 16 ? (qs[i] & 0x0F) : (qs[i - 16] >> 4);
}

__device__ __forceinline__ void scale_min_k4(const unsigned char* s, int j, int* sc, int* m) {  // Q4_K / Q5_K
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

__device__ float dequantize_one(const unsigned char* b, int type, int i) {
    switch (type) {
        case Q4_0: return __fmul_rn(half_to_float(b), (float)(nibble_split_halves(b + 2, i) - 8));
        case Q4_1: return __fadd_rn(__fmul_rn(half_to_float(b), (float)nibble_split_halves(b + 4, i)), half_to_float(b + 2));
        case Q5_0: {
            unsigned int qh = b[2] | (b[3] << 8) | (b[4] << 16) | ((unsigned int)b[5] << 24);
            int q = nibble_split_halves(b + 6, i) | (((qh >> i) & 1) << 4);
            return __fmul_rn(half_to_float(b), (float)(q - 16));
        }
        case Q5_1: {
            unsigned int qh = b[4] | (b[5] << 8) | (b[6] << 16) | ((unsigned int)b[7] << 24);
            int q = nibble_split_halves(b + 8, i) | (((qh >> i) & 1) << 4);
            return __fadd_rn(__fmul_rn(half_to_float(b), (float)q), half_to_float(b + 2));
        }
        case Q8_0: return __fmul_rn(half_to_float(b), (float)(signed char)b[2 + i]);
        case MXFP4: {
            const float kv[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
            float scale = ldexpf(1.0f, (int)b[0] - 128);
            return __fmul_rn(scale, kv[nibble_split_halves(b + 1, i)]);
        }
        case Q2_K: {  // scales[16] qs[64] d dmin
            int sub = i / 16, half = i / 128, quarter = (i % 128) / 32, l = i % 32;
            int q = (b[16 + 32 * half + l] >> (2 * quarter)) & 3;
            float dl = __fmul_rn(half_to_float(b + 80), (float)(b[sub] & 0x0F));
            float ml = __fmul_rn(half_to_float(b + 82), (float)(b[sub] >> 4));
            return __fsub_rn(__fmul_rn(dl, (float)q), ml);
        }
        case Q3_K: {  // hmask[32] qs[64] scales[12] d
            int sub = i / 16, half = i / 128, quarter = (i % 128) / 32, l = i % 32;
            int q = (b[32 + 32 * half + l] >> (2 * quarter)) & 3;
            int high = (b[l] >> (i / 32)) & 1;
            const unsigned char* s = b + 96;
            int low = sub < 8 ? (s[sub] & 0x0F) : (s[sub - 8] >> 4);
            int sc = (low | (((s[8 + sub % 4] >> (2 * (sub / 4))) & 3) << 4)) - 32;
            float dl = __fmul_rn(half_to_float(b + 108), (float)sc);
            return __fmul_rn(dl, (float)(q - (high ? 0 : 4)));
        }
        case Q4_K:
        case Q5_K: {  // d dmin scales[12] (qh[32]) qs[128]
            int sub = i / 32, chunk = i / 64, upper = (i % 64) / 32, l = i % 32;
            int sc, m;
            scale_min_k4(b + 4, sub, &sc, &m);
            const unsigned char* qs = b + (type == Q5_K ? 48 : 16);
            int q = upper ? (qs[32 * chunk + l] >> 4) : (qs[32 * chunk + l] & 0x0F);
            if (type == Q5_K) q |= ((b[16 + l] >> (2 * chunk + upper)) & 1) << 4;
            float dl = __fmul_rn(half_to_float(b), (float)sc);
            float ml = __fmul_rn(half_to_float(b + 2), (float)m);
            return __fsub_rn(__fmul_rn(dl, (float)q), ml);
        }
        case Q6_K: {  // ql[128] qh[64] scales:int8[16] d
            int half = i / 128, quarter = (i % 128) / 32, l = i % 32;
            unsigned char lbyte = b[64 * half + 32 * (quarter & 1) + l];
            int low = quarter < 2 ? (lbyte & 0x0F) : (lbyte >> 4);
            int high = (b[128 + 32 * half + l] >> (2 * quarter)) & 3;
            float dl = __fmul_rn(half_to_float(b + 208), (float)(signed char)b[192 + i / 16]);
            return __fmul_rn(dl, (float)((low | (high << 4)) - 32));
        }
    }
    return 0.0f;
}

// twin: qtutor.methods.gguf.dequantize
// data: n_weights / block_weights blocks of type_size bytes; out: n_weights floats in row-major order.
extern "C" __global__ void gguf_dequantize(const unsigned char* __restrict__ data, long long n_weights, int type,
                                           int block_weights, int type_size, float* __restrict__ out) {
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n_weights;
         e += (long long)gridDim.x * blockDim.x) {
        long long block = e / block_weights;
        out[e] = dequantize_one(data + block * type_size, type, (int)(e % block_weights));
    }
}
