// GPTQ's inner column loop on the GPU: the twin of qtutor.methods.gptq.GPTQ.step, one block of columns per launch.
//
// GPTQ quantizes the columns of W one after another; the error of column i is spread over the later columns of
// the same block through row i of U, the upper Cholesky factor of H^-1:
//
//     q      = Q(w_i)                     (the grid of an affine integer format, with the row's group scale)
//     err    = (w_i - q) / U_ii
//     w_j   -= err * U_ij                 for the columns j of the block, j >= i
//
// Every row of W does this independently of the others (U is shared), so one thread owns one row and walks the
// block's columns in order. The block is passed transposed, Wt (count, rows), so that the threads of a warp read
// neighbouring addresses. After the kernel, the host applies the lazy batch update to the columns beyond the
// block with one cuBLAS product, W[:, end:] -= Err @ U[block, end:], exactly as the NumPy path does.
//
// Bit-exactness within a block: every float32 operation is the one NumPy does, in the same order and with the
// same rounding (__fdiv_rn, __fmul_rn, __fsub_rn keep the compiler from fusing a multiply-add; rintf rounds half
// to even). Across blocks the cuBLAS product may round differently from NumPy's BLAS, so whole-matrix results agree
// within float tolerance (tests/gpu/test_gptq_kernel.py).
#include <cuda_fp16.h>

// The float16 storage of a scale, rounded up (the same rule as kernels/affine.cu and qtutor/formats/integer.py).
__device__ float store_scale_float16(float scale) {
    __half h = __float2half_rn(scale);
    if (__half2float(h) < scale) h = __ushort_as_half((unsigned short)(__half_as_ushort(h) + 1));
    return __half2float(h);
}

// twin: qtutor.methods.gptq.GPTQ.step
// One thread per row; the columns start .. start + count - 1 (permuted order) of W, transposed in Wt.
// Scales (and zero points, asymmetric) per row and group: scales[row * n_groups + group_of[i]]. With
// dynamic_group_size > 0 a group's parameters are computed when its first column comes, from the row's current
// (already updated) values of the group's columns, which all lie inside the block; otherwise they are given.
extern "C" __global__ void gptq_quantize_block(float* __restrict__ Wt, const float* __restrict__ U,
                                               long long rows, long long columns, long long start,
                                               long long count, float* __restrict__ scales,
                                               float* __restrict__ zeros, long long n_groups,
                                               const int* __restrict__ group_of, long long dynamic_group_size,
                                               int bits, int* __restrict__ codes_t, float* __restrict__ Qt,
                                               float* __restrict__ Err_t, double* __restrict__ losses) {
    long long row = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= rows) return;
    bool symmetric = (zeros == nullptr);
    float qmax_sym = (float)((1 << (bits - 1)) - 1);
    float maxq = (float)((1 << bits) - 1);
    for (long long k = 0; k < count; ++k) {
        long long i = start + k;
        long long slot = row * n_groups + group_of[i];
        if (dynamic_group_size > 0 && i % dynamic_group_size == 0) {
            // IntegerFormat.find_params on the group's current values
            float high = symmetric ? 0.0f : -INFINITY, low = INFINITY;
            for (long long t = 0; t < dynamic_group_size; ++t) {
                float x = Wt[(k + t) * rows + row];
                if (symmetric) {
                    high = fmaxf(high, fabsf(x));
                } else {
                    high = fmaxf(high, x);
                    low = fminf(low, x);
                }
            }
            if (symmetric) {
                float s = __fdiv_rn(high, qmax_sym);
                scales[slot] = store_scale_float16(s == 0.0f ? 1.0f : s);
            } else {
                low = fminf(low, 0.0f);
                high = fmaxf(high, 0.0f);
                float s = __fdiv_rn(__fsub_rn(high, low), maxq);
                s = store_scale_float16(s == 0.0f ? 1.0f : s);
                scales[slot] = s;
                zeros[slot] = fminf(fmaxf(rintf(__fdiv_rn(-low, s)), 0.0f), maxq);
            }
        }
        float s = scales[slot];
        float w = Wt[k * rows + row];
        float code, q;
        if (symmetric) {
            code = fminf(fmaxf(rintf(__fdiv_rn(w, s)), -qmax_sym), qmax_sym);
            q = __fmul_rn(code, s);
        } else {
            float z = zeros[slot];
            code = fminf(fmaxf(__fadd_rn(rintf(__fdiv_rn(w, s)), z), 0.0f), maxq);
            q = __fmul_rn(__fsub_rn(code, z), s);
        }
        codes_t[k * rows + row] = (int)code;
        Qt[k * rows + row] = q;
        float err = __fdiv_rn(__fsub_rn(w, q), U[i * columns + i]);
        Err_t[k * rows + row] = err;
        atomicAdd(&losses[i], 0.5 * (double)err * (double)err);
        for (long long j = k; j < count; ++j) {
            float* target = &Wt[j * rows + row];
            *target = __fsub_rn(*target, __fmul_rn(err, U[i * columns + start + j]));
        }
    }
}
