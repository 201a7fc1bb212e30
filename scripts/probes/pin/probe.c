/*
 * What page-locking the miss path's staging costs (docs/sharing.md, "Misses
 * at DMA speed"): 8 buffers of 16 MiB (SAGE_SHARE_STAGING's 128 MiB), made
 * three ways, each freed before the next:
 *   alloc_host   cuMemAllocHost per buffer (what libsage does)
 *   register_thp mmap, MADV_HUGEPAGE, MADV_POPULATE_WRITE (the kernel's
 *                work, outside the driver), then cuMemHostRegister
 *   register_4k  the same without MADV_HUGEPAGE
 * and whether pinning holds up another thread's copies (the warm-up thread
 * pins while the app's first miss sends): a thread sends 4 MiB copies from
 * pinned memory (cuMemcpyHtoDAsync + cuStreamSynchronize) alone, then while
 * this one pins 8 buffers with cuMemAllocHost, then while it registers 128
 * MiB populated beforehand (what libsage does now: share_stage_pin.c) as
 * 1 x 128 MiB, 8 x 16 MiB (libsage's buffers) and 32 x 4 MiB; the longest
 * single enqueue and the GB/s of each.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "probe.h"

#define COPY ((size_t)4 << 20)

static void alloc_host(void) {
        void *buf[STAGE_SLOTS];
        double t0 = now_ms(), lo = 1e9, hi = 0, t;
        CUresult r = CUDA_SUCCESS;
        int n = 0;

        for (; n < STAGE_SLOTS; n++) {
                t = now_ms();
                if ((r = cuMemAllocHost(&buf[n], STAGE_SLOT)) != CUDA_SUCCESS)
                        break;
                t = now_ms() - t;
                lo = t < lo ? t : lo;
                hi = t > hi ? t : hi;
        }
        printf("alloc_host: %s %d x 16 MiB in %.1f ms (per buffer %.1f-%.1f)\n", name(r), n, now_ms() - t0, lo, hi);
        while (n--)
                cuMemFreeHost(buf[n]);
}

static void registered(const char *label, int huge) {
        void *buf[STAGE_SLOTS];
        double populate = 0, reg = 0, t;
        CUresult r = CUDA_SUCCESS;
        int n = 0, advised = 0;

        for (; n < STAGE_SLOTS; n++) {
                t = now_ms();
                buf[n] = mmap(NULL, STAGE_SLOT, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (buf[n] == MAP_FAILED)
                        break;
                if (huge)
                        advised += madvise(buf[n], STAGE_SLOT, MADV_HUGEPAGE) == 0;
                if (madvise(buf[n], STAGE_SLOT, MADV_POPULATE_WRITE) != 0)
                        memset(buf[n], 0, STAGE_SLOT); /* kernels before 5.14 */
                populate += now_ms() - t;
                t = now_ms();
                r = cuMemHostRegister(buf[n], STAGE_SLOT, 0);
                reg += now_ms() - t;
                if (r != CUDA_SUCCESS) {
                        munmap(buf[n], STAGE_SLOT);
                        break;
                }
        }
        printf("%s: %s %d x 16 MiB: populate %.1f ms (hugepage advice taken %d), register %.1f ms, total %.1f ms\n",
               label, name(r), n, populate, advised, reg, populate + reg);
        while (n--) {
                cuMemHostUnregister(buf[n]);
                munmap(buf[n], STAGE_SLOT);
        }
}

/* The sender: 4 MiB copies until told to stop; the longest enqueue and the bytes sent. */
static struct {
        CUcontext ctx;
        CUdeviceptr dev;
        void *src;
        CUstream stream;
        atomic_int stop;
        double worst_ms, ms;
        size_t bytes;
} send;

