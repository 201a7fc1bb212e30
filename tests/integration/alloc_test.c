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
 *               cuMemMap + cuMemSetAccess, the weights filling the handle
 *   xla         XLA on the H100 (docs/sharing.md, JAX): 3/4 of the device in
 *               ONE cuMemCreate the app maps and grants itself, a small
 *               buffer at +256, the weights at +768, uploaded as in bfc
 *   xla-remap   xla, then the whole mapping unmapped, mapped again and
 *               granted before the kernels (the handle keeps its content)
 *   xla-access  xla, then the mapping made read-only for the checksum and
 *               read-write again; prints what cuMemGetAccess says of it
 *   xla-multi   xla, then the handle mapped a second time elsewhere: the
 *               kernels read the weights there
 *   segments    PyTorch expandable segments: 20 MiB handles mapped one
 *               after another into one reservation as the pool grows, each
 *               granted when mapped; the weights at +8 MiB span the first
 *               two, a second tensor (8 MiB) lies whole in the third;
 *               the first handle released a second time (what the driver
 *               answers is printed)
 *   export      a 64 MiB POSIX-fd handle holding the weights at 0 (the
 *               content vmm uploads), exported, imported and mapped
 *               elsewhere: the kernels read that mapping
 *   export-unmapped  a 16 MiB POSIX-fd handle the weights fill, unmapped
 *               (the handle keeps its content), then exported, imported
 *               and mapped elsewhere: the kernels read (and with -write
 *               write) that mapping
 * A -write suffix (bfc-write, async-write, ...) adds a kernel that writes
 * the weights before they are checksummed.
 */
#include <cuda.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

static CUmemAccessDesc access_of(CUdevice dev, CUmemAccess_flags flags) {
        return (CUmemAccessDesc){ .location = { CU_MEM_LOCATION_TYPE_DEVICE, dev }, .flags = flags };
}

