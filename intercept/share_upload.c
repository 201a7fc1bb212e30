/*
 * Uploads and API writes into memory SAGE's allocator backs (share.c has
 * the design). An upload (host to device, sync or async, every variant,
 * cuMemcpy with a host source too) is keyed on the part of it that covers
 * whole granules: by file identity when the source lies in a file mapping
 * (share_key.c), else by content hash. The broker is asked for an extent
 * with that key:
 * - hit: that part of the allocation becomes a piece mapping the broker's
 *   extent read-only, and only the bytes outside it (less than a granule at
 *   each end) are copied by the app's own call;
 * - miss: that part becomes a piece of its own ("candidate"), published at
 *   free or exit if unchanged (share_publish.c). SAGE copies it through
 *   pinned staging buffers (share_stage.c: DMA speed, hashed on the way,
 *   the key of the bytes that arrived); a small one, or one staging cannot
 *   take, is copied by the app's own call.
 * A content key costs a pass over the bytes before the broker can be asked;
 * a miss would then hash them again while staging. So while large uploads
 * miss (a cold broker: at first, one holding no extent of ours), they are
 * staged first and the broker is asked for the key of what was copied: a
 * hit then maps the extent over the copy (copied for nothing,
 * SHARE_STAGED_HITS), and the next upload hashes first.
 * A write through the API (memset, device-to-device or peer copy, another
 * upload) into a shared piece first turns it private again (its content
 * copied), so it never reaches the extent other processes read
 * (share_writes.c).
 */
#include <cuda.h>

#include "share.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "capture_mode.h"
#include "driver.h"
#include "impl.h"
#include "log.h"
#include "options.h"
#include "share_ahead.h"
#include "share_assemble.h"
#include "share_file_key.h"
#include "share_key.h"
#include "share_state.h"
#include "stats.h"
#include "util.h"

/* Uploads at least this large try the file-identity key first: a kernel without PROCMAP_QUERY
 * makes that a parse of /proc/self/maps (1-7 ms in a PyTorch process; share_file_key.c). */
#define FILE_KEY_MIN (16u << 20)

/* Bytes [lo, hi) of an upload served by mapping or SAGE's staged copy; the caller copies the rest. */
typedef struct UploadPlan {
        size_t lo, hi;
        bool ours;     /* the destination is memory SAGE backs: the call's time is SHARE_NS_UPLOAD's */
        uint64_t cpu0; /* the calling thread's CPU clock once it was (SHARE_NS_UPLOAD_CPU) */
} UploadPlan;

/* What this thread's keys used since `before` (all 0 if it hashed nothing): their CPU, helpers, waits. */
static void count_keys(SageHashPoolUse before) {
        SageHashPoolUse now = sage_share_key_use();
        sage_stats_add(SAGE_STAT_SHARE_NS_KEY_CPU, now.cpu_ns - before.cpu_ns);
        sage_stats_add(SAGE_STAT_SHARE_KEY_HELPERS, now.helpers - before.helpers);
        sage_stats_add(SAGE_STAT_SHARE_NS_KEY_TAIL, now.tail_ns - before.tail_ns);
}

/* Add the time since `since` to a nanosecond counter; returns now. */
static uint64_t lap(SageStat stat, uint64_t since) {
        uint64_t now = sage_now_ns();
        sage_stats_add(stat, now - since);
        return now;
}

static Piece *piece_at(SageShareAlloc *a, size_t off) {
        for (size_t i = 0; i < a->npieces; i++)
                if (a->pieces[i].off == off)
                        return &a->pieces[i];
        return NULL;
}

/* A new candidate piece for [lo, hi) of `a`, keys to be set; NULL: the allocation stays as it was. */
static Piece *new_candidate(SageShare *s, SageShareAlloc *a, size_t lo, size_t hi, size_t o, size_t n) {
        Piece piece = { .off = lo, .len = hi - lo, .candidate = true, .span_lo = o, .span_hi = o + n };

        if (share_vmm_create(&s->vmm, a, hi - lo, &piece.handle) != CUDA_SUCCESS)
                return NULL;
        if (share_vmm_replace_range(&s->vmm, a, lo, hi, &piece) != CUDA_SUCCESS) {
                s->drv.vmm.release(piece.handle);
                sage_stats_count(SAGE_STAT_SHARE_FALLBACKS);
                return NULL;
        }
        return piece_at(a, lo);
}

