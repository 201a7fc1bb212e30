/*
 * Runtime API basics: vector add + reduction. Built twice by the GPU suite,
 * with the default static cudart and with -cudart shared, because the two
 * reach the driver differently (both through cuGetProcAddress, but from
 * different objects) and libsage must catch both.
 *
 * Covers cudaMalloc, cudaMemcpy (pageable), cudaMallocHost + cudaMemcpyAsync
 * on a created stream, events, kernel launches; prints exact checksums.
 */
#include "gpu_check.h"

#define N (1 << 20)
#define BLOCK 256

__global__ void vector_add(const float *a, const float *b, float *c, int n) {
        int i = blockIdx.x * blockDim.x + threadIdx.x;
        if (i < n)
                c[i] = a[i] + b[i];
}

/* Integer-valued floats: reduce into a 64-bit integer, exact in any order. */
__global__ void reduce_sum(const float *x, int n, unsigned long long *out) {
        __shared__ long long partial[BLOCK];
        int i = blockIdx.x * blockDim.x + threadIdx.x;
        partial[threadIdx.x] = i < n ? (long long)x[i] : 0;
        __syncthreads();
        for (int s = blockDim.x / 2; s > 0; s >>= 1) {
                if (threadIdx.x < s)
                        partial[threadIdx.x] += partial[threadIdx.x + s];
                __syncthreads();
        }
        if (threadIdx.x == 0)
                atomicAdd(out, (unsigned long long)partial[0]);
}

int main(void) {
        size_t bytes = (size_t)N * sizeof(float);
        float *a = (float *)malloc(bytes), *b = (float *)malloc(bytes);
        FAIL_IF(!a || !b, "out of host memory");
        long long expect = 0;
        for (int i = 0; i < N; i++) {
                a[i] = det_value(i, 1);
                b[i] = det_value(i, 2);
                expect += (long long)(a[i] + b[i]);
        }

        float *pinned_c = NULL;
        RT_CHECK(cudaMallocHost((void **)&pinned_c, bytes));

        float *d_a = NULL, *d_b = NULL, *d_c = NULL;
        unsigned long long *d_sum = NULL;
        RT_CHECK(cudaMalloc((void **)&d_a, bytes));
        RT_CHECK(cudaMalloc((void **)&d_b, bytes));
        RT_CHECK(cudaMalloc((void **)&d_c, bytes));
        RT_CHECK(cudaMalloc((void **)&d_sum, sizeof(*d_sum)));

        cudaStream_t stream;
        cudaEvent_t start, stop;
        RT_CHECK(cudaStreamCreate(&stream));
        RT_CHECK(cudaEventCreate(&start));
        RT_CHECK(cudaEventCreate(&stop));

        /* Pageable synchronous copy for a, pinned async copy for b. */
        RT_CHECK(cudaMemcpy(d_a, a, bytes, cudaMemcpyHostToDevice));
        memcpy(pinned_c, b, bytes);
        RT_CHECK(cudaEventRecord(start, stream));
        RT_CHECK(cudaMemcpyAsync(d_b, pinned_c, bytes, cudaMemcpyHostToDevice, stream));
        RT_CHECK(cudaMemsetAsync(d_sum, 0, sizeof(*d_sum), stream));
        int grid = (N + BLOCK - 1) / BLOCK;
        vector_add<<<grid, BLOCK, 0, stream>>>(d_a, d_b, d_c, N);
        LAUNCH_CHECK();
        reduce_sum<<<grid, BLOCK, 0, stream>>>(d_c, N, d_sum);
        LAUNCH_CHECK();
        RT_CHECK(cudaMemcpyAsync(pinned_c, d_c, bytes, cudaMemcpyDeviceToHost, stream));
        RT_CHECK(cudaEventRecord(stop, stream));
        RT_CHECK(cudaEventSynchronize(stop));
        float ms = 0;
        RT_CHECK(cudaEventElapsedTime(&ms, start, stop));
        RT_CHECK(cudaStreamSynchronize(stream));

        unsigned long long sum = 0;
        RT_CHECK(cudaMemcpy(&sum, d_sum, sizeof(sum), cudaMemcpyDeviceToHost));

        for (int i = 0; i < N; i++)
                FAIL_IF(pinned_c[i] != a[i] + b[i], "c[%d] = %g, want %g", i, (double)pinned_c[i],
                        (double)(a[i] + b[i]));
        FAIL_IF((long long)sum != expect, "sum = %lld, want %lld", (long long)sum, expect);

        printf("vector_add n=%d checksum=%016llx\n", N, (unsigned long long)checksum_bytes(pinned_c, bytes));
        printf("reduce_sum=%lld\n", (long long)sum);
        fprintf(stderr, "info: stream section took %.3f ms\n", (double)ms);

        RT_CHECK(cudaEventDestroy(start));
        RT_CHECK(cudaEventDestroy(stop));
        RT_CHECK(cudaStreamDestroy(stream));
        RT_FREE(d_a, d_b, d_c, d_sum);
        RT_CHECK(cudaFreeHost(pinned_c));
        free(a);
        free(b);
        printf("ok\n");
        return 0;
}
