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

#include "share_place.h"

static int cmp_hint(const void *x, const void *y) {
        const ShareHint *a = x, *b = y;

        if (a->size != b->size)
                return a->size < b->size ? -1 : 1;
        if (a->ordinal != b->ordinal)
                return a->ordinal < b->ordinal ? -1 : 1;
        return a->off < b->off ? -1 : a->off > b->off;
}

/* One line "size ordinal off len key": all five fields, nothing after them. */
static bool parse_line(const char *line, ShareHint *out) {
        unsigned long long size, ordinal, off, len;
        char key[33];
        int end = -1;

        if (sscanf(line, "%llu %llu %llu %llu %32[0-9a-f]%n", &size, &ordinal, &off, &len, key, &end) != 5 || end < 0 ||
            (line[end] != '\n' && line[end]) || strlen(key) != 32 || !size || ordinal > UINT32_MAX || (!len && off) ||
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
                out[n++] = (Piece){ .off = x->off, .len = x->len, .key = x->key };
                end = x->off + x->len;
        }
        return n;
}

/* A piece one upload filled whole: a hit it mapped, or a candidate it copied (published at exit). */
static bool learnable(const Piece *p) {
        return (p->extent_id || p->candidate) && p->span_hi && !p->nfilled && !p->unconfirmed;
}

void share_hints_learn(ShareHints *h, const SageShareAlloc *a) {
        uint64_t size = a->size - a->lead;
        size_t i0, i1, n = 0, total;
        ShareHint *add;
        bool same;

        if (!h->path || a->app_vmm || a->no_share || range_of(h, size, a->ordinal, &i0, &i1) ||
            !(add = calloc(SHARE_HINT_PER_ALLOC, sizeof(*add))))
                return;
        if (a->predict_spoiled)
                add[n++] = (ShareHint){ size, a->ordinal, 0, 0, { 0 } };
        for (size_t i = 0; i < a->npieces && n < SHARE_HINT_PER_ALLOC && !a->predict_spoiled; i++)
                if (learnable(&a->pieces[i]))
                        add[n++] =
                                (ShareHint){ size, a->ordinal, a->pieces[i].off, a->pieces[i].len, a->pieces[i].key };
        same = i1 - i0 == n;
        for (size_t k = 0; same && k < n; k++)
                same = h->hint[i0 + k].off == add[k].off && h->hint[i0 + k].len == add[k].len &&
                       sage_hash_equal(h->hint[i0 + k].key, add[k].key);
        total = h->n - (i1 - i0) + n;
        if (!same && reserve(h, total)) {
                memmove(&h->hint[i0 + n], &h->hint[i1], (h->n - i1) * sizeof(*h->hint));
                memcpy(&h->hint[i0], add, n * sizeof(*add));
                h->n = total;
                h->dirty = true;
        }
        free(add);
}

static void write_hints(FILE *f, void *ctx) {
        const ShareHints *h = ctx;
        char key[33];

        for (size_t i = 0; i < h->n; i++) {
                sage_hash_format(h->hint[i].key, key);
                fprintf(f, "%llu %u %llu %llu %s\n", (unsigned long long)h->hint[i].size, h->hint[i].ordinal,
                        (unsigned long long)h->hint[i].off, (unsigned long long)h->hint[i].len, key);
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

void share_hint_confirm(ShareVmm *v, SageShareAlloc *a, Piece *p, size_t o, size_t n) {
        p->unconfirmed = false;
        atomic_fetch_sub(&v->unconfirmed, 1);
        p->span_lo = o;
        p->span_hi = o + n;
        /* The whole upload, as a hit notes it (share_upload.c): its ends are the app's copy's. */
        share_vmm_note_written(v, a, o, n);
}

size_t share_hint_unshare_all(ShareVmm *v) {
        size_t failed = 0;

        if (!atomic_load(&v->unconfirmed))
                return 0;
        for (SageShareAlloc *a = v->allocs; a; a = a->next)
                for (size_t i = 0; i < a->npieces; i++)
                        if (a->pieces[i].unconfirmed && !a->pieces[i].parked && !share_vmm_privatize(v, a, i))
                                failed++;
        return failed;
}