/* Are large content-keyed uploads expected to miss? At first: does the broker hold no extent of ours? */
static bool expect_miss(SageShare *s) {
        SageStats st;
        int r;

        if (!s->expect_hit && s->broker) {
                r = sage_broker_stats(s->broker, &st);
                share_broker_lost(s, r);
                s->expect_hit = r == 0 && !st.extents ? -1 : 1;
        }
        return s->expect_hit < 0;
}

/*
 * A large content-keyed upload while uploads miss: [lo, hi) becomes a
 * candidate filled by the staged copy, keyed by what was copied, and only
 * then is the broker asked (a hit maps the extent over the copy). True:
 * [lo, hi) is done (plan set); false: nothing was done, the caller goes on.
 */
static bool stage_first(SageShare *s, SageShareAlloc *a, size_t o, size_t n, size_t lo, size_t hi, const void *src,
                        UploadPlan *plan) {
        ShareStagedLookup look = { .s = s, .len = hi - lo, .device = a->broker_dev, .fd = -1, .r = -1 };
        ShareStageJob *j;
        SageHash key;
        Piece *c, piece;
        bool mapped = false;
        uint64_t t;

        /* The threads copy while the app's queued work drains and the candidate is made. */
        if (!(j = share_upload_stage_begin(s, a, hi - lo, src)))
                return false;
        t = sage_now_ns();
        /*
         * The app's queued work first where it may use the backing that goes
         * (as for a hit): a fresh allocation nothing wrote there needs no
         * synchronize, which waits for the whole context, and breaks another
         * thread's stream capture (share_test capture-beside).
         */
        share_vmm_sync_for_replace(&s->vmm, a, lo, hi);
        if (!(c = new_candidate(s, a, lo, hi, o, n))) {
                share_stage_cancel(j);
                return false;
        }
        t = lap(SAGE_STAT_SHARE_NS_REMAP, t);
        atomic_store(&s->guarding, true);
        /* The broker is asked for the key of what was copied while the last of it lands. */
        if (!share_upload_stage_end(s, j, a, lo, hi, &key, share_lookup_staged, &look)) {
                if (look.r == 0 && look.fd >= 0) { /* the copy failed after all: the extent is not used */
                        close(look.fd);
                        s->vmm.release_extent(s->vmm.release_ctx, look.extent_id);
                }
                c->candidate = false; /* its bytes are the app's copy's, not keyed: private memory */
                return false;
        }
        c->key = c->content = key;
        plan->lo = lo - o;
        plan->hi = hi - o;
        sage_stats_add(SAGE_STAT_SHARE_NS_BROKER, look.ns);
        t = sage_now_ns();
        s->expect_hit = look.r == 0 && look.fd >= 0 ? 1 : -1;
        if (s->expect_hit > 0) {
                piece = (Piece){ .off = lo,
                                 .len = hi - lo,
                                 .extent_id = look.extent_id,
                                 .key = key,
                                 .span_lo = o,
                                 .span_hi = o + n };
                share_notes_apply(&piece, look.notes, look.notes_len);
                mapped = share_vmm_map_extent(&s->vmm, a, &piece, look.fd); /* false: the copy stays, a candidate */
                lap(SAGE_STAT_SHARE_NS_REMAP, t);
        }
        if (mapped) {
                sage_stats_count(SAGE_STAT_SHARE_HITS);
                sage_stats_count(SAGE_STAT_SHARE_STAGED_HITS);
                sage_stats_add(SAGE_STAT_SHARE_BYTES_MAPPED, hi - lo);
                sage_stats_add(SAGE_STAT_SHARE_BYTES_COPIED, n - (hi - lo));
                share_vmm_note_written(&s->vmm, a, o, lo - o);
                share_vmm_note_written(&s->vmm, a, hi, o + n - hi);
        } else {
                sage_stats_count(SAGE_STAT_SHARE_MISSES);
                sage_stats_add(SAGE_STAT_SHARE_BYTES_COPIED, n);
                share_vmm_note_written(&s->vmm, a, o, n);
        }
        return true;
}

