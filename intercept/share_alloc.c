/*
 * Sharing's VMM allocator (share_alloc.h).
 *
 * An allocation is a reserved address range covered by a sorted list of
 * pieces, each one physical allocation (POSIX-fd exportable) mapped at its
 * offset. Pieces are swapped one by one, at the granularity of the device,
 * because the driver unmaps whole mappings only.
 *
 * Splitting a piece keeps the content of what remains of it, unless the
 * allocation is "fresh": nothing but tracked uploads may have written it
 * since it was allocated (no launch, memset, device copy in between), in
 * which case only the bytes those uploads wrote are kept.
 *
 * Every new backing exists (and holds what must be kept) before the old
 * pieces go, so a failure changes nothing: out of memory means the plain
 * path, never a hole in the app's memory.
 */
#include "share_alloc.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "log.h"
#include "stats.h"

/* Past this many tracked upload ranges an allocation is treated as written by anything. */
#define MAX_WRITTEN 4096

void share_vmm_init(ShareVmm *v, const SageShareDriver *drv, void (*release_extent)(void *, uint64_t), void *ctx) {
        memset(v, 0, sizeof(*v)); /* track_pending, defer, due_over: the caller sets them */
        v->drv = drv;
        v->release_extent = release_extent;
        v->release_ctx = ctx;
        v->lo_va = UINT64_MAX;
        atomic_store(&v->write_epoch, 1);
}

static bool reserve_pieces(SageShareAlloc *a, size_t n) {
        Piece *ps;

        if (n <= a->cap)
                return true;
        if (!(ps = realloc(a->pieces, n * sizeof(*ps))))
                return false;
        a->pieces = ps;
        a->cap = n;
        return true;
}

bool share_vmm_insert_pieces(SageShareAlloc *a, size_t at, size_t remove, const Piece *add, size_t nadd) {
        size_t n = a->npieces - remove + nadd;
        Piece *ps;

        if (!reserve_pieces(a, n))
                return false;
        ps = a->pieces;
        memmove(&ps[at + nadd], &ps[at + remove], (a->npieces - at - remove) * sizeof(*ps));
        memcpy(&ps[at], add, nadd * sizeof(*ps));
        a->npieces = n;
        return true;
}

static CUmemAllocationProp prop_of(const SageShareAlloc *a) {
        CUmemAllocationProp prop = sage_vmm_prop(a->dev);
        prop.allocFlags.gpuDirectRDMACapable = a->rdma;
        return prop;
}

CUresult share_vmm_create(ShareVmm *v, const SageShareAlloc *a, size_t len, CUmemGenericAllocationHandle *out) {
        CUmemAllocationProp prop = prop_of(a);
        return v->drv->vmm.create(out, len, &prop, 0);
}

static CUresult map_at(ShareVmm *v, const SageShareAlloc *a, size_t off, size_t len, CUmemGenericAllocationHandle h,
                       CUmemAccess_flags access) {
        return sage_vmm_map(&v->drv->vmm, a->va + off, len, a->dev, h, access);
}

/* Map adjacent pieces ps[0..n) with one access call (the driver grants several whole mappings at once);
 * on failure none stays mapped. */
CUresult share_vmm_map_run(ShareVmm *v, const SageShareAlloc *a, const Piece *ps, size_t n, CUmemAccess_flags access) {
        const SageVmmOps *ops = &v->drv->vmm;
        CUmemAccessDesc desc = { .location = { CU_MEM_LOCATION_TYPE_DEVICE, a->dev }, .flags = access };
        size_t mapped = 0;
        CUresult r = CUDA_SUCCESS;

        while (mapped < n &&
               (r = ops->map(a->va + ps[mapped].off, ps[mapped].len, 0, ps[mapped].handle, 0)) == CUDA_SUCCESS)
                mapped++;
        if (r == CUDA_SUCCESS)
                r = ops->set_access(a->va + ps[0].off, ps[n - 1].off + ps[n - 1].len - ps[0].off, &desc, 1);
        if (r != CUDA_SUCCESS)
                while (mapped > 0) {
                        mapped--;
                        ops->unmap(a->va + ps[mapped].off, ps[mapped].len);
                }
        return r;
}

