/*
 * Why does a staged miss's first DMA start ~2.5 ms late (docs/results/
 * 2026-12-06-h100-cb41a16: llm's 128 MiB tensors, cfunc's 2 GiB)? The staged
 * copy's destination is a piece SAGE has just created, mapped and given
 * access to. One line per case, ROUNDS times, each in ms:
 *   vmm      cuMemCreate (POSIX-fd exportable) + cuMemMap + cuMemSetAccess of SIZE
 *   first    the first cuMemcpyHtoDAsync of 4 MiB from pinned memory into it: the call alone
 *   first_s  ... and its stream synchronize
 *   second   a second 4 MiB copy into another offset of it (call + synchronize)
 *   whole    SIZE from pinned memory in 16 MiB copies, one synchronize (GB/s)
 * and the same for cuMemAlloc'd memory (alloc, first, ...), so a cost of a fresh VMM
 * mapping shows against the driver's own allocator.
 */
#include <stdio.h>
#include <stdlib.h>

#include "probe.h"

#define CHECK(x)                                                                             \
        do {                                                                                 \
                CUresult r_ = (x);                                                           \
                if (r_ != CUDA_SUCCESS) {                                                    \
                        fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, name(r_)); \
                        exit(1);                                                             \
                }                                                                            \
        } while (0)

static void copies(const char *what, CUdeviceptr d, size_t size, void *pinned, CUstream s, double setup) {
        double t0 = now_ms(), t1, t2, t3, t4;

        CHECK(cuMemcpyHtoDAsync(d, pinned, 4u << 20, s));
        t1 = now_ms();
        CHECK(cuStreamSynchronize(s));
        t2 = now_ms();
        CHECK(cuMemcpyHtoDAsync(d + size / 2, pinned, 4u << 20, s));
        CHECK(cuStreamSynchronize(s));
        t3 = now_ms();
        for (size_t off = 0; off < size; off += 16u << 20)
                CHECK(cuMemcpyHtoDAsync(d + off, pinned, size - off < (16u << 20) ? size - off : 16u << 20, s));
        CHECK(cuStreamSynchronize(s));
        t4 = now_ms();
        printf("%-6s setup %7.3f  first %7.3f  first_s %7.3f  second %7.3f  whole %7.3f ms (%.1f GB/s)\n", what, setup,
               t1 - t0, t2 - t0, t3 - t2, t4 - t3, (double)size / ((t4 - t3) * 1e6));
}

int main(int argc, char **argv) {
        size_t size = (argc > 1 ? strtoull(argv[1], NULL, 0) : 128) << 20;
        int rounds = argc > 2 ? atoi(argv[2]) : 5;
        CUcontext ctx;
        CUstream s;
        void *pinned;
        size_t gran = 0;
        CUmemAllocationProp prop = { .type = CU_MEM_ALLOCATION_TYPE_PINNED,
                                     .requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
                                     .location = { CU_MEM_LOCATION_TYPE_DEVICE, 0 } };
        CUmemAccessDesc access = { .location = { CU_MEM_LOCATION_TYPE_DEVICE, 0 },
                                   .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE };

        CHECK(cuInit(0));
        CHECK(cuDevicePrimaryCtxRetain(&ctx, 0));
        CHECK(cuCtxSetCurrent(ctx));
        CHECK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
        CHECK(cuMemAllocHost(&pinned, 16u << 20));
        CHECK(cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
        size = (size + gran - 1) / gran * gran;
        printf("size %zu MiB, granularity %zu KiB, %d rounds\n", size >> 20, gran >> 10, rounds);
        for (int i = 0; i < rounds; i++) {
                CUmemGenericAllocationHandle h;
                CUdeviceptr va, d;
                double t0 = now_ms();

                CHECK(cuMemAddressReserve(&va, size, 0, 0, 0));
                CHECK(cuMemCreate(&h, size, &prop, 0));
                CHECK(cuMemMap(va, size, 0, h, 0));
                CHECK(cuMemSetAccess(va, size, &access, 1));
                copies("vmm", va, size, pinned, s, now_ms() - t0);
                CHECK(cuMemUnmap(va, size));
                CHECK(cuMemRelease(h));
                CHECK(cuMemAddressFree(va, size));
                t0 = now_ms();
                CHECK(cuMemAlloc(&d, size));
                copies("alloc", d, size, pinned, s, now_ms() - t0);
                CHECK(cuMemFree(d));
        }
        return 0;
}
