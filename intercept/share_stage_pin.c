/*
 * How a staging buffer (share_stage.h) is page-locked. cuMemAllocHost
 * makes and pins the pages inside the driver, and the driver holds other
 * threads' copies meanwhile: on an H100 host 8 x 16 MiB took 38.5-45 ms,
 * and another thread's cuMemcpyHtoDAsync waited for all of it (longest
 * enqueue 38.6 ms; scripts/probes/pin). So the warm-up thread's staging
 * stalled the app's first copies, native ones included, and the first
 * miss's own sends behind the buffers still being made. Here the kernel
 * makes the pages first, on the calling thread with no driver lock held
 * (an anonymous mapping aligned to 2 MiB, MADV_HUGEPAGE where THP allows
 * it, MADV_POPULATE_WRITE or a touch per page: 17.9 ms for 128 MiB), and
 * the driver only registers what is there (cuMemHostRegister, 3.3 ms for
 * the 8 buffers), one buffer per call: another thread's copy waits for at
 * most one buffer's registration.
 *
 * MADV_DONTFORK: a fork() copies a pinned anonymous page for the child at
 * once (the parent's DMA must keep its page), so every fork of a pre-forking
 * server would copy 128 MiB; the child, which cannot use its parent's CUDA,
 * gets no such mapping instead, and forgets the buffers (forget_inherited).
 *
 * Any failure (no mapping, no memory, the driver refuses to register)
 * falls back to cuMemAllocHost, and after a refusal the later buffers go
 * there directly (each attempt costs the populate). A buffer the driver
 * will not unregister again is never unmapped: the driver would still
 * take those addresses for pinned memory when they are reused, and
 * "accelerate" a copy from whatever the app put there.
 */
#include "share_stage.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14; older kernels say EINVAL, and the pages are touched instead */
#endif

#define HUGE_PAGE ((size_t)2 << 20)

