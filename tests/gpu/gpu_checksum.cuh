/*
 * Checksums of device buffers for the GPU programs that must print the same
 * numbers natively and under SAGE whatever SAGE did to the memory (shared
 * it, suspended and restored it): share_weights.cu, suspend_idle.cu,
 * share_reach.cu.
 * Include after gpu_check.h.
 */
#ifndef SAGE_GPU_CHECKSUM_CUH
#define SAGE_GPU_CHECKSUM_CUH

/* A position-weighted sum of 8-byte words: a moved or changed word shows. */
__global__ void checksum(const unsigned long long *w, size_t n, unsigned long long *out) {
        unsigned long long s = 0;
        for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
                s += w[i] * (2 * i + 1);
        atomicAdd(out, s);
}

/* checksum() of `bytes` at device address p; d_out: one word of scratch. */
static unsigned long long sum_of(const void *p, size_t bytes, unsigned long long *d_out) {
        unsigned long long h = 0;
        RT_CHECK(cudaMemset(d_out, 0, sizeof(h)));
        checksum<<<264, 256>>>((const unsigned long long *)p, bytes / 8, d_out);
        LAUNCH_CHECK();
        RT_CHECK(cudaMemcpy(&h, d_out, sizeof(h), cudaMemcpyDeviceToHost));
        return h;
}

/* Host words of a deterministic pattern; `seed` picks which. */
static void fill_words(unsigned long long *w, size_t bytes, unsigned long long seed) {
        for (size_t i = 0; i < bytes / 8; i++)
                w[i] = (i + seed) * 0x9e3779b97f4a7c15ull ^ (i >> 7);
}

#endif /* SAGE_GPU_CHECKSUM_CUH */