/*
 * Would a hit on the upload's whole granules [lo, hi) cost more than their
 * copy (share_cost.h)? Then the app's call copies it all, as if sharing
 * were off for it: what it overwrites turns private, and the first launch
 * does not assemble the granules it touches (that would read back, hash
 * and remap what the copy just saved). Where assembly at idleness runs,
 * the whole granules are due then, keyed from the device as one run (the
 * piece the hit would have mapped: the same content key), so the copy
 * costs memory only until the process is idle (a file-keyed upload's
 * extent is not found by content: those stay private); its ends then
 * join their neighbours' runs as a hit's would. Not while uploads
 * miss: a copy is no candidate, and the broker would never get those bytes.
 */
static bool copy_cheaper(SageShare *s, SageShareAlloc *a, size_t o, size_t n, size_t lo, size_t hi, bool keyed) {
        if (!share_copy_cheaper_on() || s->expect_hit < 0 || !share_cost_copy_cheaper(&s->cost, hi - lo, keyed))
                return false;
        sage_stats_count(SAGE_STAT_SHARE_COPY_CHEAPER);
        sage_stats_add(SAGE_STAT_SHARE_BYTES_COPIED, n);
        sage_debug("share: upload +%#zx %#zx of allocation %zu/%u copied: its hit would cost more", o, n,
                   (size_t)(a->size - a->lead), a->ordinal);
        share_idle_copy_due(s, a, o, n, lo, hi, keyed);
        return true;
}

/* What both a hit and a miss on [lo, hi) of `a` need first, done while the broker answers the lookup. */
typedef struct BeforeReplace {
        SageShare *s;
        SageShareAlloc *a;
        size_t lo, hi, span_hi;
        uint64_t ns; /* how long it took: re-mapping's, not the broker's */
} BeforeReplace;

static void before_replace(void *ctx) {
        BeforeReplace *b = ctx;
        uint64_t t = sage_now_ns();

        /* Nothing in flight may use the backing we replace. */
        share_vmm_sync_for_replace(&b->s->vmm, b->a, b->lo, b->hi);
        share_vmm_prepare_rests(&b->s->vmm, b->a, b->lo, b->hi, b->span_hi);
        b->ns = sage_now_ns() - t;
}

/*
 * An upload of n bytes from host `src` to `dst`. Returns true when bytes
 * [plan->lo, plan->hi) of it were served by mapping a shared extent: the
 * caller copies the rest. False: the caller copies everything.
 */
