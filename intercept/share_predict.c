/*
 * Predicted remap's entry points (SAGE_SHARE_PREDICT; the design is in
 * share_hint.c): an allocation's hinted keys asked for in one pipelined
 * window and their extents mapped as it is made, an upload confirming the
 * piece it fills by its key, and every unconfirmed piece made private
 * before anything else may write.
 */
#include <cuda.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "options.h"
#include "share.h"
#include "share_ahead.h"
#include "share_key.h"
#include "share_state.h"
#include "stats.h"
#include "util.h"
#include "vmm.h"

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

/*
 * Allocations the warm-up thread makes ahead at most, the largest one, and
 * their bytes in all: each holds GPU memory before the app asks for it (an
 * app that sizes a pool by the free memory, as JAX preallocates 75% of it,
 * sees that much less; its pool itself, larger than one, is never made).
 */
#define PREMADE_MAX 256
#define PREMADE_ALLOC_MAX ((size_t)1 << 30)
#define PREMADE_BYTES_MAX ((size_t)8 << 30)

/* An allocation made ahead (share_predict_premake) for the app's cuMemAlloc of (size, ordinal). */
struct SharePremade {
        size_t size, lead;
        uint32_t ordinal;
        CUcontext ctx;
        SageShareAlloc *a;
};

/* `a`'s unconfirmed pieces: counted in the ShareVmm's only once the app has the allocation (take). */
static unsigned unconfirmed_in(const SageShareAlloc *a) {
        unsigned n = 0;

        for (size_t i = 0; i < a->npieces; i++)
                n += a->pieces[i].unconfirmed;
        return n;
}

/* The allocation made ahead for (size, ordinal, lead) in ctx, now the app's: true and *out. Under the lock. */
static bool take(SageShare *s, size_t size, uint32_t ordinal, size_t lead, CUcontext ctx, SageShareAlloc **out) {
        struct SharePremade *m = s->premade;

        for (size_t i = 0; i < s->npremade; i++)
                if (m[i].size == size && m[i].ordinal == ordinal && m[i].lead == lead && m[i].ctx == ctx) {
                        *out = m[i].a;
                        (*out)->epoch = atomic_load(&s->vmm.write_epoch); /* nothing could write it before */
                        atomic_fetch_add(&s->vmm.unconfirmed, unconfirmed_in(*out));
                        m[i] = m[--s->npremade];
                        sage_stats_count(SAGE_STAT_SHARE_PREMADE_TAKEN);
                        return true;
                }
        return false;
}

bool share_predict_runs(void) {
        return sage_options()->share_predict && !share_idle_on();
}

/* The pieces of `p` that are no run, kept in order: their number. */
static size_t whole_pieces(Piece *p, size_t n) {
        size_t kept = 0;

        for (size_t i = 0; i < n; i++)
                if (!p[i].run_hint)
                        p[kept++] = p[i];
        return kept;
}

/* The prediction of (size, ordinal) made now: its hits imported and mapped, the rest private. Under the lock. */
static bool make(SageShare *s, size_t size, uint32_t ordinal, size_t lead, size_t gran, CUdevice dev,
                 uint32_t broker_dev, CUcontext ctx, SageShareAlloc **out) {
        Piece *pre;
        size_t n, hits;
        bool made = false;

        if (!sage_options()->share_predict || !s->hints.path || !s->broker || lead >= gran ||
            size > SIZE_MAX - 2 * gran || !(pre = calloc(SHARE_HINT_PER_ALLOC, sizeof(*pre))))
                return false;
        n = share_hints_for(&s->hints, size, ordinal, gran, (lead + size + gran - 1) / gran * gran, pre,
                            SHARE_HINT_PER_ALLOC);
        if (!share_predict_runs())
                n = whole_pieces(pre, n);
        if (n && !s->ahead_asked) /* every allocation's keys at the first: the allocations after it ask none */
                share_ahead_ask_hints(s, broker_dev, !share_predict_runs());
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
        free(pre);
        return made;
}