/*
 * The largest physical allocation a new allocation starts with. XLA's BFC
 * allocator asks for 75% of the GPU in one cuMemAlloc (docs/sharing.md,
 * JAX): one piece that large could not be split, since a split creates
 * the new backing of the rest before the old piece goes (the GPU would
 * have to hold the region twice). In pieces of this size a split costs at
 * most two of them more, whatever the allocation's size.
 */
#define SHARE_VMM_CHUNK ((size_t)1 << 30)

static CUresult alloc_pieces(ShareVmm *v, size_t size, size_t gran, CUdevice dev, uint32_t broker_dev, CUcontext ctx,
                             bool map, bool rdma, Piece *pre, size_t npre, SageShareAlloc **out) {
        const SageVmmOps *ops = &v->drv->vmm;
        SageShareAlloc *a;
        size_t chunk, k = 0, m;
        CUresult r = CUDA_SUCCESS;

        if (!gran || !(a = calloc(1, sizeof(*a))))
                return CUDA_ERROR_OUT_OF_MEMORY;
        a->dev = dev;
        a->broker_dev = broker_dev;
        a->ctx = ctx;
        a->gran = gran;
        a->size = size;
        a->padded = (size + gran - 1) / gran * gran;
        a->app_vmm = !map;
        a->rdma = rdma;
        chunk = SHARE_VMM_CHUNK > gran ? SHARE_VMM_CHUNK / gran * gran : gran;
        /* Room for every piece (the extents, the gaps around them in chunks): inserting cannot fail. */
        if (!reserve_pieces(a, 2 * npre + 2 + a->padded / chunk))
                r = CUDA_ERROR_OUT_OF_MEMORY;
        else if (map)
                r = ops->address_reserve(&a->va, a->padded, 0, 0, 0);
        /* Deferred (share_backing.c): the memory made, nothing mapped. */
        if (r == CUDA_SUCCESS && map && !npre && v->defer && a->padded <= chunk &&
            (r = share_vmm_create(v, a, a->padded, &a->held)) != CUDA_SUCCESS)
                ops->address_free(a->va, a->padded);
        if (r != CUDA_SUCCESS)
                goto fail;
        if (a->held) {
                a->pieces[a->npieces++] = (Piece){ .len = a->padded, .unbacked = true };
                atomic_fetch_add(&v->unbacked, 1);
        }
        for (size_t off = a->held ? a->padded : 0; off < a->padded && r == CUDA_SUCCESS;) {
                size_t end = k < npre ? pre[k].off : a->padded;
                Piece p = { .off = off, .len = end - off < chunk ? end - off : chunk };
                if (end == off) { /* predicted extents pre[k, k+m), adjacent: mapped with one access call */
                        for (m = 1; k + m < npre && pre[k + m].off == pre[k + m - 1].off + pre[k + m - 1].len;)
                                m++;
                        if ((r = share_vmm_map_run(v, a, &pre[k], m, CU_MEM_ACCESS_FLAGS_PROT_READ)) == CUDA_SUCCESS)
                                share_vmm_insert_pieces(a, a->npieces, 0, &pre[k], m);
                        off = pre[k + m - 1].off + pre[k + m - 1].len;
                        k += m;
                        continue;
                }
                if ((r = share_vmm_create(v, a, p.len, &p.handle)) != CUDA_SUCCESS)
                        break;
                if (map && (r = map_at(v, a, off, p.len, p.handle, CU_MEM_ACCESS_FLAGS_PROT_READWRITE)) != CUDA_SUCCESS)
                        ops->release(p.handle);
                else
                        share_vmm_insert_pieces(a, a->npieces, 0, &p, 1);
                off += p.len;
        }
        if (r != CUDA_SUCCESS) {
                for (size_t i = 0; i < a->npieces; i++) /* predicted extents only unmapped: the caller's again */
                        if (a->pieces[i].extent_id)
                                ops->unmap(a->va + a->pieces[i].off, a->pieces[i].len);
                        else
                                share_vmm_drop_piece(v, a, &a->pieces[i]);
                if (map)
                        ops->address_free(a->va, a->padded);
                goto fail;
        }
        for (size_t i = 0; i < a->npieces; i++)
                a->pieces[i].unconfirmed = a->pieces[i].extent_id != 0;
        atomic_fetch_add(&v->unconfirmed, (unsigned)npre);
        a->epoch = atomic_load_explicit(&v->write_epoch, memory_order_relaxed);
        *out = a;
        return CUDA_SUCCESS;
fail:
        free(a->pieces);
        free(a);
        return r;
}

