/*
 * Predicted remap's entry points (SAGE_SHARE_PREDICT; the design is in
 * share_hint.c): an allocation's hinted keys asked for in one pipelined
 * window and their extents mapped as it is made, an upload confirming the
 * piece it fills by its key, and every unconfirmed piece made private
 * before anything else may write.
 */
#include <cuda.h>

#include <stdlib.h>
#include <unistd.h>

#include "share_state.h"
#include "stats.h"
#include "util.h"

/* Keys asked per window: one round trip (the broker client pipelines this many). */
#define WINDOW 32

/*
 * Ask for pre[0..n)'s keys, WINDOW at a time; each hit imported becomes
 * pre[hits++] (extent_id, handle and notes set). Returns the hits.
 */
static size_t lookup_and_import(SageShare *s, Piece *pre, size_t n, uint32_t broker_dev) {
        ShareLookupReq q[WINDOW];
        char *notes = malloc(WINDOW * (size_t)SAGE_SHARE_NOTES_MAX);
        size_t hits = 0;

        for (size_t base = 0; notes && base < n && s->broker; base += WINDOW) {
                size_t m = n - base < WINDOW ? n - base : WINDOW;
                for (size_t k = 0; k < m; k++)
                        q[k] = (ShareLookupReq){ .key = pre[base + k].key,
                                                 .len = pre[base + k].len,
                                                 .device = broker_dev,
                                                 .notes = notes + k * (size_t)SAGE_SHARE_NOTES_MAX };
                share_lookup_many(s, q, m);
                for (size_t k = 0; k < m; k++) {
                        Piece p = { .off = pre[base + k].off, .len = pre[base + k].len, .key = pre[base + k].key };
                        if (q[k].result != 0 || q[k].fd < 0)
                                continue;
                        p.extent_id = q[k].id;
                        if (s->drv.import_fd(&p.handle, (void *)(uintptr_t)q[k].fd,
                                             CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) != CUDA_SUCCESS) {
                                s->vmm.release_extent(s->vmm.release_ctx, p.extent_id);
                                sage_stats_count(SAGE_STAT_SHARE_FALLBACKS);
                        } else {
                                share_notes_apply(&p, q[k].notes,
                                                  q[k].notes_len < SAGE_SHARE_NOTES_MAX ? q[k].notes_len : 0);
                                pre[hits++] = p; /* hits <= base + k: nothing not yet asked is overwritten */
                        }
                        close(q[k].fd);
                }
        }
        free(notes);
        return hits;
}

bool share_predict_alloc(SageShare *s, size_t size, uint32_t ordinal, size_t lead, size_t gran, CUdevice dev,
                         uint32_t broker_dev, CUcontext ctx, SageShareAlloc **out) {
        Piece *pre;
        size_t n, hits;
        uint64_t t = sage_now_ns();
        bool made = false;

        if (!s->hints.path || !s->broker || lead >= gran || size > SIZE_MAX - 2 * gran ||
            !(pre = calloc(SHARE_HINT_PER_ALLOC, sizeof(*pre))))
                return false;
        n = share_hints_for(&s->hints, size, ordinal, gran, (lead + size + gran - 1) / gran * gran, pre,
                            SHARE_HINT_PER_ALLOC);
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

void share_predict_settle(SageShare *s) {
        if (!atomic_load_explicit(&s->vmm.unconfirmed, memory_order_relaxed))
                return;
        pthread_mutex_lock(&s->lock);
        share_hint_unshare_all(&s->vmm);
        pthread_mutex_unlock(&s->lock);
}
