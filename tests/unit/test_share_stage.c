/*
 * Unit test of intercept/share_stage.c (the miss path's staged copy) over a
 * driver of the test's own whose async copies run only when their stream is
 * synchronized, as a DMA engine that lags: a staging buffer refilled before
 * its copy ran shows as wrong bytes on the "device".
 */
#include <assert.h>
#include <stdbool.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../intercept/share_stage.h"
#include "util.h"

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
        uintptr_t dev_end; /* nonzero: watch the upload ending there (test_dma_fed) */
        bool all_sent;     /* its last bytes were sent: what follows is the drain */
        int syncs;         /* stream waits before the drain */
        int idle_syncs;    /* of those, with no copy of another stream queued: the engine idle meanwhile */
        ShareStage *watch; /* nonzero: count the copies from each of its buffers (test_made_ahead) */
        int from_slot[SHARE_STAGE_SLOTS];
        int grow_at;     /* nonzero: at this many copies, the next buffer of `watch` is made (as the maker would) */
        bool any_thread; /* the maker's thread calls the driver too */
        unsigned dma_us; /* nonzero: each chunk's copy takes this long when it runs (a slow DMA engine) */
} drv;

static void check_thread(void) {
        if (!drv.any_thread && !pthread_equal(pthread_self(), drv.caller))
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
        bool others = false;

        check_thread();
        for (size_t i = 0; i < drv.nops; i++)
                others |= drv.ops[i].stream != (uintptr_t)s;
        if (drv.dev_end && !drv.all_sent) {
                drv.syncs++;
                drv.idle_syncs += !others;
        }
        for (size_t i = 0; i < drv.nops; i++) {
                if (drv.ops[i].stream == (uintptr_t)s) {
                        memcpy(drv.ops[i].dst, drv.ops[i].src, drv.ops[i].n);
                        if (drv.dma_us)
                                usleep((useconds_t)(drv.dma_us * ((drv.ops[i].n + CHUNK - 1) / CHUNK)));
                } else
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
        if (drv.dev_end && (uintptr_t)dst + n == drv.dev_end)
                drv.all_sent = true;
        drv.copies++;
        for (unsigned i = 0; drv.watch && i < SHARE_STAGE_SLOTS; i++) {
                const char *b = drv.watch->buf[i];
                drv.from_slot[i] += b && (const char *)src >= b && (const char *)src < b + drv.watch->slot_bytes;
        }
        if (drv.watch && drv.copies == drv.grow_at)
                assert(share_stage_make_slot(drv.watch, atomic_load(&drv.watch->made)) == 0);
        return CUDA_SUCCESS;
}

/* No host_register: buffers pinned by alloc_host (registered ones: test_share_stage_pin.c). */
static const ShareStageDriver driver = {
        alloc_host, free_host, stream_create, stream_destroy, stream_synchronize, copy_htod_async, NULL, NULL, NULL
};

static unsigned char *pattern(size_t n, unsigned seed) {
        unsigned char *p = malloc(n);
        assert(p);
        for (size_t i = 0; i < n; i++)
                p[i] = (unsigned char)(((uint32_t)i * 2654435761u) >> 24 ^ seed); /* no period of a few chunks */
        return p;
}

/* One upload of n bytes: 0 and the device bytes and key right, or the error. */
static int upload(ShareStage *st, CUcontext ctx, size_t n, unsigned threads, unsigned seed) {
        unsigned char *src = pattern(n, seed), *dev = calloc(1, n);
        ShareStageCost cost = { 0 };
        SageHash key = { 0, 0 };
        int r;

        assert(dev);
        r = share_stage_upload(st, ctx, (CUdeviceptr)(uintptr_t)dev, src, n, threads, &key, &cost);
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

/* Threads of this process now (/proc/self/status). */
static int threads_now(void) {
        FILE *f = fopen("/proc/self/status", "re");
        char line[256];
        int n = -1;

        assert(f);
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "Threads: %d", &n) == 1)
                        break;
        fclose(f);
        return n;
}

