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
/* Set the stack limit, timed; prints what stackprobe.txt shows ("set 16: rc=0 0.23 ms", then the usage). */
static void set_stack(const char *verb, size_t value) {
        char what[32];
        double a = ms();
        CUresult r = cuCtxSetLimit(CU_LIMIT_STACK_SIZE, value);
        double b = ms();

        printf("%s %zu: rc=%d %.2f ms\n", verb, value, r, b - a);
        snprintf(what, sizeof(what), "stack %zu", value);
        used(what);
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
                set_stack("set", 16);
                set_stack("set", 1024);
                set_stack("set", 4096);
                set_stack("back", 1024);
        }
        size_t v;
        cuCtxGetLimit(&v, CU_LIMIT_MALLOC_HEAP_SIZE);
        printf("heap %zu\n", v);
        cuCtxGetLimit(&v, CU_LIMIT_PRINTF_FIFO_SIZE);
        printf("printf fifo %zu\n", v);
        return 0;
}
