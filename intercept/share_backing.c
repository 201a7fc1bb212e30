/*
 * Private backing given after the allocation (share_alloc.h): deferred
 * pieces, and one backing for the whole of an allocation CUDA IPC exports.
 *
 * Deferred backing (SAGE_SHARE_DEFER) exists because a hit on memory that
 * is already backed cannot be cheap: the driver unmaps whole mappings only,
 * so a hit inside a fresh segment unmaps and releases the segment's piece
 * and backs what remains of it anew (create, map, access), besides its own
 * import, map and access: ~8 driver VMM calls, which the driver serializes
 * across processes (16 GPT-2 at once: hundreds of milliseconds of re-mapping
 * each, and as much in SAGE's allocator). A caching allocator's segment is
 * mostly filled by the uploads that follow it, so its pieces are left
 * unbacked until something needs them: a hit maps its extent over them at
 * 3 calls, and what no hit took is backed once, at the first call that may
 * reach it. The allocation's memory is still created at cuMemAlloc
 * (`held`): the app's cuMemAlloc fails where the driver's would, and the
 * backing made later has memory to come from (a create that fails gives
 * `held` back first and tries again).
 *
 * Nothing may reach an unbacked piece (a kernel would fault, a copy fail):
 * the hooks back the granules an app's copy writes before it runs, and
 * everything before any launch, graph launch, API write, device-to-host
 * copy, stream memory operation, batch or CUDA IPC export (share.c,
 * share_upload.c, share_async.c, share_reach.c); a pointer query the
 * allocation it asks about (share_reach.c).
 */
#include "share_alloc.h"

#include "log.h"
#include "stats.h"

/* Split the unbacked piece holding `at` inside it in two (no driver call). */
static bool split_unbacked(ShareVmm *v, SageShareAlloc *a, size_t at) {
        for (size_t i = 0; i < a->npieces; i++) {
                Piece *p = &a->pieces[i];
                if (p->unbacked && p->off < at && at < p->off + p->len) {
                        Piece right = { .off = at, .len = p->off + p->len - at, .unbacked = true };
                        if (!share_vmm_insert_pieces(a, i + 1, 0, &right, 1))
                                return false;
                        a->pieces[i].len = at - a->pieces[i].off;
                        atomic_fetch_add(&v->unbacked, 1);
                        return true;
                }
        }
        return true;
}

/* A new handle of `len` bytes; short of memory, `held` is given back first. */
static CUresult create_backing(ShareVmm *v, SageShareAlloc *a, size_t len, CUmemGenericAllocationHandle *h) {
        CUresult r = share_vmm_create(v, a, len, h);

        if (r != CUDA_SUCCESS && a->held) {
                share_vmm_drop_held(v, a);
                r = share_vmm_create(v, a, len, h);
        }
        return r;
}

/*
 * Nothing of `a` is backed yet and all of it is asked for (the first launch,
 * a copy into a one-granule segment): its held memory backs all of it, as
 * the eager allocation would. A part asked for gets pieces of its own, so
 * that later hits in the rest still find it unbacked (a framework's segment
 * often starts with small tensors copied, then the weights a hit maps).
 */
static bool back_whole(ShareVmm *v, SageShareAlloc *a) {
        Piece whole = { .off = 0, .len = a->padded, .handle = a->held };

        for (size_t i = 0; i < a->npieces; i++)
                if (!a->pieces[i].unbacked)
                        return false;
        if (share_vmm_map_run(v, a, &whole, 1, CU_MEM_ACCESS_FLAGS_PROT_READWRITE) != CUDA_SUCCESS)
                return false;
        atomic_fetch_sub(&v->unbacked, (unsigned)a->npieces);
        a->npieces = 1;
        a->pieces[0] = whole;
        a->held = 0;
        sage_stats_count(SAGE_STAT_SHARE_BACKED_LATER);
        return true;
}

