/*
 * A function whose weights live in memory an allocator other than plain
 * cuMemAlloc hands out, driving the simulated driver the way the framework
 * named by MODE does (docs/sharing.md, "Allocators"). It uploads the
 * weights, runs a kernel that reads them (and, with -write, one that scales
 * them in place) and prints a checksum: under SAGE_SHARE=1 the output must
 * be the native one, whatever was shared.
 *   alloc-test SIZE_MIB SEED MODE
 * MODE:
 *   bfc         XLA's default (BFC allocator, preallocation): one cuMemAlloc
 *               of 3/4 of the device (cuMemGetInfo's total, 0.9 back-off as
 *               tsl's BFCAllocator::Extend), a small buffer, then the weights
 *               at a 256-byte aligned offset, uploaded by cuMemcpyHtoDAsync
 *               on a non-blocking stream from a pinned staging buffer
 *               (cuMemHostAlloc), as PjRt's BufferFromHostBuffer stages them
 *   async       XLA_PYTHON_CLIENT_ALLOCATOR=cuda_async / TF cuda_malloc_async:
 *               cuMemAllocAsync, upload, kernel, cuMemFreeAsync on a stream
 *   pool        the same through cuMemAllocFromPoolAsync on the device's
 *               default pool (cuDeviceGetDefaultMemPool)
 *   own-pool    the same from a pool the app made (cuMemPoolCreate)
 *   pitch       cuMemAllocPitch, rows uploaded by cuMemcpy2D from a tight
 *               host array (row 4000 bytes: padded to the pitch)
 *   pitch-async as pitch, by cuMemcpy2DAsync on a stream
 *   vmm         app-managed VMM: cuMemCreate + cuMemAddressReserve +
 *               cuMemMap + cuMemSetAccess (PyTorch expandable segments)
 * A -write suffix (bfc-write, async-write, ...) adds a kernel that writes
 * the weights before they are checksummed.
 */
#include <cuda.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cu_ok.h"
#include "fakecuda.h"

/* The weights as rows: `words` 8-byte words every `pitch` bytes, `rows` of them. */
static void checksum_kernel(const FakeKernelLaunch *launch, void **params) {
        const char *w = *(const char **)params[0];
        size_t pitch = *(size_t *)params[1], words = *(size_t *)params[2], rows = *(size_t *)params[3];
        uint64_t *out = *(uint64_t **)params[4];
        uint64_t s = 0;

        (void)launch;
        for (size_t r = 0; r < rows; r++)
                for (size_t i = 0; i < words; i++)
                        s = (s ^ ((const uint64_t *)(w + r * pitch))[i]) * 1099511628211ull;
        *out = s;
}
static void scale_kernel(const FakeKernelLaunch *launch, void **params) {
        char *w = *(char **)params[0];
        size_t pitch = *(size_t *)params[1], words = *(size_t *)params[2], rows = *(size_t *)params[3];

        (void)launch;
        for (size_t r = 0; r < rows; r++)
                for (size_t i = 0; i < words; i++)
                        ((uint64_t *)(w + r * pitch))[i] *= 3;
}
static const size_t checksum_params[] = { 8, 8, 8, 8, 8, 0 };
static const size_t scale_params[] = { 8, 8, 8, 8, 0 };
static const FakeKernelEntry kernels[] = { { "checksum_rows", checksum_kernel, checksum_params },
                                           { "scale_rows", scale_kernel, scale_params } };
static const FakeModuleImage image = { FAKECUDA_IMAGE_MAGIC, 2, kernels };

static CUfunction checksum_fn, scale_fn;

typedef struct Weights {
        CUdeviceptr p;
        size_t pitch, words, rows;
} Weights;

static uint64_t checksum(const Weights *w, CUstream s, CUdeviceptr out) {
        uint64_t result = 0;
        void *params[] = { (void *)&w->p, (void *)&w->pitch, (void *)&w->words, (void *)&w->rows, &out };

        OK(cuLaunchKernel(checksum_fn, 1, 1, 1, 1, 1, 1, 0, s, params, NULL));
        OK(cuMemcpyDtoHAsync(&result, out, sizeof(result), s));
        OK(cuStreamSynchronize(s));
        return result;
}

static void scale(const Weights *w, CUstream s) {
        void *params[] = { (void *)&w->p, (void *)&w->pitch, (void *)&w->words, (void *)&w->rows };
        OK(cuLaunchKernel(scale_fn, 1, 1, 1, 1, 1, 1, 0, s, params, NULL));
}

static void fill(uint64_t *host, size_t words, uint64_t seed) {
        for (size_t i = 0; i < words; i++)
                host[i] = (i + seed) * 0x9e3779b97f4a7c15ull;
}

/* XLA's BFC region: 3/4 of the device in one allocation, backing off by 0.9 while the driver says no. */
static CUdeviceptr bfc_region(size_t *size) {
        size_t free_b, total;
        CUdeviceptr region;

        OK(cuMemGetInfo(&free_b, &total));
        for (*size = total / 4 * 3 / 256 * 256; *size > (64u << 20); *size = *size / 10 * 9 / 256 * 256)
                if (cuMemAlloc(&region, *size) == CUDA_SUCCESS)
                        return region;
        fprintf(stderr, "alloc-test: no BFC region\n");
        exit(3);
}

