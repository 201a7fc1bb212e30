/*
 * Sharing in app-managed VMM memory (docs/sharing.md, "Allocators"): XLA
 * puts every buffer in one cuMemCreate it maps itself; PyTorch's
 * expandable segments map 2 MiB / 20 MiB handles one after another into
 * one reservation.
 *
 * The driver unmaps whole mappings only and maps a handle from offset 0
 * only, so SAGE cannot swap part of a handle the app made. Instead it
 * makes the handle: a cuMemCreate of a plain device handle (pinned, one
 * device, no handle type or POSIX fd, no compression or RDMA flags, at
 * least SAGE_SHARE_MIN) gets SAGE's pieces (share_alloc.c, unmapped) and
 * the app a handle value that stands for them: the address of the record
 * below, which no live driver handle can have. Every entry point taking a
 * handle resolves it; anything else is passed to the driver untouched.
 *
 * - cuMemMap of the whole handle maps the pieces there, no access yet
 *   (as the driver does); the allocation is linked, so uploads into the
 *   range take the one upload path (share_upload.c) and the launch guard
 *   sees it, once the app granted read-write to its own device over the
 *   whole mapping (cuMemSetAccess): before, an upload would fail natively.
 * - Any other access (read-only, other devices, part of the mapping), a
 *   second mapping of the handle, an export: the shared pieces become
 *   private first (their content copied) and the handle is never shared
 *   again ("pinned"), so the app's view is the driver's.
 * - cuMemUnmap: whole mappings only, as the driver; the candidates are
 *   published first (the bytes are what the uploads wrote, checked), then
 *   the pieces are unmapped and kept: the handle's content survives, a
 *   later cuMemMap maps it again (not fresh any more). cuMemRelease
 *   frees them once neither the app's references nor a mapping remain;
 *   one past the app's references is refused, never counted below zero.
 *   Shared pieces kept so are copied private (through a scratch mapping)
 *   before an export and at suspend: an fd must never be a broker's
 *   extent, and the driver cannot restore imported memory.
 * - Queries answer for the handle: its properties as the app asked,
 *   cuMemRetainAllocationHandle its value, cuMemGetAccess the app's grant
 *   on a shared piece (mapped read-only for the guard's sake).
 *
 * Not covered (each falls back to the driver untouched): a partial or
 * offset cuMemMap of a backed handle is refused (INVALID_VALUE, as the
 * driver says for an offset); cuMemMapArrayAsync and cuMulticastBindMem
 * with a backed handle are not resolved. cuPointerGetAttribute's range
 * attributes name the piece, not the handle.
 */
#include <cuda.h>

#include "share.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "impl.h"
#include "log.h"
#include "options.h"
#include "share_state.h"
#include "stats.h"
#include "warmup.h"

/* An app's handle SAGE backs. Guarded by the sharing lock. */
typedef struct AppHandle {
        SageShareAlloc *a;        /* the pieces; a->va: the app's first mapping (0: none) */
        CUdeviceptr extra;        /* a second mapping of the same handle (pinned then) */
        CUmemAllocationProp prop; /* what the app asked for */
        unsigned refs;            /* the app's references: cuMemCreate, cuMemRetainAllocationHandle */
        bool granted;             /* the app granted read-write on its device over the first mapping */
        bool pinned;              /* never shared again: the app's view needs the pieces as they are */
        bool was_mapped;          /* mapped before: holds what the app wrote then */
        struct AppHandle *next;
} AppHandle;

static AppHandle *handles;

static CUmemGenericAllocationHandle value_of(const AppHandle *h) {
        return (CUmemGenericAllocationHandle)(uintptr_t)h;
}

/* Under the lock. */
static AppHandle *find_handle(CUmemGenericAllocationHandle v) {
        for (AppHandle *h = handles; h; h = h->next)
                if (value_of(h) == v)
                        return h;
        return NULL;
}

