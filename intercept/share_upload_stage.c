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

static pthread_cond_t stage_made = PTHREAD_COND_INITIALIZER; /* stage_making went false */

/* The staging pipeline, set up at its first use (SAGE_SHARE_STAGING; 0: off). Under the lock. */
ShareStage *share_stage_of(SageShare *s) {
        ShareStageDriver d = { SAGE_REAL(cuMemAllocHost_v2),   SAGE_REAL(cuMemFreeHost),
                               SAGE_REAL(cuStreamCreate),      SAGE_REAL(cuStreamDestroy_v2),
                               SAGE_REAL(cuStreamSynchronize), SAGE_REAL(cuMemcpyHtoDAsync_v2) };
        bool all = d.alloc_host && d.free_host && d.stream_create && d.stream_destroy && d.stream_synchronize &&
                   d.copy_htod_async;

        if (!s->stage_set)
                share_stage_init(&s->stage, &d, all ? sage_options()->share_staging : 0);
        s->stage_set = true;
        while (s->stage_making) /* the warm-up thread is making it: wait rather than make a second */
                pthread_cond_wait(&stage_made, &s->lock);
        return &s->stage;
}

/*
 * The staging made ahead by the warm-up thread (sage_share_prestage, `ctx`
 * current): page-locking SAGE_SHARE_STAGING bytes took ~50 ms on an H100
 * host, which the first miss paid inside the app's upload. Made outside the
 * lock, so hits meanwhile go on; a miss meanwhile waits for it (stage_of)
 * instead of making its own. Returns the pinned bytes the staging holds once
 * this was kept (0: not made here).
 */
size_t share_upload_prestage(SageShare *s, CUcontext ctx) {
        ShareStage st;
        size_t held = 0;
        bool go, kept = false;
        int r;

        pthread_mutex_lock(&s->lock);
        st = *share_stage_of(s);
        go = st.slot_bytes && !st.broken && !st.ctx;
        s->stage_making = go;
        pthread_mutex_unlock(&s->lock);
        if (!go)
                return 0;
        r = share_stage_prepare(&st, ctx);
        pthread_mutex_lock(&s->lock);
        s->stage_making = false;
        if (r == 0 && !s->stage.ctx && !s->stage.broken) {
                s->stage = st;
                kept = true;
        }
        for (unsigned i = 0; kept && i < SHARE_STAGE_SLOTS; i++) /* what the upload path will find */
                held += s->stage.buf[i] && s->stage.ctx == ctx ? s->stage.slot_bytes : 0;
        pthread_cond_broadcast(&stage_made);
        pthread_mutex_unlock(&s->lock);
        if (r == 0 && !kept)
                share_stage_release(&st);
        return held;
}