static void *sender(void *arg) {
        double t0 = now_ms(), t;

        (void)arg;
        cuCtxSetCurrent(send.ctx);
        send.worst_ms = 0;
        send.bytes = 0;
        while (!atomic_load(&send.stop)) {
                t = now_ms();
                if (cuMemcpyHtoDAsync(send.dev, send.src, COPY, send.stream) != CUDA_SUCCESS)
                        break;
                t = now_ms() - t;
                send.worst_ms = t > send.worst_ms ? t : send.worst_ms;
                cuStreamSynchronize(send.stream);
                send.bytes += COPY;
        }
        send.ms = now_ms() - t0;
        return NULL;
}

static void contention(void) {
        pthread_t tid;
        void *buf[STAGE_SLOTS];
        double t0;
        int n = 0;

        atomic_store(&send.stop, 0);
        pthread_create(&tid, NULL, sender, NULL);
        t0 = now_ms();
        while (now_ms() - t0 < 50) /* alone: 50 ms */
                ;
        atomic_store(&send.stop, 1);
        pthread_join(tid, NULL);
        printf("copies alone: %.1f GB/s, longest enqueue %.3f ms\n", send.bytes / send.ms / 1e6, send.worst_ms);
        atomic_store(&send.stop, 0);
        pthread_create(&tid, NULL, sender, NULL);
        t0 = now_ms();
        for (; n < STAGE_SLOTS && cuMemAllocHost(&buf[n], STAGE_SLOT) == CUDA_SUCCESS; n++)
                ;
        t0 = now_ms() - t0;
        atomic_store(&send.stop, 1);
        pthread_join(tid, NULL);
        printf("copies while pinning %d x 16 MiB (%.1f ms): %.1f GB/s, longest enqueue %.3f ms\n", n, t0,
               send.bytes / send.ms / 1e6, send.worst_ms);
        while (n--)
                cuMemFreeHost(buf[n]);
}

/* 128 MiB, populated (THP where allowed) before the sender starts: only the driver's part is timed. */
static void contention_registering(int pieces) {
        size_t total = (size_t)STAGE_SLOTS * STAGE_SLOT, piece = total / pieces;
        unsigned char *p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        double t0, longest = 0, t;
        pthread_t tid;
        CUresult r = CUDA_SUCCESS;
        int n = 0;

        if (p == MAP_FAILED)
                return;
        madvise(p, total, MADV_HUGEPAGE);
        if (madvise(p, total, MADV_POPULATE_WRITE) != 0)
                memset(p, 0, total);
        atomic_store(&send.stop, 0);
        pthread_create(&tid, NULL, sender, NULL);
        t0 = now_ms();
        while (now_ms() - t0 < 5) /* the sender under way first */
                ;
        t0 = now_ms();
        for (; n < pieces && r == CUDA_SUCCESS; n++) {
                t = now_ms();
                r = cuMemHostRegister(p + n * piece, piece, 0);
                t = now_ms() - t;
                longest = t > longest ? t : longest;
        }
        t0 = now_ms() - t0;
        atomic_store(&send.stop, 1);
        pthread_join(tid, NULL);
        printf("copies while registering %d x %zu MiB: %s, register %.1f ms (longest call %.2f ms): %.1f GB/s, "
               "longest enqueue %.3f ms\n",
               pieces, piece >> 20, name(r), t0, longest, send.bytes / send.ms / 1e6, send.worst_ms);
        while (n--)
                cuMemHostUnregister(p + n * piece);
        munmap(p, total);
}

int main(void) {
        CUdevice dev;

        if (cuInit(0) || cuDeviceGet(&dev, 0) || cuDevicePrimaryCtxRetain(&send.ctx, dev) || cuCtxSetCurrent(send.ctx))
                return 77;
        if (cuMemAlloc(&send.dev, COPY) || cuMemAllocHost(&send.src, COPY) ||
            cuStreamCreate(&send.stream, CU_STREAM_NON_BLOCKING))
                return 1;
        memset(send.src, 1, COPY);
        alloc_host(); /* twice: the first may pay the driver's own first-use costs */
        alloc_host();
        registered("register_thp", 1);
        registered("register_4k", 0);
        contention();
        contention_registering(1);
        contention_registering(8);
        contention_registering(32);
        return 0;
}
