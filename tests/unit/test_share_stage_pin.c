/*
 * Unit test of intercept/share_stage_pin.c: staging buffers pinned by
 * SAGE's own mapping, populated before the driver sees it, then registered
 * one buffer per call (cuMemAllocHost held other threads' copies while it
 * made the pages); the fallback to cuMemAllocHost where the driver refuses;
 * unregistered and unmapped on release; a fork()ed child neither inherits
 * nor releases its parent's. The driver here records what it is asked and
 * refuses what the real one refuses (double registration, unregistering
 * what it does not know); its copies are synchronous. Pinning and making
 * streams run in the relaxed capture mode (an app thread may be capturing:
 * scripts/probes/capture), and the thread's mode is put back after.
 */
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../intercept/share_stage.h"

#define CHUNK ((size_t)SAGE_CONTENT_KEY_CHUNK)
#define MAX_REGS 64

static struct {
        struct {
                void *p;
                size_t n;
        } regs[MAX_REGS];
        int nregs; /* registered now */
        int registers, unregisters, allocs, frees;
        int unpopulated;          /* registrations of memory whose pages were not all made yet */
        int bad_flags;            /* registrations with flags other than 0 */
        size_t largest;           /* the largest range registered in one call: what holds others' copies */
        CUresult refuse_register; /* nonzero: every registration answers this */
        CUresult refuse_unregister;
        bool fail_alloc;
        int unrelaxed;    /* pinning, unpinning, stream calls made outside the relaxed capture mode */
        void *refused;    /* the range a refused registration was asked for */
        int refused_kept; /* fallbacks that found that range still mapped (checked there: malloc may reuse it) */
} drv;

static bool mapped(const void *p, size_t n) {
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        unsigned char *vec = malloc((n + page - 1) / page);
        int r;

        assert(vec);
        r = mincore((void *)p, n, vec); /* ENOMEM where any page of the range is not mapped */
        free(vec);
        return r == 0;
}

/* Every page of [p, p+n) resident: the kernel made it before the driver was asked. */
static bool resident(void *p, size_t n) {
        size_t page = (size_t)sysconf(_SC_PAGESIZE), pages = (n + page - 1) / page;
        unsigned char *vec = malloc(pages);
        bool all = vec && mincore(p, n, vec) == 0;

        for (size_t i = 0; all && i < pages; i++)
                all = vec[i] & 1;
        free(vec);
        return all;
}

/* The calling thread's capture mode (the driver's default: global). */
static _Thread_local CUstreamCaptureMode capture_mode = CU_STREAM_CAPTURE_MODE_GLOBAL;

static CUresult exchange_capture_mode(CUstreamCaptureMode *mode) {
        CUstreamCaptureMode old = capture_mode;

        capture_mode = *mode;
        *mode = old;
        return CUDA_SUCCESS;
}

/* A call the driver would refuse while another thread captures, unless this one is relaxed. */
static void unsafe_call(void) {
        drv.unrelaxed += capture_mode != CU_STREAM_CAPTURE_MODE_RELAXED;
}

