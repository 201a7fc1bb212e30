/*
 * Assembly's read-back (intercept/share_readback.c) against an in-test
 * driver: a fixed staging of two halves, made once (ahead of time or at
 * the first read-back, whichever comes first, never twice); a range longer
 * than a half read in pieces through the same pipeline keyed as it always
 * was; malloc'd staging when pinning fails; a fork()ed child making its own.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../intercept/share_key.h"
#include "../../intercept/share_readback.h"
#include "../../intercept/stats.h"
#include "check.h"
#include "fake_share_driver.h"

#define G FAKE_GRAN
#define HALF SHARE_READBACK_HALF
#define NGRAN 16
#define CTX ((CUcontext)(uintptr_t)0xc7)

static int host_allocs; /* alloc_host calls, failed ones included */
static SageShareDriver drv;

static CUresult counting_alloc_host(void **p, size_t len) {
        host_allocs++;
        return fake_driver.alloc_host(p, len);
}

static void release_extent(void *ctx, uint64_t id) {
}

/* An allocation of NGRAN granules, each of its own byte pattern (a piece read at the wrong offset hashes otherwise). */
static SageShareAlloc *setup(ShareVmm *v) {
        SageShareAlloc *a = NULL;

        fake_reset();
        host_allocs = 0;
        drv = fake_driver;
        drv.alloc_host = counting_alloc_host;
        share_vmm_init(v, &drv, release_extent, NULL);
        CHECK(share_vmm_alloc(v, NGRAN * G, G, 0, 0, NULL, &a) == CUDA_SUCCESS);
        share_vmm_link(v, a);
        for (size_t g = 0; g < NGRAN; g++) {
                unsigned char *b = fake_at(a->va + g * G, NULL);

                CHECK(b);
                for (size_t i = 0; i < G; i++)
                        b[i] = (unsigned char)(g * 37 + i * 13 + (i >> 12));
        }
        return a;
}

static void teardown(ShareVmm *v, SageShareAlloc *a) {
        CHECK(share_vmm_unlink(v, a->va) == a);
        share_vmm_release(v, a);
        CHECK(fake.live_handles == 0);
}

/* The key a range has always had: sage_share_content_key of its bytes in one piece. */
static SageHash key_of(CUdeviceptr at, size_t len) {
        unsigned char *buf = malloc(len);
        SageHash h;

        CHECK(buf && fake_read(at, len, buf));
        CHECK(sage_share_content_key(buf, len, &h) == 0);
        free(buf);
        return h;
}

/* The caller's work meanwhile: steps taken, the copies then still pending (the stream not done), how many it has. */
static struct { int steps, while_pending, have, not_ready_seen; } work;

static bool step(void *ctx) {
        CHECK(ctx == &work);
        work.steps++;
        work.while_pending += fake.queries_not_ready > work.not_ready_seen; /* "not ready" just before */
        work.not_ready_seen = fake.queries_not_ready;
        return --work.have > 0;
}

/* A small range, one of 3 halves and a bit (read in 4 pieces), one of a granule: each keyed as before. */
static void keys_meanwhile(ShareVmm *v, SageShareAlloc *a, ShareReadback *rb, const ShareReadbackHooks *mw) {
        ShareReadRange r[3] = {
                { .at = a->va + 100, .len = 1000 },
                { .at = a->va + G, .len = 3 * HALF + 1000 },
                { .at = a->va + 14 * G, .len = G },
        };

        share_readback_keys(rb, v, CTX, r, 3, mw);
        for (size_t i = 0; i < 3; i++)
                CHECK(r[i].result == 0 && sage_hash_equal(r[i].key, key_of(r[i].at, r[i].len)));
}

static void keys(ShareVmm *v, SageShareAlloc *a, ShareReadback *rb) {
        keys_meanwhile(v, a, rb, NULL);
}

