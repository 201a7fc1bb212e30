/*
 * The GPU suite's fork_exec (tests/gpu/fork_exec.cu) on the simulated
 * driver: the same process tree (tests/gpu/process_tree.h: a CUDA parent,
 * a fork+exec child, a child through `sh -c`, a forked child without CUDA,
 * the parent again), each CUDA process uploading the same weights (under
 * SAGE_SHARE=1 a later process can map them), running a kernel and printing
 * checksums. fork_tree_checks.sh runs it under the preload.
 *
 *   fork_tree [--child NAME K]
 */
#include <cuda.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "../gpu/process_tree.h"
#include "checksum_kernel.h"
#include "cu_ok.h"
#include "fakecuda.h"

#define WEIGHT_BYTES ((size_t)4 << 20) /* above SAGE_SHARE_MIN (2 MiB): shareable */

/* out[i] = w[i] * k + k. */
static void scale_kernel(const FakeKernelLaunch *launch, void **params) {
        const uint64_t *w = *(const uint64_t **)params[0];
        uint64_t *out = *(uint64_t **)params[1];
        size_t n = *(size_t *)params[2];
        uint64_t k = *(uint64_t *)params[3];

        (void)launch;
        for (size_t i = 0; i < n; i++)
                out[i] = w[i] * k + k;
}
static const size_t scale_params[] = { sizeof(void *), sizeof(void *), sizeof(size_t), sizeof(uint64_t), 0 };
static const FakeKernelEntry kernels[] = { { "checksum", checksum_kernel, checksum_params },
                                           { "scale", scale_kernel, scale_params } };
static const FakeModuleImage image = { FAKECUDA_IMAGE_MAGIC, 2, kernels };

/* One process's work, printed as `who: weights W output O`. */
static void gpu_work(const char *who, unsigned long long scale_by) {
        size_t n = WEIGHT_BYTES / 8;
        uint64_t k = scale_by;
        uint64_t *host = malloc(WEIGHT_BYTES);
        CUmodule module;
        CUfunction checksum, scale;
        CUdeviceptr w, out, word;

        if (!host)
                exit(4);
        for (size_t i = 0; i < n; i++)
                host[i] = (i + 7) * 0x9e3779b97f4a7c15ull ^ (i >> 7);
        OK(cuModuleLoadData(&module, &image));
        OK(cuModuleGetFunction(&checksum, module, "checksum"));
        OK(cuModuleGetFunction(&scale, module, "scale"));
        OK(cuMemAlloc(&w, WEIGHT_BYTES));
        OK(cuMemcpyHtoD(w, host, WEIGHT_BYTES));
        OK(cuMemAlloc(&out, WEIGHT_BYTES));
        OK(cuMemAlloc(&word, 8));
        void *params[] = { &w, &out, &n, &k };
        OK(cuLaunchKernel(scale, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL));
        uint64_t sw = checksum_of(checksum, w, n, word), so = checksum_of(checksum, out, n, word);
        OK(cuMemFree(w));
        OK(cuMemFree(out));
        OK(cuMemFree(word));
        OK(cuModuleUnload(module));
        free(host);
        printf("%s: weights %016llx output %016llx\n", who, (unsigned long long)sw, (unsigned long long)so);
        fflush(stdout);
}

static void start_cuda(void) {
        ok_primary_context(cuInit, cuDeviceGet, cuDevicePrimaryCtxRetain, cuCtxSetCurrent);
}

int main(int argc, char **argv) {
        return process_tree_main(argc, argv, start_cuda, gpu_work);
}
