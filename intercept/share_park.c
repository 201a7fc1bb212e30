/*
 * Suspend's park and unpark of broker extents (share_alloc.h, docs/suspend.md).
 *
 * Apart from the allocator because the resume path is its own concern: what
 * it costs beyond the driver's restore is counted in docs/suspend.md ("What
 * a resume costs"), and everything here serves keeping that small: one
 * broker exchange for every parked key, one import and one map per extent,
 * one access call per run of adjacent ones.
 */
#include <stdlib.h>
#include <unistd.h>

#include "share_alloc.h"

size_t share_vmm_park(ShareVmm *v) {
        size_t n = 0;

        for (SageShareAlloc *a = v->allocs; a; a = a->next)
                for (size_t i = 0; i < a->npieces; i++) {
                        Piece *p = &a->pieces[i];
                        n += p->parked;
                        if (!p->extent_id)
                                continue;
                        v->drv->vmm.unmap(a->va + p->off, p->len);
                        v->drv->vmm.release(p->handle);
                        if (v->release_extent)
                                v->release_extent(v->release_ctx, p->extent_id);
                        p->handle = 0;
                        p->extent_id = 0;
                        p->parked = true;
                        n++;
                }
        return n;
}

/* Map parked piece `p` of `a` again from its looked-up extent (its access is granted by the caller, per run). */
static bool unpark_one(ShareVmm *v, SageShareAlloc *a, Piece *p, const ShareParkedLookup *l) {
        CUmemGenericAllocationHandle h;

        if (l->fd < 0 || !l->extent_id)
                return false;
        if (v->drv->import_fd(&h, (void *)(uintptr_t)l->fd, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) != CUDA_SUCCESS) {
                v->release_extent(v->release_ctx, l->extent_id);
                return false;
        }
        if (v->drv->vmm.map(a->va + p->off, p->len, 0, h, 0) != CUDA_SUCCESS) {
                v->drv->vmm.release(h);
                v->release_extent(v->release_ctx, l->extent_id);
                return false;
        }
        p->handle = h;
        p->extent_id = l->extent_id;
        p->parked = false;
        return true;
}

/* Every parked piece's key, in the order unpark walks them; the broker answers them all at once. */
static ShareParkedLookup *lookup_parked(ShareVmm *v, ShareLookupFn lookup, void *ctx, size_t *n_out) {
        ShareParkedLookup *ls;
        size_t n = 0;

        for (SageShareAlloc *a = v->allocs; a; a = a->next)
                for (size_t i = 0; i < a->npieces; i++)
                        n += a->pieces[i].parked;
        *n_out = n;
        if (!n || !(ls = calloc(n, sizeof(*ls))))
                return NULL;
        n = 0;
        for (SageShareAlloc *a = v->allocs; a; a = a->next)
                for (size_t i = 0; i < a->npieces; i++)
                        if (a->pieces[i].parked)
                                /* The broker names the GPU by its ordinal, not ours (CUDA_VISIBLE_DEVICES). */
                                ls[n++] = (ShareParkedLookup){ .key = a->pieces[i].key,
                                                               .len = a->pieces[i].len,
                                                               .device = a->broker_dev,
                                                               .fd = -1 };
        lookup(ctx, ls, n);
        return ls;
}

size_t share_vmm_unpark(ShareVmm *v, ShareLookupFn lookup, void *ctx) {
        size_t failed = 0, n, next = 0;
        ShareParkedLookup *ls = lookup_parked(v, lookup, ctx, &n);

        if (!ls)
                return n; /* nothing parked, or no memory to ask: all stay parked */
        for (SageShareAlloc *a = v->allocs; a; a = a->next) {
                size_t run = 0, run_end = 0; /* [run, run_end): pieces mapped again, adjacent */
                bool in_run = false;

                for (size_t i = 0; i <= a->npieces; i++) {
                        bool mapped = false;
                        if (i < a->npieces && a->pieces[i].parked) {
                                mapped = unpark_one(v, a, &a->pieces[i], &ls[next]);
                                if (ls[next].fd >= 0)
                                        close(ls[next].fd);
                                next++;
                                failed += !mapped;
                        }
                        if (mapped && !in_run) {
                                in_run = true;
                                run = i;
                        }
                        if (mapped) {
                                run_end = i + 1;
                                continue;
                        }
                        if (!in_run)
                                continue;
                        /* One access call for the run: read-only, as every extent is mapped. */
                        CUmemAccessDesc d = { .location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = a->dev },
                                              .flags = CU_MEM_ACCESS_FLAGS_PROT_READ };
                        size_t lo = a->pieces[run].off, hi = a->pieces[run_end - 1].off + a->pieces[run_end - 1].len;
                        if (v->drv->vmm.set_access(a->va + lo, hi - lo, &d, 1) != CUDA_SUCCESS) {
                                /* Mapped but not accessible is no memory at all: park them again. */
                                for (size_t k = run; k < run_end; k++) {
                                        Piece *p = &a->pieces[k];
                                        v->drv->vmm.unmap(a->va + p->off, p->len);
                                        v->drv->vmm.release(p->handle);
                                        v->release_extent(v->release_ctx, p->extent_id);
                                        p->handle = 0;
                                        p->extent_id = 0;
                                        p->parked = true;
                                        failed++;
                                }
                        }
                        in_run = false;
                }
        }
        free(ls);
        return failed;
}