CUresult share_vmm_back(ShareVmm *v, SageShareAlloc *a, size_t off, size_t len) {
        size_t lo = off / a->gran * a->gran, hi = (off + len + a->gran - 1) / a->gran * a->gran;
        CUresult r = CUDA_SUCCESS;

        hi = hi < a->padded ? hi : a->padded;
        if (!len || !share_vmm_has_unbacked(a) || (a->held && !lo && hi == a->padded && back_whole(v, a)))
                return CUDA_SUCCESS;
        if (!split_unbacked(v, a, lo) || !split_unbacked(v, a, hi))
                return CUDA_ERROR_OUT_OF_MEMORY;
        /* Runs of adjacent unbacked pieces inside [lo, hi): created, then mapped with one access call each. */
        for (size_t i = 0, n; i < a->npieces && r == CUDA_SUCCESS; i += n ? n : 1) {
                Piece *run = &a->pieces[i];
                for (n = 0; i + n < a->npieces && run[n].unbacked && run[n].off >= lo &&
                            run[n].off + run[n].len <= hi && (!n || run[n].off == run[n - 1].off + run[n - 1].len);)
                        n++;
                for (size_t k = 0; k < n && r == CUDA_SUCCESS; k++) {
                        CUmemGenericAllocationHandle h = 0;
                        if ((r = create_backing(v, a, run[k].len, &h)) == CUDA_SUCCESS)
                                run[k].handle = h;
                }
                if (r == CUDA_SUCCESS && n)
                        r = share_vmm_map_run(v, a, run, n, CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
                for (size_t k = 0; k < n; k++) {
                        if (r != CUDA_SUCCESS) { /* the run stays unbacked */
                                if (run[k].handle)
                                        v->drv->vmm.release(run[k].handle);
                                run[k].handle = 0;
                                continue;
                        }
                        run[k].unbacked = false;
                        atomic_fetch_sub(&v->unbacked, 1);
                        sage_stats_count(SAGE_STAT_SHARE_BACKED_LATER);
                }
        }
        if (a->held && !share_vmm_has_unbacked(a))
                share_vmm_drop_held(v, a);
        return r;
}

bool share_vmm_back_all(ShareVmm *v) {
        bool ok = true;

        for (SageShareAlloc *a = v->allocs; a; a = a->next)
                if (share_vmm_has_unbacked(a) && share_vmm_back(v, a, 0, a->padded) != CUDA_SUCCESS) {
                        /* No memory even after giving `held` back: what reaches the range faults. */
                        sage_warn("share: cannot back %p+%zu", (void *)(uintptr_t)a->va, a->size);
                        sage_stats_count(SAGE_STAT_SHARE_FALLBACKS);
                        ok = false;
                }
        return ok;
}

bool share_vmm_back_next(ShareVmm *v) {
        for (SageShareAlloc *a = v->allocs; a; a = a->next)
                if (share_vmm_has_unbacked(a))
                        return share_vmm_back(v, a, 0, a->padded) == CUDA_SUCCESS;
        return false;
}

bool share_vmm_consolidate(ShareVmm *v, SageShareAlloc *a) {
        CUmemGenericAllocationHandle h;
        CUcontext popped;
        Piece whole;
        bool ok = false;

        if (share_vmm_back(v, a, 0, a->padded) != CUDA_SUCCESS) /* the copy below reads all of it */
                return false;
        a->no_share = true;
        for (size_t i = 0; i < a->npieces; i++)
                share_vmm_drop_candidate(a, &a->pieces[i], "the allocation was exported through CUDA IPC");
        if (a->npieces == 1 && !a->pieces[0].extent_id)
                return true;
        if (v->drv->ctx_push(a->ctx) != CUDA_SUCCESS)
                return false;
        v->drv->vmm.ctx_synchronize();
        if (share_vmm_copy_into_new(v, a, 0, a->padded, &h) != CUDA_SUCCESS)
                goto out;
        for (size_t i = 0; i < a->npieces; i++)
                share_vmm_drop_piece(v, a, &a->pieces[i]);
        a->npieces = 1;
        a->pieces[0] = whole = (Piece){ .off = 0, .len = a->padded, .handle = h };
        ok = share_vmm_map_run(v, a, &whole, 1, CU_MEM_ACCESS_FLAGS_PROT_READWRITE) == CUDA_SUCCESS;
        if (!ok)
                sage_warn("share: cannot re-back %p+%zu for IPC", (void *)(uintptr_t)a->va, a->size);
out:
        v->drv->ctx_pop(&popped);
        return ok;
}
