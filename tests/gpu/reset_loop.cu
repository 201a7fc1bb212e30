/*
 * A warm container that resets the device at the end of every invocation
 * (cudaDeviceReset), idles, and serves the next one. Natively every
 * invocation after a reset pays for a new primary context; under SAGE the
 * context is re-created in the background during the idle time. Output
 * (checksums) must be identical; stderr reports how long each invocation
 * waited in its first CUDA call.
 */
#include <time.h>
#include <unistd.h>

#include "gpu_check.h"

__global__ void fill(uint32_t *out, uint32_t n, uint32_t seed) {
        uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
        if (i < n)
                out[i] = i * 2654435761u + seed;
}

static double now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(void) {
        const uint32_t n = 1 << 20;
        double worst = 0;
        for (int inv = 0; inv < 4; inv++) {
                uint32_t *d, *h = (uint32_t *)malloc(n * sizeof(uint32_t));
                uint64_t sum = 0;
                double t = now_ms();
                RT_CHECK(cudaMalloc(&d, n * sizeof(uint32_t))); /* first call of the invocation */
                t = now_ms() - t;
                if (inv > 0 && t > worst)
                        worst = t;
                fill<<<(n + 255) / 256, 256>>>(d, n, (uint32_t)inv);
                LAUNCH_CHECK();
                RT_CHECK(cudaMemcpy(h, d, n * sizeof(uint32_t), cudaMemcpyDeviceToHost));
                for (uint32_t i = 0; i < n; i++)
                        sum = sum * 1099511628211ull + h[i];
                printf("invocation %d: checksum %016llx\n", inv, (unsigned long long)sum);
                fprintf(stderr, "invocation %d: first CUDA call waited %.1f ms\n", inv, t);
                free(h);
                RT_CHECK(cudaDeviceReset()); /* end of the invocation */
                usleep(400 * 1000);          /* idle until the next request */
        }
        fprintf(stderr, "reset_wait_max_ms=%.1f\n", worst);
        return 0;
}
