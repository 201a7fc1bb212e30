/*
 * Kernel of the warm-container loop (parallel_setup_ctxloop.c), built with
 * `nvcc -cubin` and loaded with cuModuleLoadData in every iteration.
 * d[i] = d[i] * 3 + it, and the sum of the new values into *sum.
 */
extern "C" __global__ void step(unsigned int *d, unsigned long long n, unsigned int it, unsigned long long *sum) {
        unsigned long long acc = 0;
        for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
             i += (unsigned long long)gridDim.x * blockDim.x) {
                unsigned int v = d[i] * 3u + it;
                d[i] = v;
                acc += v;
        }
        for (int off = 16; off > 0; off >>= 1)
                acc += __shfl_down_sync(0xffffffffu, acc, off);
        if ((threadIdx.x & 31) == 0)
                atomicAdd(sum, acc);
}
