// INT8 x INT8 -> INT32 matrix product, the operation of W8A8 (SmoothQuant) and LLM.int8(): the twin of
// qtutor.methods.llm_int8.int8_matmul.
//
//     C[m, n] = sum_k A[m, k] * B[n, k]          A (M, K) activation codes, B (N, K) weight codes, both int8,
//                                                row-major with K contiguous ("TN": every output is a dot
//                                                product of two contiguous rows)
//
// Integer sums are exact in any order, so the result equals NumPy's bit for bit as long as no partial sum leaves
// int32: |A B| <= 128 * 128 * K < 2^31 for K <= 131071 (the host checks). Tiles of 16 x 16 outputs per block,
// K in steps of 64 bytes staged in shared memory; __dp4a multiplies four int8 pairs and adds them to an int32
// in one instruction (sm_61 and later).
#define TILE 16
#define KTILE 64

// twin: qtutor.methods.llm_int8.int8_matmul
extern "C" __global__ void int8_gemm_tn(const signed char* __restrict__ A, const signed char* __restrict__ B,
                                        int* __restrict__ C, long long M, long long N, long long K) {
    __shared__ __align__(16) signed char A_tile[TILE][KTILE];
    __shared__ __align__(16) signed char B_tile[TILE][KTILE];
    int tx = threadIdx.x, ty = threadIdx.y;  // output column n and row m inside the tile
    int thread = ty * TILE + tx;             // 0 .. 255: each thread stages 4 bytes of each tile
    long long m = (long long)blockIdx.y * TILE + ty, n = (long long)blockIdx.x * TILE + tx;
    int row = thread / (KTILE / 4), byte = (thread % (KTILE / 4)) * 4;
    int accumulator = 0;
    for (long long k0 = 0; k0 < K; k0 += KTILE) {
        long long a_row = (long long)blockIdx.y * TILE + row, b_row = (long long)blockIdx.x * TILE + row;
        for (int b = 0; b < 4; ++b) {  // zero outside the matrices: zeros add nothing to the sums
            long long k = k0 + byte + b;
            A_tile[row][byte + b] = (a_row < M && k < K) ? A[a_row * K + k] : 0;
            B_tile[row][byte + b] = (b_row < N && k < K) ? B[b_row * K + k] : 0;
        }
        __syncthreads();
        for (int k = 0; k < KTILE; k += 4) {
            int a4 = *reinterpret_cast<const int*>(&A_tile[ty][k]);
            int b4 = *reinterpret_cast<const int*>(&B_tile[tx][k]);
            accumulator = __dp4a(a4, b4, accumulator);
        }
        __syncthreads();
    }
    if (m < M && n < N) C[m * N + n] = accumulator;
}
