// Fast Walsh-Hadamard transform of every row: the twin of qtutor.methods.rotation.fwht.
//
//     y[r, :] = scale * (x[r, :] H_n)        H_n Sylvester's Hadamard matrix, n a power of two (2 <= n <= 8192)
//
// log2(n) stages of butterflies: at stage h = 1, 2, 4, ..., n/2 every pair (j, j + h) with j mod 2h < h
// becomes (a + b, a - b). One block per row, the row in shared memory, one thread per pair; the stages are
// separated by __syncthreads(). Each butterfly is one IEEE addition or subtraction of the same two float32
// operands as in NumPy, in the same stage order, and the scale is one multiplication at the end, so the result
// equals the NumPy twin's bit for bit.
#define MAX_N 8192

// twin: qtutor.methods.rotation.fwht
extern "C" __global__ void fwht_rows(const float* __restrict__ x, float* __restrict__ y, long long rows, int n,
                                     float scale) {
    __shared__ float row[MAX_N];
    long long r = blockIdx.x;
    if (r >= rows) return;
    const float* source = x + r * n;
    for (int i = threadIdx.x; i < n; i += blockDim.x) row[i] = source[i];
    __syncthreads();
    for (int h = 1; h < n; h <<= 1) {
        for (int pair = threadIdx.x; pair < n / 2; pair += blockDim.x) {
            int j = (pair / h) * 2 * h + pair % h;  // the first element of the pair, j mod 2h < h
            float a = row[j], b = row[j + h];
            row[j] = __fadd_rn(a, b);
            row[j + h] = __fsub_rn(a, b);
        }
        __syncthreads();
    }
    float* target = y + r * n;
    for (int i = threadIdx.x; i < n; i += blockDim.x) target[i] = __fmul_rn(row[i], scale);
}
