/*
 * Assembly: sharing what no single upload covers whole (SAGE_SHARE_ASSEMBLE).
 *
 * Only the whole granules of one upload are keyed when it happens. What is
 * left (the ends of every upload, and granules that a framework's pool fills
 * with many small tensors) is keyed later, "assembled": at the first launch
 * or API write after the uploads, while the allocation still holds nothing
 * but uploaded bytes, each maximal run of such granules is read back and
 * keyed by its whole content (gaps included, so the key says exactly what a
 * mapping would show). Every run of every allocation pending is keyed first
 * (one synchronize per context, the read-back pipelined: share_readback.c),
 * each key going to the broker as soon as it is known (one pipelined
 * exchange, answered while the rest is read back: a round trip per run
 * made bert's 34 runs wait 34 times, one exchange after the read-back
 * still 4.5-7 ms on the H100), the deferred backing made while the
 * read-back waits for its copies; then each run is mapped or made a
 * candidate. The broker holding it: the run maps its extent and
 * the private backing goes. Else the run becomes a candidate, published at
 * free or exit if unchanged. Kernels pointing into the gaps between the
 * uploads (buffers the pool put there later) make a candidate unpublishable
 * and a shared run private first (share_guard.c): gaps are not weights.
 *
 * At idleness (SAGE_SHARE_ASSEMBLE_IDLE, share_idle.c): runs the program's
 * last invocation shared wait, at the first launch, until the process is
 * idle with its calls held at the suspend gate; then they are keyed from
 * the device as above. The content is keyed at that moment, so what the
 * kernels did meanwhile is in the key: a hit maps exactly the bytes the
 * run holds; anything else leaves it private.
 */
#include <cuda.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "share_assemble.h"

#include "log.h"
#include "share_guard.h"
#include "share_key.h"
#include "share_publish.h"
#include "stats.h"
#include "util.h"

/* Add the time since `t` to `stat`; the time now. */
static uint64_t time_to(SageStat stat, uint64_t t) {
        uint64_t now = sage_now_ns();

        sage_stats_add(stat, now - t);
        return now;
}

/* Longer runs are cut: a run is read back and hashed as one piece. */
#define ASSEMBLE_MAX_RUN (64u << 20)

static int cmp_range(const void *x, const void *y) {
        const Range *a = x, *b = y;
        return a->off < b->off ? -1 : a->off > b->off;
}

/*
 * Does [g, end) hold a stretch of at least GAP_ALONE bytes no upload wrote?
 * `w` sorted, w[j] the first range ending after g. A pool puts other buffers
 * only there (tensors are 512-byte aligned: smaller stretches are padding).
 */
#define GAP_ALONE 512u
static bool gappy(const Range *w, size_t nw, size_t j, size_t g, size_t end) {
        size_t at = g;

        for (; j < nw && w[j].off < end; j++) {
                if (w[j].off > at && w[j].off - at >= GAP_ALONE)
                        return true;
                if (w[j].off + w[j].len > at)
                        at = w[j].off + w[j].len;
        }
        return at < end && end - at >= GAP_ALONE;
}

/* Past this many, an allocation's copied uploads are no longer told apart (they get assembled). */
#define MAX_PLAIN 4096

bool share_assemble_skip(SageShareAlloc *a, size_t off, size_t len) {
        Range *r;

        if (a->nplain && a->plain[a->nplain - 1].off + a->plain[a->nplain - 1].len == off) {
                a->plain[a->nplain - 1].len += len;
                return true;
        }
        if (a->nplain == MAX_PLAIN || !(r = realloc(a->plain, (a->nplain + 1) * sizeof(*r))))
                return false;
        a->plain = r;
        a->plain[a->nplain++] = (Range){ off, len };
        return true;
}

/*
 * Is the piece holding granule `g` of `a` plain private memory (neither
 * candidate nor shared), and not an upload copied because its hit would
 * have cost more? Assembling that one would read back, hash and remap what
 * the copy just avoided.
 */
static bool granule_private(const SageShareAlloc *a, size_t g) {
        for (size_t i = 0; i < a->nplain; i++)
                if (a->plain[i].off < g + a->gran && g < a->plain[i].off + a->plain[i].len)
                        return false;
        for (size_t i = 0; i < a->npieces; i++)
                if (g >= a->pieces[i].off && g < a->pieces[i].off + a->pieces[i].len)
                        return !a->pieces[i].candidate && !a->pieces[i].extent_id;
        return false;
}

