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
#include <sys/resource.h>
#include <unistd.h>

#include "options.h"
#include "share.h"
#include "share_key.h"
#include "share_state.h"
#include "stats.h"
#include "util.h"

/* Keys asked per window: one round trip (the broker client pipelines this many). */
#define WINDOW 32
/* Keys asked at the program's first predicted allocation, every allocation's (fds held until taken). */
#define AHEAD_MAX 1024
/* A hit asked ahead holds an fd of the app's table until taken: at most this share of its limit. */
#define AHEAD_FD_SHARE 4

/* A key and the broker's answer: a hit's extent (a reference ours), fd and notes (a copy). */
typedef struct ShareAnswer {
        SageHash key;
        uint64_t len, id;
        uint32_t device;
        int fd; /* >= 0: a hit not taken yet */
        bool asked, taken;
        void *notes;
        uint32_t notes_len;
} ShareAnswer;

/* The answers asked ahead (share_predict_alloc), until the first launch or write. */
struct SharePredictAhead {
        ShareAnswer *ans;
        size_t n;
};

/* Give back an answer's hit nobody took: its fd, its reference, its notes. */
static void drop_answer(SageShare *s, ShareAnswer *x) {
        if (x->fd >= 0) {
                close(x->fd);
                s->vmm.release_extent(s->vmm.release_ctx, x->id);
        }
        free(x->notes);
        x->fd = -1;
        x->notes = NULL;
}

/* Ask for the keys of ans[0..n), WINDOW at a time: each gets its answer (asked set). */
static void ask(SageShare *s, ShareAnswer *ans, size_t n) {
        ShareLookupReq q[WINDOW];
        char *notes = malloc(WINDOW * (size_t)SAGE_SHARE_NOTES_MAX);

        for (size_t base = 0; notes && base < n && s->broker; base += WINDOW) {
                size_t m = n - base < WINDOW ? n - base : WINDOW;
                for (size_t k = 0; k < m; k++)
                        q[k] = (ShareLookupReq){ .key = ans[base + k].key,
                                                 .len = ans[base + k].len,
                                                 .device = ans[base + k].device,
                                                 .notes = notes + k * (size_t)SAGE_SHARE_NOTES_MAX };
                share_lookup_many(s, q, m);
                sage_stats_count(SAGE_STAT_SHARE_PREDICT_WINDOWS);
                for (size_t k = 0; k < m; k++) {
                        ShareAnswer *x = &ans[base + k];
                        uint32_t len = q[k].notes_len < SAGE_SHARE_NOTES_MAX ? q[k].notes_len : 0;
                        x->asked = true;
                        if (q[k].result != 0 || q[k].fd < 0)
                                continue;
                        x->id = q[k].id;
                        x->fd = q[k].fd;
                        if (len && (x->notes = malloc(len))) {
                                memcpy(x->notes, q[k].notes, len);
                                x->notes_len = len;
                        }
                }
        }
        free(notes);
}

/*
 * At the program's first predicted allocation: every hinted key at once
 * (up to AHEAD_MAX, and a quarter of the app's fd limit: each hit holds an
 * fd until its allocation takes it, and an app near its limit must never
 * see EMFILE for SAGE's sake), so that the allocations after it need no
 * round trip; the keys past it are asked by their own allocation.
 */
static size_t ahead_max(void) {
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
            rl.rlim_cur / AHEAD_FD_SHARE >= AHEAD_MAX)
                return AHEAD_MAX;
        return rl.rlim_cur / AHEAD_FD_SHARE;
}

static void ask_ahead(SageShare *s, uint32_t device) {
        struct SharePredictAhead *ah = calloc(1, sizeof(*ah));
        size_t max = ahead_max(), n = s->hints.n < max ? s->hints.n : max;

        s->ahead_asked = true;
        if (!ah || !n || !(ah->ans = calloc(n, sizeof(*ah->ans)))) {
                free(ah);
                return;
        }
        for (size_t i = 0; i < s->hints.n && ah->n < n; i++)
                if (s->hints.hint[i].len) /* not an allocation's never-again mark (share_hint.c) */
                        ah->ans[ah->n++] = (ShareAnswer){
                                .key = s->hints.hint[i].key, .len = s->hints.hint[i].len, .device = device, .fd = -1
                        };
        ask(s, ah->ans, ah->n);
        s->ahead = ah;
        atomic_store(&s->ahead_held, true);
}

/* The answer asked ahead for `p` on `device`, now the caller's; NULL: not asked ahead. */
static ShareAnswer *take_ahead(SageShare *s, const Piece *p, uint32_t device) {
        for (size_t i = 0; s->ahead && i < s->ahead->n; i++) {
                ShareAnswer *x = &s->ahead->ans[i];
                if (x->asked && !x->taken && x->device == device && x->len == p->len &&
                    sage_hash_equal(x->key, p->key)) {
                        x->taken = true;
                        return x;
                }
        }
        return NULL;
}

void share_predict_drop_ahead(SageShare *s) {
        atomic_store(&s->ahead_held, false);
        if (!s->ahead)
                return;
        for (size_t i = 0; i < s->ahead->n; i++)
                drop_answer(s, &s->ahead->ans[i]);
        free(s->ahead->ans);
        free(s->ahead);
        s->ahead = NULL;
}

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
                if (!(of[k] = take_ahead(s, &pre[k], device))) {
                        mine[nmine] = (ShareAnswer){ .key = pre[k].key, .len = pre[k].len, .device = device, .fd = -1 };
                        of[k] = &mine[nmine++];
                }
        ask(s, mine, nmine);
        for (size_t k = 0; k < n; k++) {
                Piece p = { .off = pre[k].off,
                            .len = pre[k].len,
                            .key = pre[k].key,
                            .extent_id = of[k]->id,
                            .run_hint = pre[k].run_hint };
                if (of[k]->fd < 0)
                        continue;
                if (s->drv.import_fd(&p.handle, (void *)(uintptr_t)of[k]->fd,
                                     CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) != CUDA_SUCCESS) {
                        sage_stats_count(SAGE_STAT_SHARE_FALLBACKS);
                        drop_answer(s, of[k]);
                        continue;
                }
                share_notes_apply(&p, of[k]->notes, of[k]->notes_len);
                close(of[k]->fd);
                of[k]->fd = -1; /* the reference is the piece's now */
                drop_answer(s, of[k]);
                pre[hits++] = p; /* hits <= k: nothing not yet read is overwritten */
        }
        for (size_t k = 0; k < nmine; k++)
                drop_answer(s, &mine[k]);
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
        if (n && !s->ahead_asked)
                ask_ahead(s, broker_dev);
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
                share_predict_drop_ahead(s); /* the uploads are over: what no allocation took goes back */
        pthread_mutex_unlock(&s->lock);
        sage_stats_add(SAGE_STAT_SHARE_NS_PREDICT_SETTLE, sage_now_ns() - t);
}

void share_predict_settle(SageShare *s) {
        settle(s, false);
}

void sage_share_settle_runs(void) {
        settle(sage_share(), true);
}