static bool share_upload(SageShare *s, CUdeviceptr dst, const void *src, size_t n, bool async, CUstream stream,
                         UploadPlan *plan) {
        SageShareAlloc *a;
        size_t o, lo, hi;
        SageHash key, content;
        bool by_file = false, served = false;
        Piece *c, *run;
        bool predicting, ahead = false, head = false, tail = false;
        uint64_t t, hit_t;
        const void *notes = NULL;
        uint32_t notes_len = 0;
        int fd = -1, r = -1;
        Piece piece;
        BeforeReplace before;
        ShareStageJob *job;
        SageHashPoolUse pool = sage_share_key_use(); /* the keys' CPU, helpers and waits: counted at out */

        if (!atomic_load_explicit(&s->active, memory_order_relaxed) || !src || !n)
                return false;
        pthread_mutex_lock(&s->lock);
        if (!(a = share_vmm_find(&s->vmm, dst, n)))
                goto out;
        plan->ours = true;
        atomic_store(&s->uploaded, true); /* the uploads have begun: what is asked or made ahead goes at a launch */
        plan->cpu0 = sage_clock_ns(CLOCK_THREAD_CPUTIME_ID); /* a system call: only for memory SAGE backs */
        o = dst - a->va;
        lo = (o + a->gran - 1) / a->gran * a->gran;
        hi = (o + n) / a->gran * a->gran;
        /*
         * Recorded into a graph, not run; or another thread has a capture
         * open, and replacing backing may synchronize the context, which the
         * driver refuses then and which breaks that capture: a plain copy.
         */
        if ((async && share_capturing(s, stream)) || sage_capture_open()) {
                share_vmm_note_write(&s->vmm);
                share_vmm_before_write(&s->vmm, a, o, n);
                goto out;
        }
        /* Predicted runs are unconfirmed pieces: with none (the usual case) no upload looks for one. */
        predicting = atomic_load_explicit(&s->vmm.unconfirmed, memory_order_relaxed) != 0;
        /* In a predicted run (mapped at allocation): kept on the host till the launch (share_hint.h); counted copied. */
        if (predicting && (run = share_hint_run_at(a, o, n)) && !a->no_share && share_hint_image(run, o, n, src)) {
                sage_stats_add(SAGE_STAT_SHARE_BYTES_COPIED, n);
                plan->lo = 0;
                plan->hi = n;
                served = true;
                goto out;
        }
        /* Its ends in such runs: kept there too if its whole granules are served (at out), else those made private. */
        head = predicting && share_hint_end_run(a, o, n, lo, hi, true);
        tail = predicting && share_hint_end_run(a, o, n, lo, hi, false);
        /* Shared pieces the upload overwrites in part become private; whole ones get replaced. */
        for (size_t i = 0; i < a->npieces; i++) {
                Piece *p = &a->pieces[i];
                if (p->off < o + n && o < p->off + p->len && (p->off < lo || p->off + p->len > hi || lo >= hi)) {
                        if (lo < hi && (head || tail || share_hint_unconfirmed_at(a, lo, hi))) {
                                /* the ends only: it may be confirmed; an end in a predicted run at out */
                                if (!head)
                                        share_vmm_before_write(&s->vmm, a, o, lo - o);
                                if (!tail)
                                        share_vmm_before_write(&s->vmm, a, hi, o + n - hi);
                        } else
                                share_vmm_before_write(&s->vmm, a, o, n);
                        break;
                }
        }
        if (a->no_share || hi <= lo || !s->broker) {
                sage_stats_add(SAGE_STAT_SHARE_BYTES_COPIED, n); /* no whole granule: assembly's, if anyone's */
                share_vmm_note_written(&s->vmm, a, o, n);
                goto out;
        }
        /*
         * A hit here would re-back bytes copied before it (a device copy,
         * synchronizes) and cut their assembled run in two: copied instead,
         * keyed at the launch with them as one run. Not where predicted
         * remap maps hits at allocation: there a hit costs no call.
         */
        if (sage_options()->share_fold && !sage_options()->share_predict && share_assemble_takes(&s->vmm, a, lo, hi)) {
                sage_stats_count(SAGE_STAT_SHARE_FOLDED);
                sage_stats_add(SAGE_STAT_SHARE_BYTES_COPIED, n);
                /* While copying the first launch assembles nothing new (a run of a new shape would be lost):
                 * its whole granules due at idleness as a copy's, the extent its hit would have mapped. */
                if (share_copying(s)) {
                        share_idle_copy_due(s, a, o, n, lo, hi, true); /* under 8 MiB: content-keyed (FILE_KEY_MIN) */
                        goto out;
                }
                sage_debug("share: upload +%#zx %#zx of allocation %zu/%u folded into a run", o, n,
                           (size_t)(a->size - a->lead), a->ordinal);
                share_vmm_before_write(&s->vmm, a, o, n);
                share_vmm_note_written(&s->vmm, a, o, n);
                goto out;
        }
        t = sage_now_ns();
        if (hi - lo >= FILE_KEY_MIN && sage_share_file_key(&s->maps, (const char *)src + (lo - o), hi - lo, &key)) {
                by_file = true;
                sage_stats_count(SAGE_STAT_SHARE_FILE_KEYS);
        }
        t = lap(SAGE_STAT_SHARE_NS_FILE_KEY, t);
        if (copy_cheaper(s, a, o, n, lo, hi, !by_file))
                goto out;
        if (!by_file) {
                /* Expected to hit: never waits for the staging the warm-up thread may still be making. */
                if (hi - lo >= SHARE_UPLOAD_STAGE_MIN && expect_miss(s) && share_upload_stage_possible(s, hi - lo) &&
                    !share_hint_unconfirmed_at(a, lo, hi) &&
                    stage_first(s, a, o, n, lo, hi, (const char *)src + (lo - o), plan)) {
                        served = true;
                        goto out;
                }
                if (sage_share_content_key((const char *)src + (lo - o), hi - lo, &key) < 0) {
                        sage_stats_add(SAGE_STAT_SHARE_BYTES_COPIED, n);
                        share_vmm_note_written(&s->vmm, a, o, n);
                        goto out;
                }
                share_cost_key(&s->cost, hi - lo, sage_now_ns() - t);
        }
        t = lap(SAGE_STAT_SHARE_NS_KEY, t);
        if (share_predict_confirm(s, a, o, n, lo, hi, key)) { /* mapped at allocation: no driver or broker call */
                plan->lo = lo - o;
                plan->hi = hi - o;
                served = true;
                goto out;
        }
        hit_t = t;
        before = (BeforeReplace){ s, a, lo, hi, o + n, 0 };
        piece = (Piece){ .off = lo, .len = hi - lo, .key = key, .span_lo = o, .span_hi = o + n };
        /* Asked ahead (share_ahead.h): no round trip here, and no import if the warm-up thread made it (fd -1). */
        if ((ahead = share_ahead_take(s, &piece, a->broker_dev, &fd)))
                before_replace(&before);
        else if ((r = share_lookup_meanwhile(s, key, hi - lo, a->broker_dev, &piece.extent_id, &fd, &notes, &notes_len,
                                             before_replace, &before)) == 0 &&
                 fd >= 0)
                share_notes_apply(&piece, notes, notes_len);
        sage_stats_add(SAGE_STAT_SHARE_NS_REMAP, before.ns);
        t = lap(SAGE_STAT_SHARE_NS_BROKER, t + before.ns);
        if (!by_file && hi - lo >= SHARE_UPLOAD_STAGE_MIN)
                s->expect_hit = ahead || (r == 0 && fd >= 0) ? 1 : -1;
        atomic_store(&s->guarding, true);
        if (ahead || (r == 0 && fd >= 0))
                served = share_vmm_map_extent(&s->vmm, a, &piece, fd);
        t = lap(SAGE_STAT_SHARE_NS_REMAP, t);
        if (served) {
                share_cost_map(&s->cost, t - hit_t);
                sage_stats_count(SAGE_STAT_SHARE_HITS);
                sage_stats_add(SAGE_STAT_SHARE_BYTES_MAPPED, hi - lo);
                sage_stats_add(SAGE_STAT_SHARE_BYTES_COPIED, n - (hi - lo));
                /*
                 * The whole upload, not just the ends copied: assembly gives a
                 * run holding an end the upload's start as its span, so a
                 * kernel given the tensor's base pointer is seen using it.
                 */
                share_vmm_note_written(&s->vmm, a, o, n);
                plan->lo = lo - o;
                plan->hi = hi - o;
                goto out;
        }
        /* A miss: [lo, hi) becomes a candidate piece of its own, copied by SAGE's staging (keyed by what
         * arrived: the source may have changed since the key was computed) or else by the caller's copy. */
        sage_stats_count(SAGE_STAT_SHARE_MISSES);
        sage_stats_add(SAGE_STAT_SHARE_BYTES_COPIED, n);
        job = share_upload_stage_begin(s, a, hi - lo,
                                       (const char *)src + (lo - o)); /* copying while the candidate is made */
        t = sage_now_ns();
        if (!(c = new_candidate(s, a, lo, hi, o, n))) {
                if (job)
                        share_stage_cancel(job);
                goto written;
        }
        t = lap(SAGE_STAT_SHARE_NS_REMAP, t);
        if (job && share_upload_stage_end(s, job, a, lo, hi, &content, NULL, NULL)) {
                c->content = content;
                c->key = by_file ? key : content;
                plan->lo = lo - o;
                plan->hi = hi - o;
                served = true;
        } else if (!by_file)
                c->key = c->content = key;
        else if (sage_share_content_key((const char *)src + (lo - o), hi - lo, &content) == 0) {
                c->key = key;
                c->content = content;
                lap(SAGE_STAT_SHARE_NS_KEY, t);
        } else
                c->candidate = false;
written:
        share_vmm_note_written(&s->vmm, a, o, n);
out:
        count_keys(pool);
        if ((head || tail) &&
            share_hint_image_ends(&s->vmm, a, o, n, lo, hi, src, served && plan->lo == lo - o && plan->hi == hi - o)) {
                plan->lo = 0; /* its ends kept in runs' images, its middle served */
                plan->hi = n;
        }
        share_vmm_discard_rests(&s->vmm); /* made for a replace that did not happen */
        pthread_mutex_unlock(&s->lock);
        return served;
}

