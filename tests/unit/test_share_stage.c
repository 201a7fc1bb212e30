/*
 * Unit test of intercept/share_stage.c (the miss path's staged copy) over a
 * driver of the test's own whose async copies run only when their stream is
 * synchronized, as a DMA engine that lags: a staging buffer refilled before
 * its copy ran shows as wrong bytes on the "device".
 */
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../intercept/share_stage.h"

#define CHUNK ((size_t)SAGE_CONTENT_KEY_CHUNK)
#define MAX_OPS 4096
#define MAX_STREAMS 16

typedef struct Op {
        void *dst;
        const void *src;
        size_t n;
        uintptr_t stream;
} Op;

static struct {
        Op ops[MAX_OPS];
        size_t nops;
        int copies, allocs, frees, streams_live;
        int fail_copy_at;  /* nonzero: the n-th async copy from now fails */
        int fail_alloc_at; /* nonzero: the n-th host allocation from now fails */
        pthread_t caller;  /* only the calling thread may call the driver */
        int wrong_thread;
} drv;

static void check_thread(void) {
        if (!pthread_equal(pthread_self(), drv.caller))
                drv.wrong_thread++;
}

static CUresult alloc_host(void **p, size_t n) {
        check_thread();
        if (drv.fail_alloc_at && --drv.fail_alloc_at == 0)
                return CUDA_ERROR_OUT_OF_MEMORY;
        drv.allocs++;
        *p = malloc(n);
        return *p ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

static CUresult free_host(void *p) {
        drv.frees++;
        free(p);
        return CUDA_SUCCESS;
}

static CUresult stream_create(CUstream *s, unsigned flags) {
        static uintptr_t next = 1;
        (void)flags;
        check_thread();
        *s = (CUstream)next++;
        drv.streams_live++;
        return CUDA_SUCCESS;
}

static CUresult stream_destroy(CUstream s) {
        (void)s;
        drv.streams_live--;
        return CUDA_SUCCESS;
}

/* The lagging DMA engine: a stream's copies run when it is synchronized. */
static CUresult stream_synchronize(CUstream s) {
        size_t kept = 0;

        check_thread();
        for (size_t i = 0; i < drv.nops; i++) {
                if (drv.ops[i].stream == (uintptr_t)s)
                        memcpy(drv.ops[i].dst, drv.ops[i].src, drv.ops[i].n);
                else
                        drv.ops[kept++] = drv.ops[i];
        }
        drv.nops = kept;
        return CUDA_SUCCESS;
}

static CUresult copy_htod_async(CUdeviceptr dst, const void *src, size_t n, CUstream s) {
        check_thread();
        if (drv.fail_copy_at && --drv.fail_copy_at == 0)
                return CUDA_ERROR_INVALID_VALUE;
        assert(drv.nops < MAX_OPS);
        drv.ops[drv.nops++] = (Op){ (void *)(uintptr_t)dst, src, n, (uintptr_t)s };
        drv.copies++;
        return CUDA_SUCCESS;
}

static const ShareStageDriver driver = { alloc_host,     free_host,          stream_create,
                                         stream_destroy, stream_synchronize, copy_htod_async };

static unsigned char *pattern(size_t n, unsigned seed) {
        unsigned char *p = malloc(n);
        assert(p);
        for (size_t i = 0; i < n; i++)
                p[i] = (unsigned char)(((uint32_t)i * 2654435761u) >> 24 ^ seed); /* no period of a few chunks */
        return p;
}

/* One upload of n bytes: 0 and the device bytes and key right, or the error. */
static int upload(ShareStage *st, CUcontext ctx, size_t n, unsigned seed) {
        unsigned char *src = pattern(n, seed), *dev = calloc(1, n);
        ShareStageCost cost = { 0, 0 };
        SageHash key = { 0, 0 };
        int r;

        assert(dev);
        r = share_stage_upload(st, ctx, (CUdeviceptr)(uintptr_t)dev, src, n, &key, &cost);
        assert(drv.nops == 0); /* nothing in flight when it returns, success or not */
        if (r == 0) {
                assert(memcmp(src, dev, n) == 0);
                assert(sage_hash_equal(key, sage_content_key(src, n)));
                assert(cost.wall_ns > 0 && cost.cpu_ns > 0);
        }
        free(src);
        free(dev);
        return r;
}

int main(void) {
        CUcontext ctx1 = (CUcontext)(uintptr_t)0x1000, ctx2 = (CUcontext)(uintptr_t)0x2000;
        ShareStage st;

        drv.caller = pthread_self();
        /* One chunk per buffer: 11 rounds through 4 buffers, each reused. */
        for (unsigned threads = 1; threads <= 4; threads *= 2) {
                share_stage_init(&st, &driver, SHARE_STAGE_SLOTS * CHUNK, threads);
                assert(st.slot_bytes == CHUNK);
                assert(upload(&st, ctx1, 10 * CHUNK + 123, threads) == 0);
                assert(drv.copies == 11);
                drv.copies = 0;
                assert(upload(&st, ctx1, 1, 7) == 0);         /* less than a chunk */
                assert(upload(&st, ctx1, 3 * CHUNK, 9) == 0); /* fewer rounds than buffers */
                assert(drv.allocs == SHARE_STAGE_SLOTS);      /* made once per context */
                share_stage_release(&st);
                assert(drv.frees == SHARE_STAGE_SLOTS && drv.streams_live == 0);
                drv.allocs = drv.frees = drv.copies = 0;
        }
        /* Several chunks per buffer. */
        share_stage_init(&st, &driver, SHARE_STAGE_SLOTS * 3 * CHUNK + 5, 3);
        assert(st.slot_bytes == 3 * CHUNK);
        assert(upload(&st, ctx1, 20 * CHUNK + 4096, 1) == 0);
        /* Another context: its own buffers (the old context may be gone). */
        assert(upload(&st, ctx2, 2 * CHUNK, 2) == 0);
        assert(drv.allocs == 2 * SHARE_STAGE_SLOTS && drv.frees == SHARE_STAGE_SLOTS);
        /* A copy that fails: an error, nothing in flight, and staging still works after. */
        drv.fail_copy_at = 3;
        assert(upload(&st, ctx2, 20 * CHUNK, 3) == -EIO);
        assert(drv.streams_live == 0); /* given up: made again at the next upload */
        assert(upload(&st, ctx2, 20 * CHUNK, 4) == 0);
        drv.fail_copy_at = 1;
        assert(upload(&st, ctx2, CHUNK, 5) == -EIO);
        share_stage_release(&st);
        /* Buffers that cannot be pinned: off for good, nothing leaked. */
        drv.allocs = drv.frees = 0;
        share_stage_init(&st, &driver, SHARE_STAGE_SLOTS * CHUNK, 2);
        drv.fail_alloc_at = 2;
        assert(upload(&st, ctx1, CHUNK, 6) == -ENODEV);
        assert(drv.allocs == drv.frees && drv.streams_live == 0);
        assert(upload(&st, ctx1, CHUNK, 6) == -ENODEV && drv.allocs == 1);
        /* Staging off (less than a chunk per buffer). */
        share_stage_init(&st, &driver, CHUNK, 2);
        assert(upload(&st, ctx1, CHUNK, 6) == -ENODEV);
        assert(drv.wrong_thread == 0);
        puts("share_stage: ok");
        return 0;
}
