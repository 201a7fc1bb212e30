/*
 * The miss path's staging (share_stage.c) as sharing's state holds it: set
 * up at its first use, or made ahead by the warm-up thread so the first miss
 * does not page-lock its buffers inside the app's upload.
 */
#include <pthread.h>

#include "driver.h"
#include "impl.h"
#include "options.h"
#include "share_state.h"
#include "stats.h"
#include "util.h"

static pthread_cond_t stage_made = PTHREAD_COND_INITIALIZER; /* the first buffers made ahead, or all */

/* The staging pipeline, set up at its first use (SAGE_SHARE_STAGING; 0: off). Under the lock. */
ShareStage *share_stage_of(SageShare *s) {
        ShareStageDriver d = { SAGE_REAL(cuMemAllocHost_v2),   SAGE_REAL(cuMemFreeHost),
                               SAGE_REAL(cuStreamCreate),      SAGE_REAL(cuStreamDestroy_v2),
                               SAGE_REAL(cuStreamSynchronize), SAGE_REAL(cuMemcpyHtoDAsync_v2) };
        bool all = d.alloc_host && d.free_host && d.stream_create && d.stream_destroy && d.stream_synchronize &&
                   d.copy_htod_async;
        uint64_t t;

        if (!s->stage_set)
                share_stage_init(&s->stage, &d, all ? sage_options()->share_staging : 0);
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
        if (!go)
                return 0;
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
        return held;
}
