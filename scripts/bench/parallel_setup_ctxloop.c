/*
 * Parallel-setup benchmark, workload (d): a warm container serving many
 * invocations in one process through the driver API. Each iteration:
 * cuCtxCreate, cuModuleLoadData (cubin read once at start), cuMemAlloc
 * 64 MiB, cuMemcpyHtoD, one kernel, cuCtxSynchronize, result check,
 * cuMemFree, cuModuleUnload, cuCtxDestroy. With SAGE's context redirect the
 * create is served by the warm primary context and the destroy keeps it.
 *
 *   parallel_setup_ctxloop CUBIN [ITERATIONS]
 *
 * Prints one JSON line: per-iteration cycle, create and destroy times
 * (median/min/max/first), and a checksum over all iterations' results.
 * Every iteration's kernel result is verified; a wrong one exits 1.
 */
#define _GNU_SOURCE
#include <cuda.h>
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SAGE_GPU_NEED_DRIVER
#define SAGE_GPU_DRIVER_ONLY
#include "bench_common.h"

static void print_stats(const char *key, const double *v, int n) {
        double *s = malloc((size_t)n * sizeof(double));
        if (!s)
                exit(1);
        memcpy(s, v, (size_t)n * sizeof(double));
        qsort(s, (size_t)n, sizeof(double), cmp_double);
        double med = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
        printf("\"%s\":{\"median\":%.4f,\"min\":%.4f,\"max\":%.4f,\"first\":%.4f}", key, med, s[0], s[n - 1], v[0]);
        free(s);
}

int main(int argc, char **argv) {
        uint64_t t_main = now_ns();
        const char *t0_env = getenv("SAGE_BENCH_T0_NS");
        uint64_t t0 = t0_env ? strtoull(t0_env, NULL, 10) : t_main;
        if (argc < 2 || argc > 3) {
                fprintf(stderr, "usage: %s CUBIN [ITERATIONS]\n", argv[0]);
                return 2;
        }
        int iters = argc == 3 ? atoi(argv[2]) : 100;
        if (iters < 1)
                iters = 1;

        /* The module image, read once (as a container would keep it). */
        FILE *f = fopen(argv[1], "rb");
        if (!f) {
                fprintf(stderr, "%s: %s\n", argv[1], strerror(errno));
                return 1;
        }
        fseek(f, 0, SEEK_END);
        long image_size = ftell(f);
        fseek(f, 0, SEEK_SET);
        char *image = malloc((size_t)image_size + 1);
        if (!image || fread(image, 1, (size_t)image_size, f) != (size_t)image_size) {
                fprintf(stderr, "%s: read failed\n", argv[1]);
                return 1;
        }
        image[image_size] = 0;
        fclose(f);

        const size_t bytes = 64u << 20;
        const unsigned long long n = bytes / sizeof(unsigned int);
        unsigned int *host = malloc(bytes);
        if (!host)
                return 1;
        unsigned long long host_sum = 0;
        for (unsigned long long i = 0; i < n; i++) {
                host[i] = (unsigned int)((i * 2654435761ull) & 0xffffffffu) >> 8; /* < 2^24: no wrap */
                host_sum += host[i];
        }

        uint64_t t_init0 = now_ns();
        CU_CHECK(cuInit(0));
        CUdevice dev;
        CU_CHECK(cuDeviceGet(&dev, 0));
        uint64_t t_init1 = now_ns();

        double *cycle = malloc((size_t)iters * sizeof(double));
        double *create = malloc((size_t)iters * sizeof(double));
        double *destroy = malloc((size_t)iters * sizeof(double));
        double *work = malloc((size_t)iters * sizeof(double));
        if (!cycle || !create || !destroy || !work)
                return 1;
        uint64_t checksum = 0;

        for (int it = 0; it < iters; it++) {
                CUcontext ctx;
                CUmodule mod;
                CUfunction fn;
                CUdeviceptr d, dsum;
                uint64_t a = now_ns();
                CU_CHECK(cuCtxCreate(&ctx, NULL, 0, dev));
                uint64_t b = now_ns();
                CU_CHECK(cuModuleLoadData(&mod, image));
                CU_CHECK(cuModuleGetFunction(&fn, mod, "step"));
                CU_CHECK(cuMemAlloc(&d, bytes));
                CU_CHECK(cuMemAlloc(&dsum, sizeof(unsigned long long)));
                CU_CHECK(cuMemsetD32(dsum, 0, 2));
                CU_CHECK(cuMemcpyHtoD(d, host, bytes));
                unsigned int arg_it = (unsigned int)it;
                unsigned long long arg_n = n;
                void *args[] = { &d, &arg_n, &arg_it, &dsum };
                CU_CHECK(cuLaunchKernel(fn, 264, 1, 1, 256, 1, 1, 0, NULL, args, NULL));
                CU_CHECK(cuCtxSynchronize());
                unsigned long long sum = 0;
                CU_CHECK(cuMemcpyDtoH(&sum, dsum, sizeof(sum)));
                unsigned long long want = 3ull * host_sum + n * (unsigned long long)arg_it;
                if (sum != want) {
                        fprintf(stderr, "iteration %d: kernel result %llx, expected %llx\n", it, sum, want);
                        return 1;
                }
                checksum = checksum * 0x100000001B3ull ^ sum;
                CU_CHECK(cuMemFree(d));
                CU_CHECK(cuMemFree(dsum));
                CU_CHECK(cuModuleUnload(mod));
                uint64_t c = now_ns();
                CU_CHECK(cuCtxDestroy(ctx));
                uint64_t e = now_ns();
                create[it] = (double)(b - a) / 1e6;
                work[it] = (double)(c - b) / 1e6;
                destroy[it] = (double)(e - c) / 1e6;
                cycle[it] = (double)(e - a) / 1e6;
        }
        uint64_t t_end = now_ns();

        printf("{\"pid\":%d,\"sage_loaded\":%s,\"t0_given\":%s,\"iterations\":%d,\"main_ms\":%.3f,"
               "\"init_ms\":%.3f,\"loop_ms\":%.3f,",
               (int)getpid(), sage_loaded() ? "true" : "false", t0_env ? "true" : "false", iters,
               (double)(t_main - t0) / 1e6, (double)(t_init1 - t_init0) / 1e6, (double)(t_end - t_init1) / 1e6);
        print_stats("cycle", cycle, iters);
        printf(",");
        print_stats("create", create, iters);
        printf(",");
        print_stats("destroy", destroy, iters);
        printf(",");
        print_stats("work", work, iters);
        printf(",\"verified\":%d,\"checksum\":\"%016" PRIx64 "\"}\n", iters, checksum);
        fflush(stdout);
        return 0;
}