/* The handle mapped at [p, p+1) (first or second mapping), its mapping's base in *base. Under the lock. */
static AppHandle *find_mapped(CUdeviceptr p, CUdeviceptr *base) {
        for (AppHandle *h = handles; h; h = h->next)
                for (int k = 0; k < 2; k++) {
                        CUdeviceptr b = k ? h->extra : h->a->va;
                        if (b && p >= b && p - b < h->a->padded) {
                                *base = b;
                                return h;
                        }
                }
        return NULL;
}

static bool active(void) {
        return sage_options()->share && sage_options()->share_vmm &&
               atomic_load_explicit(&sage_share()->active, memory_order_relaxed);
}

/* A handle SAGE can reproduce with its pieces: the driver's plain device memory, nothing else asked for. */
static bool plain_prop(const CUmemAllocationProp *p, CUdevice dev) {
        static const unsigned char zero[sizeof(p->allocFlags.reserved)];

        return p->type == CU_MEM_ALLOCATION_TYPE_PINNED && p->location.type == CU_MEM_LOCATION_TYPE_DEVICE &&
               p->location.id == dev &&
               (p->requestedHandleTypes == CU_MEM_HANDLE_TYPE_NONE ||
                p->requestedHandleTypes == CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) &&
               !p->win32HandleMetaData && !p->allocFlags.compressionType && p->allocFlags.gpuDirectRDMACapable <= 1 &&
               !p->allocFlags.usage && !memcmp(p->allocFlags.reserved, zero, sizeof(zero));
}

/*
 * Map every piece of `a` at va. Private pieces get no access (the app's
 * cuMemSetAccess grants it, as for the driver's own mapping); shared ones
 * (kept from an earlier mapping) read-only at once, so they can be copied
 * into private backing before the app's grant could reach them.
 */
static CUresult map_pieces(SageShare *s, SageShareAlloc *a, CUdeviceptr va) {
        CUresult r = CUDA_SUCCESS;
        size_t i;

        for (i = 0; i < a->npieces && r == CUDA_SUCCESS; i++) {
                const Piece *p = &a->pieces[i];
                r = p->extent_id ? sage_vmm_map(&s->drv.vmm, va + p->off, p->len, a->dev, p->handle,
                                                CU_MEM_ACCESS_FLAGS_PROT_READ)
                                 : s->drv.vmm.map(va + p->off, p->len, 0, p->handle, 0);
        }
        if (r != CUDA_SUCCESS)
                for (i--; i-- > 0;)
                        s->drv.vmm.unmap(va + a->pieces[i].off, a->pieces[i].len);
        return r;
}

/* Does a shared piece of `a` (mapped at base) lie in [ptr, ptr+size)? */
static bool shared_in(const SageShareAlloc *a, CUdeviceptr base, CUdeviceptr ptr, size_t size) {
        for (size_t i = 0; i < a->npieces; i++)
                if (a->pieces[i].extent_id && base + a->pieces[i].off < ptr + size &&
                    ptr < base + a->pieces[i].off + a->pieces[i].len)
                        return true;
        return false;
}

static void unmap_pieces(SageShare *s, SageShareAlloc *a, CUdeviceptr va) {
        for (size_t i = 0; i < a->npieces; i++)
                s->drv.vmm.unmap(va + a->pieces[i].off, a->pieces[i].len);
}

/*
 * The shared pieces of an unmapped handle become private: mapped at a
 * scratch reservation for the copy, unmapped again. Is nothing shared now?
 * Under the lock.
 */
static bool privatize_unmapped(SageShare *s, SageShareAlloc *a) {
        CUcontext popped;
        CUdeviceptr tmp;
        bool pushed;

        if (!shared_in(a, 0, 0, a->padded))
                return true;
        /* The copy needs a context: the handle's (suspend's listener has none current), else the caller's. */
        pushed = s->drv.ctx_push(a->ctx) == CUDA_SUCCESS;
        if (s->drv.vmm.address_reserve(&tmp, a->padded, 0, 0, 0) == CUDA_SUCCESS) {
                if (map_pieces(s, a, tmp) == CUDA_SUCCESS) {
                        a->va = tmp;
                        share_vmm_before_write(&s->vmm, a, 0, a->padded);
                        unmap_pieces(s, a, tmp);
                        a->va = 0;
                }
                s->drv.vmm.address_free(tmp, a->padded);
        }
        if (pushed)
                s->drv.ctx_pop(&popped);
        return !shared_in(a, 0, 0, a->padded);
}

