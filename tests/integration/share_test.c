/*
 * A function that uploads "weights" (a large allocation, filled from host
 * memory in one copy) and runs a kernel that only reads them. Under
 * SAGE_SHARE=1 with a broker, the first run publishes the weights and a
 * second run maps them instead of copying: the output must not change.
 *   share-test SIZE_MIB SEED
 */
#include <cuda.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "fakecuda.h"

#define OK(call)                                                                        \
        do {                                                                            \
                CUresult r_ = (call);                                                   \
                if (r_ != CUDA_SUCCESS) {                                               \
                        fprintf(stderr, "share-test: %s failed: %d\n", #call, (int)r_); \
                        exit(3);                                                        \
                }                                                                       \
        } while (0)

static void checksum_kernel(const FakeKernelLaunch *launch, void **params) {
        const uint64_t *w = *(const uint64_t **)params[0];
        size_t n = *(size_t *)params[1];
        uint64_t *out = *(uint64_t **)params[2];
        uint64_t s = 0;

        (void)launch;
        for (size_t i = 0; i < n; i++)
                s = s * 1099511628211ull + w[i];
        *out = s;
}
static const FakeKernelEntry kernels[] = { { "checksum", checksum_kernel, NULL } };
static const FakeModuleImage image = { FAKECUDA_IMAGE_MAGIC, 1, kernels };

int main(int argc, char **argv) {
        size_t bytes = (argc > 1 ? (size_t)atol(argv[1]) : 96) << 20;
        uint64_t seed = argc > 2 ? (uint64_t)atoll(argv[2]) : 1, result = 0;
        size_t n = bytes / sizeof(uint64_t);
        uint64_t *host = malloc(bytes);
        CUdevice dev;
        CUcontext ctx;
        CUdeviceptr weights, out;
        CUmodule module;
        CUfunction fn;
        void *params[] = { &weights, &n, &out };

        if (!host)
                return 2;
        for (size_t i = 0; i < n; i++)
                host[i] = (i + seed) * 0x9e3779b97f4a7c15ull;
        OK(cuInit(0));
        OK(cuDeviceGet(&dev, 0));
        OK(cuDevicePrimaryCtxRetain(&ctx, dev));
        OK(cuCtxSetCurrent(ctx));
        OK(cuMemAlloc(&weights, bytes));
        OK(cuMemAlloc(&out, sizeof(uint64_t)));
        OK(cuMemcpyHtoD(weights, host, bytes));
        OK(cuModuleLoadData(&module, &image));
        OK(cuModuleGetFunction(&fn, module, "checksum"));
        OK(cuLaunchKernel(fn, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL));
        OK(cuMemcpyDtoH(&result, out, sizeof(result)));
        printf("weights checksum %016llx\n", (unsigned long long)result);
        OK(cuMemFree(out));
        OK(cuMemFree(weights));
        free(host);
        return 0;
}