/* The mapping behind a buffer of `bytes`: whole huge pages. */
static size_t map_len(size_t bytes) {
        return (bytes + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
}

/* `len` bytes of anonymous memory at a 2 MiB boundary (THP maps only aligned huge pages); NULL: none. */
static void *map_aligned(size_t len) {
        size_t over = len + HUGE_PAGE, head;
        unsigned char *p = mmap(NULL, over, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

        if (p == MAP_FAILED)
                return NULL;
        head = (HUGE_PAGE - ((uintptr_t)p & (HUGE_PAGE - 1))) & (HUGE_PAGE - 1);
        if (head)
                munmap(p, head);
        munmap(p + head + len, over - head - len);
        return p + head;
}

/* The kernel's part: every page made now, outside the driver (ENOMEM: none left, the mapping goes). */
static bool populate(void *p, size_t len) {
        size_t page = (size_t)sysconf(_SC_PAGESIZE);

        (void)madvise(p, len, MADV_HUGEPAGE); /* only advice: THP off, or "never", leaves 4 KiB pages */
        (void)madvise(p, len, MADV_DONTFORK); /* only a cost saved: without it a fork copies the pages */
        if (madvise(p, len, MADV_POPULATE_WRITE) == 0)
                return true;
        if (errno != EINVAL) /* ENOMEM, EFAULT: the pages cannot be had; EINVAL: an older kernel */
                return false;
        for (size_t off = 0; off < len; off += page)
                ((volatile unsigned char *)p)[off] = 0;
        return true;
}

/*
 * Pages made ahead (share_stage_populate_ahead): the kernel's part of
 * pinning needs no driver, so a thread of sharing's makes the staging's
 * pages while the warm-up thread is still in cuInit (~100-230 ms). Once
 * the context is there, making the staging is registering only (3.3 ms
 * for 128 MiB on the H100 instead of 21), and a C function's first miss,
 * which follows its context within milliseconds, neither waits for pages
 * nor has the maker populating beside its copying threads. Made once per
 * process; what staging does not take is dropped (share_stage_ahead_drop).
 * A fork()ed child has none of them (MADV_DONTFORK) nor the thread, and
 * its lock may have been held when it was forked: made anew there (an
 * atfork handler: the child has one thread then; a check of the pid at
 * each use would race the warm-up thread's first one).
 */
static struct {
        pthread_mutex_t lock;
        pthread_cond_t more; /* a mapping was made, or the populater stopped */
        bool running;        /* the populater is at work: a taker waits for its next mapping */
        bool dropped;        /* no more: what was made and not taken is unmapped */
        size_t len;          /* of each mapping */
        unsigned made, taken;
        void *map[SHARE_STAGE_SLOTS];
} ahead = { .lock = PTHREAD_MUTEX_INITIALIZER, .more = PTHREAD_COND_INITIALIZER };

static pthread_once_t ahead_once = PTHREAD_ONCE_INIT;

static void ahead_forked(void) {
        pthread_mutex_init(&ahead.lock, NULL);
        pthread_cond_init(&ahead.more, NULL);
        ahead.running = ahead.dropped = false;
        ahead.len = 0;
        ahead.made = ahead.taken = 0;
}

static void ahead_register(void) {
        pthread_atfork(NULL, NULL, ahead_forked);
}

static void ahead_claim(void) {
        pthread_once(&ahead_once, ahead_register);
}

bool share_stage_populate_claim(size_t slot_bytes) {
        bool go;

        ahead_claim();
        pthread_mutex_lock(&ahead.lock);
        go = slot_bytes && !ahead.running && !ahead.dropped && !ahead.made;
        if (go) {
                ahead.running = true;
                ahead.len = map_len(slot_bytes);
        }
        pthread_mutex_unlock(&ahead.lock);
        return go;
}

void share_stage_populate_ahead(void) {
        uint64_t t0 = sage_now_ns();
        bool stop = false;
        void *p;

        for (unsigned i = 0; i < SHARE_STAGE_SLOTS && !stop; i++) {
                if ((p = map_aligned(ahead.len)) && !populate(p, ahead.len)) {
                        munmap(p, ahead.len);
                        p = NULL;
                }
                pthread_mutex_lock(&ahead.lock);
                stop = !p || ahead.dropped;
                if (p && ahead.dropped)
                        munmap(p, ahead.len);
                else if (p)
                        ahead.map[ahead.made++] = p;
                pthread_cond_broadcast(&ahead.more);
                pthread_mutex_unlock(&ahead.lock);
        }
        pthread_mutex_lock(&ahead.lock);
        ahead.running = false;
        pthread_cond_broadcast(&ahead.more);
        pthread_mutex_unlock(&ahead.lock);
        sage_info("share: the staging's pages made ahead (%u x %zu MiB in %.1f ms)", ahead.made, ahead.len >> 20,
                  (double)(sage_now_ns() - t0) / 1e6);
}

/* A mapping of `len` bytes made ahead, waiting for the populater while it is at work; NULL: none. */
static void *take_ahead(size_t len) {
        void *p = NULL;

        ahead_claim();
        pthread_mutex_lock(&ahead.lock);
        while (ahead.len == len && ahead.running && !ahead.dropped && ahead.taken == ahead.made)
                pthread_cond_wait(&ahead.more, &ahead.lock);
        if (ahead.len == len && !ahead.dropped && ahead.taken < ahead.made)
                p = ahead.map[ahead.taken++];
        pthread_mutex_unlock(&ahead.lock);
        return p;
}

unsigned share_stage_ahead_drop(void) {
        unsigned dropped = 0, used;
        bool first;

        ahead_claim();
        pthread_mutex_lock(&ahead.lock);
        first = ahead.len && !ahead.dropped; /* made ahead, and now let go: said once */
        ahead.dropped = true;
        used = ahead.taken;
        for (; ahead.taken < ahead.made; dropped++)
                munmap(ahead.map[ahead.taken++], ahead.len);
        pthread_mutex_unlock(&ahead.lock);
        if (first)
                sage_info("share: the staging's pages made ahead: %u buffers used, %u unmapped", used, dropped);
        return dropped;
}

void *share_pin_registered(size_t n, CUresult (*host_register)(void *, size_t, unsigned int), CUresult *r) {
        size_t len = map_len(n);
        void *p;

        *r = CUDA_ERROR_OUT_OF_MEMORY;
        if ((p = take_ahead(len)))
                ;
        else if (!(p = map_aligned(len)))
                return NULL;
        else if (!populate(p, len)) {
                munmap(p, len);
                return NULL;
        }
        if ((*r = host_register(p, n, 0)) != CUDA_SUCCESS) {
                munmap(p, len);
                return NULL;
        }
        return p;
}

void share_unpin_registered(void *p, size_t n, CUresult (*host_unregister)(void *)) {
        CUresult r = host_unregister(p);

        /* NOT_REGISTERED: the driver holds no record of it (its context was destroyed): safe to unmap. */
        if (r == CUDA_SUCCESS || r == CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED)
                munmap(p, map_len(n));
        else
                sage_info("share: pinned staging not unregistered (%d): its %zu MiB kept mapped", (int)r, n >> 20);
}

/* Registered where the driver takes it: true. A refusal (not out of memory) stops trying for this staging. */
static bool pin_registered(ShareStage *st, unsigned i) {
        CUresult r = CUDA_SUCCESS;

        if (st->no_register || !st->drv.host_register || !st->drv.host_unregister)
                return false;
        if (!(st->buf[i] = share_pin_registered(st->slot_bytes, st->drv.host_register, &r))) {
                if (r != CUDA_ERROR_OUT_OF_MEMORY) {
                        sage_info("share: the driver refused to register staging (%d); cuMemAllocHost pins it", (int)r);
                        st->no_register = true;
                }
                return false;
        }
        st->registered[i] = true;
        return true;
}

int share_stage_pin(ShareStage *st, unsigned i) {
        if (pin_registered(st, i))
                return 0;
        st->registered[i] = false;
        if (st->drv.alloc_host(&st->buf[i], st->slot_bytes) != CUDA_SUCCESS) {
                st->buf[i] = NULL;
                return -ENODEV;
        }
        return 0;
}

void share_stage_unpin(ShareStage *st, unsigned i) {
        if (!st->buf[i])
                return;
        if (st->registered[i])
                share_unpin_registered(st->buf[i], st->slot_bytes, st->drv.host_unregister);
        else
                st->drv.free_host(st->buf[i]);
        st->buf[i] = NULL;
        st->registered[i] = false;
}

void share_stage_forget_inherited(ShareStage *st) {
        if (st->owner == getpid())
                return;
        for (unsigned i = 0; i < SHARE_STAGE_SLOTS; i++) {
                st->buf[i] = NULL;
                st->registered[i] = false;
                st->stream[i] = NULL;
        }
        atomic_store(&st->made, 0);
        atomic_store(&st->pace, 0); /* learnt by the parent, maybe on another GPU */
        st->ctx = NULL;
        st->making = false;
        st->owner = getpid();
}
