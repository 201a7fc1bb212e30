/*
 * The miss path's staging (share_stage.c) as sharing's state holds it: set
 * up at its first use, or made ahead by the warm-up thread so the first miss
 * does not page-lock its buffers inside the app's upload.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "driver.h"
#include "impl.h"
#include "log.h"
#include "options.h"
#include "share.h"
#include "share_state.h"
#include "spawn.h"
#include "stats.h"
#include "util.h"

static pthread_cond_t stage_made = PTHREAD_COND_INITIALIZER; /* the first buffers made ahead, or all */

/* The staging pipeline, set up at its first use (SAGE_SHARE_STAGING; 0: off). Under the lock. */
ShareStage *share_stage_of(SageShare *s) {
        ShareStageDriver d = { SAGE_REAL(cuMemAllocHost_v2),
                               SAGE_REAL(cuMemFreeHost),
                               SAGE_REAL(cuStreamCreate),
                               SAGE_REAL(cuStreamDestroy_v2),
                               SAGE_REAL(cuStreamSynchronize),
                               SAGE_REAL(cuMemcpyHtoDAsync_v2),
                               SAGE_REAL(cuMemHostRegister_v2),
                               SAGE_REAL(cuMemHostUnregister),
                               sage_driver_extras.exchange_capture_mode };
        bool all = d.alloc_host && d.free_host && d.stream_create && d.stream_destroy && d.stream_synchronize &&
                   d.copy_htod_async;
        uint64_t t;

        if (!s->stage_set) {
                share_stage_init(&s->stage, &d, all ? sage_options()->share_staging : 0);
                s->stage.fixed_threads = sage_options()->share_stage_threads;
                s->stage.streamed = strcmp(sage_options()->share_stage_stores, "streamed") == 0;
        }
        s->stage_set = true;
        /*
         * The warm-up thread is making it: wait for its first buffers rather
         * than make a second staging; the upload takes the rest as they come.
         */
        if (s->stage.making && atomic_load(&s->stage.made) < SHARE_STAGE_MIN_SLOTS) {
                t = sage_now_ns();
                while (s->stage.making && atomic_load(&s->stage.made) < SHARE_STAGE_MIN_SLOTS)
                        pthread_cond_wait(&stage_made, &s->lock);
                sage_stats_add(SAGE_STAT_SHARE_NS_STAGE_READY, sage_now_ns() - t);
        }
        return &s->stage;
}

/*
 * The staging made ahead by the warm-up thread (sage_share_prestage, `ctx`
 * current): page-locking SAGE_SHARE_STAGING bytes took ~50 ms on an H100
 * host, which the first miss paid inside the app's upload. Made outside the
 * lock, so hits meanwhile go on, and buffer by buffer: a miss meanwhile
 * waits only for the first SHARE_STAGE_MIN_SLOTS (share_stage_of) and takes
 * the others as they are made. Returns the pinned bytes the staging holds
 * (0: not made here).
 */
size_t share_upload_prestage(SageShare *s, CUcontext ctx) {
        ShareStage *st;
        size_t held;
        bool go;

        pthread_mutex_lock(&s->lock);
        st = share_stage_of(s);
        go = share_stage_claim(st, ctx);
        pthread_mutex_unlock(&s->lock);
        if (!go) {
                share_stage_ahead_drop(); /* made already (a miss came first), or never: not needed */
                return 0;
        }
        for (unsigned i = 0; i < SHARE_STAGE_SLOTS && share_stage_make_slot(st, i) == 0; i++)
                if (i + 1 == SHARE_STAGE_MIN_SLOTS) { /* a miss waiting for them may go */
                        pthread_mutex_lock(&s->lock);
                        pthread_cond_broadcast(&stage_made);
                        pthread_mutex_unlock(&s->lock);
                }
        pthread_mutex_lock(&s->lock);
        held = share_stage_made(st);
        pthread_cond_broadcast(&stage_made);
        pthread_mutex_unlock(&s->lock);
        share_stage_ahead_drop(); /* the staging is made: what it did not take goes */
        return held;
}

static void *populate_main(void *arg) {
        (void)arg;
        share_stage_populate_ahead();
        return NULL;
}

/* A thread of its own, taking none of the app's signals; it leaves once the pages are made. */
void sage_share_populate_ahead(void) {
        const SageOptions *o = sage_options();

        if (!o->share || !share_stage_populate_claim(share_stage_slot_bytes(o->share_staging)))
                return;
        if (sage_spawn_thread(populate_main, NULL, "sage-pages") != 0)
                share_stage_ahead_drop(); /* nobody makes them: nobody may wait for them */
}

bool share_upload_stage_possible(SageShare *s, size_t len) {
        return len >= SHARE_UPLOAD_STAGE_MIN && share_stage_of(s)->slot_bytes && !s->stage.broken;
}

ShareStageJob *share_upload_stage_begin(SageShare *s, SageShareAlloc *a, size_t len, const void *src) {
        ShareStageJob *j = NULL;
        CUcontext popped;
        int r;

        if (!share_upload_stage_possible(s, len))
                return NULL;
        if (s->drv.ctx_push(a->ctx) != CUDA_SUCCESS)
                r = -EIO;
        else {
                r = share_stage_begin(&s->stage, a->ctx, src, len, share_stage_threads_now(), &j);
                s->drv.ctx_pop(&popped);
        }
        if (r < 0 && r != -ENODEV)
                sage_stats_count(SAGE_STAT_SHARE_FALLBACKS);
        return r < 0 ? NULL : j;
}

bool share_upload_stage_end(SageShare *s, ShareStageJob *j, SageShareAlloc *a, size_t lo, size_t hi, SageHash *key,
                            void (*meanwhile)(void *, SageHash), void *arg) {
        ShareStageCost cost = { 0 };
        CUcontext popped;
        int r;

        if (s->drv.ctx_push(a->ctx) != CUDA_SUCCESS) {
                share_stage_cancel(j);
                r = -EIO;
        } else {
                r = share_stage_end(j, a->va + lo, key, &cost, meanwhile, arg);
                s->drv.ctx_pop(&popped);
        }
        if (r < 0) {
                sage_stats_count(SAGE_STAT_SHARE_FALLBACKS);
                return false;
        }
        sage_stats_count(SAGE_STAT_SHARE_STAGED);
        sage_stats_add(SAGE_STAT_SHARE_BYTES_STAGED, hi - lo);
        sage_stats_add(SAGE_STAT_SHARE_NS_STAGE, cost.wall_ns);
        sage_stats_add(SAGE_STAT_SHARE_NS_STAGE_CPU, cost.cpu_ns);
        sage_stats_add(SAGE_STAT_SHARE_NS_STAGE_FIRST_DMA, cost.first_dma_ns);
        sage_stats_add(SAGE_STAT_SHARE_NS_STAGE_WAIT_HOST, cost.wait_host_ns);
        sage_stats_add(SAGE_STAT_SHARE_NS_STAGE_WAIT_DMA, cost.wait_dma_ns);
        return true;
}

void share_lookup_staged(void *arg, SageHash key) {
        ShareStagedLookup *l = arg;
        uint64_t t = sage_now_ns();

        l->r = share_lookup(l->s, key, l->len, l->device, &l->extent_id, &l->fd, &l->notes, &l->notes_len);
        l->ns = sage_now_ns() - t;
}
