/*
 * Predicted remap (SAGE_SHARE_PREDICT, issue 14: "the cost of a hit").
 *
 * A whole-granule hit costs ~8 driver VMM calls and a broker round trip
 * at upload time: the fresh backing the allocator made is unmapped and
 * released, the rests are re-created, the extent imported and mapped. Yet
 * a program's next invocation allocates and uploads the same way: so each
 * allocation remembers, at exit, the pieces that one upload filled whole
 * (hits, and candidates it published) with their keys, per program, per
 * allocation size and ordinal (placement's key, share_place.c), in
 * DIR/predict-<program>. The next invocation asks the broker for all of an
 * allocation's keys at once when the allocation is made, maps each extent
 * where it was (import + map, one access call per run of adjacent ones)
 * and backs only the rest privately: nothing is created to be released.
 *
 * Such a piece is *unconfirmed*: a prediction, not a fact. Its upload
 * still hashes its source (a key is never trusted for bytes that may have
 * changed) and, equal, the piece becomes a hit like any other (its span
 * known to the launch guard) with no driver or broker call at all; else
 * the upload takes the usual path, which replaces it. Nothing may write an
 * unconfirmed piece: before the first launch or API write every one left
 * gets private backing, without a copy, since to the app it holds what no
 * upload wrote (uninitialized memory; a read shows the extent's bytes,
 * of the same namespace). The hint file is untrusted: parsed strictly and
 * bounded, a piece is used only on granules inside its allocation, and a
 * wrong one costs a lookup and a mapping, never a byte of the app's.
 */
#include "share_hint.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "log.h"
#include "share_place.h"
#include "stats.h"

static int cmp_hint(const void *x, const void *y) {
        const ShareHint *a = x, *b = y;

        if (a->size != b->size)
                return a->size < b->size ? -1 : 1;
        if (a->ordinal != b->ordinal)
                return a->ordinal < b->ordinal ? -1 : 1;
        return a->off < b->off ? -1 : a->off > b->off;
}

/* One line "size ordinal off len key", " run" after an assembled run's, nothing else after them. */
static bool parse_line(const char *line, ShareHint *out) {
        unsigned long long size, ordinal, off, len;
        char key[33];
        int end = -1;

        if (sscanf(line, "%llu %llu %llu %llu %32[0-9a-f]%n", &size, &ordinal, &off, &len, key, &end) != 5 || end < 0)
                return false;
        out->run = len && !strncmp(line + end, " run", 4);
        end += out->run ? 4 : 0;
        if ((line[end] != '\n' && line[end]) || strlen(key) != 32 || !size || ordinal > UINT32_MAX || (!len && off) ||
            off > UINT64_MAX - len || sage_hash_parse(key, &out->key) != 0)
                return false;
        out->size = size;
        out->ordinal = (uint32_t)ordinal;
        out->off = off;
        out->len = len;
        return true;
}

/* Room for n hints (at most SHARE_HINT_MAX). */
static bool reserve(ShareHints *h, size_t n) {
        size_t cap = h->cap ? h->cap : 64;
        ShareHint *grown;

        if (n <= h->cap)
                return true;
        while (cap < n)
                cap *= 2;
        if (n > SHARE_HINT_MAX || !(grown = realloc(h->hint, cap * sizeof(*grown))))
                return false;
        h->hint = grown;
        h->cap = cap;
        return true;
}

static void load(ShareHints *h) {
        FILE *f = fopen(h->path, "re");
        char line[160];

        if (!f)
                return;
        while (reserve(h, h->n + 1) && fgets(line, sizeof(line), f)) {
                if (!strchr(line, '\n') && !feof(f)) { /* too long: not ours; skip the rest of it */
                        int c;
                        while ((c = fgetc(f)) != EOF && c != '\n')
                                ;
                        continue;
                }
                h->n += parse_line(line, &h->hint[h->n]);
        }
        fclose(f);
        qsort(h->hint, h->n, sizeof(*h->hint), cmp_hint);
}

void share_hints_open(ShareHints *h, const char *dir) {
        share_hints_close(h);
        if (!dir || !*dir || !(h->path = share_place_file(dir, "predict")))
                return;
        load(h);
}

void share_hints_close(ShareHints *h) {
        free(h->path);
        free(h->hint);
        *h = (ShareHints){ 0 };
}