size_t share_app_privatize_unmapped(SageShare *s) {
        size_t failed = 0;

        for (AppHandle *h = handles; h; h = h->next)
                if (!h->a->va && !privatize_unmapped(s, h->a))
                        failed++;
        return failed;
}

/* Never shared again: what is shared becomes private (content kept), candidates are dropped. Under the lock. */
static void pin(SageShare *s, AppHandle *h) {
        if (h->a->va)
                share_vmm_before_write(&s->vmm, h->a, 0, h->a->padded);
        h->pinned = true;
        h->granted = false; /* every piece private: the driver's answer is the app's grant */
        h->a->no_share = true;
}

static void unlink_alloc(SageShare *s, SageShareAlloc *a) {
        for (SageShareAlloc **link = &s->vmm.allocs; *link; link = &(*link)->next)
                if (*link == a) {
                        *link = a->next;
                        a->next = NULL;
                        return;
                }
}

/* Free the handle once the app holds no reference and nothing maps it. Under the lock. */
static void maybe_free(SageShare *s, AppHandle *h) {
        if (h->refs || h->a->va || h->extra)
                return;
        for (AppHandle **link = &handles; *link; link = &(*link)->next)
                if (*link == h) {
                        *link = h->next;
                        break;
                }
        share_vmm_release(&s->vmm, h->a);
        free(h);
}

size_t sage_share_app_split(CUdeviceptr dst, size_t n) {
        SageShare *s = sage_share();
        CUdeviceptr edge = dst + n;

        if (!active() || !n || dst + n < dst)
                return 0;
        pthread_mutex_lock(&s->lock);
        for (AppHandle *h = handles; h; h = h->next)
                for (int k = 0; k < 2; k++) {
                        CUdeviceptr b = k ? h->extra : h->a->va, e = b + h->a->padded;
                        if (b && b > dst && b < edge)
                                edge = b;
                        if (b && e > dst && e < edge)
                                edge = e;
                }
        pthread_mutex_unlock(&s->lock);
        return edge < dst + n ? edge - dst : 0;
}

/* ---------------------------------------------------------------- create, release */

CUresult sage_impl_cuMemCreate(sage_fn_cuMemCreate_t real, CUmemGenericAllocationHandle *handle, size_t size,
                               const CUmemAllocationProp *prop, unsigned long long flags) {
        SageShare *s = sage_share();
        CUmemAllocationProp ours;
        AppHandle *h;
        CUdevice dev;
        CUcontext ctx;
        uint32_t broker_dev;
        size_t gran = 0;
        int known;

        if (!sage_options()->share || !sage_options()->share_vmm || !handle || !prop || flags ||
            size < sage_options()->share_min)
                return SHARE_OOM_RETRY(real(handle, size, prop, flags));
        pthread_mutex_lock(&s->lock);
        known = share_enabled(s) && s->broker && s->drv.ctx_get_device(&dev) == CUDA_SUCCESS &&
                                s->drv.ctx_get_current(&ctx) == CUDA_SUCCESS && plain_prop(prop, dev)
                        ? share_broker_device(s, dev, &broker_dev)
                        : -1;
        pthread_mutex_unlock(&s->lock);
        if (known != 0)
                return SHARE_OOM_RETRY(real(handle, size, prop, flags));
        ours = sage_vmm_prop(dev);
        ours.allocFlags.gpuDirectRDMACapable = prop->allocFlags.gpuDirectRDMACapable;
        /* A size that is no granule multiple is the driver's to refuse. */
        if (s->drv.granularity(&gran, &ours, CU_MEM_ALLOC_GRANULARITY_MINIMUM) != CUDA_SUCCESS || !gran ||
            size % gran || !(h = calloc(1, sizeof(*h))))
                return SHARE_OOM_RETRY(real(handle, size, prop, flags));
        if (share_vmm_alloc_unmapped(&s->vmm, size, gran, dev, broker_dev, ctx, prop->allocFlags.gpuDirectRDMACapable,
                                     &h->a) != CUDA_SUCCESS) {
                free(h);
                sage_stats_count(SAGE_STAT_SHARE_FALLBACKS);
                return SHARE_OOM_RETRY(real(handle, size, prop, flags));
        }
        h->prop = *prop;
        h->refs = 1;
        pthread_mutex_lock(&s->lock);
        h->a->ordinal = SHARE_HINT_APP_VMM | (s->app_vmm_made++ & ~SHARE_HINT_APP_VMM); /* its hints: keys only */
        h->next = handles;
        handles = h;
        pthread_mutex_unlock(&s->lock);
        sage_warmup_note_held(dev); /* publishing at exit reads the device */
        sage_stats_count(SAGE_STAT_SHARE_APP_VMM);
        *handle = value_of(h);
        return CUDA_SUCCESS;
}