/* ---------------------------------------------------------------- the app's copy calls */

/* One of the app's copies, to be made in part: its driver entry point and arguments. */
typedef enum CopyKind {
        COPY_HTOD,
        COPY_HTOD_ASYNC,
        COPY_UNIFIED,
        COPY_UNIFIED_ASYNC
} CopyKind;
typedef struct CopyCall {
        CopyKind kind;
        union {
                sage_fn_cuMemcpyHtoD_v2_t htod;
                sage_fn_cuMemcpyHtoDAsync_v2_t htod_async;
                sage_fn_cuMemcpy_t unified;
                sage_fn_cuMemcpyAsync_t unified_async;
        } real;
        CUdeviceptr dst;
        uintptr_t src; /* a host address, or a CUdeviceptr for the unified copies */
        size_t n;
        CUstream stream; /* as the app passed it */
        bool ptsz;       /* a _ptsz entry point: stream 0 is the per-thread stream */
} CopyCall;

/* Bytes [off, off+len) of the app's copy, through its own entry point. */
static CUresult copy_part(const CopyCall *c, size_t off, size_t len) {
        switch (c->kind) {
        case COPY_HTOD: return c->real.htod(c->dst + off, (const void *)(c->src + off), len);
        case COPY_HTOD_ASYNC: return c->real.htod_async(c->dst + off, (const void *)(c->src + off), len, c->stream);
        case COPY_UNIFIED: return c->real.unified(c->dst + off, c->src + off, len);
        case COPY_UNIFIED_ASYNC: return c->real.unified_async(c->dst + off, c->src + off, len, c->stream);
        }
        return CUDA_ERROR_INVALID_VALUE;
}

