/*
 * A CUDA parent that starts CUDA children by fork + exec, by posix_spawn of
 * `sh -c`, and a forked child without CUDA (process_tree.h says why each):
 * every process uploads the same weights (under `+share` the later ones can
 * map what the first published), runs a kernel, and prints checksums it also
 * verified on the host, so stdout is the same natively and under SAGE. Its
 * twin on the simulated driver is tests/integration/fork_tree.c.
 */
#include "gpu_check.h"
#include "gpu_checksum.cuh"

#include "process_tree.h"

#define WEIGHT_BYTES ((size_t)16 << 20)
#define WEIGHT_SEED 7ull

/* out[i] = w[i] * k + k: a private buffer the kernel writes from the weights. */
__global__ void scale_words(const unsigned long long *w, unsigned long long *out, size_t n, unsigned long long k) {
        for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
                out[i] = w[i] * k + k;
}

/* checksum()'s sum on the host (wrapping 64-bit arithmetic, exact in any order) of the
 * weights (k == 0) or of scale_words()'s output for k. */
static unsigned long long host_sum(const unsigned long long *w, size_t n, unsigned long long k) {
        unsigned long long s = 0;
        for (size_t i = 0; i < n; i++)
                s += (k ? w[i] * k + k : w[i]) * (2 * i + 1);
        return s;
}

/* One process's GPU work, checked against the host and printed as `who: ...`. */
static void gpu_work(const char *who, unsigned long long k) {
        size_t n = WEIGHT_BYTES / 8;
        unsigned long long *host = (unsigned long long *)malloc(WEIGHT_BYTES);
        FAIL_IF(!host, "out of host memory");
        fill_words(host, WEIGHT_BYTES, WEIGHT_SEED);

        unsigned long long *w = NULL, *out = NULL, *d_sum = NULL;
        RT_CHECK(cudaMalloc((void **)&w, WEIGHT_BYTES));
        RT_CHECK(cudaMemcpy(w, host, WEIGHT_BYTES, cudaMemcpyHostToDevice));
        RT_CHECK(cudaMalloc((void **)&out, WEIGHT_BYTES));
        RT_CHECK(cudaMalloc((void **)&d_sum, sizeof(*d_sum)));
        scale_words<<<264, 256>>>(w, out, n, k);
        LAUNCH_CHECK();
        unsigned long long sw = sum_of(w, WEIGHT_BYTES, d_sum), so = sum_of(out, WEIGHT_BYTES, d_sum);
        FAIL_IF(sw != host_sum(host, n, 0), "%s: weights checksum %016llx, host %016llx", who, sw,
                host_sum(host, n, 0));
        FAIL_IF(so != host_sum(host, n, k), "%s: output checksum %016llx, host %016llx", who, so, host_sum(host, n, k));
        RT_FREE(w, out, d_sum);
        free(host);
        printf("%s: weights %016llx output %016llx\n", who, sw, so);
        fflush(stdout);
}

int main(int argc, char **argv) {
        return process_tree_main(argc, argv, NULL, gpu_work);
}