/* An app's VMM allocation: handle `size` bytes, reserved, mapped and granted read-write as XLA does. */
static CUdeviceptr app_vmm(CUdevice dev, size_t size, CUmemAllocationHandleType types, bool rdma,
                           CUmemGenericAllocationHandle *handle) {
        CUmemAllocationProp prop = { .type = CU_MEM_ALLOCATION_TYPE_PINNED,
                                     .requestedHandleTypes = types,
                                     .location = { CU_MEM_LOCATION_TYPE_DEVICE, dev },
                                     .allocFlags = { .gpuDirectRDMACapable = rdma } };
        CUmemAccessDesc rw = access_of(dev, CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
        CUdeviceptr va;

        OK(cuMemCreate(handle, size, &prop, 0));
        OK(cuMemAddressReserve(&va, size, 0, 0, 0));
        OK(cuMemMap(va, size, 0, *handle, 0));
        OK(cuMemSetAccess(va, size, &rw, 1));
        return va;
}

/* What the driver says of the handle, and of the one retained by an address in its mapping. */
static void handle_facts(CUmemGenericAllocationHandle h, CUdeviceptr inside) {
        CUmemGenericAllocationHandle again;
        CUmemAllocationProp prop;

        OK(cuMemGetAllocationPropertiesFromHandle(&prop, h));
        printf("handle types %d rdma %d device %d\n", (int)prop.requestedHandleTypes,
               prop.allocFlags.gpuDirectRDMACapable, prop.location.id);
        OK(cuMemRetainAllocationHandle(&again, (void *)(uintptr_t)inside));
        printf("retained the same handle: %s\n", again == h ? "yes" : "no");
        OK(cuMemRelease(again));
}

/* What the app's own VMM modes hold, to undo at exit. */
typedef struct AppVmm {
        CUmemGenericAllocationHandle handle, second;
        CUdeviceptr va, va2;
        size_t size, size2;
        bool unmapped; /* the first mapping already gone (export-unmapped) */
} AppVmm;

#define SEGMENT ((size_t)20 << 20)
#define SEGMENTS 4

/* PyTorch's expandable segments: a reservation, a 20 MiB handle mapped and granted each time the pool grows. */
static CUdeviceptr grow(CUdevice dev, CUdeviceptr base, CUmemGenericAllocationHandle *h, int i) {
        CUmemAllocationProp prop = { .type = CU_MEM_ALLOCATION_TYPE_PINNED,
                                     .location = { CU_MEM_LOCATION_TYPE_DEVICE, dev } };
        CUmemAccessDesc rw = access_of(dev, CU_MEM_ACCESS_FLAGS_PROT_READWRITE);

        OK(cuMemCreate(&h[i], SEGMENT, &prop, 0));
        OK(cuMemMap(base + i * SEGMENT, SEGMENT, 0, h[i], 0));
        OK(cuMemSetAccess(base + i * SEGMENT, SEGMENT, &rw, 1));
        return base + i * SEGMENT;
}

/* xla and its variants, segments, export: the weights uploaded, w pointing where the kernels read them. */
static bool app_vmm_mode(const char *mode, CUdevice dev, CUstream s, const uint64_t *staging, size_t bytes, Weights *w,
                         Weights *w2, AppVmm *v) {
        CUmemAccessDesc rw = access_of(dev, CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
        size_t free_b, total, gran = 2 << 20;
        unsigned long long flags = 0;

        if (!strncmp(mode, "xla", 3)) {
                OK(cuMemGetInfo(&free_b, &total));
                v->size = total / 4 * 3 / gran * gran;
                /* XLA asks for GPUDirect RDMA where the GPU supports it (GetVmmAllocationProperties). */
                v->va = app_vmm(dev, v->size, CU_MEM_HANDLE_TYPE_NONE, true, &v->handle);
                OK(cuMemcpyHtoDAsync(v->va + 256, staging, 512, s));
                w->p = v->va + 768;
                OK(cuMemcpyHtoDAsync(w->p, staging, bytes, s));
                OK(cuStreamSynchronize(s));
                handle_facts(v->handle, w->p + gran);
                if (!strcmp(mode, "xla-remap")) {
                        OK(cuMemUnmap(v->va, v->size));
                        OK(cuMemMap(v->va, v->size, 0, v->handle, 0));
                        OK(cuMemSetAccess(v->va, v->size, &rw, 1));
                } else if (!strcmp(mode, "xla-access")) {
                        CUmemAccessDesc ro = access_of(dev, CU_MEM_ACCESS_FLAGS_PROT_READ);
                        CUmemLocation here = { CU_MEM_LOCATION_TYPE_DEVICE, dev };
                        OK(cuMemGetAccess(&flags, &here, w->p + gran));
                        printf("access %llu\n", flags);
                        OK(cuMemSetAccess(v->va, v->size, &ro, 1));
                        OK(cuMemGetAccess(&flags, &here, w->p + gran));
                        printf("access %llu\n", flags);
                        *w2 = *w; /* read through the read-only mapping, then read-write again */
                } else if (!strcmp(mode, "xla-multi")) {
                        v->size2 = v->size;
                        OK(cuMemAddressReserve(&v->va2, v->size2, 0, 0, 0));
                        OK(cuMemMap(v->va2, v->size2, 0, v->handle, 0));
                        OK(cuMemSetAccess(v->va2, v->size2, &rw, 1));
                        w->p = v->va2 + 768;
                } else if (strcmp(mode, "xla")) {
                        return false;
                }
                return true;
        }
        if (!strcmp(mode, "segments")) {
                CUmemGenericAllocationHandle h[SEGMENTS];
                v->size = SEGMENTS * SEGMENT;
                OK(cuMemAddressReserve(&v->va, v->size, 0, 0, 0));
                grow(dev, v->va, h, 0);
                OK(cuMemcpyHtoDAsync(v->va, staging, 512, s));
                grow(dev, v->va, h, 1);
                w->p = v->va + (8u << 20);
                OK(cuMemcpyHtoDAsync(w->p, staging, bytes, s));
                w2->p = grow(dev, v->va, h, 2) + (4u << 20);
                w2->pitch = w2->words = (8u << 20) / 8;
                w2->rows = 1;
                OK(cuMemcpyHtoDAsync(w2->p, staging + 1, 8u << 20, s));
                grow(dev, v->va, h, 3);
                OK(cuStreamSynchronize(s));
                /* PyTorch unmaps segment by segment; the handles go once unmapped. */
                for (int i = 0; i < SEGMENTS; i++)
                        OK(cuMemRelease(h[i]));
                /* An app's bug: released twice while mapped. The driver's answer, the memory kept by the mapping. */
                printf("released again %d\n", (int)cuMemRelease(h[0]));
                return true;
        }
        if (!strcmp(mode, "export") || !strcmp(mode, "export-unmapped")) {
                int fd = -1;
                v->unmapped = !strcmp(mode, "export-unmapped");
                v->size = v->unmapped ? bytes : 64u << 20;
                v->va = app_vmm(dev, v->size, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, false, &v->handle);
                OK(cuMemcpyHtoDAsync(v->va, staging, bytes, s));
                OK(cuStreamSynchronize(s));
                if (v->unmapped)
                        OK(cuMemUnmap(v->va, v->size));
                OK(cuMemExportToShareableHandle(&fd, v->handle, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0));
                OK(cuMemImportFromShareableHandle(&v->second, (void *)(intptr_t)fd,
                                                  CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR));
                close(fd);
                v->size2 = v->size;
                OK(cuMemAddressReserve(&v->va2, v->size2, 0, 0, 0));
                OK(cuMemMap(v->va2, v->size2, 0, v->second, 0));
                OK(cuMemSetAccess(v->va2, v->size2, &rw, 1));
                w->p = v->va2;
                return true;
        }
        return false;
}

static void app_vmm_free(const AppVmm *v, const char *mode) {
        if (!strcmp(mode, "segments")) {
                for (int i = 0; i < SEGMENTS; i++)
                        OK(cuMemUnmap(v->va + i * SEGMENT, SEGMENT));
        } else {
                if (!v->unmapped)
                        OK(cuMemUnmap(v->va, v->size));
                OK(cuMemRelease(v->handle));
        }
        OK(cuMemAddressFree(v->va, v->size));
        if (v->va2) {
                OK(cuMemUnmap(v->va2, v->size2));
                OK(cuMemAddressFree(v->va2, v->size2));
        }
        if (v->second)
                OK(cuMemRelease(v->second));
}

int main(int argc, char **argv) {
        size_t bytes = (argc > 1 ? (size_t)atol(argv[1]) : 16) << 20;
        uint64_t seed = argc > 2 ? (uint64_t)atoll(argv[2]) : 1;
        char mode[64];
        bool write;
        Weights w = { .pitch = bytes, .words = bytes / 8, .rows = 1 }, w2 = { 0 };
        AppVmm app = { 0 };
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

        if (app_vmm_mode(mode, dev, s, staging, bytes, &w, &w2, &app)) {
                OK(cuMemAlloc(&out, sizeof(uint64_t)));
        } else if (!strcmp(mode, "bfc")) {
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
        if (write && strcmp(mode, "xla-access")) /* read-only until after the first checksum */
                scale(&w, s);
        printf("%s%s weights checksum %016llx\n", mode, write ? "-write" : "",
               (unsigned long long)checksum(&w, s, out));
        if (w2.p)
                printf("second checksum %016llx\n", (unsigned long long)checksum(&w2, s, out));
        if (!strcmp(mode, "xla-access")) {
                CUmemAccessDesc rw = access_of(dev, CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
                OK(cuMemSetAccess(app.va, app.size, &rw, 1));
                if (write)
                        scale(&w, s);
                printf("after read-write %016llx\n", (unsigned long long)checksum(&w, s, out));
        }

        if (app.va) {
                app_vmm_free(&app, mode);
                OK(cuMemFree(out));
        } else if (region) {
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