int main(int argc, char **argv) {
        size_t bytes = (argc > 1 ? (size_t)atol(argv[1]) : 16) << 20;
        uint64_t seed = argc > 2 ? (uint64_t)atoll(argv[2]) : 1;
        char mode[64];
        bool write;
        Weights w = { .pitch = bytes, .words = bytes / 8, .rows = 1 };
        CUdevice dev;
        CUmodule module;
        CUstream s;
        CUdeviceptr out, region = 0, small = 0;
        CUmemoryPool pool = NULL;
        CUmemGenericAllocationHandle handle = 0;
        size_t region_size = 0, vmm_size = 0;
        uint64_t *host, *staging;

        snprintf(mode, sizeof(mode), "%s", argc > 3 ? argv[3] : "bfc");
        if ((write = strlen(mode) > 6 && !strcmp(mode + strlen(mode) - 6, "-write")))
                mode[strlen(mode) - 6] = 0;
        dev = ok_primary_context(cuInit, cuDeviceGet, cuDevicePrimaryCtxRetain, cuCtxSetCurrent);
        OK(cuModuleLoadData(&module, &image));
        OK(cuModuleGetFunction(&checksum_fn, module, "checksum_rows"));
        OK(cuModuleGetFunction(&scale_fn, module, "scale_rows"));
        OK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
        if (!(host = malloc(bytes)))
                return 2;
        fill(host, bytes / 8, seed);
        /* Staged through pinned memory, as XLA's host allocator (a BFC over cuMemHostAlloc) does. */
        OK(cuMemHostAlloc((void **)&staging, bytes, CU_MEMHOSTALLOC_PORTABLE));
        memcpy(staging, host, bytes);

        if (!strcmp(mode, "bfc")) {
                region = bfc_region(&region_size);
                small = region;     /* x: BFC's first chunk */
                w.p = region + 768; /* BFC rounds chunks to 256 bytes */
                out = region + 768 + bytes + 256;
                OK(cuMemcpyHtoDAsync(small, staging, 512, s));
                OK(cuMemcpyHtoDAsync(w.p, staging, bytes, s));
        } else if (!strcmp(mode, "async") || !strcmp(mode, "pool") || !strcmp(mode, "own-pool")) {
                if (!strcmp(mode, "pool"))
                        OK(cuDeviceGetDefaultMemPool(&pool, dev));
                if (!strcmp(mode, "own-pool")) {
                        CUmemPoolProps props = { .allocType = CU_MEM_ALLOCATION_TYPE_PINNED,
                                                 .location = { CU_MEM_LOCATION_TYPE_DEVICE, dev } };
                        OK(cuMemPoolCreate(&pool, &props));
                }
                if (pool)
                        OK(cuMemAllocFromPoolAsync(&w.p, bytes, pool, s));
                else
                        OK(cuMemAllocAsync(&w.p, bytes, s));
                OK(cuMemAllocAsync(&out, sizeof(uint64_t), s));
                OK(cuMemcpyHtoDAsync(w.p, staging, bytes, s));
        } else if (!strcmp(mode, "pitch") || !strcmp(mode, "pitch-async")) {
                CUDA_MEMCPY2D c = { .srcMemoryType = CU_MEMORYTYPE_HOST,
                                    .srcHost = staging,
                                    .dstMemoryType = CU_MEMORYTYPE_DEVICE };
                w.words = 500; /* 4000-byte rows: the pitch pads them */
                w.rows = bytes / (w.words * 8);
                OK(cuMemAllocPitch(&w.p, &w.pitch, w.words * 8, w.rows, 8));
                OK(cuMemAlloc(&out, sizeof(uint64_t)));
                c.srcPitch = c.WidthInBytes = w.words * 8;
                c.dstDevice = w.p;
                c.dstPitch = w.pitch;
                c.Height = w.rows;
                if (!strcmp(mode, "pitch"))
                        OK(cuMemcpy2D(&c));
                else
                        OK(cuMemcpy2DAsync(&c, s));
        } else if (!strcmp(mode, "vmm")) {
                CUmemAllocationProp prop = { .type = CU_MEM_ALLOCATION_TYPE_PINNED,
                                             .location = { CU_MEM_LOCATION_TYPE_DEVICE, dev } };
                CUmemAccessDesc access = { .location = { CU_MEM_LOCATION_TYPE_DEVICE, dev },
                                           .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
                size_t gran;
                OK(cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
                vmm_size = (bytes + gran - 1) / gran * gran;
                OK(cuMemCreate(&handle, vmm_size, &prop, 0));
                OK(cuMemAddressReserve(&w.p, vmm_size, 0, 0, 0));
                OK(cuMemMap(w.p, vmm_size, 0, handle, 0));
                OK(cuMemSetAccess(w.p, vmm_size, &access, 1));
                OK(cuMemAlloc(&out, sizeof(uint64_t)));
                OK(cuMemcpyHtoDAsync(w.p, staging, bytes, s));
        } else {
                fprintf(stderr, "alloc-test: unknown mode %s\n", mode);
                return 2;
        }
        OK(cuStreamSynchronize(s));
        if (write)
                scale(&w, s);
        printf("%s%s weights checksum %016llx\n", mode, write ? "-write" : "",
               (unsigned long long)checksum(&w, s, out));

        if (region) {
                OK(cuMemFree(region));
        } else if (vmm_size) {
                OK(cuMemUnmap(w.p, vmm_size));
                OK(cuMemAddressFree(w.p, vmm_size));
                OK(cuMemRelease(handle));
                OK(cuMemFree(out));
        } else if (w.pitch != bytes) {
                OK(cuMemFree(w.p));
                OK(cuMemFree(out));
        } else {
                OK(cuMemFreeAsync(w.p, s));
                OK(cuMemFreeAsync(out, s));
                OK(cuStreamSynchronize(s));
                if (pool && strcmp(mode, "pool"))
                        OK(cuMemPoolDestroy(pool));
        }
        OK(cuMemFreeHost(staging));
        OK(cuStreamDestroy(s));
        free(host);
        return 0;
}
