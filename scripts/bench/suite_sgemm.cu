/*
 * Benchmark suite (scripts/bench/suite.sh), workload "sgemm": a cuBLAS
 * function. Builds two deterministic N x N fp32 matrices on the host (small
 * integers, so every product and every sum is exact in fp32 whatever the
 * summation order: the checksum is the same in every mode), then GPU set-up
 * (cudaFree(0)), upload, cublasCreate + one SGEMM + copy back, checksum.
 *
 * Prints `SAGE_BENCH {json}` with times (ms) relative to SAGE_BENCH_T0_NS.
 * Static cudart (nvcc's default) + -lcublas.
 *
 *   suite_sgemm [N]      (default 4096)
 */
#include <inttypes.h>
#include <unistd.h>

#include <cublas_v2.h>

#include "bench_common.h"

#define BLAS_CHECK(call) STATUS_CHECK(cublasStatus_t, CUBLAS_STATUS_SUCCESS, cublasGetStatusString, call)

int main(int argc, char **argv) {
        uint64_t t_main = now_ns();
        const char *t0_env = getenv("SAGE_BENCH_T0_NS");
        uint64_t t0 = t0_env ? strtoull(t0_env, NULL, 10) : t_main;
        int n = argc > 1 ? atoi(argv[1]) : 4096;
        if (n < 16 || n > 16384) {
                fprintf(stderr, "usage: %s [N in 16..16384]\n", argv[0]);
                return 2;
        }
        size_t elems = (size_t)n * n, bytes = elems * sizeof(float);

        /* 1. Host data: entries in [-8, 8]; |sum| <= 64 n < 2^24 for n <= 16384... exact. */
        float *a = (float *)malloc(bytes), *b = (float *)malloc(bytes), *c = (float *)malloc(bytes);
        if (!a || !b || !c) {
                fprintf(stderr, "malloc failed\n");
                return 1;
        }
        for (size_t i = 0; i < elems; i++) {
                a[i] = (float)((int)((i * 2654435761u) % 17u) - 8);
                b[i] = (float)((int)((i * 40503u + 7u) % 17u) - 8);
        }
        uint64_t t_read = now_ns();

        /* 2. GPU setup. */
        RT_CHECK(cudaFree(0));
        uint64_t t_setup = now_ns();

        /* 3. Upload. */
        float *da, *db, *dc;
        RT_CHECK(cudaMalloc(&da, bytes));
        RT_CHECK(cudaMalloc(&db, bytes));
        RT_CHECK(cudaMalloc(&dc, bytes));
        RT_CHECK(cudaMemcpy(da, a, bytes, cudaMemcpyHostToDevice));
        RT_CHECK(cudaMemcpy(db, b, bytes, cudaMemcpyHostToDevice));
        uint64_t t_upload = now_ns();

        /* 4. Compute: cuBLAS handle (loads its kernels), one SGEMM, result back. */
        cublasHandle_t h;
        BLAS_CHECK(cublasCreate(&h));
        BLAS_CHECK(cublasSetMathMode(h, CUBLAS_PEDANTIC_MATH));
        uint64_t t_handle = now_ns();
        const float one = 1.0f, zero = 0.0f;
        BLAS_CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, da, n, db, n, &zero, dc, n));
        RT_CHECK(cudaMemcpy(c, dc, bytes, cudaMemcpyDeviceToHost));
        uint64_t t_compute = now_ns();

        uint64_t sum = 0;
        double approx = 0;
        for (size_t i = 0; i < elems; i++) {
                uint32_t u;
                memcpy(&u, &c[i], 4);
                sum += (uint64_t)u * (i % 1021 + 1);
                approx += c[i];
        }
        BLAS_CHECK(cublasDestroy(h));
        RT_CHECK(cudaFree(da));
        RT_CHECK(cudaFree(db));
        RT_CHECK(cudaFree(dc));
        free(a);
        free(b);
        free(c);
        uint64_t t_end = now_ns();

        printf("SAGE_BENCH {\"kind\":\"sgemm\",\"pid\":%d,\"sage_loaded\":%s,\"t0_given\":%s,\"n\":%d,"
               "\"main_ms\":%.3f,\"read_ms\":%.3f,\"setup_ms\":%.3f,\"upload_ms\":%.3f,"
               "\"cublas_create_ms\":%.3f,\"compute_ms\":%.3f,\"first_result_ms\":%.3f,\"total_ms\":%.3f,"
               "\"checksum\":\"%016" PRIx64 "\",\"approx\":\"%.4e\"}\n",
               (int)getpid(), sage_loaded() ? "true" : "false", t0_env ? "true" : "false", n, ms(t0, t_main),
               ms(t_main, t_read), ms(t_read, t_setup), ms(t_setup, t_upload), ms(t_upload, t_handle),
               ms(t_upload, t_compute), ms(t0, t_compute), ms(t0, t_end), sum, approx);
        fflush(stdout);
        return 0;
}