/* copy_part, its rate learned (share_cost.h) when it is long enough to tell. */
static CUresult timed_copy(SageShare *s, const CopyCall *c, size_t off, size_t len) {
        uint64_t t;
        CUresult r = sage_share_back(c->dst + off, len); /* unbacked granules it writes (share_backing.c) */

        if (r != CUDA_SUCCESS)
                return r;

        if (len < SHARE_COST_MIN_COPY || !atomic_load_explicit(&s->active, memory_order_relaxed))
                return copy_part(c, off, len);
        t = sage_now_ns();
        r = copy_part(c, off, len);
        t = sage_now_ns() - t;
        if (r == CUDA_SUCCESS) {
                pthread_mutex_lock(&s->lock);
                share_cost_copy(&s->cost, len, t);
                pthread_mutex_unlock(&s->lock);
        }
        return r;
}

/* Unified copies: an upload when the source is host memory, a device write otherwise. */
static bool host_source(SageShare *s, CUdeviceptr src) {
        CUmemorytype type = 0;
        CUresult r;

        if (!s->drv.pointer_get_attribute)
                return false;
        r = s->drv.pointer_get_attribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, src);
        return r == CUDA_ERROR_INVALID_VALUE || (r == CUDA_SUCCESS && type == CU_MEMORYTYPE_HOST);
}

static bool targets_shared_alloc(SageShare *s, CUdeviceptr dst, size_t n) {
        bool hit;

        if (!atomic_load_explicit(&s->active, memory_order_relaxed))
                return false;
        pthread_mutex_lock(&s->lock);
        hit = share_vmm_find(&s->vmm, dst, n) != NULL;
        pthread_mutex_unlock(&s->lock);
        return hit;
}

/*
 * Every upload entry point: the mapped middle is skipped, the ends around
 * it ([0, plan.lo) and [plan.hi, n)) are copied by the app's own call.
 */