/* Long ranges go through the pipeline in pieces: asynchronous copies, no synchronous fallback. */
static void long_range_in_pieces(bool eager) {
        ShareVmm v;
        SageShareAlloc *a = setup(&v);
        ShareReadback rb = { 0 };

        uint64_t dma = sage_stats_get(SAGE_STAT_SHARE_NS_ASSEMBLE_READ_DMA);
        uint64_t hash = sage_stats_get(SAGE_STAT_SHARE_NS_ASSEMBLE_READ_HASH);
        uint64_t unpinned = sage_stats_get(SAGE_STAT_SHARE_READBACK_UNPINNED);

        fake.eager_copies = eager;
        keys(&v, a, &rb);
        /* 1 + 4 + 1 pieces in 5 batches: [small] [piece 0] [piece 1] [piece 2] [piece 3 (1000 bytes), granule] */
        CHECK(fake.dtoh_async == 6 && fake.dtoh_copies == 0 && fake.stream_syncs == 5);
        CHECK(fake.unsynced_copies == 0 && host_allocs == 1 && rb.pinned);
        /* Where the time went: the waits for the copies, the hashing (5 batches each); pinned staging. */
        CHECK(sage_stats_get(SAGE_STAT_SHARE_NS_ASSEMBLE_READ_DMA) > dma &&
              sage_stats_get(SAGE_STAT_SHARE_NS_ASSEMBLE_READ_HASH) > hash);
        CHECK(sage_stats_get(SAGE_STAT_SHARE_READBACK_UNPINNED) == unpinned);
        share_readback_release(&rb, &drv);
        CHECK(fake.streams_live == 0);
        teardown(&v, a);
}

/*
 * The caller's work is done while copies are in flight: a step each time
 * the stream says they are not done, until it has none left (3 steps,
 * never a fourth); the same keys. Copies that landed at once (the stream
 * done) or none at all (synchronous copies): no step.
 */
static void meanwhile_steps(void) {
        ShareVmm v;
        SageShareAlloc *a = setup(&v);
        ShareReadback rb = { 0 };
        ShareReadbackHooks mw = { step, NULL, &work };

        memset(&work, 0, sizeof(work));
        work.have = 3;
        fake.stream_queries = fake.queries_not_ready = 0;
        keys_meanwhile(&v, a, &rb, &mw);
        CHECK(work.steps == 3 && work.while_pending == 3 && fake.stream_syncs == 5);
        work.have = 3;
        work.steps = 0;
        fake.eager_copies = true;
        keys_meanwhile(&v, a, &rb, &mw);
        CHECK(work.steps == 0 && fake.stream_queries > 0);
        fake.eager_copies = false;
        share_readback_release(&rb, &drv);
        fake.fail_stream = true;
        keys_meanwhile(&v, a, &rb, &mw);
        CHECK(work.steps == 0 && !rb.stream_made);
        fake.fail_stream = false;
        share_readback_release(&rb, &drv);
        teardown(&v, a);
}

/* Made ahead (the warm-up thread): the first read-back makes nothing; made again: nothing either. */
static void prepared_once(bool ahead) {
        ShareVmm v;
        SageShareAlloc *a = setup(&v);
        ShareReadback rb = { 0 };
        void *host;

        if (ahead)
                CHECK(share_readback_prepare(&rb, &drv, CTX));
        host = rb.host;
        CHECK(ahead == (host_allocs == 1 && fake.streams_made == 1));
        keys(&v, a, &rb); /* an assembly that came first (ahead false) makes its own */
        CHECK(host_allocs == 1 && fake.streams_made == 1 && rb.host && (!ahead || rb.host == host));
        host = rb.host;
        CHECK(share_readback_prepare(&rb, &drv, CTX)); /* the warm-up thread coming second */
        keys(&v, a, &rb);
        CHECK(host_allocs == 1 && fake.streams_made == 1 && rb.host == host && rb.stream_ctx == CTX);
        share_readback_release(&rb, &drv);
        CHECK(fake.streams_live == 0 && !rb.host);
        teardown(&v, a);
}

