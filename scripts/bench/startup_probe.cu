/*
 * Startup probe: time from process start to first kernel completion, the
 * figure SAGE's parallel setup shortens. The launcher (startup_launch.c)
 * reads CLOCK_MONOTONIC right before exec and passes it in SAGE_BENCH_T0_NS;
 * this program prints, relative to it, when main() began, when the runtime
 * was initialised (cudaFree(0)) and when the first kernel had completed.
 * Prints one JSON line; static cudart (nvcc's default), like most functions.
 */
#include <unistd.h>

#include "bench_common.h"

__device__ int probe_flag;

__global__ void first_kernel(int v) {
        probe_flag = v;
}

int main(void) {
        uint64_t t_main = now_ns();
        const char *t0_env = getenv("SAGE_BENCH_T0_NS");
        uint64_t t0 = t0_env ? strtoull(t0_env, NULL, 10) : t_main;

        RT_CHECK(cudaFree(0));
        uint64_t t_init = now_ns();
        first_kernel<<<1, 1>>>(1);
        RT_CHECK(cudaGetLastError());
        RT_CHECK(cudaDeviceSynchronize());
        uint64_t t_kernel = now_ns();

        printf("{\"pid\":%d,\"sage_loaded\":%s,\"t0_given\":%s,\"main_ms\":%.3f,\"init_ms\":%.3f,"
               "\"first_kernel_ms\":%.3f}\n",
               (int)getpid(), sage_loaded() ? "true" : "false", t0_env ? "true" : "false", (double)(t_main - t0) / 1e6,
               (double)(t_init - t0) / 1e6, (double)(t_kernel - t0) / 1e6);
        return 0;
}