/* How many copying threads, alone and among others (a pure function of the CPUs and the load). */
static void test_threads_rule(void) {
        /*
         * Alone: every core but the caller's (the DMA wants ~15 copying, and the
         * caller must run to send what they copied: with 16 threads on 16 cores
         * it waited for a CPU until they were done, and the DMA started then).
         */
        assert(share_stage_threads(16, 1) == 15);
        assert(share_stage_threads(16, 3) == 13); /* two others: still the idle cores */
        assert(share_stage_threads(16, 5) == 11); /* a quarter of the CPUs busy: the idle ones */
        assert(share_stage_threads(16, 6) == 8);  /* more: half the CPUs at most, as the key threads */
        assert(share_stage_threads(16, 12) == 4); /* and no more than are idle */
        assert(share_stage_threads(16, 40) == 1); /* 16 processes at once: one each */
        assert(share_stage_threads(16, 0) == 8);  /* load unknown: polite */
        assert(share_stage_threads(64, 1) == 16); /* never more than 16 */
        assert(share_stage_threads(2, 1) == 1);
        assert(share_stage_threads(1, 1) == 1);
        assert(share_stage_threads(0, 0) == 1);
        /* A container's CPU quota: threads past it are stopped for the rest of the period. */
        assert(share_stage_cpus(16, 800000, 100000) == 8);
        assert(share_stage_cpus(16, 150000, 100000) == 2); /* a part of a CPU counts as one */
        assert(share_stage_cpus(4, 800000, 100000) == 4);  /* the mask is smaller */
        assert(share_stage_cpus(16, -1, 100000) == 16);    /* v1's "no quota" */
        assert(share_stage_cpus(16, 0, 0) == 16);
        assert(share_stage_threads_now() >= 1 && share_stage_threads_now() <= SHARE_STAGE_MAX_THREADS);
}

/* The pace: fewer threads where the host ran ahead of the DMA, more where it was behind (a pure function). */
static void test_pace_rule(void) {
        const size_t slot = 16u << 20, n = 8 * slot;
        /* The H100's llm tensor: 15 threads at 4 GB/s each (33.5 ms of copying), DMA 5.3 ms, 3.3 of them after. */
        ShareStageCost c = { .copy_ns = 33500000, .dma_ns = 5300000, .tail_ns = 3300000 };

        assert(share_stage_paced(4 * slot, slot) && share_stage_paced(16 * slot, slot));
        assert(!share_stage_paced(4 * slot - 1, slot) && !share_stage_paced(16 * slot + 1, slot));
        assert(share_stage_pace(0, 15, n, slot, &c) == 8); /* 6.3 threads match the DMA: 7, and one ahead */
        assert(share_stage_pace(0, 8, n, slot, &c) == 0);  /* no fewer than asked for: unchanged */
        assert(share_stage_pace(6, 6, n, slot, &c) == 6);
        assert(share_stage_pace(0, 15, 3 * slot, slot, &c) == 0);  /* fewer than 4 buffers: tells nothing */
        assert(share_stage_pace(5, 15, 17 * slot, slot, &c) == 5); /* past 16: the buffers paced it */
        c.copy_ns = 1000000;                                       /* copying 5 times as fast as the DMA: 2 at least */
        assert(share_stage_pace(0, 15, n, slot, &c) == 2);
        c = (ShareStageCost){ .copy_ns = 40000000, .dma_ns = 4000000, .tail_ns = 300000 }; /* host behind */
        assert(share_stage_pace(9, 9, n, slot, &c) == 12);                                 /* a quarter more, and one */
        assert(share_stage_pace(2, 2, n, slot, &c) == 3);
        assert(share_stage_pace(12, 12, n, slot, &c) == 0); /* at the most: unpaced */
        assert(share_stage_pace(0, 15, n, slot, &c) == 0);  /* not paced: stays so */
        c.tail_ns = 800000;                                 /* between a tenth and a quarter: kept */
        assert(share_stage_pace(9, 9, n, slot, &c) == 9);
        c.tail_ns = 1000001; /* just over a quarter: one thread's rate against the DMA's */
        assert(share_stage_pace(0, 15, n, slot, &c) == 11);
        c.dma_ns = 0; /* nothing sent */
        assert(share_stage_pace(4, 15, n, slot, &c) == 4);
}

