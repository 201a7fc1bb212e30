/*
 * The launch guard of sharing (share.c): a kernel must never write a piece
 * mapped read-only (the fault is sticky, and under MPS it kills the
 * neighbours too), so read-only is learned and checked per kernel parameter.
 *
 * Every kernel launch of a process that holds candidate or shared pieces is
 * scanned: each 8-byte word of its parameters (structs included; layout from
 * cuFuncGetParamInfo) that points into a piece's span (from the start of the
 * upload that filled it to its end) names a "use": the kernel's name, the
 * parameter and the word within it.
 * - In the process that uploads a candidate, its uses are recorded. When the
 *   candidate is published (verified unchanged), the uses go with it as the
 *   extent's notes: these kernel parameters read it and never changed it.
 * - In a process that maps the extent, a launch with a use not among those
 *   notes first gives the piece private backing (content copied), so an
 *   unexpected writer writes its own copy. A piece with no notes (too many
 *   uses, or the broker could not keep them) is private at its first use.
 *
 * Not seen: pointers a kernel reads from device memory (pointer arrays),
 * kernel nodes added to graphs by hand (captured launches are scanned), and
 * pointers outside a piece's span that a kernel offsets into it.
 */
#include "share_guard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "stats.h"

#define MAX_PARAMS 256
#define LAYOUT_SLOTS SHARE_GUARD_LAYOUT_SLOTS
#define NOTES_MAGIC 0x314e4753u /* "SGN1" */

typedef ShareLayout Layout;

bool share_guard_available(const SageShareDriver *drv) {
        return drv->func_get_param_info && drv->func_get_name;
}

void share_guard_clear(ShareGuard *g) {
        for (size_t i = 0; i < LAYOUT_SLOTS; i++) {
                free(g->layouts[i].offset);
                free(g->layouts[i].size);
        }
        memset(g, 0, sizeof(*g));
}

/* CUDA_ERROR_INVALID_VALUE past the last parameter; anything else: the driver cannot tell. */
static CUresult query_param(const SageShareDriver *drv, CUfunction f, size_t i, size_t *off, size_t *size) {
        CUresult r = drv->func_get_param_info(f, i, off, size);

        if (r == CUDA_SUCCESS || r == CUDA_ERROR_INVALID_VALUE || !drv->kernel_get_param_info)
                return r;
        return drv->kernel_get_param_info((CUkernel)f, i, off, size);
}

static const char *query_name(const SageShareDriver *drv, CUfunction f) {
        const char *name = NULL;

        if (drv->func_get_name(&name, f) == CUDA_SUCCESS && name)
                return name;
        if (drv->kernel_get_name && drv->kernel_get_name(&name, (CUkernel)f) == CUDA_SUCCESS && name)
                return name;
        return NULL;
}

/* The parameter layout of f, NULL when the driver cannot tell. */
static const Layout *layout_of(ShareGuard *g, const SageShareDriver *drv, CUfunction f) {
        size_t slot = ((uintptr_t)f >> 4) * 0x9e3779b97f4a7c15ull % LAYOUT_SLOTS;
        size_t off[MAX_PARAMS], size[MAX_PARAMS];
        const char *name;
        Layout *l = NULL;
        CUresult r = CUDA_ERROR_INVALID_VALUE;
        unsigned n = 0;

        for (size_t probe = 0; probe < LAYOUT_SLOTS; probe++) {
                l = &g->layouts[(slot + probe) % LAYOUT_SLOTS];
                if (l->func == (const void *)f)
                        return l->n == UINT32_MAX ? NULL : l;
                if (!l->func)
                        break;
        }
        if (g->nlayouts >= LAYOUT_SLOTS * 3 / 4 || !l || l->func)
                return NULL;
        name = query_name(drv, f);
        while (n < MAX_PARAMS && (r = query_param(drv, f, n, &off[n], &size[n])) == CUDA_SUCCESS)
                n++;
        l->func = (const void *)f;
        g->nlayouts++;
        if (!name || n == MAX_PARAMS || r != CUDA_ERROR_INVALID_VALUE ||
            !(l->offset = calloc(n + 1, sizeof(uint32_t))) || !(l->size = calloc(n + 1, sizeof(uint32_t)))) {
                l->n = UINT32_MAX; /* unknown: every use of a piece is unexpected */
                return NULL;
        }
        l->name = sage_hash(name, strlen(name)).low;
        l->n = n;
        for (unsigned i = 0; i < n; i++) {
                l->offset[i] = (uint32_t)off[i];
                l->size[i] = (uint32_t)size[i];
        }
        return l;
}

