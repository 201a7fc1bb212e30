/*
 * How fast the miss path's staged DMAs run (docs/sharing.md, "Misses at DMA
 * speed"): 128 MiB sent from 8 page-locked buffers of 16 MiB (libsage's
 * staging: populated, registered) to device memory, 24 times over (an llm's
 * 128 MiB tensors one after another), each time waited for as a staged
 * upload's drain is. Ways:
 *   streams8     each buffer on its own stream in 3 copies, all enqueued at once (libsage's staging)
 *   stream1      the same copies on one stream
 *   streams8x1   each buffer one 16 MiB copy on its own stream
 *   one128       one 128 MiB copy from one registered buffer
 *   alloc_host   streams8 from cuMemAllocHost buffers
 *   vmm_dst      streams8 into a cuMemCreate'd + mapped destination
 * and streams8 / stream1 again while 4, 8, ... THREADS (default 16) host
 * threads memcpy (the staging's copying threads read and write host memory
 * beside the DMA): in 256 MiB calls (glibc streams those past the cache:
 * non-temporal stores) and in 256 KiB steps (cached stores, as the staging's
 * sage_hash_copy writes).
 * Prints per way: GB/s over the 24 sends and the slowest send's ms.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "probe.h"

#define TOTAL (STAGE_SLOTS * STAGE_SLOT)
#define SENDS 24
#define PIECES 3

static CUcontext ctx;
static atomic_int stop;
static atomic_int stepped; /* hogs copy in 256 KiB steps (cached stores), not in one call */

static void *pinned(size_t n) {
        void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

        if (p == MAP_FAILED)
                return NULL;
        (void)madvise(p, n, MADV_HUGEPAGE);
        if (madvise(p, n, MADV_POPULATE_WRITE) != 0)
                memset(p, 1, n);
        return cuMemHostRegister(p, n, 0) == CUDA_SUCCESS ? p : NULL;
}

/* One way: SENDS x 128 MiB; `streams` 1 or STAGE_SLOTS; `pieces` copies per buffer; prints GB/s and the slowest send. */
static void run(const char *label, void *const *buf, CUdeviceptr dst, CUstream *st, int streams, int pieces) {
        double t0 = now_ms(), slowest = 0, t;
        CUresult r = CUDA_SUCCESS;

        for (int s = 0; s < SENDS && r == CUDA_SUCCESS; s++) {
                t = now_ms();
                for (int b = 0; b < STAGE_SLOTS && r == CUDA_SUCCESS; b++)
                        for (int p = 0; p < pieces && r == CUDA_SUCCESS; p++) {
                                size_t lo = STAGE_SLOT * p / pieces, hi = STAGE_SLOT * (p + 1) / pieces;
                                r = cuMemcpyHtoDAsync(dst + b * STAGE_SLOT + lo, (char *)buf[b] + lo, hi - lo,
                                                      st[streams == 1 ? 0 : b]);
                        }
                for (int b = 0; b < streams && r == CUDA_SUCCESS; b++)
                        r = cuStreamSynchronize(st[b]);
                t = now_ms() - t;
                slowest = t > slowest ? t : slowest;
        }
        t = now_ms() - t0;
        printf("%-28s %s %.1f GB/s, slowest send %.2f ms\n", label, name(r), SENDS * (double)TOTAL / t / 1e6, slowest);
}

static void *hog(void *arg) {
        size_t n = (size_t)256 << 20;
        char *a = malloc(n), *b = malloc(n);

        (void)arg;
        if (!a || !b)
                return NULL;
        memset(a, 1, n);
        memset(b, 2, n);
        while (!atomic_load(&stop))
                if (atomic_load(&stepped))
                        for (size_t off = 0; off < n; off += (size_t)256 << 10)
                                memcpy(b + off, a + off, (size_t)256 << 10);
                else
                        memcpy(b, a, n);
        free(a);
        free(b);
        return NULL;
}

int main(void) {
        CUdevice dev;
        CUstream st[STAGE_SLOTS];
        CUdeviceptr dst, vdst;
        void *reg[STAGE_SLOTS], *host[STAGE_SLOTS], *big[STAGE_SLOTS];
        char *one;
        int threads = getenv("THREADS") ? atoi(getenv("THREADS")) : 16;
        pthread_t th[64];

        if (cuInit(0) || cuDeviceGet(&dev, 0) || cuDevicePrimaryCtxRetain(&ctx, dev) || cuCtxSetCurrent(ctx)) {
                printf("stage-dma: no context\n");
                return 1;
        }
        for (int b = 0; b < STAGE_SLOTS; b++)
                if (!(reg[b] = pinned(STAGE_SLOT)) || cuMemAllocHost(&host[b], STAGE_SLOT) ||
                    cuStreamCreate(&st[b], CU_STREAM_NON_BLOCKING)) {
                        printf("stage-dma: staging not made\n");
                        return 1;
                }
        if (!(one = pinned(TOTAL)) || cuMemAlloc(&dst, TOTAL)) {
                printf("stage-dma: 128 MiB not made\n");
                return 1;
        }
        for (int b = 0; b < STAGE_SLOTS; b++)
                big[b] = one + b * STAGE_SLOT;
        {
                CUmemAllocationProp prop = { .type = CU_MEM_ALLOCATION_TYPE_PINNED,
                                             .location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = 0 } };
                CUmemAccessDesc acc = { .location = prop.location, .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
                CUmemGenericAllocationHandle h;
                if (cuMemAddressReserve(&vdst, TOTAL, 0, 0, 0) || cuMemCreate(&h, TOTAL, &prop, 0) ||
                    cuMemMap(vdst, TOTAL, 0, h, 0) || cuMemSetAccess(vdst, TOTAL, &acc, 1)) {
                        printf("stage-dma: VMM destination not made\n");
                        return 1;
                }
        }
        run("warm-up", reg, dst, st, STAGE_SLOTS, PIECES);
        run("streams8", reg, dst, st, STAGE_SLOTS, PIECES);
        run("stream1", reg, dst, st, 1, PIECES);
        run("streams8x1", reg, dst, st, STAGE_SLOTS, 1);
        run("stream1x1", reg, dst, st, 1, 1);
        run("one128 (8 pieces, 1 stream)", big, dst, st, 1, 1);
        run("alloc_host streams8", host, dst, st, STAGE_SLOTS, PIECES);
        run("alloc_host stream1", host, dst, st, 1, PIECES);
        run("vmm_dst streams8", reg, vdst, st, STAGE_SLOTS, PIECES);
        run("vmm_dst stream1", reg, vdst, st, 1, PIECES);
        for (int n = 4; n <= threads && n <= 64; n += 4) { /* hog threads added 4 at a time */
                for (int i = n - 4; i < n; i++)
                        pthread_create(&th[i], NULL, hog, NULL);
                for (int m = 0; m < 2; m++) {
                        atomic_store(&stepped, m);
                        printf("while %d threads memcpy %s:\n", n, m ? "in 256 KiB steps" : "256 MiB at once");
                        run("  streams8", reg, dst, st, STAGE_SLOTS, PIECES);
                        run("  stream1", reg, dst, st, 1, PIECES);
                        run("  vmm_dst streams8", reg, vdst, st, STAGE_SLOTS, PIECES);
                }
        }
        atomic_store(&stop, 1);
        for (int i = 0; i < threads / 4 * 4 && i < 64; i++)
                pthread_join(th[i], NULL);
        return 0;
}