CUresult share_vmm_alloc(ShareVmm *v, size_t size, size_t gran, CUdevice dev, uint32_t broker_dev, CUcontext ctx,
                         SageShareAlloc **out) {
        return alloc_pieces(v, size, gran, dev, broker_dev, ctx, true, false, NULL, 0, out);
}

CUresult share_vmm_alloc_predicted(ShareVmm *v, size_t size, size_t gran, CUdevice dev, uint32_t broker_dev,
                                   CUcontext ctx, Piece *pre, size_t npre, SageShareAlloc **out) {
        return alloc_pieces(v, size, gran, dev, broker_dev, ctx, true, false, pre, npre, out);
}

CUresult share_vmm_alloc_unmapped(ShareVmm *v, size_t size, size_t gran, CUdevice dev, uint32_t broker_dev,
                                  CUcontext ctx, bool rdma, SageShareAlloc **out) {
        return alloc_pieces(v, size, gran, dev, broker_dev, ctx, false, rdma, NULL, 0, out);
}

void share_vmm_link(ShareVmm *v, SageShareAlloc *a) {
        a->next = v->allocs;
        v->allocs = a;
        if (a->va < v->lo_va)
                v->lo_va = a->va;
        if (a->va + a->padded > v->hi_va)
                v->hi_va = a->va + a->padded;
}

SageShareAlloc *share_vmm_find(const ShareVmm *v, CUdeviceptr p, size_t n) {
        for (SageShareAlloc *a = v->allocs; a; a = a->next)
                if (p >= a->va + a->lead && p - a->va < a->size && n <= a->size - (p - a->va))
                        return a;
        return NULL;
}

SageShareAlloc *share_vmm_unlink(ShareVmm *v, CUdeviceptr va) {
        for (SageShareAlloc **link = &v->allocs; *link; link = &(*link)->next)
                if (share_vmm_user_va(*link) == va && !(*link)->app_vmm) {
                        SageShareAlloc *a = *link;
                        *link = a->next;
                        a->next = NULL;
                        return a;
                }
        return NULL;
}

void share_vmm_release(ShareVmm *v, SageShareAlloc *a) {
        for (size_t i = 0; i < a->npieces; i++)
                share_vmm_drop_piece(v, a, &a->pieces[i]);
        share_vmm_drop_held(v, a);
        if (!a->app_vmm) /* an app's handle: the reservation is the app's */
                v->drv->vmm.address_free(a->va, a->padded);
        free(a->pieces);
        free(a->written);
        free(a->plain);
        share_vmm_drop_due(a);
        free(a->graph_uses);
        free(a);
}

/* ---------------------------------------------------------------- write tracking */

void share_vmm_note_write(ShareVmm *v) {
        atomic_fetch_add_explicit(&v->write_epoch, 1, memory_order_relaxed);
}

bool share_vmm_fresh(const ShareVmm *v, const SageShareAlloc *a) {
        return a->epoch == atomic_load_explicit(&v->write_epoch, memory_order_relaxed);
}

void share_vmm_note_written(ShareVmm *v, SageShareAlloc *a, size_t off, size_t len) {
        Range *w;

        if (!share_vmm_fresh(v, a) || !len)
                return;
        if (v->track_pending) /* what this upload leaves is assembled at the next launch */
                atomic_store_explicit(&v->pending, true, memory_order_relaxed);
        if (a->nwritten && a->written[a->nwritten - 1].off + a->written[a->nwritten - 1].len == off) {
                a->written[a->nwritten - 1].len += len;
                return;
        }
        if (a->nwritten == MAX_WRITTEN || !(w = realloc(a->written, (a->nwritten + 1) * sizeof(*w)))) {
                a->epoch = 0; /* stop tracking: every byte counts as written */
                return;
        }
        a->written = w;
        a->written[a->nwritten++] = (Range){ off, len };
}

