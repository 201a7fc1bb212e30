/*
 * suspend_cfunc.cu's kernel for the simulated driver (tests/fakecuda), so
 * that `bench suspend --fake` runs the same ctypes code on a machine without
 * a GPU: a module image cuModuleLoad(path) takes from this shared object.
 */
#include <stdint.h>

#include "fakecuda.h"

/* sage_wsum(const uint64_t *w, uint64_t n, uint64_t *out) */
static void wsum(const FakeKernelLaunch *launch, void **params) {
        const uint64_t *w = *(const uint64_t **)params[0];
        uint64_t n = *(const uint64_t *)params[1];
        uint64_t *out = *(uint64_t **)params[2];
        uint64_t s = 0;

        (void)launch;
        for (uint64_t i = 0; i < n; i++)
                s += w[i];
        *out += s;
}

static const size_t wsum_params[] = { sizeof(void *), sizeof(uint64_t), sizeof(void *), 0 };

static const FakeKernelEntry kernels[] = {
        { "sage_wsum", wsum, wsum_params },
};

__attribute__((visibility("default"))) const FakeModuleImage fakecuda_module_image = {
        FAKECUDA_IMAGE_MAGIC,
        1,
        kernels,
};