static uint64_t use_key(uint64_t name, unsigned param, unsigned word) {
        struct {
                uint64_t name;
                uint32_t param, word;
        } k = { name, param, word };
        return sage_hash(&k, sizeof(k)).low | 1; /* never 0 */
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
        return x < y ? -1 : x > y;
}

static void record(Piece *p, uint64_t key) {
        uint64_t *s;

        if (p->seen_overflow)
                return;
        for (size_t i = 0; i < p->nseen; i++)
                if (p->seen[i] == key)
                        return;
        if (p->nseen == SAGE_SHARE_MAX_USES) {
                p->seen_overflow = true;
                return;
        }
        if (!(s = realloc(p->seen, (p->nseen + 1) * sizeof(*s)))) {
                p->seen_overflow = true;
                return;
        }
        p->seen = s;
        p->seen[p->nseen++] = key;
}

static bool allowed(const Piece *p, uint64_t key) {
        return p->allow && bsearch(&key, p->allow, p->nallow, sizeof(key), cmp_u64);
}

static bool in_filled(const Piece *p, size_t off) {
        for (size_t i = 0; i < p->nfilled; i++)
                if (off >= p->filled[i].off && off - p->filled[i].off < p->filled[i].len)
                        return true;
        return false;
}

/*
 * A kernel points at `off` of `a`, between the uploads of an assembled run:
 * remembered when it lies after every upload, in the granule where they
 * end (the pool's free tail, where learned placement helps: share_place.c).
 */
static void note_gap_use(SageShareAlloc *a, size_t off) {
        size_t end = 0;

        if (a->tail_seen)
                return;
        for (size_t i = 0; i < a->nwritten; i++)
                if (a->written[i].off + a->written[i].len > end)
                        end = a->written[i].off + a->written[i].len;
        if (end && off >= end && off / a->gran == (end - 1) / a->gran) {
                a->tail_use = off - a->lead;
                a->tail_seen = true;
        }
}

/* Shared piece i of `a` is used unexpectedly: private now, or once no capture is open. */
static bool unshare(ShareVmm *vmm, SageShareAlloc *a, size_t i, ShareGuardWhen when) {
        if (when == SHARE_GUARD_NOW)
                return share_vmm_privatize(vmm, a, i);
        a->pieces[i].private_due = true;
        atomic_store(&vmm->private_due, true);
        return false; /* counted when settled */
}

void share_guard_settle(ShareVmm *v) {
        bool left = false;

        if (!atomic_exchange(&v->private_due, false))
                return;
        for (SageShareAlloc *a = v->allocs; a; a = a->next)
                for (size_t i = 0; i < a->npieces; i++) {
                        Piece *p = &a->pieces[i];
                        if (!p->private_due)
                                continue;
                        if (p->parked) /* mapped shared again at resume: still due */
                                left = true;
                        else if (!p->extent_id) /* made private meanwhile */
                                p->private_due = false;
                        else if (share_vmm_privatize(v, a, i)) /* the piece is a new one, not due */
                                sage_stats_count(SAGE_STAT_SHARE_GUARD_UNSHARED);
                        else
                                left = true; /* the synchronize refused (a capture open): due still */
                }
        if (left)
                atomic_store(&v->private_due, true);
}

/* A captured launch's use of `a` at `off`: kept for the hits its graph may outlive. */
static void note_graph_use(SageShareAlloc *a, size_t off, uint64_t key) {
        ShareGraphUse *grown;

        for (size_t i = 0; i < a->ngraph_uses; i++)
                if (a->graph_uses[i].off == off && a->graph_uses[i].key == key)
                        return;
        if (a->ngraph_uses == SHARE_GUARD_GRAPH_USES ||
            !(grown = realloc(a->graph_uses, (a->ngraph_uses + 1) * sizeof(*grown)))) {
                a->graph_uses_lost = true;
                return;
        }
        a->graph_uses = grown;
        a->graph_uses[a->ngraph_uses++] = (ShareGraphUse){ off, key };
}

bool share_guard_due_over(const SageShareAlloc *a, size_t i0, size_t i1, const Piece *with) {
        if (!with->extent_id)
                return false;
        for (size_t i = i0; i < i1; i++)
                if (a->pieces[i].private_due)
                        return true;
        for (size_t i = 0; i < a->ngraph_uses; i++) {
                const ShareGraphUse *u = &a->graph_uses[i];
                if (u->off >= with->span_lo && u->off < with->off + with->len && !allowed(with, u->key))
                        return true;
        }
        return a->graph_uses_lost;
}