CUresult sage_impl_cuMemRelease(sage_fn_cuMemRelease_t real, CUmemGenericAllocationHandle handle) {
        SageShare *s = sage_share();
        CUresult r = CUDA_SUCCESS;
        AppHandle *h;

        if (!active())
                return real(handle);
        pthread_mutex_lock(&s->lock);
        if ((h = find_handle(handle)) && !h->refs) {
                /* Released already, kept by its mapping: the driver's answer (tests/fakecuda/README.md), nothing freed. */
                r = CUDA_ERROR_INVALID_VALUE;
        } else if (h) {
                h->refs--;
                maybe_free(s, h); /* while mapped, the memory stays until the unmap (as the driver does) */
        }
        pthread_mutex_unlock(&s->lock);
        return h ? r : real(handle);
}

/* ---------------------------------------------------------------- map, unmap, access */

CUresult sage_impl_cuMemMap(sage_fn_cuMemMap_t real, CUdeviceptr ptr, size_t size, size_t offset,
                            CUmemGenericAllocationHandle handle, unsigned long long flags) {
        SageShare *s = sage_share();
        CUresult r = CUDA_ERROR_INVALID_VALUE;
        SageShareAlloc *a;
        AppHandle *h;

        if (!active())
                return real(ptr, size, offset, handle, flags);
        pthread_mutex_lock(&s->lock);
        if (!(h = find_handle(handle))) {
                pthread_mutex_unlock(&s->lock);
                return real(ptr, size, offset, handle, flags);
        }
        a = h->a;
        if (offset || flags || size != a->padded || !ptr || (a->va && h->extra))
                goto out;
        if (!a->va) {
                if ((r = map_pieces(s, a, ptr)) != CUDA_SUCCESS)
                        goto out;
                /*
                 * Never mapped before: nothing wrote it, so it is fresh
                 * (only uploads will have written it). Mapped before: it
                 * holds what the app wrote then.
                 */
                a->epoch = h->was_mapped ? 0 : atomic_load(&s->vmm.write_epoch);
                h->was_mapped = true;
                a->va = ptr;
                a->no_share = true; /* until the app grants read-write over the whole mapping */
                h->granted = false;
                share_vmm_link(&s->vmm, a);
                if (h->pinned) /* shared pieces kept while unmapped: private before any grant */
                        share_vmm_before_write(&s->vmm, a, 0, a->padded);
                atomic_store(&s->guarding, true);
        } else {
                /* Two mappings of one handle: a swap would change one of them only. */
                pin(s, h);
                if ((r = map_pieces(s, a, ptr)) == CUDA_SUCCESS)
                        h->extra = ptr;
        }
out:
        pthread_mutex_unlock(&s->lock);
        return r;
}

/* The first mapping of `h` goes: its candidates published, its pieces unmapped and kept. Under the lock. */
static void unmap_first(SageShare *s, AppHandle *h) {
        SageShareAlloc *a = h->a;

        share_vmm_sync(&s->vmm, a); /* the work in flight reads it; the read-back below too */
        if (!h->pinned)
                share_retire(s, a);
        unlink_alloc(s, a);
        unmap_pieces(s, a, a->va);
        a->va = 0;
        a->epoch = 0;
}