/* Must the content of a->va[off, off+len), part of piece p, survive a split? */
static bool must_keep(const ShareVmm *v, const SageShareAlloc *a, const Piece *p, size_t off, size_t len) {
        if (p->unbacked)
                return false;
        if (p->extent_id || !share_vmm_fresh(v, a))
                return true;
        return share_vmm_written_in(a, off, off + len);
}

/* ---------------------------------------------------------------- pieces */

/*
 * Replacing [lo, hi) drops the pieces overlapping it. In a fresh allocation
 * only tracked uploads wrote anything, so when none of them wrote those
 * pieces no work in flight writes them (a copy the driver has not finished
 * lands where an upload wrote) and nothing of them is kept: no synchronize,
 * which under contention waits for the whole context (issue 14). A read of
 * bytes nothing wrote, still in flight, is not waited for either.
 */
bool share_vmm_replace_needs_sync(const ShareVmm *v, const SageShareAlloc *a, size_t lo, size_t hi) {
        size_t from = SIZE_MAX, to = 0;

        if (!share_vmm_fresh(v, a))
                return true;
        for (size_t i = 0; i < a->npieces; i++)
                if (a->pieces[i].off < hi && lo < a->pieces[i].off + a->pieces[i].len && !a->pieces[i].unbacked) {
                        if (a->pieces[i].extent_id || a->pieces[i].parked)
                                return true;
                        from = a->pieces[i].off < from ? a->pieces[i].off : from;
                        to = a->pieces[i].off + a->pieces[i].len;
                }
        return share_vmm_written_in(a, from, to);
}

void share_vmm_sync_for_replace(ShareVmm *v, SageShareAlloc *a, size_t lo, size_t hi) {
        if (share_vmm_replace_needs_sync(v, a, lo, hi))
                share_vmm_sync(v, a);
        else
                sage_stats_count(SAGE_STAT_SHARE_SYNCS_SKIPPED);
}

/*
 * The driver refuses this in every capture mode while any stream captures,
 * and invalidates the capture (capture_mode.h): the upload and assembly
 * paths do not come here while a capture is open (sage_capture_open).
 */
void share_vmm_sync(ShareVmm *v, SageShareAlloc *a) {
        CUcontext popped;
        bool pushed = v->drv->ctx_push(a->ctx) == CUDA_SUCCESS;

        v->drv->vmm.ctx_synchronize();
        if (pushed)
                v->drv->ctx_pop(&popped);
}

CUresult share_vmm_copy_into_new(ShareVmm *v, SageShareAlloc *a, size_t off, size_t len,
                                 CUmemGenericAllocationHandle *out) {
        CUmemAllocationProp prop = prop_of(a);
        return sage_vmm_copy_into_new_prop(&v->drv->vmm, &prop, a->va + off, len, out);
}

void share_vmm_free_image(Piece *p) {
        if (p->image)
                munmap(p->image, p->len);
        if (p->image_ahead)
                munmap(p->image_ahead, p->len);
        p->image = p->image_ahead = NULL;
}

void share_vmm_free_lists(Piece *p) {
        free(p->seen);
        free(p->allow);
        free(p->filled);
        share_vmm_free_image(p);
        p->seen = p->allow = NULL;
        p->filled = NULL;
        p->nseen = p->nallow = p->nfilled = 0;
}

void share_vmm_drop_piece(ShareVmm *v, SageShareAlloc *a, Piece *p) {
        share_vmm_free_lists(p);
        if (p->unconfirmed)
                atomic_fetch_sub(&v->unconfirmed, 1);
        p->unconfirmed = false;
        if (p->unbacked)
                atomic_fetch_sub(&v->unbacked, 1);
        if (p->parked || p->unbacked)
                return; /* nothing mapped, nothing held */
        if (a->va)      /* an app's handle not mapped now has no address */
                v->drv->vmm.unmap(a->va + p->off, p->len);
        v->drv->vmm.release(p->handle);
        if (p->extent_id && v->release_extent)
                v->release_extent(v->release_ctx, p->extent_id);
}