/*
 * The same answer in every invocation of a program, hit or miss, so what
 * one publishes the next finds: it depends on where the uploads before
 * went, and on neither the broker nor the keys. (A piece an upload filled
 * whole, hit or candidate, is never plain private: it never draws one in.)
 */
bool share_assemble_takes(const ShareVmm *v, const SageShareAlloc *a, size_t lo, size_t hi) {
        const Piece *first = NULL, *last = NULL;

        if (!v->track_pending || !share_vmm_fresh(v, a) || hi <= lo || hi - lo >= SHARE_ASSEMBLE_TAKES_MAX)
                return false;
        for (size_t i = 0; i < a->npieces; i++)
                if (a->pieces[i].off < hi && lo < a->pieces[i].off + a->pieces[i].len) {
                        first = first ? first : &a->pieces[i];
                        last = &a->pieces[i];
                }
        if (!first)
                return false;
        return (first->off < lo && granule_private(a, lo - a->gran) && share_vmm_written_in(a, first->off, lo)) ||
               (last->off + last->len > hi && granule_private(a, hi) &&
                share_vmm_written_in(a, hi, last->off + last->len));
}

/* Give `p` ([lo, hi)) the upload ranges of sorted `w` that overlap it; span_lo from the first. */
static bool attach_filled(const Range *w, size_t nw, size_t lo, size_t hi, Piece *p) {
        size_t n = 0;

        for (size_t i = 0; i < nw; i++)
                n += w[i].off < hi && lo < w[i].off + w[i].len;
        if (!n || !(p->filled = malloc(n * sizeof(*p->filled))))
                return false;
        for (size_t i = 0; i < nw; i++)
                if (w[i].off < hi && lo < w[i].off + w[i].len)
                        p->filled[p->nfilled++] = w[i];
        p->span_lo = p->filled[0].off < lo ? p->filled[0].off : lo;
        return true;
}

/* Uploaded bytes inside piece `p`. */
static size_t filled_bytes(const Piece *p) {
        size_t n = 0, end = p->off + p->len;

        for (size_t i = 0; i < p->nfilled; i++) {
                size_t lo = p->filled[i].off > p->off ? p->filled[i].off : p->off;
                size_t hi = p->filled[i].off + p->filled[i].len < end ? p->filled[i].off + p->filled[i].len : end;
                n += hi > lo ? hi - lo : 0;
        }
        return n;
}

/* A run of granules to key: piece.off/len its range, piece.filled the uploads in it. */
typedef struct Run {
        SageShareAlloc *a;
        Piece piece;
} Run;

typedef struct Runs {
        Run *run;
        size_t n, cap;
} Runs;

/* Room for one more run in `rs`. */
static bool room(Runs *rs) {
        Run *grown;

        if (rs->n < rs->cap)
                return true;
        if (!(grown = realloc(rs->run, (rs->cap * 2 + 8) * sizeof(*grown))))
                return false;
        rs->run = grown;
        rs->cap = rs->cap * 2 + 8;
        return true;
}

static void add_run(Runs *rs, SageShareAlloc *a, const Range *w, size_t nw, size_t lo, size_t hi) {
        Piece piece = { .off = lo, .len = hi - lo };

        if (room(rs) && attach_filled(w, nw, lo, hi, &piece))
                rs->run[rs->n++] = (Run){ a, piece };
}

/* The runs of `a`, in address order, added to `rs`. */
static void collect_runs(SageShareAlloc *a, Runs *rs) {
        Range *w;
        size_t nw = a->nwritten, j = 0, run = SIZE_MAX;
        bool run_alone = false;

        if (!nw || !(w = malloc(nw * sizeof(*w))))
                return;
        memcpy(w, a->written, nw * sizeof(*w));
        qsort(w, nw, sizeof(*w), cmp_range);
        for (size_t g = 0; g <= a->padded; g += a->gran) {
                bool pending = false, alone = false;

                while (j < nw && w[j].off + w[j].len <= g)
                        j++;
                if (g < a->padded) {
                        pending = j < nw && w[j].off < g + a->gran && granule_private(a, g);
                        alone = pending && gappy(w, nw, j, g, g + a->gran < a->size ? g + a->gran : a->size);
                }
                /* A granule with room for other buffers is a run of its own: a buffer there loses only it. */
                if (run != SIZE_MAX && (!pending || alone || g - run == ASSEMBLE_MAX_RUN || run_alone)) {
                        add_run(rs, a, w, nw, run, g);
                        run = SIZE_MAX;
                }
                /*
                 * A run starts where the allocation or an upload's bytes do: a
                 * buffer reaching into its first granule from before (whose
                 * pointer the guard would not match) must then overlap a tensor.
                 */
                if (pending && run == SIZE_MAX && (g == 0 || (j < nw && w[j].off <= g))) {
                        run = g;
                        run_alone = alone;
                }
        }
        free(w);
}

