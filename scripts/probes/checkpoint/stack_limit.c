/*
 * Does lowering CU_LIMIT_STACK_SIZE on a live context give its local memory
 * back, and what does raising it again cost? (Issue 12: an idle instance's
 * stack is scratch; shrinking it before the checkpoint means the driver
 * copies less.) Prints used device memory (cuMemGetInfo) after each change,
 * for a created context, and with an argument for the primary context.
 *   gcc -O2 -I/usr/local/cuda/include stack_limit.c -lcuda -o stack_limit
 *   ./stack_limit; ./stack_limit primary
 * Result on an H100 (driver 580.159.04): docs/results/2026-12-06-h100-a52b7e5/stackprobe.txt.
 */
#include <cuda.h>
#include <stdio.h>
#include <time.h>
static double ms(void) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}
static void used(const char *w) {
        size_t f, t;
        cuMemGetInfo(&f, &t);
        size_t s = 0;
        cuCtxGetLimit(&s, CU_LIMIT_STACK_SIZE);
        printf("%-28s used %8.1f MiB stack %zu\n", w, (t - f) / 1048576.0, s);
}
int main(int argc, char **argv) {
        CUdevice d;
        CUcontext c;
        cuInit(0);
        cuDeviceGet(&d, 0);
        int primary = argc > 1;
        if (primary) {
                cuDevicePrimaryCtxRetain(&c, d);
                cuCtxSetCurrent(c);
        } else
                cuCtxCreate(&c, NULL, 0, d);
        printf("%s context\n", primary ? "primary" : "created");
        used("start");
        CUdeviceptr p;
        cuMemAlloc(&p, 64 << 20);
        used("after 64 MiB alloc");
        for (int k = 0; k < 2; k++) {
                double a = ms();
                CUresult r = cuCtxSetLimit(CU_LIMIT_STACK_SIZE, 16);
                double b = ms();
                printf("set 16: rc=%d %.2f ms\n", r, b - a);
                used("stack 16");
                a = ms();
                r = cuCtxSetLimit(CU_LIMIT_STACK_SIZE, 1024);
                b = ms();
                printf("set 1024: rc=%d %.2f ms\n", r, b - a);
                used("stack 1024");
                a = ms();
                r = cuCtxSetLimit(CU_LIMIT_STACK_SIZE, 4096);
                b = ms();
                printf("set 4096: rc=%d %.2f ms\n", r, b - a);
                used("stack 4096");
                a = ms();
                r = cuCtxSetLimit(CU_LIMIT_STACK_SIZE, 1024);
                b = ms();
                printf("back 1024: rc=%d %.2f ms\n", r, b - a);
                used("stack 1024");
        }
        size_t v;
        cuCtxGetLimit(&v, CU_LIMIT_MALLOC_HEAP_SIZE);
        printf("heap %zu\n", v);
        cuCtxGetLimit(&v, CU_LIMIT_PRINTF_FIFO_SIZE);
        printf("printf fifo %zu\n", v);
        return 0;
}