/* cuMemAllocHost's stand-in (the fallback): counted, failing on request. */
static CUresult alloc_host(void **p, size_t n) {
        unsafe_call();
        if (drv.refused) /* the fallback right after the refusal: later mallocs may map those addresses again */
                drv.refused_kept += mapped(drv.refused, n);
        drv.refused = NULL;
        *p = drv.fail_alloc ? NULL : malloc(n);
        drv.allocs += *p != NULL;
        return *p ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

static CUresult free_host(void *p) {
        unsafe_call();
        free(p);
        return drv.frees++, CUDA_SUCCESS;
}

static CUresult host_register(void *p, size_t n, unsigned flags) {
        unsafe_call();
        drv.registers++;
        if (drv.refuse_register) {
                drv.refused = p;
                return drv.refuse_register;
        }
        if (!p || !n)
                return CUDA_ERROR_INVALID_VALUE;
        drv.bad_flags += flags != 0;
        drv.unpopulated += !resident(p, n);
        drv.largest = n > drv.largest ? n : drv.largest;
        for (int i = 0; i < drv.nregs; i++)
                if ((char *)p < (char *)drv.regs[i].p + drv.regs[i].n && (char *)drv.regs[i].p < (char *)p + n)
                        return CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED;
        assert(drv.nregs < MAX_REGS);
        drv.regs[drv.nregs].p = p;
        drv.regs[drv.nregs++].n = n;
        return CUDA_SUCCESS;
}

static CUresult host_unregister(void *p) {
        unsafe_call();
        drv.unregisters++;
        for (int i = 0; i < drv.nregs; i++)
                if (drv.regs[i].p == p) {
                        assert(mapped(p, drv.regs[i].n)); /* unregistered before it is unmapped */
                        if (drv.refuse_unregister)
                                return drv.refuse_unregister;
                        drv.regs[i] = drv.regs[--drv.nregs];
                        return CUDA_SUCCESS;
                }
        return CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED;
}

static CUresult stream_create(CUstream *s, unsigned flags) {
        static uintptr_t next = 1;
        (void)flags;
        unsafe_call();
        *s = (CUstream)next++;
        return CUDA_SUCCESS;
}

static CUresult stream_destroy(CUstream s) {
        (void)s;
        unsafe_call();
        return CUDA_SUCCESS;
}

static CUresult stream_synchronize(CUstream s) {
        (void)s;
        return CUDA_SUCCESS;
}

/* A staging buffer is only ever what the copy reads: it must be registered memory or alloc_host's. */
static CUresult copy_htod_async(CUdeviceptr dst, const void *src, size_t n, CUstream s) {
        (void)s;
        memcpy((void *)(uintptr_t)dst, src, n);
        return CUDA_SUCCESS;
}

static const ShareStageDriver driver = { alloc_host,     free_host,          stream_create,
                                         stream_destroy, stream_synchronize, copy_htod_async,
                                         host_register,  host_unregister,    exchange_capture_mode };

/* An upload of n bytes through `st`: 0 and the device bytes right, or the error. */
static int upload(ShareStage *st, CUcontext ctx, size_t n) {
        unsigned char *src = malloc(n), *dev = calloc(1, n);
        SageHash key;
        int r;

        assert(src && dev);
        for (size_t i = 0; i < n; i++)
                src[i] = (unsigned char)(i * 131 >> 7);
        r = share_stage_upload(st, ctx, (CUdeviceptr)(uintptr_t)dev, src, n, 2, &key, NULL);
        if (r == 0)
                assert(memcmp(src, dev, n) == 0 && sage_hash_equal(key, sage_content_key(src, n)));
        free(src);
        free(dev);
        return r;
}

static void reset(void) {
        memset(&drv, 0, sizeof(drv));
}

/*
 * Registered, not allocated by the driver: each buffer its own call (the
 * driver holds others' copies for one buffer at most), its pages made
 * before the call; released: unregistered, then unmapped.
 */
static void test_registered(CUcontext ctx) {
        ShareStage st;
        void *bufs[SHARE_STAGE_SLOTS];

        reset();
        share_stage_init(&st, &driver, SHARE_STAGE_SLOTS * 4 * CHUNK); /* 2 MiB a buffer */
        assert(upload(&st, ctx, 40 * CHUNK + 5) == 0);
        assert(drv.allocs == 0 && drv.registers == SHARE_STAGE_SLOTS && drv.nregs == SHARE_STAGE_SLOTS);
        assert(drv.unpopulated == 0 && drv.bad_flags == 0 && drv.largest == st.slot_bytes);
        for (unsigned i = 0; i < SHARE_STAGE_SLOTS; i++) {
                assert(st.registered[i] && ((uintptr_t)st.buf[i] & ((2u << 20) - 1)) == 0); /* huge-page aligned */
                bufs[i] = st.buf[i];
        }
        assert(upload(&st, ctx, 3 * CHUNK) == 0 && drv.registers == SHARE_STAGE_SLOTS); /* kept */
        share_stage_release(&st);
        assert(drv.nregs == 0 && drv.unregisters == SHARE_STAGE_SLOTS);
        for (unsigned i = 0; i < SHARE_STAGE_SLOTS; i++)
                assert(!mapped(bufs[i], st.slot_bytes));
        /* Every pin, unpin and stream call relaxed; the app thread's own mode as it was. */
        assert(drv.unrelaxed == 0 && capture_mode == CU_STREAM_CAPTURE_MODE_GLOBAL);
}

/*
 * The driver refuses to register (not supported, not permitted): the
 * mapping goes, cuMemAllocHost pins this buffer and the later ones without
 * asking again; neither works: staging off, nothing held.
 */
static void test_refused(CUcontext ctx) {
        ShareStage st;

        reset();
        drv.refuse_register = CUDA_ERROR_NOT_SUPPORTED;
        share_stage_init(&st, &driver, SHARE_STAGE_SLOTS * 4 * CHUNK);
        assert(upload(&st, ctx, 20 * CHUNK) == 0);
        assert(drv.registers == 1 && drv.allocs == SHARE_STAGE_SLOTS && drv.refused_kept == 0);
        share_stage_release(&st);
        assert(drv.frees == SHARE_STAGE_SLOTS && drv.unregisters == 0);

        reset();
        drv.refuse_register = CUDA_ERROR_OUT_OF_MEMORY;
        drv.fail_alloc = true;
        share_stage_init(&st, &driver, SHARE_STAGE_SLOTS * 4 * CHUNK);
        assert(upload(&st, ctx, 20 * CHUNK) == -ENODEV && st.broken);
        assert(upload(&st, ctx, 20 * CHUNK) == -ENODEV && drv.registers == 1); /* not tried again */
        assert(drv.nregs == 0 && drv.refused_kept == 0);
}

/*
 * Unregistering refused while the driver still knows the range: the
 * mapping is kept (reused addresses would pass for pinned memory); the
 * driver not knowing it (its context destroyed): unmapped.
 */
static void test_unregister_refused(CUcontext ctx) {
        ShareStage st;
        void *kept, *gone;

        reset();
        share_stage_init(&st, &driver, SHARE_STAGE_SLOTS * 4 * CHUNK);
        assert(upload(&st, ctx, 4 * CHUNK) == 0);
        kept = st.buf[0];
        drv.refuse_unregister = CUDA_ERROR_INVALID_CONTEXT;
        share_stage_unpin(&st, 0);
        assert(st.buf[0] == NULL && mapped(kept, st.slot_bytes));
        drv.refuse_unregister = 0;
        gone = st.buf[1];
        drv.nregs = 0; /* the driver forgot every registration (a destroyed context) */
        share_stage_unpin(&st, 1);
        assert(!mapped(gone, st.slot_bytes));
        for (unsigned i = 2; i < SHARE_STAGE_SLOTS; i++)
                share_stage_unpin(&st, i);
}

/*
 * A fork()ed child (it cannot use its parent's CUDA) does not get the
 * parent's pinned buffers (MADV_DONTFORK: no copy of 16 MiB each at every
 * fork), forgets them without releasing them, and makes its own if it ever
 * stages (here it can: this driver works in a child). Killed by a signal
 * if it touched the parent's: the test fails.
 */
static void test_fork(CUcontext ctx) {
        ShareStage st;
        void *parent;
        int status;
        pid_t pid;

        reset();
        share_stage_init(&st, &driver, SHARE_STAGE_SLOTS * 4 * CHUNK);
        assert(upload(&st, ctx, 4 * CHUNK) == 0);
        parent = st.buf[0];
        pid = fork();
        assert(pid >= 0);
        if (pid == 0) {
                alarm(20);
                if (mapped(parent, st.slot_bytes))
                        _exit(2);
                drv.unregisters = drv.nregs = 0; /* the child's driver is not its parent's */
                if (upload(&st, ctx, 20 * CHUNK) != 0 || drv.unregisters != 0)
                        _exit(3);
                for (unsigned i = 0; i < SHARE_STAGE_SLOTS; i++)
                        if (!st.buf[i] || !st.registered[i]) /* its own (maybe where the parent's were) */
                                _exit(4);
                share_stage_release(&st);
                _exit(drv.unregisters == SHARE_STAGE_SLOTS ? 0 : 5);
        }
        assert(waitpid(pid, &status, 0) == pid);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                fprintf(stderr, "child: %s %d\n", WIFEXITED(status) ? "exit" : "signal",
                        WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
        assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        assert(st.buf[0] == parent && mapped(parent, st.slot_bytes)); /* the parent's untouched */
        share_stage_release(&st);
        assert(drv.nregs == 0);
}

static void *populater(void *arg) {
        (void)arg;
        share_stage_populate_ahead();
        return NULL;
}

/*
 * Pages made ahead (while the warm-up thread is in cuInit): the staging
 * registers them instead of making its own, waiting for each while the
 * populater is at work; claimed once per process; what nobody takes is
 * unmapped when dropped.
 */
static void test_ahead(CUcontext ctx) {
        /* 4 MiB a buffer: the populater's first takes a millisecond or more, the upload asks at once (it waits). */
        size_t bytes = SHARE_STAGE_SLOTS * 8 * CHUNK;
        ShareStage st;
        pthread_t tid;
        int status;
        pid_t pid;

        reset();
        assert(share_stage_populate_claim(share_stage_slot_bytes(bytes)) &&
               !share_stage_populate_claim(share_stage_slot_bytes(bytes)));
        share_stage_init(&st, &driver, bytes);
        assert(pthread_create(&tid, NULL, populater, NULL) == 0);
        assert(share_stage_prepare(&st, ctx) == 0); /* at once: the populater is still at its first */
        assert(upload(&st, ctx, 20 * CHUNK) == 0 && drv.registers == SHARE_STAGE_SLOTS && drv.unpopulated == 0);
        assert(pthread_join(tid, NULL) == 0);
        assert(share_stage_ahead_drop() == 0); /* every buffer took one: none made twice */
        assert(!share_stage_populate_claim(share_stage_slot_bytes(bytes)));
        share_stage_release(&st);
        assert(drv.nregs == 0);

        /* Nobody takes them (sharing turned out off): unmapped at the drop. A child: a process of its own. */
        pid = fork();
        assert(pid >= 0);
        if (pid == 0) {
                alarm(20);
                if (!share_stage_populate_claim(share_stage_slot_bytes(bytes)))
                        _exit(1);
                share_stage_populate_ahead();
                _exit(share_stage_ahead_drop() == SHARE_STAGE_SLOTS && share_stage_ahead_drop() == 0 ? 0 : 2);
        }
        assert(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int main(void) {
        CUcontext ctx = (CUcontext)(uintptr_t)0x1000;

        test_registered(ctx);
        test_refused(ctx);
        test_unregister_refused(ctx);
        test_fork(ctx);
        test_ahead(ctx);
        puts("share_stage_pin: ok");
        return 0;
}
