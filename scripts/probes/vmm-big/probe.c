/*
 * Can the driver give XLA's BFC region (3/4 of the GPU, one cuMemAlloc) as
 * SAGE backs it? One line per way, each allocation released before the next:
 *   alloc      cuMemAlloc of the region (what the app gets natively)
 *   create_fd  one cuMemCreate of it, POSIX-fd exportable (SAGE before the pieces)
 *   create     one cuMemCreate of it, not exportable
 *   pieces_fd  1 GiB exportable cuMemCreate + map + access pieces covering it (SAGE now)
 * each with its result name and milliseconds. docs/sharing.md, "Allocators".
 */
#include <stdio.h>

#include "probe.h"

static CUresult create(size_t size, CUmemAllocationHandleType type, CUmemGenericAllocationHandle *h) {
        CUmemAllocationProp prop = { .type = CU_MEM_ALLOCATION_TYPE_PINNED,
                                     .requestedHandleTypes = type,
                                     .location = { CU_MEM_LOCATION_TYPE_DEVICE, 0 } };
        return cuMemCreate(h, size, &prop, 0);
}

int main(void) {
        CUdevice dev;
        CUcontext ctx;
        CUdeviceptr p, va;
        CUmemGenericAllocationHandle h, pieces[256];
        CUmemAllocationProp prop = { .type = CU_MEM_ALLOCATION_TYPE_PINNED,
                                     .requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
                                     .location = { CU_MEM_LOCATION_TYPE_DEVICE, 0 } };
        CUmemAccessDesc access = { .location = { CU_MEM_LOCATION_TYPE_DEVICE, 0 },
                                   .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
        size_t free_b, total, gran, size, chunk = (size_t)1 << 30, n = 0, off;
        CUresult r;
        double t;

        if (cuInit(0) || cuDeviceGet(&dev, 0) || cuDevicePrimaryCtxRetain(&ctx, dev) || cuCtxSetCurrent(ctx) ||
            cuMemGetInfo(&free_b, &total) ||
            cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM))
                return 77;
        size = total / 4 * 3 / gran * gran;
        printf("vmm-big: total=%zu free=%zu region=%zu granularity=%zu\n", total, free_b, size, gran);
        t = now_ms();
        r = cuMemAlloc(&p, size);
        printf("alloc: %s %.1f ms\n", name(r), now_ms() - t);
        if (r == CUDA_SUCCESS)
                cuMemFree(p);
        t = now_ms();
        r = create(size, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, &h);
        printf("create_fd: %s %.1f ms\n", name(r), now_ms() - t);
        if (r == CUDA_SUCCESS)
                cuMemRelease(h);
        t = now_ms();
        r = create(size, CU_MEM_HANDLE_TYPE_NONE, &h);
        printf("create: %s %.1f ms\n", name(r), now_ms() - t);
        if (r == CUDA_SUCCESS)
                cuMemRelease(h);
        t = now_ms();
        r = cuMemAddressReserve(&va, size, 0, 0, 0);
        for (off = 0; r == CUDA_SUCCESS && off < size && n < 256; off += chunk, n++) {
                size_t len = size - off < chunk ? size - off : chunk;
                if ((r = create(len, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, &pieces[n])) != CUDA_SUCCESS)
                        break;
                if ((r = cuMemMap(va + off, len, 0, pieces[n], 0)) == CUDA_SUCCESS)
                        r = cuMemSetAccess(va + off, len, &access, 1);
        }
        printf("pieces_fd: %s %zu pieces %.1f ms\n", name(r), n, now_ms() - t);
        for (size_t i = 0; i < n; i++) {
                size_t o = i * chunk, len = size - o < chunk ? size - o : chunk;
                cuMemUnmap(va + o, len);
                cuMemRelease(pieces[i]);
        }
        cuMemAddressFree(va, size);
        return 0;
}
