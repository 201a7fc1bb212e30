/*
 * The checksum kernel of the test programs on the simulated driver
 * (pool_test.c, predict_test.c): *out = *out * FNV prime + w[i] over n
 * words, so every byte of every tensor reaches the printed result.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "cu_ok.h"
#include "fakecuda.h"

static void checksum_kernel(const FakeKernelLaunch *launch, void **params) {
        const uint64_t *w = *(const uint64_t **)params[0];
        size_t n = *(size_t *)params[1];
        uint64_t *out = *(uint64_t **)params[2];

        (void)launch;
        for (size_t i = 0; i < n; i++)
                *out = *out * 1099511628211ull + w[i];
}
static const size_t checksum_params[] = { sizeof(void *), sizeof(size_t), sizeof(void *), 0 };

/* What `checksum` (the kernel above, loaded) says of n words at `at`, through the device word `out`. */
static uint64_t checksum_of(CUfunction checksum, CUdeviceptr at, size_t n, CUdeviceptr out) {
        uint64_t part = 0;
        void *params[] = { &at, &n, &out };

        OK(cuMemcpyHtoD(out, &part, 8));
        OK(cuLaunchKernel(checksum, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL));
        OK(cuMemcpyDtoH(&part, out, 8));
        return part;
}