bool share_predict_alloc(SageShare *s, size_t size, uint32_t ordinal, size_t lead, size_t gran, CUdevice dev,
                         uint32_t broker_dev, CUcontext ctx, SageShareAlloc **out) {
        uint64_t t = sage_now_ns();
        bool made;

        if (!sage_options()->share_predict)
                return false;
        made = take(s, size, ordinal, lead, ctx, out) || make(s, size, ordinal, lead, gran, dev, broker_dev, ctx, out);
        sage_stats_add(SAGE_STAT_SHARE_NS_PREDICT, sage_now_ns() - t);
        return made;
}

bool share_predict_reclaim(SageShare *s) {
        bool held, before;

        pthread_mutex_lock(&s->lock);
        if ((held = s->npremade > 0))
                share_ahead_drop(s); /* the answers too: the uploads are not what the hints said */
        s->premake_closed = true;    /* memory is short: nothing made ahead from now */
        before = s->premade_reclaimed;
        s->premade_reclaimed |= held;
        pthread_mutex_unlock(&s->lock);
        if (held)
                sage_stats_count(SAGE_STAT_SHARE_PREMADE_RECLAIMED);
        return held || before;
}

bool share_predict_oom(void) {
        SageShare *s = sage_share();

        return atomic_load_explicit(&s->active, memory_order_relaxed) && share_predict_reclaim(s);
}

/* An allocation made ahead that no cuMemAlloc took, released. Under the lock. */
static void give_back(SageShare *s, SageShareAlloc *a) {
        atomic_fetch_add(&s->vmm.unconfirmed, unconfirmed_in(a)); /* released: counted down */
        share_vmm_release(&s->vmm, a);
        sage_stats_count(SAGE_STAT_SHARE_PREMADE_UNUSED);
}

/* Still made ahead, taken by no cuMemAlloc and not given back? Under the lock. */
static bool premade_now(const SageShare *s, const SageShareAlloc *a) {
        for (size_t i = 0; i < s->npremade; i++)
                if (s->premade[i].a == a)
                        return true;
        return false;
}

/*
 * Allocation `a` made ahead: its predicted runs' images made and their
 * pages faulted in outside the lock, the app's allocations and uploads going
 * on meanwhile (it waited for them: bert's cuMemAllocs 5-14 ms on an H100);
 * attached if `a` is still made ahead (only this thread adds one, so the
 * same pointer is the same allocation), else given back.
 */
static void images_ahead(SageShare *s, SageShareAlloc *a) {
        size_t idx[SHARE_HINT_PER_ALLOC], len[SHARE_HINT_PER_ALLOC], n = 0;
        unsigned char *image[SHARE_HINT_PER_ALLOC];
        bool still;

        pthread_mutex_lock(&s->lock);
        if (premade_now(s, a))
                n = share_hint_images_wanted(a, idx, len, SHARE_HINT_PER_ALLOC);
        pthread_mutex_unlock(&s->lock);
        for (size_t k = 0; k < n; k++)
                image[k] = share_hint_image_faulted(len[k]);
        pthread_mutex_lock(&s->lock);
        still = premade_now(s, a);
        for (size_t k = 0; k < n; k++) {
                if (still)
                        share_hint_image_attach(a, idx[k], image[k], len[k]);
                else if (image[k])
                        munmap(image[k], len[k]);
        }
        pthread_mutex_unlock(&s->lock);
}