CUresult sage_impl_cuMemUnmap(sage_fn_cuMemUnmap_t real, CUdeviceptr ptr, size_t size) {
        SageShare *s = sage_share();
        CUdeviceptr at, base, gap;
        CUresult r = CUDA_SUCCESS, rg;
        bool ours = false;
        AppHandle *h;

        if (!active() || !size || ptr + size < ptr)
                return real(ptr, size);
        pthread_mutex_lock(&s->lock);
        /* Whole mappings only, as the driver: a backed mapping the range cuts is refused before anything goes. */
        for (h = handles; h; h = h->next)
                for (int k = 0; k < 2; k++) {
                        base = k ? h->extra : h->a->va;
                        if (!base || base >= ptr + size || ptr >= base + h->a->padded)
                                continue;
                        if (base < ptr || base + h->a->padded > ptr + size) {
                                pthread_mutex_unlock(&s->lock);
                                return CUDA_ERROR_INVALID_VALUE;
                        }
                        ours = true;
                }
        if (!ours) {
                pthread_mutex_unlock(&s->lock);
                return real(ptr, size);
        }
        /* The backed mappings in the range go; what lies between them is the driver's. */
        for (at = gap = ptr; at < ptr + size;) {
                if (!(h = find_mapped(at, &base))) {
                        /* Skip to the next backed mapping (or the end): one driver call per gap. */
                        CUdeviceptr next = ptr + size;
                        for (AppHandle *o = handles; o; o = o->next)
                                for (int k = 0; k < 2; k++) {
                                        CUdeviceptr b = k ? o->extra : o->a->va;
                                        if (b && b >= at && b < next)
                                                next = b;
                                }
                        at = next;
                        continue;
                }
                if (gap < base && (rg = real(gap, base - gap)) != CUDA_SUCCESS && rg != CUDA_ERROR_INVALID_VALUE)
                        r = rg;
                if (base == h->extra) {
                        unmap_pieces(s, h->a, base);
                        h->extra = 0;
                } else {
                        unmap_first(s, h);
                }
                at = gap = base + h->a->padded;
                maybe_free(s, h);
        }
        if (gap < ptr + size && (rg = real(gap, ptr + size - gap)) != CUDA_SUCCESS && rg != CUDA_ERROR_INVALID_VALUE)
                r = rg;
        pthread_mutex_unlock(&s->lock);
        return r;
}

/* Is `desc` read-write for `dev` and nothing else? */
static bool plain_access(const CUmemAccessDesc *desc, size_t count, CUdevice dev) {
        return desc && count == 1 && desc[0].location.type == CU_MEM_LOCATION_TYPE_DEVICE &&
               desc[0].location.id == dev && desc[0].flags == CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
}

CUresult sage_impl_cuMemSetAccess(sage_fn_cuMemSetAccess_t real, CUdeviceptr ptr, size_t size,
                                  const CUmemAccessDesc *desc, size_t count) {
        SageShare *s = sage_share();

        if (!active() || !size || ptr + size < ptr)
                return real(ptr, size, desc, count);
        pthread_mutex_lock(&s->lock);
        for (AppHandle *h = handles; h; h = h->next) {
                SageShareAlloc *a = h->a;
                bool whole;

                if (h->extra && h->extra < ptr + size && ptr < h->extra + a->padded)
                        pin(s, h);
                if (!a->va || a->va >= ptr + size || ptr >= a->va + a->padded)
                        continue;
                /* A grant over shared pieces would make them writable: private first, whatever is granted. */
                whole = ptr <= a->va && a->va + a->padded <= ptr + size;
                if (h->pinned || !whole || !plain_access(desc, count, a->dev)) {
                        pin(s, h);
                        continue;
                }
                share_vmm_before_write(&s->vmm, a, 0, a->padded);
                h->granted = true;
                a->no_share = false;
        }
        /* A sealed extent is never granted to the app: one that could not be made private fails the call. */
        for (AppHandle *h = handles; h; h = h->next)
                for (int k = 0; k < 2; k++) {
                        CUdeviceptr b = k ? h->extra : h->a->va;
                        if (b && shared_in(h->a, b, ptr, size)) {
                                pthread_mutex_unlock(&s->lock);
                                return CUDA_ERROR_OUT_OF_MEMORY;
                        }
                }
        pthread_mutex_unlock(&s->lock);
        return real(ptr, size, desc, count);
}

