// 4-bit lookup-table formats (NF4, bitsandbytes FP4): the GPU twin of qtutor/formats/normalfloat.py.
//
// The nearest of 16 table values is found the way bitsandbytes' dQuantizeNF4 decision tree does it: compare
// against the 15 midpoints between neighbouring (sorted) values. A value exactly on a midpoint goes to the lower
// one. Here the 15 comparisons are a counted loop rather than an unrolled tree: the same result, easier to read.

// twin: qtutor.formats.normalfloat.nearest_code
// y: values already divided by their block's absmax; midpoints: the 15 midpoints of the sorted table;
// order: sorted position -> code (NF4's table is already sorted; bitsandbytes' FP4 table is in bit order).
extern "C" __global__ void lut4_nearest_code(const float* __restrict__ y, long long n, const float* __restrict__ midpoints,
                                             const unsigned char* __restrict__ order, unsigned char* __restrict__ codes) {
    __shared__ float m[15];
    __shared__ unsigned char o[16];
    if (threadIdx.x < 15) m[threadIdx.x] = midpoints[threadIdx.x];
    if (threadIdx.x < 16) o[threadIdx.x] = order[threadIdx.x];
    __syncthreads();
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float value = y[i];
        int rank = 0;
#pragma unroll
        for (int k = 0; k < 15; ++k) rank += value > m[k];
        codes[i] = o[rank];
    }
}
