/*
 * Instance suspend on the GPU (scripts/gpu-test.sh runs it natively and,
 * with a broker, twice under SAGE_SUSPEND=1 SAGE_SUSPEND_IDLE=1s
 * SAGE_SHARE=1: the first run publishes its weights at exit, the second
 * maps them). It uploads 64 MiB of weights from anonymous memory (a content
 * key) and fills 16 MiB of private memory with a kernel, prints checksums
 * of both, idles longer than the idle threshold (the broker suspends it:
 * the script sees it suspended in `sagectl instances --json`), then its
 * next call resumes it: it checksums both again, scales the private buffer
 * and checksums it. stdout must be what the native run printed.
 *   suspend_idle [IDLE_SECONDS]   (default 4)
 */
#include <stdlib.h>
#include <unistd.h>

#include "gpu_check.h"
#include "gpu_checksum.cuh"

#define W_BYTES (64ull << 20)
#define X_BYTES (16ull << 20)

__global__ void fill_private(unsigned long long *x, size_t n, unsigned long long k) {
        for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
                x[i] = x[i] * k + i;
}

int main(int argc, char **argv) {
        unsigned idle = argc > 1 ? (unsigned)atoi(argv[1]) : 4;
        unsigned long long *host = (unsigned long long *)malloc(W_BYTES), *w, *x, *d_out;

        if (!host)
                return 1;
        fill_words(host, W_BYTES, 17);
        RT_CHECK(cudaMalloc(&w, W_BYTES));
        RT_CHECK(cudaMalloc(&x, X_BYTES));
        RT_CHECK(cudaMalloc(&d_out, sizeof(*d_out)));
        RT_CHECK(cudaMemcpy(w, host, W_BYTES, cudaMemcpyHostToDevice));
        RT_CHECK(cudaMemset(x, 0, X_BYTES));
        fill_private<<<264, 256>>>(x, X_BYTES / 8, 1);
        LAUNCH_CHECK();
        printf("before: weights %llx private %llx\n", sum_of(w, W_BYTES, d_out), sum_of(x, X_BYTES, d_out));
        fflush(stdout);
        RT_CHECK(cudaDeviceSynchronize());
        sleep(idle); /* no call, nothing in flight: idle */
        printf("after: weights %llx private %llx\n", sum_of(w, W_BYTES, d_out), sum_of(x, X_BYTES, d_out));
        fill_private<<<264, 256>>>(x, X_BYTES / 8, 3);
        LAUNCH_CHECK();
        printf("scaled: private %llx\n", sum_of(x, X_BYTES, d_out));
        RT_FREE(w, x, d_out);
        free(host);
        return 0;
}