/* No pinned memory: malloc'd staging, the same keys; no stream either: synchronous copies, the same keys. */
static void not_pinned(void) {
        ShareVmm v;
        SageShareAlloc *a = setup(&v);
        ShareReadback rb = { 0 };

        fake.fail_alloc_host = true;
        fake.fail_stream = true;
        CHECK(share_readback_prepare(&rb, &drv, CTX));
        CHECK(rb.host && !rb.pinned && !rb.stream_made && host_allocs == 1);
        uint64_t unpinned = sage_stats_get(SAGE_STAT_SHARE_READBACK_UNPINNED);

        keys(&v, a, &rb);
        CHECK(fake.dtoh_copies == 6 && fake.dtoh_async == 0 && host_allocs == 1);
        CHECK(sage_stats_get(SAGE_STAT_SHARE_READBACK_UNPINNED) > unpinned);
        share_readback_release(&rb, &drv);
        fake.fail_alloc_host = false;
        fake.fail_stream = false;
        teardown(&v, a);
}

/* A fork()ed child never reads into (nor frees) the parent's pinned staging: it makes its own. */
static void forked_child(void) {
        ShareVmm v;
        SageShareAlloc *a = setup(&v);
        ShareReadback rb = { 0 };
        void *parent_host;
        int status;
        pid_t pid;

        CHECK(share_readback_prepare(&rb, &drv, CTX));
        parent_host = rb.host;
        fflush(NULL);
        pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
                keys(&v, a, &rb);
                _exit(host_allocs == 2 && rb.host != parent_host ? 0 : 1);
        }
        CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
        keys(&v, a, &rb);
        CHECK(host_allocs == 1 && rb.host == parent_host);
        share_readback_release(&rb, &drv);
        teardown(&v, a);
}

/* What a registering driver was asked: the range, and whether its pages were there before the call. */
static struct {
        void *p;
        size_t len;
        int registers, unregisters;
        bool unpopulated;
        CUresult refuse;
} reg;

static CUresult host_register(void *p, size_t len, unsigned flags) {
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        unsigned char vec[(2 * HALF) / 4096];

        reg.registers++;
        if (reg.refuse)
                return reg.refuse;
        CHECK(len == 2 * HALF && flags == 0 && len / page <= sizeof(vec) && mincore(p, len, vec) == 0);
        for (size_t i = 0; i < len / page; i++)
                reg.unpopulated |= !(vec[i] & 1);
        reg.p = p;
        reg.len = len;
        return CUDA_SUCCESS;
}

static CUresult host_unregister(void *p) {
        reg.unregisters++;
        return p == reg.p ? CUDA_SUCCESS : CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED;
}

/*
 * Pinned as the miss path's staging is: SAGE's own pages, made before the
 * driver is asked (cuMemAllocHost held the app's copies while it made
 * them), registered, the same keys; released: unregistered and unmapped.
 * Refused: cuMemAllocHost as before.
 */
static void registered(void) {
        ShareVmm v;
        SageShareAlloc *a = setup(&v);
        ShareReadback rb = { 0 };
        unsigned char vec[1];

        memset(&reg, 0, sizeof(reg));
        drv.host_register = host_register;
        drv.host_unregister = host_unregister;
        CHECK(share_readback_prepare(&rb, &drv, CTX));
        CHECK(rb.host == reg.p && rb.pinned && rb.registered && host_allocs == 0 && !reg.unpopulated);
        keys(&v, a, &rb);
        share_readback_release(&rb, &drv);
        CHECK(reg.unregisters == 1 && !rb.host && mincore(reg.p, 4096, vec) != 0); /* unmapped */
        reg.refuse = CUDA_ERROR_NOT_SUPPORTED;
        CHECK(share_readback_prepare(&rb, &drv, CTX));
        CHECK(rb.pinned && !rb.registered && host_allocs == 1);
        keys(&v, a, &rb);
        share_readback_release(&rb, &drv);
        CHECK(reg.unregisters == 1);
        teardown(&v, a);
}

int main(void) {
        long_range_in_pieces(false);
        long_range_in_pieces(true);
        meanwhile_steps();
        prepared_once(true);
        prepared_once(false);
        not_pinned();
        forked_child();
        registered();
        fake_reset();
        return 0;
}