/*
 * A shared piece is mapped read-only (the guard privatizes it before a
 * kernel writes it); the app granted read-write over the whole mapping:
 * that is its answer.
 */
CUresult sage_impl_cuMemGetAccess(sage_fn_cuMemGetAccess_t real, unsigned long long *flags,
                                  const CUmemLocation *location, CUdeviceptr ptr) {
        SageShare *s = sage_share();
        CUresult r = real(flags, location, ptr);
        CUdeviceptr base;
        AppHandle *h;

        if (r != CUDA_SUCCESS || !active() || !location || location->type != CU_MEM_LOCATION_TYPE_DEVICE)
                return r;
        pthread_mutex_lock(&s->lock);
        if ((h = find_mapped(ptr, &base)) && h->granted && base == h->a->va && location->id == h->a->dev)
                *flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
        pthread_mutex_unlock(&s->lock);
        return r;
}

/* ---------------------------------------------------------------- export, queries */

/*
 * The app exports the handle: one physical allocation must stand for it.
 * One private piece is exported as it is; several are consolidated into
 * one (a copy of the whole: only while mapped, and only where the device
 * has the room). Either way the handle is pinned: the fd must stay its
 * memory. A type the app did not ask for is the driver's refusal.
 */
CUresult sage_impl_cuMemExportToShareableHandle(sage_fn_cuMemExportToShareableHandle_t real, void *shareable,
                                                CUmemGenericAllocationHandle handle, CUmemAllocationHandleType type,
                                                unsigned long long flags) {
        SageShare *s = sage_share();
        CUresult r = CUDA_ERROR_INVALID_VALUE;
        AppHandle *h;

        if (!active())
                return real(shareable, handle, type, flags);
        pthread_mutex_lock(&s->lock);
        if (!(h = find_handle(handle))) {
                pthread_mutex_unlock(&s->lock);
                return real(shareable, handle, type, flags);
        }
        if (!(h->prop.requestedHandleTypes & type) || flags || !shareable)
                goto out;
        pin(s, h);
        r = CUDA_ERROR_OUT_OF_MEMORY;
        if (h->a->npieces > 1 && (!h->a->va || h->extra || !share_vmm_consolidate(&s->vmm, h->a)))
                goto out;
        /* Unmapped, pin copied nothing: the fd must never be a broker's extent (the app may map it read-write). */
        if (!h->a->va && !privatize_unmapped(s, h->a))
                goto out;
        r = real(shareable, h->a->pieces[0].handle, type, flags);
out:
        pthread_mutex_unlock(&s->lock);
        return r;
}

CUresult sage_impl_cuMemGetAllocationPropertiesFromHandle(sage_fn_cuMemGetAllocationPropertiesFromHandle_t real,
                                                          CUmemAllocationProp *prop,
                                                          CUmemGenericAllocationHandle handle) {
        SageShare *s = sage_share();
        AppHandle *h;

        if (!active())
                return real(prop, handle);
        pthread_mutex_lock(&s->lock);
        if ((h = find_handle(handle)) && prop)
                *prop = h->prop;
        pthread_mutex_unlock(&s->lock);
        return !h ? real(prop, handle) : prop ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

CUresult sage_impl_cuMemRetainAllocationHandle(sage_fn_cuMemRetainAllocationHandle_t real,
                                               CUmemGenericAllocationHandle *handle, void *addr) {
        SageShare *s = sage_share();
        CUdeviceptr base;
        AppHandle *h;

        if (!active() || !handle)
                return real(handle, addr);
        pthread_mutex_lock(&s->lock);
        if ((h = find_mapped((CUdeviceptr)(uintptr_t)addr, &base))) {
                h->refs++;
                *handle = value_of(h);
        }
        pthread_mutex_unlock(&s->lock);
        return h ? CUDA_SUCCESS : real(handle, addr);
}