/*
 * A DMA engine far slower than the copying threads: the upload learns a
 * pace, the next upload of 4-16 buffers asks for that many threads, a
 * larger one for all (the pace neither applied nor changed); release (made
 * again for another context) forgets it; with SAGE_SHARE_STAGE_THREADS
 * (fixed_threads) every upload asks for that many, never paced. Bytes and
 * keys right throughout.
 */
static void test_paced(CUcontext ctx) {
        ShareStage st;
        ShareStageCost cost = { 0 };
        unsigned char *src = pattern(40 * CHUNK, 60), *dev = calloc(1, 40 * CHUNK);
        SageHash key;
        int status;
        pid_t pid;

        assert(dev);
        drv.dma_us = 10000; /* 512 KiB in 10 ms: ~0.05 GB/s, far behind memcpy even under ASan and load */
        share_stage_init(&st, &driver, SHARE_STAGE_SLOTS * 2 * CHUNK);
        assert(share_stage_upload(&st, ctx, (CUdeviceptr)(uintptr_t)dev, src, 16 * CHUNK, 8, &key, &cost) == 0);
        /* Its 8 buffers' copies ran at the drain: 16 x 10 ms of DMA, all after the last chunk was in. */
        assert(cost.offered == 8 && cost.dma_ns >= 160000000 && cost.tail_ns >= 160000000);
        assert(cost.pace >= 2 && cost.pace < 8 && atomic_load(&st.pace) == cost.pace);
        atomic_store(&st.pace, 3);
        memset(dev, 0, 16 * CHUNK);
        assert(share_stage_upload(&st, ctx, (CUdeviceptr)(uintptr_t)dev, src, 16 * CHUNK, 8, &key, &cost) == 0);
        assert(cost.offered == 3 && cost.threads <= 3);
        assert(memcmp(src, dev, 16 * CHUNK) == 0 && sage_hash_equal(key, sage_content_key(src, 16 * CHUNK)));
        atomic_store(&st.pace, 3);
        assert(share_stage_upload(&st, ctx, (CUdeviceptr)(uintptr_t)dev, src, 40 * CHUNK, 8, &key, &cost) == 0);
        assert(cost.offered == 8 && cost.pace == 3 && atomic_load(&st.pace) == 3); /* 20 buffers: not paced */
        assert(memcmp(src, dev, 40 * CHUNK) == 0 && sage_hash_equal(key, sage_content_key(src, 40 * CHUNK)));
        assert(share_stage_upload(&st, ctx, (CUdeviceptr)(uintptr_t)dev, src, 2 * CHUNK, 8, &key, &cost) == 0);
        assert(cost.offered == 8 && atomic_load(&st.pace) == 3); /* 1 buffer: neither */
        /* A child of fork() learns its own, its staging made by its warm-up (no release on the way). */
        pid = fork();
        assert(pid >= 0);
        if (pid == 0) {
                bool ok;

                alarm(20);
                drv.caller = pthread_self();
                ok = share_stage_claim(&st, ctx);
                for (unsigned i = 0; ok && i < SHARE_STAGE_SLOTS; i++)
                        ok = share_stage_make_slot(&st, i) == 0;
                ok = ok && share_stage_made(&st) > 0 &&
                     share_stage_upload(&st, ctx, (CUdeviceptr)(uintptr_t)dev, src, 16 * CHUNK, 8, &key, &cost) == 0;
                _exit(ok && cost.offered == 8 ? 0 : 1);
        }
        assert(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
        share_stage_release(&st);
        assert(atomic_load(&st.pace) == 0);
        share_stage_init(&st, &driver, SHARE_STAGE_SLOTS * 2 * CHUNK);
        st.fixed_threads = 3;
        for (int i = 0; i < 2; i++) {
                assert(share_stage_upload(&st, ctx, (CUdeviceptr)(uintptr_t)dev, src, 16 * CHUNK, 8, &key, &cost) == 0);
                assert(cost.offered == 3 && cost.pace == 0 && atomic_load(&st.pace) == 0); /* never paced */
        }
        share_stage_release(&st);
        drv.dma_us = 0;
        free(src);
        free(dev);
}

/* Chunks go to the DMA as soon as enough of them in a row are in, without waiting for their whole buffer. */
static void test_send_end(void) {
        bool in[10] = { true, false, true, true, true, true, false, false, true, true };
        bool run[16] = { true, true, true, true, true, false, true };

        assert(share_stage_send_end(in, 0, 4, 10, 1) == 1); /* the rest of its buffer not in: sent alone */
        assert(share_stage_send_end(in, 1, 4, 10, 1) == 0); /* not in yet: wait */
        assert(share_stage_send_end(in, 2, 4, 10, 1) == 4); /* never past its buffer's end */
        assert(share_stage_send_end(in, 4, 4, 10, 1) == 6);
        assert(share_stage_send_end(in, 8, 4, 10, 1) == 10); /* the last, shorter buffer */
        assert(share_stage_send_end(in, 9, 1, 10, 1) == 10);
        assert(share_stage_send_end(run, 0, 16, 16, 4) == 5); /* 4 in a row: sent, the buffer not full */
        assert(share_stage_send_end(run, 2, 16, 16, 4) == 0); /* 3 in a row: too small a copy, wait */
        assert(share_stage_send_end(in, 2, 4, 10, 4) == 4);   /* the buffer's last chunks go anyway */
        assert(share_stage_send_end(in, 8, 4, 10, 4) == 10);  /* and the upload's */
}

/*
 * The copying threads are kept between uploads (not started per upload),
 * and a child of fork() makes its own: its uploads neither hang on the
 * parent's threads nor fail.
 */
static void test_pool(ShareStage *st, CUcontext ctx) {
        int before = threads_now(), status;
        pid_t pid;

        assert(upload(st, ctx, 12 * CHUNK, 3, 40) == 0);
        assert(threads_now() == before + 3); /* still there, waiting for the next upload */
        assert(upload(st, ctx, 12 * CHUNK, 3, 41) == 0);
        assert(upload(st, ctx, 12 * CHUNK, 2, 42) == 0); /* fewer: some of them */
        assert(threads_now() == before + 3);
        pid = fork();
        assert(pid >= 0);
        if (pid == 0) {
                alarm(20); /* a child that waits for its parent's threads hangs: killed, the test fails */
                drv.caller = pthread_self();
                _exit(upload(st, ctx, 12 * CHUNK, 3, 43) == 0 && threads_now() == 4 ? 0 : 1);
        }
        assert(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/*
 * The DMA engine is kept busy: the caller waits for a buffer's stream only
 * while another buffer's copy is queued behind it (the engine has work
 * meanwhile). The lagging engine runs a stream's copies only when
 * it is synchronized, so "queued" is exact.
 */
static void test_dma_fed(ShareStage *st, CUcontext ctx) {
        ShareStageCost cost = { 0 };
        unsigned char *src = pattern(40 * CHUNK, 50), *dev = calloc(1, 40 * CHUNK);
        SageHash key;

        assert(dev);
        drv.idle_syncs = drv.syncs = 0;
        drv.dev_end = (uintptr_t)dev + 40 * CHUNK;
        drv.all_sent = false;
        assert(share_stage_upload(st, ctx, (CUdeviceptr)(uintptr_t)dev, src, 40 * CHUNK, 1, &key, &cost) == 0);
        assert(memcmp(src, dev, 40 * CHUNK) == 0 && sage_hash_equal(key, sage_content_key(src, 40 * CHUNK)));
        assert(cost.rounds == 20 && cost.copies >= cost.rounds && cost.threads == 1);
        assert(cost.first_dma_ns > 0 && cost.first_dma_ns <= cost.wall_ns && cost.copy_ns > 0);
        assert(drv.syncs >= 20 - SHARE_STAGE_SLOTS); /* every reused buffer waited for */
        assert(drv.idle_syncs == 0);
        drv.dev_end = 0;
        free(src);
        free(dev);
}

/* What share_stage_end's meanwhile saw: the key, the copies sent and those still queued on the engine. */
static struct {
        int calls, copies, queued;
        SageHash key;
} seen;

static void meanwhile(void *arg, SageHash key) {
        (void)arg;
        seen.calls++;
        seen.key = key;
        seen.copies = drv.copies;
        seen.queued = (int)drv.nops;
}

/*
 * The two steps: after begin the copying threads fill the buffers while
 * the caller does other work (no driver call of staging's meanwhile); end
 * sends, calls meanwhile with the key once every copy is sent and before
 * the lagging engine ran the last ones (the broker asked while they land),
 * then returns with every byte on the device. Cancel leaves nothing.
 */
static void test_begin_end(CUcontext ctx) {
        ShareStage st;
        ShareStageJob *j;
        ShareStageCost cost;
        unsigned char *src = pattern(40 * CHUNK, 90), *dev = calloc(1, 40 * CHUNK);
        SageHash key;
        uint64_t deadline;

        assert(dev);
        share_stage_init(&st, &driver, SHARE_STAGE_SLOTS * 2 * CHUNK);
        assert(share_stage_begin(&st, ctx, src, 40 * CHUNK, 2, &j) == 0);
        drv.copies = 0;
        /* No event says a chunk is in: poll the first buffer, bounded (never filled before end: fails). */
        deadline = sage_now_ns() + 10000000000ull;
        while (memcmp(st.buf[0], src, 2 * CHUNK) != 0 || memcmp(st.buf[1], src + 2 * CHUNK, 2 * CHUNK) != 0) {
                assert(sage_now_ns() < deadline);
                sched_yield();
        }
        assert(drv.copies == 0 && drv.nops == 0); /* filled, nothing sent: the caller's own work goes on */
        memset(&seen, 0, sizeof(seen));
        assert(share_stage_end(j, (CUdeviceptr)(uintptr_t)dev, &key, &cost, meanwhile, NULL) == 0);
        assert(seen.calls == 1 && sage_hash_equal(seen.key, sage_content_key(src, 40 * CHUNK)));
        assert(seen.copies == drv.copies && seen.queued > 0); /* all sent, the last ones still landing */
        assert(drv.nops == 0 && memcmp(src, dev, 40 * CHUNK) == 0 && sage_hash_equal(key, seen.key));
        /* Cancelled: nothing sent, the buffers free for the next upload. */
        assert(share_stage_begin(&st, ctx, src, 40 * CHUNK, 2, &j) == 0);
        share_stage_cancel(j);
        assert(drv.nops == 0);
        assert(upload(&st, ctx, 40 * CHUNK, 2, 91) == 0);
        share_stage_release(&st);
        free(src);
        free(dev);
}

/* The maker of test_made_ahead's concurrent part: the buffers not made yet. */
static void *make_rest(void *arg) {
        ShareStage *st = arg;

        for (unsigned i = atomic_load(&st->made); i < SHARE_STAGE_SLOTS; i++)
                assert(share_stage_make_slot(st, i) == 0);
        return NULL;
}

/*
 * Buffers made ahead one by one (share_upload_prestage): an upload starts
 * once SHARE_STAGE_MIN_SLOTS are made instead of waiting for all (pinning
 * 128 MiB took ~50 ms, which the first miss of a C function waited for),
 * and takes each later one as it is made; a maker that made too few, or an
 * upload that failed meanwhile, leaves staging off.
 */
static void test_made_ahead(CUcontext ctx, CUcontext other) {
        ShareStage st;
        pthread_t maker;

        drv.allocs = drv.frees = drv.copies = 0;
        share_stage_init(&st, &driver, SHARE_STAGE_SLOTS * 2 * CHUNK); /* 2 chunks a buffer: 20 rounds of 40 */
        assert(share_stage_claim(&st, ctx) && st.making);
        assert(!share_stage_claim(&st, ctx)); /* one maker */
        assert(share_stage_make_slot(&st, 0) == 0);
        assert(upload(&st, ctx, CHUNK, 1, 70) == -ENODEV); /* one buffer: not yet (the caller copies) */
        assert(share_stage_make_slot(&st, 1) == 0);
        assert(upload(&st, other, CHUNK, 1, 71) == -ENODEV); /* being made for another context: not released */
        assert(drv.frees == 0 && atomic_load(&st.made) == 2);
        /* Two buffers: the upload goes; at its 6th copy a third is made, and it takes that one too. */
        drv.watch = &st;
        drv.grow_at = 6;
        memset(drv.from_slot, 0, sizeof(drv.from_slot));
        assert(upload(&st, ctx, 40 * CHUNK, 2, 72) == 0);
        assert(drv.from_slot[0] > 0 && drv.from_slot[1] > 0 && drv.from_slot[2] > 0);
        assert(drv.from_slot[0] + drv.from_slot[1] + drv.from_slot[2] == drv.copies && drv.allocs == 3);
        drv.grow_at = 0;
        /* The rest made by another thread while uploads run: every byte right whichever buffers they take. */
        drv.any_thread = true;
        assert(pthread_create(&maker, NULL, make_rest, &st) == 0);
        for (unsigned i = 0; i < 4; i++)
                assert(upload(&st, ctx, 40 * CHUNK + 77, 3, 73 + i) == 0);
        assert(pthread_join(maker, NULL) == 0);
        drv.any_thread = false;
        assert(share_stage_made(&st) == SHARE_STAGE_SLOTS * st.slot_bytes && !st.making);
        memset(drv.from_slot, 0, sizeof(drv.from_slot));
        assert(upload(&st, ctx, 40 * CHUNK, 2, 78) == 0);
        for (unsigned i = 0; i < SHARE_STAGE_SLOTS; i++) /* all of them now */
                assert(drv.from_slot[i] > 0);
        drv.watch = NULL;
        share_stage_release(&st);
        assert(drv.frees == drv.allocs && drv.streams_live == 0);
        /* A maker that made too few: released, staging off. */
        share_stage_init(&st, &driver, SHARE_STAGE_SLOTS * CHUNK);
        assert(share_stage_claim(&st, ctx) && share_stage_make_slot(&st, 0) == 0);
        assert(share_stage_made(&st) == 0 && st.broken && drv.frees == drv.allocs && drv.streams_live == 0);
        assert(upload(&st, ctx, CHUNK, 1, 79) == -ENODEV);
        /* An upload that fails while the maker is at work: off, released by the maker when it is done. */
        share_stage_init(&st, &driver, SHARE_STAGE_SLOTS * CHUNK);
        assert(share_stage_claim(&st, ctx));
        assert(share_stage_make_slot(&st, 0) == 0 && share_stage_make_slot(&st, 1) == 0);
        drv.fail_copy_at = 1;
        assert(upload(&st, ctx, 4 * CHUNK, 1, 80) == -EIO);
        assert(st.broken && drv.streams_live == 2); /* not released under the maker */
        assert(share_stage_make_slot(&st, 2) == 0);
        assert(share_stage_made(&st) == 0 && drv.frees == drv.allocs && drv.streams_live == 0);
}

int main(void) {
        CUcontext ctx1 = (CUcontext)(uintptr_t)0x1000, ctx2 = (CUcontext)(uintptr_t)0x2000;
        ShareStage st;

        drv.caller = pthread_self();
        test_threads_rule();
        test_send_end();
        share_stage_init(&st, &driver, SHARE_STAGE_SLOTS * CHUNK);
        test_pool(&st, ctx1); /* first: no copying thread started yet */
        share_stage_release(&st);
        drv.allocs = drv.frees = drv.copies = 0;
        /* One chunk per buffer: 11 rounds through 8 buffers, some reused. */
        for (unsigned threads = 1; threads <= 4; threads *= 2) {
                share_stage_init(&st, &driver, SHARE_STAGE_SLOTS * CHUNK);
                assert(st.slot_bytes == CHUNK);
                assert(upload(&st, ctx1, 10 * CHUNK + 123, threads, threads) == 0);
                assert(drv.copies == 11);
                drv.copies = 0;
                assert(upload(&st, ctx1, 1, threads, 7) == 0);          /* less than a chunk */
                assert(upload(&st, ctx1, 3 * CHUNK, threads, 9) == 0);  /* fewer rounds than buffers */
                assert(upload(&st, ctx1, 30 * CHUNK, threads, 8) == 0); /* each buffer reused, some twice */
                assert(drv.allocs == SHARE_STAGE_SLOTS);                /* made once per context */
                share_stage_release(&st);
                assert(drv.frees == SHARE_STAGE_SLOTS && drv.streams_live == 0);
                drv.allocs = drv.frees = drv.copies = 0;
        }
        /* Several chunks per buffer. */
        share_stage_init(&st, &driver, SHARE_STAGE_SLOTS * 3 * CHUNK + 5);
        assert(st.slot_bytes == 3 * CHUNK);
        assert(upload(&st, ctx1, 30 * CHUNK + 4096, 3, 1) == 0);
        /* Another context: its own buffers (the old context may be gone). */
        assert(upload(&st, ctx2, 2 * CHUNK, 3, 2) == 0);
        assert(drv.allocs == 2 * SHARE_STAGE_SLOTS && drv.frees == SHARE_STAGE_SLOTS);
        /* A copy that fails: an error, nothing in flight, and staging still works after. */
        drv.fail_copy_at = 3;
        assert(upload(&st, ctx2, 30 * CHUNK, 3, 3) == -EIO);
        assert(drv.streams_live == 0); /* given up: made again at the next upload */
        assert(upload(&st, ctx2, 30 * CHUNK, 3, 4) == 0);
        drv.fail_copy_at = 1;
        assert(upload(&st, ctx2, CHUNK, 3, 5) == -EIO);
        share_stage_release(&st);
        share_stage_init(&st, &driver, SHARE_STAGE_SLOTS * 2 * CHUNK);
        test_dma_fed(&st, ctx1);
        share_stage_release(&st);
        /* Buffers that cannot be pinned: off for good, nothing leaked. */
        drv.allocs = drv.frees = 0;
        share_stage_init(&st, &driver, SHARE_STAGE_SLOTS * CHUNK);
        drv.fail_alloc_at = 2;
        assert(upload(&st, ctx1, CHUNK, 2, 6) == -ENODEV);
        assert(drv.allocs == drv.frees && drv.streams_live == 0);
        assert(upload(&st, ctx1, CHUNK, 2, 6) == -ENODEV && drv.allocs == 1);
        test_made_ahead(ctx1, ctx2);
        test_begin_end(ctx1);
        test_pace_rule();
        test_paced(ctx1);
        /* Staging off (less than a chunk per buffer). */
        share_stage_init(&st, &driver, SHARE_STAGE_SLOTS * CHUNK - 1);
        assert(upload(&st, ctx1, CHUNK, 2, 6) == -ENODEV);
        assert(drv.wrong_thread == 0);
        puts("share_stage: ok");
        return 0;
}