/* Runs [i, end) of the same context as run i. */
static size_t same_context(const Run *run, size_t n, size_t i) {
        size_t end = i + 1;

        while (end < n && run[end].a->ctx == run[i].a->ctx)
                end++;
        return end;
}

/* What keying the runs fills in: which are keyed, their requests (in run order), sent as they come where lk can. */
typedef struct Keying {
        Run *run;
        bool *keyed;
        ShareLookupReq *q;
        char *notes; /* SAGE_SHARE_NOTES_MAX bytes a request */
        size_t nq, base;
        const ShareLookup *lk;
        void *batch; /* lk->begin's; NULL: asked at the end */
        ShareVmm *v;
        bool idle; /* share_assemble_due: the deferred backing is not this pass's to make */
} Keying;

/*
 * A step of the read-back's waits: the deferred backing the first launch
 * needs anyway (share_backing.c), an allocation at a time. The runs hold
 * written granules only, never unbacked ones, so backing others while
 * they are keyed changes nothing of theirs.
 */
static bool back_meanwhile(void *ctx) {
        Keying *k = ctx;
        uint64_t t = sage_now_ns();
        bool more = share_vmm_back_next(k->v);

        sage_stats_add(SAGE_STAT_SHARE_NS_BACK_OVERLAPPED, sage_now_ns() - t);
        return more;
}

/* Run base + i is keyed: its request, sent now where a batch is open (the broker answers while the rest is read). */
static void run_keyed(void *ctx, size_t i, SageHash key) {
        Keying *k = ctx;
        Run *run = &k->run[k->base + i];

        run->piece.key = key;
        k->keyed[k->base + i] = true;
        sage_stats_count(SAGE_STAT_SHARE_ASSEMBLED);
        k->q[k->nq] = (ShareLookupReq){ .key = key,
                                        .len = run->piece.len,
                                        .device = run->a->broker_dev,
                                        .fd = -1,
                                        .notes = k->notes + k->nq * (size_t)SAGE_SHARE_NOTES_MAX };
        if (k->batch)
                k->lk->add(k->lk->ctx, k->batch, &k->q[k->nq]);
        k->nq++;
}

/*
 * Key every run (k->keyed): each context's work in flight is waited for
 * once (the uploads land first), then its runs are read back together,
 * the deferred backing made while their copies are in flight.
 */
static void key_runs(ShareVmm *v, size_t n, ShareReadback *rb, Keying *k) {
        ShareReadRange *r = calloc(n ? n : 1, sizeof(*r));
        ShareReadbackHooks hooks = { NULL, run_keyed, k };
        Run *run = k->run;
        CUcontext popped;

        for (size_t i = 0, end; r && i < n; i = end) {
                end = same_context(run, n, i);
                uint64_t t = sage_now_ns();
                bool synced;

                if (v->drv->ctx_push(run[i].a->ctx) != CUDA_SUCCESS)
                        continue;
                synced = v->drv->vmm.ctx_synchronize() == CUDA_SUCCESS;
                t = time_to(SAGE_STAT_SHARE_NS_ASSEMBLE_SYNC, t);
                if (synced) {
                        for (size_t j = i; j < end; j++)
                                r[j] = (ShareReadRange){ .at = run[j].a->va + run[j].piece.off,
                                                         .len = run[j].piece.len };
                        k->base = i;
                        hooks.step = atomic_load(&v->unbacked) && !k->idle ? back_meanwhile : NULL; /* backing left */
                        share_readback_keys(rb, v, run[i].a->ctx, r + i, end - i, &hooks);
                        time_to(SAGE_STAT_SHARE_NS_ASSEMBLE_READ, t);
                }
                v->drv->ctx_pop(&popped);
        }
        free(r);
}

/* Look every request up: in one exchange where the lookup can, else one by one until it is gone. */
static void lookup_all(const ShareLookup *lk, ShareLookupReq *q, size_t n) {
        int gone = 0;

        if (lk->lookup_many) {
                lk->lookup_many(lk->ctx, q, n);
                return;
        }
        for (size_t i = 0; i < n; i++) {
                const void *notes = NULL;

                q[i].result = gone ? gone
                                   : lk->lookup(lk->ctx, q[i].key, q[i].len, q[i].device, &q[i].id, &q[i].fd, &notes,
                                                &q[i].notes_len);
                gone = q[i].result < 0 ? q[i].result : 0;
                if (q[i].result == 0 && q[i].fd >= 0 && q[i].notes_len && notes)
                        memcpy(q[i].notes, notes,
                               q[i].notes_len < SAGE_SHARE_NOTES_MAX ? q[i].notes_len : SAGE_SHARE_NOTES_MAX);
        }
}