/*
 * What remains of the pieces overlapping [lo, hi) outside it: rem[0..*nrem) with keep[] (content to
 * keep), the pieces [*i0, *i1). When the range is an upload's (span_hi) that goes on past hi (its tail,
 * which the caller copies), a right-hand rest with nothing to keep and more than a granule is backed as
 * two pieces, its first granule apart: a framework fills a pool segment upwards, so the next upload starts
 * in that granule, after the tail, and its whole granules begin right after it; splitting there later cuts
 * no piece holding bytes to keep, which would cost a device-to-device copy through a temporary mapping
 * and a synchronize (SHARE_KEEP_COPIES). False: no piece overlaps, or no room for the pieces.
 */
static bool plan_rests(const ShareVmm *v, SageShareAlloc *a, size_t lo, size_t hi, size_t span_hi, Piece rem[3],
                       bool keep[3], size_t *nrem, size_t *i0, size_t *i1) {
        size_t n = 0;

        for (*i0 = 0; *i0 < a->npieces && a->pieces[*i0].off + a->pieces[*i0].len <= lo;)
                (*i0)++;
        for (*i1 = *i0; *i1 < a->npieces && a->pieces[*i1].off < hi;)
                (*i1)++;
        if (*i0 == *i1 || !reserve_pieces(a, a->npieces + 3))
                return false;
        memset(rem, 0, 3 * sizeof(*rem));
        keep[0] = keep[1] = keep[2] = false;
        if (a->pieces[*i0].off < lo) {
                rem[n] = (Piece){ .off = a->pieces[*i0].off,
                                  .len = lo - a->pieces[*i0].off,
                                  .unbacked = a->pieces[*i0].unbacked };
                keep[n] = must_keep(v, a, &a->pieces[*i0], rem[n].off, rem[n].len);
                n++;
        }
        if (a->pieces[*i1 - 1].off + a->pieces[*i1 - 1].len > hi) {
                const Piece *last = &a->pieces[*i1 - 1];
                size_t end = last->off + last->len;
                rem[n] = (Piece){ .off = hi, .len = end - hi, .unbacked = last->unbacked };
                keep[n] = must_keep(v, a, last, rem[n].off, rem[n].len);
                if (!keep[n] && !last->unbacked && span_hi > hi && rem[n].len > a->gran) {
                        rem[n].len = a->gran;
                        n++;
                        rem[n] = (Piece){ .off = hi + a->gran, .len = end - hi - a->gran };
                }
                n++;
        }
        *nrem = n;
        return true;
}

/* Are the rests prepared for `a` the very ones planned (nothing to keep in any)? */
static bool prepared_fit(const ShareVmm *v, const SageShareAlloc *a, const Piece *rem, const bool *keep, size_t n) {
        const ShareRests *p = &v->prepared;

        if (p->a != a || p->n != n || !n)
                return false;
        for (size_t k = 0; k < n; k++)
                if (keep[k] || rem[k].off != p->rem[k].off || rem[k].len != p->rem[k].len || rem[k].unbacked)
                        return false;
        return true;
}

/* New backing for rem[0..n): a copy where keep[k], else empty. On failure none is left. */
static CUresult create_rests(ShareVmm *v, SageShareAlloc *a, Piece *rem, const bool *keep, size_t n) {
        CUresult r = CUDA_SUCCESS;

        for (size_t k = 0; k < n && r == CUDA_SUCCESS; k++) {
                if (rem[k].unbacked) /* stays unbacked: nothing to make */
                        continue;
                if (keep[k])
                        sage_stats_count(SAGE_STAT_SHARE_KEEP_COPIES);
                r = keep[k] ? share_vmm_copy_into_new(v, a, rem[k].off, rem[k].len, &rem[k].handle)
                            : share_vmm_create(v, a, rem[k].len, &rem[k].handle);
        }
        if (r != CUDA_SUCCESS)
                for (size_t k = 0; k < n; k++)
                        if (rem[k].handle) {
                                v->drv->vmm.release(rem[k].handle);
                                rem[k].handle = 0;
                        }
        return r;
}

