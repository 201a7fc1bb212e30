/*
 * Pure driver API (links -lcuda, no cudart calls): cuInit, cuCtxCreate
 * (CUDA 13 form, cuda.h maps it to cuCtxCreate_v4), cuModuleLoadData of a
 * fatbin embedded in this binary, cuLaunchKernel, sync and async copies.
 * The whole invocation is repeated in a fresh context several times — the
 * shape of a warm container, where SAGE serves cuCtxCreate from a warm
 * context — and every round must give the same result.
 *
 * Build: nvcc --fatbin driver_api_kernels.cu -o K.fatbin, then
 *        nvcc -x c++ -cudart none -DSAGE_KERNEL_FATBIN='"K.fatbin"' driver_api.cu -lcuda
 * (-x c++: host code only, so nvcc registers no fatbin with a cudart that
 * this program must not link).
 */
#define SAGE_GPU_NEED_DRIVER 1
#define SAGE_GPU_DRIVER_ONLY 1
#include "gpu_check.h"

#ifndef SAGE_KERNEL_FATBIN
#error "define SAGE_KERNEL_FATBIN as the quoted path of the fatbin of driver_api_kernels.cu"
#endif

/* Embed the fatbin at build time; .incbin keeps us free of generated headers. */
__asm__(".section .rodata\n"
        ".balign 64\n"
        ".globl sage_kernel_fatbin\n"
        "sage_kernel_fatbin:\n"
        ".incbin \"" SAGE_KERNEL_FATBIN "\"\n"
        ".byte 0\n"
        ".previous\n");
extern "C" const unsigned char sage_kernel_fatbin[];

#define ROUNDS 5
#define N (1 << 20)

static uint64_t run_invocation(CUdevice dev, int round, float *host_x, float *host_y) {
        size_t bytes = (size_t)N * sizeof(float);
        CUcontext ctx = NULL;
        CU_CHECK(cuCtxCreate(&ctx, NULL, 0, dev));

        CUmodule mod = NULL;
        CUfunction axpb = NULL, add_inplace = NULL;
        CU_CHECK(cuModuleLoadData(&mod, sage_kernel_fatbin));
        CU_CHECK(cuModuleGetFunction(&axpb, mod, "axpb"));
        CU_CHECK(cuModuleGetFunction(&add_inplace, mod, "add_inplace"));

        CUdeviceptr d_x = 0, d_y = 0;
        CU_CHECK(cuMemAlloc(&d_x, bytes));
        CU_CHECK(cuMemAlloc(&d_y, bytes));

        /* x by a synchronous pageable copy, y staged through pinned memory. */
        CUstream stream = NULL;
        void *pinned = NULL;
        /* A blocking stream: it must order after the legacy-stream cuMemcpyHtoD. */
        CU_CHECK(cuStreamCreate(&stream, CU_STREAM_DEFAULT));
        CU_CHECK(cuMemAllocHost(&pinned, bytes));
        CU_CHECK(cuMemcpyHtoD(d_x, host_x, bytes));
        memset(pinned, 0, bytes);
        CU_CHECK(cuMemcpyHtoDAsync(d_y, pinned, bytes, stream));

        float a = 3.0f, b = -2.0f;
        int n = N;
        unsigned grid = (N + 255) / 256;
        void *axpb_args[] = { &d_x, &d_y, &a, &b, &n };
        CU_CHECK(cuLaunchKernel(axpb, grid, 1, 1, 256, 1, 1, 0, stream, axpb_args, NULL));
        void *add_args[] = { &d_y, &d_x, &n };
        CU_CHECK(cuLaunchKernel(add_inplace, grid, 1, 1, 256, 1, 1, 0, stream, add_args, NULL));
        CU_CHECK(cuMemcpyDtoHAsync(pinned, d_y, bytes, stream));
        CU_CHECK(cuStreamSynchronize(stream));
        memcpy(host_y, pinned, bytes);
        CU_CHECK(cuCtxSynchronize());

        for (int i = 0; i < N; i++) {
                float want = a * host_x[i] + b + host_x[i];
                FAIL_IF(host_y[i] != want, "round %d: y[%d] = %g, want %g", round, i, (double)host_y[i], (double)want);
        }

        CU_CHECK(cuMemFreeHost(pinned));
        CU_CHECK(cuStreamDestroy(stream));
        CU_FREE(d_x, d_y);
        CU_CHECK(cuModuleUnload(mod));
        CU_CHECK(cuCtxDestroy(ctx));
        return checksum_bytes(host_y, bytes);
}

int main(void) {
        CU_CHECK(cuInit(0));
        int count = 0;
        CU_CHECK(cuDeviceGetCount(&count));
        FAIL_IF(count < 1, "no CUDA device");
        CUdevice dev;
        CU_CHECK(cuDeviceGet(&dev, 0));

        size_t bytes = (size_t)N * sizeof(float);
        float *host_x = (float *)malloc(bytes), *host_y = (float *)malloc(bytes);
        FAIL_IF(!host_x || !host_y, "out of host memory");
        for (int i = 0; i < N; i++)
                host_x[i] = det_value(i, 7);

        uint64_t first = 0;
        for (int round = 0; round < ROUNDS; round++) {
                uint64_t sum = run_invocation(dev, round, host_x, host_y);
                if (round == 0)
                        first = sum;
                FAIL_IF(sum != first, "round %d checksum %016llx differs from round 0 %016llx", round,
                        (unsigned long long)sum, (unsigned long long)first);
                printf("round %d checksum=%016llx\n", round, (unsigned long long)sum);
        }
        free(host_x);
        free(host_y);
        printf("ok\n");
        return 0;
}