/*
 * Run `run` keyed and looked up (`q`): map the extent of a hit, else make
 * it a candidate. Its context is current. At idleness (`idle`) a miss stays
 * plain private: the kernels that ran since the first launch used it
 * unrecorded, so its publisher's notes (share_guard.c) would lack them; it
 * is not learned as a hint either, so the next invocation assembles it at
 * its first launch, as a candidate whose uses are all seen.
 */
/* SAGE_VERBOSE=3: each run's shape and fate, named as hints name allocations (size/ordinal), to compare invocations. */
static void log_run(const SageShareAlloc *a, size_t lo, size_t hi, const char *fate, bool idle) {
        sage_debug("share: run +%#zx %#zx of allocation %zu/%u %s%s", lo, hi - lo, (size_t)(a->size - a->lead),
                   a->ordinal, fate, idle ? " at idleness" : "");
}

static void apply_answer(ShareVmm *v, Run *run, const ShareLookupReq *q, bool idle) {
        SageShareAlloc *a = run->a;
        Piece piece = run->piece;
        size_t lo = piece.off, hi = piece.off + piece.len;

        if (q->result == 0 && q->fd >= 0) {
                size_t bytes = filled_bytes(&piece);

                piece.extent_id = q->id;
                share_notes_apply(&piece, q->notes, q->notes_len < SAGE_SHARE_NOTES_MAX ? q->notes_len : 0);
                bool mapped = share_vmm_map_extent(v, a, &piece, q->fd);
                log_run(a, lo, hi, mapped ? "mapped" : "held but not mapped", idle);
                if (mapped) {
                        sage_stats_count(SAGE_STAT_SHARE_ASSEMBLED_HITS);
                        sage_stats_add(SAGE_STAT_SHARE_BYTES_ASSEMBLED, bytes);
                        if (idle)
                                sage_stats_count(SAGE_STAT_SHARE_ASSEMBLED_IDLE);
                }
                return;
        }
        log_run(a, lo, hi, "missed", idle);
        if (idle) {
                share_vmm_free_lists(&piece);
                return;
        }
        /* A miss: a candidate. A run that is one piece already just becomes one; else it gets its own backing. */
        piece.candidate = true;
        piece.content = piece.key;
        for (size_t i = 0; i < a->npieces; i++) {
                Piece *p = &a->pieces[i];
                if (p->off == lo && p->len == hi - lo) {
                        piece.handle = p->handle;
                        *p = piece;
                        return;
                }
        }
        if (share_vmm_copy_into_new(v, a, lo, hi - lo, &piece.handle) != CUDA_SUCCESS) {
                share_vmm_free_lists(&piece);
                return;
        }
        if (share_vmm_replace_range(v, a, lo, hi, &piece) != CUDA_SUCCESS) {
                v->drv->vmm.release(piece.handle);
                share_vmm_free_lists(&piece);
                sage_stats_count(SAGE_STAT_SHARE_FALLBACKS);
        }
}

/* Apply the answers q[0..nq) to the keyed runs, in order; the others' lists go. False: the lookup was gone. */
static bool apply_answers(ShareVmm *v, Run *run, size_t n, const bool *keyed, const ShareLookupReq *q, bool idle) {
        bool on = true;
        CUcontext popped;

        for (size_t i = 0, k = 0, end; i < n; i = end) {
                bool pushed = v->drv->ctx_push(run[i].a->ctx) == CUDA_SUCCESS;

                for (end = same_context(run, n, i); i < end; i++) {
                        if (!keyed[i] || !pushed || q[k].result < 0) {
                                on &= !keyed[i] || q[k].result >= 0;
                                if (keyed[i] && q[k].result == 0 && q[k].fd >= 0) { /* a hit not taken */
                                        close(q[k].fd);
                                        if (v->release_extent)
                                                v->release_extent(v->release_ctx, q[k].id);
                                }
                                share_vmm_free_lists(&run[i].piece);
                        } else
                                apply_answer(v, &run[i], &q[k], idle);
                        k += keyed[i];
                }
                if (pushed)
                        v->drv->ctx_pop(&popped);
        }
        return on;
}