bool share_vmm_prepare_rests(ShareVmm *v, SageShareAlloc *a, size_t lo, size_t hi, size_t span_hi) {
        ShareRests *p = &v->prepared;
        bool keep[3];
        size_t i0, i1;

        share_vmm_discard_rests(v);
        if (!plan_rests(v, a, lo, hi, span_hi, p->rem, keep, &p->n, &i0, &i1) || keep[0] || keep[1] || keep[2] ||
            !p->n || p->rem[0].unbacked || p->rem[p->n - 1].unbacked ||
            create_rests(v, a, p->rem, keep, p->n) != CUDA_SUCCESS) {
                p->n = 0;
                return false;
        }
        p->a = a;
        return true;
}

void share_vmm_discard_rests(ShareVmm *v) {
        ShareRests *p = &v->prepared;

        for (size_t k = 0; p->a && k < p->n; k++)
                v->drv->vmm.release(p->rem[k].handle);
        p->a = NULL;
        p->n = 0;
}

/* What remains of the pieces [i0, i1) outside [lo, hi) gets new private backing (plan_rests), prepared or made now. */
CUresult share_vmm_replace_range(ShareVmm *v, SageShareAlloc *a, size_t lo, size_t hi, const Piece *with) {
        size_t i0, i1;
        Piece rem[3], add[4];
        bool keep[3];
        size_t nrem = 0, nadd = 0;
        CUresult r = CUDA_SUCCESS;
        bool due = false;

        if (!plan_rests(v, a, lo, hi, with->span_hi, rem, keep, &nrem, &i0, &i1))
                return CUDA_ERROR_INVALID_VALUE;
        if (prepared_fit(v, a, rem, keep, nrem)) {
                memcpy(rem, v->prepared.rem, nrem * sizeof(*rem));
                v->prepared.a = NULL; /* taken */
                v->prepared.n = 0;
                sage_stats_count(SAGE_STAT_SHARE_RESTS_AHEAD);
        } else if ((r = create_rests(v, a, rem, keep, nrem)) != CUDA_SUCCESS)
                return r;
        due = v->due_over && v->due_over(a, i0, i1, with); /* before the pieces go: their due flags */
        for (size_t i = i0; i < i1; i++)
                share_vmm_drop_piece(v, a, &a->pieces[i]);
        /* The rests after hi are adjacent: one access call for them. */
        for (size_t k = 0, n; k < nrem && r == CUDA_SUCCESS; k += n) {
                for (n = 1; k + n < nrem && rem[k + n].off == rem[k + n - 1].off + rem[k + n - 1].len &&
                            rem[k + n].unbacked == rem[k].unbacked;)
                        n++;
                if (!rem[k].unbacked)
                        r = share_vmm_map_run(v, a, &rem[k], n, CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
        }
        if (r == CUDA_SUCCESS)
                r = map_at(v, a, lo, hi - lo, with->handle,
                           with->extent_id ? CU_MEM_ACCESS_FLAGS_PROT_READ : CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
        if (r != CUDA_SUCCESS) {
                /* Mapping a live handle into its own reserved range failed: nothing sane is left to do. */
                sage_warn("share: cannot re-map %p+%zu (%d)", (void *)(uintptr_t)a->va, a->size, (int)r);
                return r;
        }
        for (size_t k = 0; k < nrem; k++)
                if (rem[k].off < lo)
                        add[nadd++] = rem[k];
        add[nadd] = *with;
        if ((add[nadd++].private_due = due))
                atomic_store(&v->private_due, true);
        for (size_t k = 0; k < nrem; k++)
                if (rem[k].off >= hi)
                        add[nadd++] = rem[k];
        share_vmm_insert_pieces(a, i0, i1 - i0, add, nadd); /* capacity reserved above: cannot fail */
        for (size_t k = 0; k < nrem; k++)
                if (rem[k].unbacked)
                        atomic_fetch_add(&v->unbacked, 1);
        if (a->held && !share_vmm_has_unbacked(a)) /* a hit took the last of it */
                share_vmm_drop_held(v, a);
        return CUDA_SUCCESS;
}

bool share_vmm_map_extent(ShareVmm *v, SageShareAlloc *a, Piece *piece, int fd) {
        bool served = false;

        /* fd -1: imported already (share_ahead.c), piece->handle */
        if (fd < 0 || v->drv->import_fd(&piece->handle, (void *)(uintptr_t)fd,
                                        CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) == CUDA_SUCCESS) {
                served = share_vmm_replace_range(v, a, piece->off, piece->off + piece->len, piece) == CUDA_SUCCESS;
                if (!served)
                        v->drv->vmm.release(piece->handle);
        }
        if (fd >= 0)
                close(fd);
        if (!served) {
                share_vmm_free_lists(piece);
                if (v->release_extent)
                        v->release_extent(v->release_ctx, piece->extent_id);
                sage_stats_count(SAGE_STAT_SHARE_FALLBACKS);
        }
        return served;
}

bool share_vmm_privatize(ShareVmm *v, SageShareAlloc *a, size_t i) {
        Piece *p = &a->pieces[i], kept = { 0 };
        CUmemGenericAllocationHandle h;
        bool predicted = p->unconfirmed;

        /* Predicted, its upload not come: uninitialized memory to the app, nothing to copy or wait for. */
        if (predicted ? share_vmm_create(v, a, p->len, &h) != CUDA_SUCCESS
                      : (share_vmm_sync(v, a), share_vmm_copy_into_new(v, a, p->off, p->len, &h) != CUDA_SUCCESS))
                return false;
        if (p->image) { /* a predicted run's uploads: kept for the caller to copy in (share_hint.c) */
                kept = (Piece){ .len = p->len, .image = p->image, .filled = p->filled, .nfilled = p->nfilled };
                p->image = NULL;
                p->filled = NULL;
        }
        share_vmm_drop_piece(v, a, p);
        if (map_at(v, a, p->off, p->len, h, CU_MEM_ACCESS_FLAGS_PROT_READWRITE) != CUDA_SUCCESS) {
                sage_warn("share: cannot re-back %p+%zu", (void *)(uintptr_t)(a->va + p->off), p->len);
                v->drv->vmm.release(h);
                share_vmm_free_lists(&kept);
                return false;
        }
        *p = (Piece){ .off = p->off, .len = p->len, .handle = h, .span_lo = p->span_lo };
        p->image = kept.image;
        p->filled = kept.filled;
        p->nfilled = kept.nfilled;
        a->predict_spoiled |= predicted && !kept.image; /* a run whose uploads came: other bytes, not a spoiler */
        sage_stats_count(!predicted   ? SAGE_STAT_SHARE_UNSHARED
                         : kept.image ? SAGE_STAT_SHARE_PREDICT_RUNS_COPIED
                                      : SAGE_STAT_SHARE_PREDICT_UNUSED);
        return true;
}

void share_vmm_drop_candidate(const SageShareAlloc *a, Piece *p, const char *why) {
        size_t bytes = p->len;

        if (!p->candidate)
                return;
        p->candidate = false;
        if (p->nfilled) { /* the allocation's uploads, where they overlap this run */
                bytes = 0;
                for (size_t i = 0; i < p->nfilled; i++) {
                        size_t lo = p->filled[i].off > p->off ? p->filled[i].off : p->off;
                        size_t end = p->filled[i].off + p->filled[i].len, hi = p->off + p->len;
                        if (end < hi)
                                hi = end;
                        if (lo < hi)
                                bytes += hi - lo;
                }
        }
        sage_stats_count(SAGE_STAT_SHARE_DROPPED);
        sage_stats_add(SAGE_STAT_SHARE_BYTES_DROPPED, bytes);
        sage_debug("share: %p+%zu (%zu upload bytes) not published: %s", (void *)(uintptr_t)(a->va + p->off), p->len,
                   bytes, why);
}