/* One word of a launch's parameters: a use of a piece? */
static void check_word(ShareVmm *vmm, uint64_t v, uint64_t key_name, unsigned param, unsigned word,
                       ShareGuardWhen when) {
        SageShareAlloc *a = share_vmm_find(vmm, (CUdeviceptr)v, 1);

        if (!a)
                return;
        if (when == SHARE_GUARD_CAPTURED)
                note_graph_use(a, (size_t)(v - a->va), use_key(key_name, param, word));
        for (size_t i = 0; i < a->npieces; i++) {
                Piece *p = &a->pieces[i];
                size_t off = (size_t)(v - a->va);
                if (!p->candidate && !p->extent_id)
                        continue;
                if (off < p->span_lo || off >= p->off + p->len)
                        continue;
                if (p->nfilled && !in_filled(p, off)) {
                        /* Between the uploads of an assembled run: a buffer, not weights. */
                        note_gap_use(a, off);
                        if (p->candidate) {
                                char why[96];
                                snprintf(why, sizeof(why), "kernel parameter %u points between its uploads (+%zu)",
                                         param, off - p->off);
                                share_vmm_drop_candidate(a, p, why);
                        } else if (unshare(vmm, a, i, when)) {
                                sage_stats_count(SAGE_STAT_SHARE_GUARD_UNSHARED);
                        }
                        continue;
                }
                if (p->candidate) {
                        record(p, use_key(key_name, param, word));
                } else if (!allowed(p, use_key(key_name, param, word)) && unshare(vmm, a, i, when)) {
                        sage_stats_count(SAGE_STAT_SHARE_GUARD_UNSHARED);
                }
        }
}

static void *param_buffer(void **extra) {
        for (size_t i = 0; extra && extra[i] != CU_LAUNCH_PARAM_END; i += 2)
                if (extra[i] == CU_LAUNCH_PARAM_BUFFER_POINTER)
                        return extra[i + 1];
        return NULL;
}

void share_guard_scan(ShareGuard *g, ShareVmm *vmm, CUfunction f, void **params, void **extra, ShareGuardWhen when) {
        const Layout *l;
        char *buffer = params ? NULL : param_buffer(extra);

        if (!f)
                return;
        if (!(l = layout_of(g, vmm->drv, f))) {
                /* Unknown layout: no use can be told apart, so none is expected. */
                sage_stats_count(SAGE_STAT_SHARE_GUARD_UNKNOWN);
                for (SageShareAlloc *a = vmm->allocs; a; a = a->next)
                        for (size_t i = 0; i < a->npieces; i++)
                                if (a->pieces[i].extent_id)
                                        unshare(vmm, a, i, when);
                return;
        }
        for (unsigned i = 0; i < l->n; i++) {
                const char *value = params ? params[i] : buffer ? buffer + l->offset[i] : NULL;
                if (!value)
                        continue;
                for (unsigned w = 0; w + 8 <= l->size[i]; w += 8) {
                        uint64_t v;
                        memcpy(&v, value + w, sizeof(v));
                        if (v >= vmm->lo_va && v < vmm->hi_va)
                                check_word(vmm, v, l->name, i, w / 8, when);
                }
        }
}

/* ---------------------------------------------------------------- notes */

void *share_notes_build(const Piece *p, uint32_t *len) {
        uint32_t *notes;
        size_t n = p->nseen;

        if (p->seen_overflow || 8 + n * 8 > SAGE_SHARE_NOTES_MAX || !(notes = malloc(8 + n * 8)))
                return NULL;
        notes[0] = NOTES_MAGIC;
        notes[1] = (uint32_t)n;
        if (n) {
                memcpy(notes + 2, p->seen, n * 8);
                qsort(notes + 2, n, 8, cmp_u64);
        }
        *len = (uint32_t)(8 + n * 8);
        return notes;
}

void share_notes_apply(Piece *p, const void *notes, uint32_t len) {
        uint32_t head[2];

        free(p->allow);
        p->allow = NULL;
        p->nallow = 0;
        if (len < 8)
                return;
        memcpy(head, notes, sizeof(head));
        if (head[0] != NOTES_MAGIC || (uint64_t)head[1] * 8 + 8 != len || !head[1])
                return;
        if (!(p->allow = malloc((size_t)head[1] * 8)))
                return;
        memcpy(p->allow, (const char *)notes + 8, (size_t)head[1] * 8);
        p->nallow = head[1];
        for (size_t i = 1; i < p->nallow; i++)
                if (p->allow[i - 1] > p->allow[i]) { /* not sorted: not ours */
                        free(p->allow);
                        p->allow = NULL;
                        p->nallow = 0;
                        return;
                }
}