/*
 * Runs v->defer_run leaves for idleness go to their allocation's due list
 * (share_assemble_due); the others stay in `rs`.
 */
static void defer_runs(ShareVmm *v, Runs *rs) {
        size_t kept = 0;

        for (size_t i = 0; i < rs->n; i++) {
                Run *r = &rs->run[i];

                if (v->defer_run && v->defer_run(v->defer_ctx, r->a, r->piece.off, r->piece.len) &&
                    share_vmm_add_due(v, r->a, r->piece)) {
                        sage_stats_count(SAGE_STAT_SHARE_ASSEMBLE_DEFERRED);
                        continue;
                }
                rs->run[kept++] = *r;
        }
        rs->n = kept;
}

/* Key, look up and apply the runs of `rs` (freed). False: the lookup was gone. */
static bool assemble_runs(ShareVmm *v, Runs *rs, const ShareLookup *lk, ShareReadback *rb, bool idle) {
        Keying k = { .lk = lk, .v = v, .run = rs->run, .idle = idle };
        bool on = true;
        uint64_t t;

        if (rs->n && (!(k.keyed = calloc(rs->n, sizeof(*k.keyed))) || !(k.q = calloc(rs->n, sizeof(*k.q))) ||
                      !(k.notes = malloc(rs->n * (size_t)SAGE_SHARE_NOTES_MAX)))) {
                for (size_t i = 0; i < rs->n; i++)
                        share_vmm_free_lists(&rs->run[i].piece);
                rs->n = 0;
        }
        /* The lookups go out as the runs are keyed where lk can (the connection is assembly's meanwhile). */
        if (rs->n && lk->begin)
                k.batch = lk->begin(lk->ctx, rs->n);
        if (rs->n)
                key_runs(v, rs->n, rb, &k);
        t = sage_now_ns();
        if (k.batch)
                lk->end(lk->ctx, k.batch);
        else if (k.nq)
                lookup_all(lk, k.q, k.nq);
        t = time_to(SAGE_STAT_SHARE_NS_ASSEMBLE_LOOKUP, t);
        if (rs->n)
                on = apply_answers(v, rs->run, rs->n, k.keyed, k.q, idle);
        time_to(SAGE_STAT_SHARE_NS_ASSEMBLE_MAP, t);
        free(k.notes);
        free(k.q);
        free(k.keyed);
        free(rs->run);
        return on;
}

bool share_assemble_allocations(ShareVmm *v, SageShareAlloc *const *a, size_t n, const ShareLookup *lk,
                                ShareReadback *rb) {
        Runs rs = { 0 };

        for (size_t i = 0; i < n; i++)
                collect_runs(a[i], &rs);
        defer_runs(v, &rs);
        return assemble_runs(v, &rs, lk, rb, false);
}

void share_assemble_defer_only(ShareVmm *v, SageShareAlloc *const *a, size_t n) {
        Runs rs = { 0 };

        for (size_t i = 0; i < n; i++)
                collect_runs(a[i], &rs);
        defer_runs(v, &rs);
        for (size_t i = 0; i < rs.n; i++)
                share_vmm_free_lists(&rs.run[i].piece);
        free(rs.run);
}

/*
 * Does due run `run` of `a` still lie on plain private memory only? Since
 * the first launch a piece there may have turned shared, a candidate or
 * unbacked (an upload's hit, a re-backing), or the allocation exported.
 */
static bool still_plain(const SageShareAlloc *a, const Piece *run) {
        if (a->no_share)
                return false;
        for (size_t i = 0; i < a->npieces; i++) {
                const Piece *p = &a->pieces[i];
                if (p->off < run->off + run->len && run->off < p->off + p->len &&
                    (p->extent_id || p->candidate || p->unbacked || p->unconfirmed || p->parked))
                        return false;
        }
        return true;
}

bool share_assemble_due(ShareVmm *v, SageShareAlloc *const *a, size_t n, const ShareLookup *lk, ShareReadback *rb) {
        Runs rs = { 0 };

        atomic_store(&v->idle_due, false);
        for (size_t i = 0; i < n; i++) {
                for (size_t j = 0; j < a[i]->ndue; j++) {
                        if (still_plain(a[i], &a[i]->due[j]) && room(&rs))
                                rs.run[rs.n++] = (Run){ a[i], a[i]->due[j] };
                        else
                                share_vmm_free_lists(&a[i]->due[j]);
                }
                free(a[i]->due);
                a[i]->due = NULL;
                a[i]->ndue = 0;
        }
        return assemble_runs(v, &rs, lk, rb, true);
}