/* The first hint of (size, ordinal) or after it. */
static size_t first_of(const ShareHints *h, uint64_t size, uint32_t ordinal) {
        ShareHint key = { .size = size, .ordinal = ordinal, .off = 0 };
        size_t lo = 0, hi = h->n;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (cmp_hint(&h->hint[mid], &key) < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return lo;
}

static bool same_alloc(const ShareHint *x, uint64_t size, uint32_t ordinal) {
        return x->size == size && x->ordinal == ordinal;
}

/*
 * A line "size ordinal 0 0 key": the allocation's prediction was spoiled
 * once (its app writes or reuses the memory before the uploads: PyTorch's
 * deterministic mode fills every new tensor with a kernel, a C program
 * memsets a buffer, a caching allocator's segment holds other tensors
 * first), so it is never predicted again: each such run would pay the
 * lookups, imports and maps for pieces made private before their upload.
 */
static bool is_mark(const ShareHint *x) {
        return !x->len;
}

/* The hints of (size, ordinal): [*i0, *i1); true if they hold the mark. */
static bool range_of(const ShareHints *h, uint64_t size, uint32_t ordinal, size_t *i0, size_t *i1) {
        bool marked = false;

        *i0 = first_of(h, size, ordinal);
        for (*i1 = *i0; *i1 < h->n && same_alloc(&h->hint[*i1], size, ordinal); ++*i1)
                marked |= is_mark(&h->hint[*i1]);
        return marked;
}

size_t share_hints_for(const ShareHints *h, uint64_t size, uint32_t ordinal, size_t gran, size_t padded, Piece *out,
                       size_t cap) {
        size_t n = 0, end = 0, i0, i1;

        if (!h->path || !gran || range_of(h, size, ordinal, &i0, &i1))
                return 0;
        for (size_t i = i0; i < i1 && n < cap; i++) {
                const ShareHint *x = &h->hint[i];
                if (x->off % gran || x->len % gran || x->off < end || x->off > padded || x->len > padded - x->off)
                        continue;
                out[n++] = (Piece){ .off = x->off, .len = x->len, .key = x->key, .run_hint = x->run };
                end = x->off + x->len;
        }
        return n;
}

size_t share_hints_allocs(const ShareHints *h, uint64_t *size, uint32_t *ordinal, size_t cap) {
        size_t n = 0, i0, i1;

        for (size_t i = 0; h->path && i < h->n && n < cap; i = i1) {
                (void)range_of(h, h->hint[i].size, h->hint[i].ordinal, &i0, &i1); /* a marked one: no pieces */
                if (!(h->hint[i].ordinal & SHARE_HINT_APP_VMM)) {
                        size[n] = h->hint[i].size;
                        ordinal[n++] = h->hint[i].ordinal;
                }
        }
        return n;
}

/*
 * A piece one upload filled whole: a hit it mapped, or a candidate it
 * copied (published at exit); or an assembled run, hit or candidate.
 */
static bool learnable(const Piece *p) {
        return (p->extent_id || p->candidate) && (p->span_hi || p->nfilled) && !p->unconfirmed;
}

void share_hints_learn(ShareHints *h, const SageShareAlloc *a) {
        uint64_t size = a->size - a->lead;
        size_t i0, i1, n = 0, total;
        ShareHint *add;
        bool same;

        /* Runs left for idleness and never assembled (the process did not idle): last time's lines stand. */
        if (!h->path || (a->app_vmm && !(a->ordinal & SHARE_HINT_APP_VMM)) || a->no_share || a->ndue ||
            range_of(h, size, a->ordinal, &i0, &i1) || !(add = calloc(SHARE_HINT_PER_ALLOC, sizeof(*add))))
                return;
        if (a->predict_spoiled)
                add[n++] = (ShareHint){ .size = size, .ordinal = a->ordinal };
        for (size_t i = 0; i < a->npieces && n < SHARE_HINT_PER_ALLOC && !a->predict_spoiled; i++)
                if (learnable(&a->pieces[i]))
                        add[n++] = (ShareHint){ size,
                                                a->ordinal,
                                                a->pieces[i].off,
                                                a->pieces[i].len,
                                                a->pieces[i].key,
                                                a->pieces[i].nfilled > 0 };
        same = i1 - i0 == n;
        for (size_t k = 0; same && k < n; k++)
                same = h->hint[i0 + k].off == add[k].off && h->hint[i0 + k].len == add[k].len &&
                       sage_hash_equal(h->hint[i0 + k].key, add[k].key) && h->hint[i0 + k].run == add[k].run;
        total = h->n - (i1 - i0) + n;
        if (!same && reserve(h, total)) {
                memmove(&h->hint[i0 + n], &h->hint[i1], (h->n - i1) * sizeof(*h->hint));
                memcpy(&h->hint[i0], add, n * sizeof(*add));
                h->n = total;
                h->dirty = true;
        }
        free(add);
}

bool share_hints_has_run(const ShareHints *h, uint64_t size, uint32_t ordinal, size_t off, size_t len) {
        size_t i0, i1;

        if (!h->path || range_of(h, size, ordinal, &i0, &i1))
                return false;
        for (size_t i = i0; i < i1; i++)
                if (h->hint[i].run && h->hint[i].off == off && h->hint[i].len == len)
                        return true;
        return false;
}

static void write_hints(FILE *f, void *ctx) {
        const ShareHints *h = ctx;
        char key[33];

        for (size_t i = 0; i < h->n; i++) {
                sage_hash_format(h->hint[i].key, key);
                fprintf(f, "%llu %u %llu %llu %s%s\n", (unsigned long long)h->hint[i].size, h->hint[i].ordinal,
                        (unsigned long long)h->hint[i].off, (unsigned long long)h->hint[i].len, key,
                        h->hint[i].run ? " run" : "");
        }
}

int share_hints_save(ShareHints *h) {
        return h->path ? share_place_write(h->path, &h->dirty, write_hints, h) : 0;
}

/* ---------------------------------------------------------------- predicted pieces */

void share_hint_give_back(ShareVmm *v, Piece *pre, size_t n) {
        for (size_t k = 0; k < n; k++) {
                v->drv->vmm.release(pre[k].handle);
                if (v->release_extent)
                        v->release_extent(v->release_ctx, pre[k].extent_id);
                share_vmm_free_lists(&pre[k]);
        }
}

Piece *share_hint_unconfirmed_at(SageShareAlloc *a, size_t lo, size_t hi) {
        for (size_t i = 0; i < a->npieces && a->pieces[i].off <= lo; i++)
                if (a->pieces[i].off == lo && a->pieces[i].len == hi - lo && a->pieces[i].unconfirmed &&
                    !a->pieces[i].parked)
                        return &a->pieces[i];
        return NULL;
}

/* A predicted run's image and uploads gone (copied in, or overwritten whole). */
static void drop_image(Piece *p) {
        share_vmm_free_image(p);
        free(p->filled);
        p->filled = NULL;
        p->nfilled = 0;
}

void share_hint_confirm(ShareVmm *v, SageShareAlloc *a, Piece *p, size_t o, size_t n) {
        drop_image(p); /* a run's: one upload filled all of it, what the image held is overwritten */
        p->run_hint = false;
        p->unconfirmed = false;
        atomic_fetch_sub(&v->unconfirmed, 1);
        p->span_lo = o;
        p->span_hi = o + n;
        /* The whole upload, as a hit notes it (share_upload.c): its ends are the app's copy's. */
        share_vmm_note_written(v, a, o, n);
}

/* ---------------------------------------------------------------- predicted runs */

Piece *share_hint_run_at(SageShareAlloc *a, size_t o, size_t n) {
        for (size_t i = 0; i < a->npieces && a->pieces[i].off <= o; i++) {
                Piece *p = &a->pieces[i];
                if (p->run_hint && p->unconfirmed && !p->parked && o - p->off < p->len && n <= p->len - (o - p->off))
                        return p;
        }
        return NULL;
}

/* The part of [o, o+n) inside piece p: [*lo, *hi), false if none. */
static bool clip(const Piece *p, size_t o, size_t n, size_t *lo, size_t *hi) {
        *lo = o > p->off ? o : p->off;
        *hi = o + n < p->off + p->len ? o + n : p->off + p->len;
        return *lo < *hi;
}

/*
 * A run's image: zeros, in 2 MiB pages where THP allows (a run is whole
 * granules). The app waits for its page faults inside its upload: 4 KiB
 * pages made 100 MiB of small tensors cost 60-400 ms on a 2-core VM (a
 * copy into mapped memory: 8 ms; into 2 MiB pages: 15 ms).
 */
static unsigned char *new_image(size_t len) {
        void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

        if (m == MAP_FAILED)
                return NULL;
        (void)madvise(m, len, MADV_HUGEPAGE);
        return m;
}

size_t share_hint_images_wanted(const SageShareAlloc *a, size_t *idx, size_t *len, size_t cap) {
        size_t n = 0;

        for (size_t i = 0; i < a->npieces && n < cap; i++) {
                const Piece *p = &a->pieces[i];
                if (p->run_hint && p->unconfirmed && !p->image && !p->image_ahead) {
                        idx[n] = i;
                        len[n++] = p->len;
                }
        }
        return n;
}

unsigned char *share_hint_image_faulted(size_t len) {
        unsigned char *m = new_image(len);

        for (size_t k = 0; m && k < len; k += 4096) /* a write per page: THP's 2 MiB, else 4 KiB */
                ((volatile unsigned char *)m)[k] = 0;
        return m;
}

void share_hint_image_attach(SageShareAlloc *a, size_t i, unsigned char *image, size_t len) {
        Piece *p = i < a->npieces ? &a->pieces[i] : NULL;

        if (!image)
                return;
        if (p && p->len == len && p->run_hint && p->unconfirmed && !p->image && !p->image_ahead) {
                p->image_ahead = image;
                sage_stats_count(SAGE_STAT_SHARE_IMAGES_AHEAD);
        } else {
                munmap(image, len);
        }
}

bool share_hint_image(Piece *p, size_t o, size_t n, const void *src) {
        Range *grown;
        size_t at = p->nfilled, lo, hi;

        if (!clip(p, o, n, &lo, &hi) || !(grown = realloc(p->filled, (p->nfilled + 1) * sizeof(*grown))))
                return false;
        p->filled = grown;
        if (!p->image && p->image_ahead) {
                p->image = p->image_ahead;
                p->image_ahead = NULL;
                sage_stats_count(SAGE_STAT_SHARE_IMAGES_AHEAD_TAKEN);
        }
        if (!p->image && !(p->image = new_image(p->len)))
                return false;
        while (at && grown[at - 1].off > o) /* kept sorted, as assembly's (uploads come in order: none moves) */
                at--;
        memmove(&grown[at + 1], &grown[at], (p->nfilled - at) * sizeof(*grown));
        grown[at] = (Range){ o, n }; /* the whole upload, as assembly's: a kernel points at its start */
        p->nfilled++;
        memcpy(p->image + (lo - p->off), (const char *)src + (lo - o), hi - lo);
        return true;
}

Piece *share_hint_end_run(SageShareAlloc *a, size_t o, size_t n, size_t lo, size_t hi, bool head) {
        Piece *p = head ? (lo > o ? share_hint_run_at(a, o, lo - o) : NULL)
                        : (o + n > hi ? share_hint_run_at(a, hi, o + n - hi) : NULL);

        return lo < hi && p && (head ? p->off + p->len == lo : p->off == hi) ? p : NULL;
}

bool share_hint_image_ends(ShareVmm *v, SageShareAlloc *a, size_t o, size_t n, size_t lo, size_t hi, const void *src,
                           bool served) {
        Piece *head = share_hint_end_run(a, o, n, lo, hi, true), *tail = share_hint_end_run(a, o, n, lo, hi, false);
        bool spoiled = a->predict_spoiled;

        if (served && (lo == o || head) && (hi == o + n || tail) && (!head || share_hint_image(head, o, n, src)) &&
            (!tail || share_hint_image(tail, o, n, src)))
                return true;
        share_vmm_before_write(v, a, o, lo - o);
        share_vmm_before_write(v, a, hi, o + n - hi);
        a->predict_spoiled = spoiled; /* the runs' prediction held: what their neighbour's middle got differed */
        return false;
}

/*
 * Private piece p, a predicted run until now, still holds its image and
 * uploads (share_vmm_privatize keeps them): each upload copied in from the
 * image, noted as an upload (assembly keys it at this launch), the image
 * freed. On a non-blocking stream of its own, waited for in the relaxed
 * capture mode: the legacy stream would join a capture on a blocking
 * stream, which the driver refuses; a stream of its own joins none.
 */
static void flush(ShareVmm *v, SageShareAlloc *a, Piece *p) {
        const SageShareDriver *d = v->drv;
        CUcontext popped;
        CUstream st = NULL;
        CUstreamCaptureMode mode = CU_STREAM_CAPTURE_MODE_RELAXED;
        bool pushed = d->ctx_push(a->ctx) == CUDA_SUCCESS, own, relaxed;

        own = d->stream_create && d->copy_htod_async && d->stream_synchronize && d->stream_destroy &&
              d->stream_create(&st, CU_STREAM_NON_BLOCKING) == CUDA_SUCCESS;
        for (size_t i = 0, lo, hi; i < p->nfilled; i++) { /* the uploads, where they fall in the run */
                const unsigned char *from;
                if (!clip(p, p->filled[i].off, p->filled[i].len, &lo, &hi))
                        continue;
                from = p->image + (lo - p->off);
                if ((own ? d->copy_htod_async(a->va + lo, from, hi - lo, st)
                         : d->copy_htod(a->va + lo, from, hi - lo)) != CUDA_SUCCESS)
                        sage_warn("share: cannot copy an upload kept for %p+%zu", (void *)(uintptr_t)(a->va + lo),
                                  hi - lo);
                share_vmm_note_written(v, a, lo, hi - lo);
        }
        if (own) {
                relaxed = d->exchange_capture_mode && d->exchange_capture_mode(&mode) == CUDA_SUCCESS;
                d->stream_synchronize(st); /* done before the app's next work, on whatever stream */
                if (relaxed)
                        d->exchange_capture_mode(&mode);
                d->stream_destroy(st);
        }
        if (pushed)
                d->ctx_pop(&popped);
        drop_image(p);
}

/* share_vmm_privatize, and a predicted run's uploads kept on its image copied in. */
static bool privatize(ShareVmm *v, SageShareAlloc *a, size_t i) {
        if (!share_vmm_privatize(v, a, i))
                return false; /* the piece as it was: an image stays with it */
        flush(v, a, &a->pieces[i]);
        return true;
}

/*
 * Here, not in share_alloc.c, as it privatizes: shared pieces of `a`
 * overlapping [off, off+len) become private, candidates there are dropped.
 */
void share_vmm_before_write(ShareVmm *v, SageShareAlloc *a, size_t off, size_t len) {
        for (size_t i = 0; i < a->npieces; i++)
                if (a->pieces[i].off < off + len && off < a->pieces[i].off + a->pieces[i].len)
                        share_vmm_drop_candidate(a, &a->pieces[i], "written by an API call or another upload");
        for (size_t i = 0; i < a->npieces; i++)
                if (a->pieces[i].extent_id && a->pieces[i].off < off + len && off < a->pieces[i].off + a->pieces[i].len)
                        privatize(v, a, i);
}

/* Its image has the run's key: a hit as assembly would have mapped it (its uploads its filled ranges). */
static bool confirm_run(ShareVmm *v, Piece *p, int (*key)(const void *, size_t, SageHash *)) {
        SageHash got;
        size_t bytes = 0;

        if (!key || !p->image || !p->nfilled || key(p->image, p->len, &got) != 0 || !sage_hash_equal(got, p->key))
                return false;
        for (size_t i = 0, lo, hi; i < p->nfilled; i++)
                bytes += clip(p, p->filled[i].off, p->filled[i].len, &lo, &hi) ? hi - lo : 0;
        share_vmm_free_image(p);
        p->run_hint = p->unconfirmed = false;
        atomic_fetch_sub(&v->unconfirmed, 1);
        p->span_lo = p->filled[0].off < p->off ? p->filled[0].off : p->off;
        sage_stats_count(SAGE_STAT_SHARE_PREDICTED_RUNS);
        sage_stats_count(SAGE_STAT_SHARE_ASSEMBLED); /* keyed from its image */
        sage_stats_count(SAGE_STAT_SHARE_ASSEMBLED_HITS);
        sage_stats_add(SAGE_STAT_SHARE_BYTES_ASSEMBLED, bytes);
        return true;
}

size_t share_hint_unshare_all(ShareVmm *v, int (*key)(const void *, size_t, SageHash *), bool runs_only) {
        size_t failed = 0;

        if (!atomic_load(&v->unconfirmed))
                return 0;
        for (SageShareAlloc *a = v->allocs; a; a = a->next)
                for (size_t i = 0; i < a->npieces; i++) {
                        Piece *p = &a->pieces[i];
                        if (p->unconfirmed && !p->parked && (p->image || !runs_only) && !confirm_run(v, p, key) &&
                            !privatize(v, a, i))
                                failed++;
                }
        return failed;
}