static CUresult upload(const CopyCall *c) {
        SageShare *s = sage_share();
        bool async = c->kind == COPY_HTOD_ASYNC || c->kind == COPY_UNIFIED_ASYNC;
        UploadPlan plan = { 0 };
        CUresult r = CUDA_SUCCESS;
        uint64_t t0 = sage_now_ns();
        size_t first;

        /*
         * Across the edge of an app's VMM mapping (a tensor spanning two of
         * PyTorch's expandable segments): the part holding its start takes
         * the upload path; the rest is copied plainly, since a kernel given
         * the tensor's pointer reaches it from the other mapping, which the
         * launch guard would not see (share_vmm.c).
         */
        if ((first = sage_share_app_split(c->dst, c->n))) {
                CopyCall head = *c;
                head.n = first;
                if ((r = upload(&head)) != CUDA_SUCCESS)
                        return r;
                sage_share_before_write(c->dst + first, c->n - first);
                sage_stats_add(SAGE_STAT_SHARE_BYTES_COPIED, c->n - first);
                return copy_part(c, first, c->n - first);
        }
        if (c->kind == COPY_UNIFIED || c->kind == COPY_UNIFIED_ASYNC) {
                if (!targets_shared_alloc(s, c->dst, c->n)) {
                        /* It reads device memory, perhaps a predicted run (a pointer query only while any is). */
                        if (atomic_load_explicit(&s->vmm.unconfirmed, memory_order_relaxed) && !host_source(s, c->src))
                                sage_share_settle_runs();
                        sage_share_back_all(); /* its source may be memory SAGE backs */
                        return copy_part(c, 0, c->n);
                }
                if (!host_source(s, c->src)) {
                        sage_share_before_write(c->dst, c->n);
                        return copy_part(c, 0, c->n);
                }
        }
        if (!share_upload(s, c->dst, (const void *)c->src, c->n, async, sage_share_stream_of(c->stream, c->ptsz),
                          &plan))
                r = timed_copy(s, c, 0, c->n);
        else {
                if (plan.lo)
                        r = timed_copy(s, c, 0, plan.lo);
                if (r == CUDA_SUCCESS && plan.hi < c->n)
                        r = timed_copy(s, c, plan.hi, c->n - plan.hi);
        }
        /* The whole call, the app's copies included: what its parts (key, broker, remap, stage) leave over. */
        if (plan.ours) { /* the CPU time read within the call's time */
                sage_stats_add(SAGE_STAT_SHARE_NS_UPLOAD_CPU, sage_clock_ns(CLOCK_THREAD_CPUTIME_ID) - plan.cpu0);
                lap(SAGE_STAT_SHARE_NS_UPLOAD, t0);
        }
        return r;
}

#define UPLOAD_SYNC(name)                                                                                   \
        CUresult sage_impl_##name(sage_fn_##name##_t real, CUdeviceptr dst, const void *src, size_t n) {    \
                return upload(&(CopyCall){                                                                  \
                        .kind = COPY_HTOD, .real.htod = real, .dst = dst, .src = (uintptr_t)src, .n = n }); \
        }
#define UPLOAD_ASYNC(name, is_ptsz)                                                                                  \
        CUresult sage_impl_##name(sage_fn_##name##_t real, CUdeviceptr dst, const void *src, size_t n, CUstream s) { \
                return upload(&(CopyCall){ .kind = COPY_HTOD_ASYNC,                                                  \
                                           .real.htod_async = real,                                                  \
                                           .dst = dst,                                                               \
                                           .src = (uintptr_t)src,                                                    \
                                           .n = n,                                                                   \
                                           .stream = s,                                                              \
                                           .ptsz = is_ptsz });                                                       \
        }
UPLOAD_SYNC(cuMemcpyHtoD_v2)
UPLOAD_SYNC(cuMemcpyHtoD_v2_ptds)
UPLOAD_ASYNC(cuMemcpyHtoDAsync_v2, false)
UPLOAD_ASYNC(cuMemcpyHtoDAsync_v2_ptsz, true)

#define UNIFIED_SYNC(name)                                                                                          \
        CUresult sage_impl_##name(sage_fn_##name##_t real, CUdeviceptr dst, CUdeviceptr src, size_t n) {            \
                return upload(                                                                                      \
                        &(CopyCall){ .kind = COPY_UNIFIED, .real.unified = real, .dst = dst, .src = src, .n = n }); \
        }
#define UNIFIED_ASYNC(name, is_ptsz)                                                                                 \
        CUresult sage_impl_##name(sage_fn_##name##_t real, CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s) { \
                return upload(&(CopyCall){ .kind = COPY_UNIFIED_ASYNC,                                               \
                                           .real.unified_async = real,                                               \
                                           .dst = dst,                                                               \
                                           .src = src,                                                               \
                                           .n = n,                                                                   \
                                           .stream = s,                                                              \
                                           .ptsz = is_ptsz });                                                       \
        }
UNIFIED_SYNC(cuMemcpy)
UNIFIED_SYNC(cuMemcpy_ptds)
UNIFIED_ASYNC(cuMemcpyAsync, false)
UNIFIED_ASYNC(cuMemcpyAsync_ptsz, true)
