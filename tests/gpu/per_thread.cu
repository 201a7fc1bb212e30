/*
 * Per-thread default stream (built with --default-stream per-thread): the
 * runtime then calls the _ptds/_ptsz driver entry points, which libsage must
 * hook as well. Several host threads each allocate, copy and launch on their
 * own default stream; main prints the per-thread results in thread order.
 */
#include <pthread.h>

#include "gpu_check.h"

#define THREADS 6
#define N (1 << 18)
#define ROUNDS 8

__global__ void scale_add(float *x, float mul, float add, int n) {
        int i = blockIdx.x * blockDim.x + threadIdx.x;
        if (i < n)
                x[i] = x[i] * mul + add;
}

struct worker {
        int id;
        uint64_t checksum;
        double sum;
};

static void *worker_main(void *arg) {
        struct worker *w = (struct worker *)arg;
        size_t bytes = (size_t)N * sizeof(float);
        float *host = (float *)malloc(bytes);
        FAIL_IF(!host, "out of host memory");
        for (int i = 0; i < N; i++)
                host[i] = det_value(i, 100 + w->id);

        float *d = NULL;
        RT_CHECK(cudaMalloc((void **)&d, bytes));
        /* Default stream here is this thread's own stream (per-thread). */
        RT_CHECK(cudaMemcpyAsync(d, host, bytes, cudaMemcpyHostToDevice, cudaStreamPerThread));
        for (int r = 0; r < ROUNDS; r++) {
                scale_add<<<(N + 255) / 256, 256>>>(d, (r % 2) ? -1.0f : 2.0f, (float)(w->id + r), N);
                LAUNCH_CHECK();
        }
        RT_CHECK(cudaMemcpy(host, d, bytes, cudaMemcpyDeviceToHost));
        RT_CHECK(cudaStreamSynchronize(0));

        /* Same arithmetic on the CPU: every value stays a small exact integer. */
        double sum = 0;
        for (int i = 0; i < N; i++) {
                float v = det_value(i, 100 + w->id);
                for (int r = 0; r < ROUNDS; r++)
                        v = v * ((r % 2) ? -1.0f : 2.0f) + (float)(w->id + r);
                FAIL_IF(host[i] != v, "thread %d: x[%d] = %g, want %g", w->id, i, (double)host[i], (double)v);
                sum += v;
        }
        w->checksum = checksum_bytes(host, bytes);
        w->sum = sum;
        RT_CHECK(cudaFree(d));
        free(host);
        return NULL;
}

int main(void) {
        pthread_t tids[THREADS];
        struct worker workers[THREADS];
        RT_CHECK(cudaFree(0));
        for (int t = 0; t < THREADS; t++) {
                workers[t].id = t;
                FAIL_IF(pthread_create(&tids[t], NULL, worker_main, &workers[t]) != 0, "pthread_create failed");
        }
        for (int t = 0; t < THREADS; t++)
                FAIL_IF(pthread_join(tids[t], NULL) != 0, "pthread_join failed");
        RT_CHECK(cudaDeviceSynchronize());
        for (int t = 0; t < THREADS; t++)
                printf("thread %d checksum=%016llx sum=%.1f\n", t, (unsigned long long)workers[t].checksum,
                       workers[t].sum);
        printf("ok\n");
        return 0;
}
