/*
 * Assembly: sharing what no single upload covers whole (SAGE_SHARE_ASSEMBLE).
 *
 * Only the whole granules of one upload are keyed when it happens. What is
 * left (the ends of every upload, and granules that a framework's pool fills
 * with many small tensors) is keyed later, "assembled": at the first launch
 * or API write after the uploads, while the allocation still holds nothing
 * but uploaded bytes, each maximal run of such granules is read back and
 * keyed by its whole content (gaps included, so the key says exactly what a
 * mapping would show). The broker holding it: the run maps its extent and
 * the private backing goes. Else the run becomes a candidate, published at
 * free or exit if unchanged. Kernels pointing into the gaps between the
 * uploads (buffers the pool put there later) make a candidate unpublishable
 * and a shared run private first (share_guard.c): gaps are not weights.
 */
#include <cuda.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "share_assemble.h"

#include "share_guard.h"
#include "share_publish.h"
#include "stats.h"

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

void share_assemble_skip(SageShareAlloc *a, size_t off, size_t len) {
        Range *r;

        if (a->nplain && a->plain[a->nplain - 1].off + a->plain[a->nplain - 1].len == off) {
                a->plain[a->nplain - 1].len += len;
                return;
        }
        if (a->nplain == MAX_PLAIN || !(r = realloc(a->plain, (a->nplain + 1) * sizeof(*r))))
                return;
        a->plain = r;
        a->plain[a->nplain++] = (Range){ off, len };
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

/*
 * Key run [lo, hi) of `a` by its content; map the extent `lk` holds or make
 * it a candidate. False: the lookup is gone (no more runs). Synced.
 */
static bool assemble_run(ShareVmm *v, SageShareAlloc *a, const ShareLookup *lk, const Range *w, size_t nw, size_t lo,
                         size_t hi, void *buf) {
        Piece piece = { .off = lo, .len = hi - lo };
        const void *notes = NULL;
        uint64_t extent_id = 0;
        uint32_t notes_len = 0;
        int fd = -1, r;

        if (!attach_filled(w, nw, lo, hi, &piece))
                return true;
        if (share_device_content(v, a->va + lo, hi - lo, buf, &piece.key) < 0) {
                share_vmm_free_lists(&piece);
                return true;
        }
        sage_stats_count(SAGE_STAT_SHARE_ASSEMBLED);
        r = lk->lookup(lk->ctx, piece.key, hi - lo, a->broker_dev, &extent_id, &fd, &notes, &notes_len);
        if (r < 0) {
                share_vmm_free_lists(&piece);
                return false;
        }
        if (r == 0 && fd >= 0) {
                size_t bytes = filled_bytes(&piece);

                piece.extent_id = extent_id;
                share_notes_apply(&piece, notes, notes_len);
                if (share_vmm_map_extent(v, a, &piece, fd)) {
                        sage_stats_count(SAGE_STAT_SHARE_ASSEMBLED_HITS);
                        sage_stats_add(SAGE_STAT_SHARE_BYTES_ASSEMBLED, bytes);
                }
                return true;
        }
        /* A miss: a candidate. A run that is one piece already just becomes one; else it gets its own backing. */
        piece.candidate = true;
        piece.content = piece.key;
        for (size_t i = 0; i < a->npieces; i++) {
                Piece *p = &a->pieces[i];
                if (p->off == lo && p->len == hi - lo) {
                        piece.handle = p->handle;
                        *p = piece;
                        return true;
                }
        }
        if (share_vmm_copy_into_new(v, a, lo, hi - lo, &piece.handle) != CUDA_SUCCESS) {
                share_vmm_free_lists(&piece);
                return true;
        }
        if (share_vmm_replace_range(v, a, lo, hi, &piece) != CUDA_SUCCESS) {
                v->drv->vmm.release(piece.handle);
                share_vmm_free_lists(&piece);
                sage_stats_count(SAGE_STAT_SHARE_FALLBACKS);
        }
        return true;
}

bool share_assemble_allocation(ShareVmm *v, SageShareAlloc *a, const ShareLookup *lk, void *buf) {
        Range *w;
        size_t nw = a->nwritten, j = 0, run = SIZE_MAX;
        bool run_alone = false, on = true;

        if (!nw || !(w = malloc(nw * sizeof(*w))))
                return true;
        memcpy(w, a->written, nw * sizeof(*w));
        qsort(w, nw, sizeof(*w), cmp_range);
        for (size_t g = 0; g <= a->padded && on; g += a->gran) {
                bool pending = false, alone = false;

                while (j < nw && w[j].off + w[j].len <= g)
                        j++;
                if (g < a->padded) {
                        pending = j < nw && w[j].off < g + a->gran && granule_private(a, g);
                        alone = pending && gappy(w, nw, j, g, g + a->gran < a->size ? g + a->gran : a->size);
                }
                /* A granule with room for other buffers is a run of its own: a buffer there loses only it. */
                if (run != SIZE_MAX && (!pending || alone || g - run == ASSEMBLE_MAX_RUN || run_alone)) {
                        on = assemble_run(v, a, lk, w, nw, run, g, buf);
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
        return on;
}
