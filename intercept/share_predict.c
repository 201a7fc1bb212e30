/*
 * Predicted remap's entry points (SAGE_SHARE_PREDICT; the design is in
 * share_hint.c): an allocation's hinted keys asked for in one pipelined
 * window and their extents mapped as it is made, an upload confirming the
 * piece it fills by its key, and every unconfirmed piece made private
 * before anything else may write.
 */
#include <cuda.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "options.h"
#include "share.h"
#include "share_ahead.h"
#include "share_key.h"
#include "share_state.h"
#include "stats.h"
#include "util.h"

/*
 * The answers for pre[0..n) (asked ahead, else now in one window); each
 * hit imported becomes pre[hits++] (extent_id, handle and notes set).
 * Returns the hits.
 */
static size_t lookup_and_import(SageShare *s, Piece *pre, size_t n, uint32_t device) {
        ShareAnswer **of = calloc(n, sizeof(*of)), *mine = calloc(n, sizeof(*mine));
        size_t nmine = 0, hits = 0;

        if (!of || !mine) {
                free(of);
                free(mine);
                return 0;
        }
        for (size_t k = 0; k < n; k++)
                if (!(of[k] = share_ahead_find(s, pre[k].key, pre[k].len, device))) {
                        mine[nmine] = (ShareAnswer){ .key = pre[k].key, .len = pre[k].len, .device = device, .fd = -1 };
                        of[k] = &mine[nmine++];
                }
        share_ahead_ask(s, mine, nmine);
        for (size_t k = 0; k < n; k++) {
                Piece p = { .off = pre[k].off,
                            .len = pre[k].len,
                            .key = pre[k].key,
                            .extent_id = of[k]->id,
                            .run_hint = pre[k].run_hint };
                if (of[k]->fd < 0 && !of[k]->imported)
                        continue;
                if (of[k]->imported) /* by the warm-up thread (share_ahead_prepare) */
                        p.handle = of[k]->handle;
                else if (s->drv.import_fd(&p.handle, (void *)(uintptr_t)of[k]->fd,
                                          CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) != CUDA_SUCCESS) {
                        sage_stats_count(SAGE_STAT_SHARE_FALLBACKS);
                        share_ahead_drop_answer(s, of[k]);
                        continue;
                }
                share_notes_apply(&p, of[k]->notes, of[k]->notes_len);
                if (of[k]->fd >= 0)
                        close(of[k]->fd);
                of[k]->fd = -1; /* the reference (and handle) is the piece's now */
                of[k]->imported = false;
                share_ahead_drop_answer(s, of[k]);
                pre[hits++] = p; /* hits <= k: nothing not yet read is overwritten */
        }
        for (size_t k = 0; k < nmine; k++)
                share_ahead_drop_answer(s, &mine[k]);
        free(of);
        free(mine);
        return hits;
}

bool share_predict_alloc(SageShare *s, size_t size, uint32_t ordinal, size_t lead, size_t gran, CUdevice dev,
                         uint32_t broker_dev, CUcontext ctx, SageShareAlloc **out) {
        Piece *pre;
        size_t n, hits;
        uint64_t t = sage_now_ns();
        bool made = false;

        if (!sage_options()->share_predict || !s->hints.path || !s->broker || lead >= gran ||
            size > SIZE_MAX - 2 * gran || !(pre = calloc(SHARE_HINT_PER_ALLOC, sizeof(*pre))))
                return false;
        n = share_hints_for(&s->hints, size, ordinal, gran, (lead + size + gran - 1) / gran * gran, pre,
                            SHARE_HINT_PER_ALLOC);
        if (n && !s->ahead_asked) /* every allocation's keys at the first: the allocations after it ask none */
                share_ahead_ask_hints(s, broker_dev, false);
        hits = n ? lookup_and_import(s, pre, n, broker_dev) : 0;
        if (hits) {
                made = share_vmm_alloc_predicted(&s->vmm, lead + size, gran, dev, broker_dev, ctx, pre, hits, out) ==
                       CUDA_SUCCESS;
                if (made) {
                        (*out)->lead = lead;
                        sage_stats_add(SAGE_STAT_SHARE_PREDICT_MAPPED, hits);
                        s->expect_hit = 1; /* the broker holds extents of ours: uploads hash first */
                } else {
                        share_hint_give_back(&s->vmm, pre, hits);
                        sage_stats_count(SAGE_STAT_SHARE_FALLBACKS);
                }
        }
        sage_stats_add(SAGE_STAT_SHARE_NS_PREDICT, sage_now_ns() - t);
        free(pre);
        return made;
}

bool share_predict_confirm(SageShare *s, SageShareAlloc *a, size_t o, size_t n, size_t lo, size_t hi, SageHash key) {
        Piece *p = share_hint_unconfirmed_at(a, lo, hi);

        if (!p || !sage_hash_equal(p->key, key))
                return false; /* the usual path replaces the piece */
        share_hint_confirm(&s->vmm, a, p, o, n);
        atomic_store(&s->guarding, true);
        sage_stats_count(SAGE_STAT_SHARE_HITS);
        sage_stats_count(SAGE_STAT_SHARE_PREDICTED);
        sage_stats_add(SAGE_STAT_SHARE_BYTES_MAPPED, hi - lo);
        sage_stats_add(SAGE_STAT_SHARE_BYTES_COPIED, n - (hi - lo));
        return true;
}

static void settle(SageShare *s, bool runs_only) {
        uint64_t t;

        if (!atomic_load_explicit(&s->vmm.unconfirmed, memory_order_relaxed) &&
            (runs_only || !atomic_load_explicit(&s->ahead_held, memory_order_relaxed)))
                return;
        t = sage_now_ns();
        pthread_mutex_lock(&s->lock);
        if (atomic_load(&s->vmm.unconfirmed))
                atomic_store(&s->guarding, true); /* runs confirmed now are hits the launch guard must know */
        share_hint_unshare_all(&s->vmm, sage_share_content_key, runs_only);
        if (!runs_only)
                share_ahead_drop(s); /* the uploads are over: what nothing took goes back */
        pthread_mutex_unlock(&s->lock);
        sage_stats_add(SAGE_STAT_SHARE_NS_PREDICT_SETTLE, sage_now_ns() - t);
}

void share_predict_settle(SageShare *s) {
        settle(s, false);
}

void sage_share_settle_runs(void) {
        settle(sage_share(), true);
}