void share_predict_premake(SageShare *s) {
        SageShareAlloc *mine[PREMADE_MAX];
        uint64_t size[PREMADE_MAX], t = sage_now_ns();
        uint32_t ordinal[PREMADE_MAX], broker_dev;
        size_t n, gran = 0, lead, made = 0, bytes = 0;
        CUmemAllocationProp prop;
        SageShareAlloc *a;
        CUcontext ctx;
        CUdevice dev;
        bool passed;

        if (!sage_options()->share_predict || !s->hints.path)
                return;
        pthread_mutex_lock(&s->lock);
        n = share_hints_allocs(&s->hints, size, ordinal, PREMADE_MAX);
        if (!n || s->premade || s->premake_closed || !share_enabled(s) || !s->broker ||
            s->drv.ctx_get_device(&dev) != CUDA_SUCCESS || s->drv.ctx_get_current(&ctx) != CUDA_SUCCESS ||
            share_broker_device(s, dev, &broker_dev) != 0) {
                pthread_mutex_unlock(&s->lock);
                return;
        }
        prop = sage_vmm_prop(dev);
        if (s->drv.granularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM) != CUDA_SUCCESS || !gran ||
            !(s->premade = calloc(n, sizeof(*s->premade)))) {
                pthread_mutex_unlock(&s->lock);
                return;
        }
        /* One at a time, the lock given up between: the app's allocations and uploads go on meanwhile. */
        for (size_t i = 0; i < n; i++) {
                if (i)
                        pthread_mutex_lock(&s->lock);
                lead = share_place_lead(&s->place, size[i], ordinal[i], gran, &passed);
                if (s->premade && !s->premake_closed && !passed && share_enabled(s) && size[i] <= PREMADE_ALLOC_MAX &&
                    bytes + size[i] <= PREMADE_BYTES_MAX &&
                    make(s, size[i], ordinal[i], lead, gran, dev, broker_dev, ctx, &a)) {
                        bytes += size[i];
                        made++;
                        atomic_fetch_sub(&s->vmm.unconfirmed, unconfirmed_in(a)); /* the app's at take */
                        /* Listed under the lock: a suspend, settle or out of memory that gives the premades back
                         * must find every one (`a` in no list would be checkpointed with its imports mapped). */
                        s->premade[s->npremade++] = (struct SharePremade){ size[i], lead, ordinal[i], ctx, a };
                        mine[made - 1] = a;
                }
                pthread_mutex_unlock(&s->lock);
        }
        for (size_t i = 0; i < made; i++)
                images_ahead(s, mine[i]);
        sage_stats_add(SAGE_STAT_SHARE_PREMADE, made);
        sage_stats_add(SAGE_STAT_SHARE_NS_PREMADE, sage_now_ns() - t);
}

void share_predict_premade_drop(SageShare *s) {
        for (size_t i = 0; i < s->npremade; i++)
                give_back(s, s->premade[i].a);
        free(s->premade);
        s->premade = NULL;
        s->npremade = 0;
}

void share_predict_premade_forget(SageShare *s) {
        free(s->premade); /* the allocations are the parent's CUDA's: nothing of them is released here */
        s->premade = NULL;
        s->npremade = 0;
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

        /* Nothing to end: no unconfirmed piece, and no answers held that an upload has come for (a launch
         * before the uploads, a framework's set-up, takes no lock). */
        if (!atomic_load_explicit(&s->vmm.unconfirmed, memory_order_relaxed) &&
            (runs_only || !atomic_load_explicit(&s->ahead_held, memory_order_relaxed) ||
             !atomic_load_explicit(&s->uploaded, memory_order_relaxed)))
                return;
        t = sage_now_ns();
        pthread_mutex_lock(&s->lock);
        if (atomic_load(&s->vmm.unconfirmed))
                atomic_store(&s->guarding, true); /* runs confirmed now are hits the launch guard must know */
        share_hint_unshare_all(&s->vmm, sage_share_content_key, runs_only);
        /* The uploads are over: what nothing took goes back, once an upload came (a framework's set-up launches
         * before its first allocation, maybe while the warm-up thread still imports), or the broker is lost. */
        if (!runs_only && (atomic_load(&s->uploaded) || !s->broker))
                share_ahead_drop(s);
        pthread_mutex_unlock(&s->lock);
        sage_stats_add(SAGE_STAT_SHARE_NS_PREDICT_SETTLE, sage_now_ns() - t);
}

void share_predict_settle(SageShare *s) {
        settle(s, false);
}

void sage_share_settle_runs(void) {
        settle(sage_share(), true);
}
