/*
 * Sharing-based memory, client side (SAGE_SHARE=1, off by default).
 *
 * Allocations of at least SAGE_SHARE_MIN are backed by SAGE's own VMM
 * allocator: a reserved address range covered by a sorted list of pieces,
 * each one physical allocation (cuMemCreate, POSIX-fd exportable) mapped at
 * its offset. Pieces can be swapped one by one, at the granularity of the
 * device (2 MiB), because the driver unmaps whole mappings only.
 *
 * An upload (host to device, sync or async, every variant, cuMemcpy with a
 * host source too) into such an allocation is keyed on the part of it that
 * covers whole granules: by file identity when the source lies in a file
 * mapping (share_key.c), else by content hash. The broker is asked for an
 * extent with that key:
 * - hit: that part of the allocation becomes a piece mapping the broker's
 *   extent read-only, and only the bytes outside it (less than a granule at
 *   each end) are copied;
 * - miss: that part becomes a piece of its own ("candidate"), filled by the
 *   copy as usual. When the allocation is freed or the process exits, each
 *   candidate is read back and hashed: unchanged over the life of the
 *   process, it is published to the broker, sealed. Read-only is learned.
 * What no single upload covers whole (its ends, pools of small tensors) is
 * keyed later, at the first launch (share_assemble.c).
 *
 * Splitting a piece keeps the content of what remains of it, unless the
 * allocation is "fresh": nothing but tracked uploads may have written it
 * since it was allocated (no launch, memset, device copy in between), in
 * which case only the bytes those uploads wrote are kept.
 *
 * A write through the API (memset, device-to-device or peer copy, another
 * upload) into a shared piece first turns it private again (its content
 * copied), so it never reaches the extent other processes read; so does a
 * kernel launch that uses a piece in a way its publisher never did
 * (share_guard.c). CUDA IPC on these allocations is emulated through the
 * broker (share_ipc.c).
 *
 * Every failure falls back to the plain driver path: no broker means no VMM
 * backing at all; a failed step leaves private memory with the app's bytes.
 */
#include <cuda.h>

#include "share.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker_client.h"
#include "driver.h"
#include "hooks.h"
#include "impl.h"
#include "intercept.h"
#include "log.h"
#include "options.h"
#include "share_key.h"
#include "util.h"
#include "warmup.h"

/* Uploads at least this large try the file-identity key first (reading /proc/self/maps costs ~1 ms). */
#define FILE_KEY_MIN (16u << 20)
/* Past this many tracked upload ranges an allocation is treated as written by anything. */
#define MAX_WRITTEN 4096

pthread_mutex_t sage_share_lock = PTHREAD_MUTEX_INITIALIZER;
SageShareAlloc *sage_share_allocs;
SageBroker *sage_share_broker;
atomic_bool sage_share_active;
atomic_bool sage_share_guarding;
atomic_bool sage_share_pending;
uint64_t sage_share_lo_va = UINT64_MAX, sage_share_hi_va;
static atomic_ullong write_epoch = 1;
static int share_state; /* 0 untried, 1 on, -1 off for this process */
uint64_t sage_share_notes_buf[SAGE_SHARE_NOTES_MAX / 8]; /* 32 KiB: too big for an app thread's stack */

static const SageDriverExtras *const drv = &sage_driver_extras;

static void share_at_exit(void);

/* Add the time since `since` to a nanosecond counter; returns now. */
static uint64_t lap(SageStat stat, uint64_t since) {
        uint64_t now = sage_now_ns();
        sage_stats_add(stat, now - since);
        return now;
}

/* Under sage_share_lock. */
static bool share_enabled(void) {
        if (share_state)
                return share_state > 0;
        share_state = -1;
        if (!sage_options()->share || !sage_driver_handle())
                return false;
        if (!drv->mem_granularity || !drv->ctx_get_device || !drv->ctx_get_current || !drv->ctx_push || !drv->ctx_pop ||
            !drv->ctx_synchronize)
                return false;
        if (!sage_share_guard_available()) {
                sage_info("share: the driver cannot describe kernel parameters (cuFuncGetParamInfo); sharing off");
                return false;
        }
        char why[320];
        int r = sage_broker_connect_why(&sage_share_broker, NULL, 500, why, sizeof(why));
        if (r == -EPERM) {
                /* Someone else's process on the broker's path: worth a warning, never our uploads. */
                sage_warn("share: %s; sharing off", why);
                sage_share_broker = NULL;
                return false;
        }
        if (r < 0) {
                sage_info("share: no broker (%s); sharing off", sage_options()->socket);
                sage_share_broker = NULL;
                return false;
        }
        atexit(share_at_exit);
        share_state = 1;
        atomic_store(&sage_share_active, true);
        /* Launches must bump the write epoch: the hooks' slow path does it. */
        atomic_fetch_or(&sage_hook_slow, SAGE_SLOW_SHARE);
        return true;
}

void sage_share_broker_lost(int r) {
        if (r < 0 && sage_share_broker) {
                sage_warn("share: broker connection lost (%s); sharing off", strerror(-r));
                sage_share_broker = sage_broker_free(sage_share_broker);
        }
}

SageShareAlloc *sage_share_find(CUdeviceptr p, size_t n) {
        for (SageShareAlloc *a = sage_share_allocs; a; a = a->next)
                if (p >= a->va && p - a->va < a->size && n <= a->size - (p - a->va))
                        return a;
        return NULL;
}

static CUmemAllocationProp device_prop(CUdevice dev) {
        CUmemAllocationProp prop;

        memset(&prop, 0, sizeof(prop));
        prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
        prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        prop.location.id = dev;
        prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
        return prop;
}

static CUresult map_at(CUdeviceptr va, size_t len, CUdevice dev, CUmemGenericAllocationHandle h,
                       CUmemAccess_flags access) {
        CUmemAccessDesc desc = { .location = { CU_MEM_LOCATION_TYPE_DEVICE, dev }, .flags = access };
        CUresult r = SAGE_REAL(cuMemMap)(va, len, 0, h, 0);

        if (r == CUDA_SUCCESS && (r = SAGE_REAL(cuMemSetAccess)(va, len, &desc, 1)) != CUDA_SUCCESS)
                SAGE_REAL(cuMemUnmap)(va, len);
        return r;
}

CUresult sage_share_map(CUdeviceptr va, size_t len, CUdevice dev, CUmemGenericAllocationHandle h,
                        CUmemAccess_flags access) {
        return map_at(va, len, dev, h, access);
}

static CUresult create(SageShareAlloc *a, size_t len, CUmemGenericAllocationHandle *h) {
        CUmemAllocationProp prop = device_prop(a->dev);
        return SAGE_REAL(cuMemCreate)(h, len, &prop, 0);
}

/* A new physical allocation holding a copy of a->va[off, off+len). */
CUresult sage_share_copy_into_new(SageShareAlloc *a, size_t off, size_t len, CUmemGenericAllocationHandle *out) {
        CUmemGenericAllocationHandle h;
        CUdeviceptr tmp = 0;
        CUresult r;

        if ((r = create(a, len, &h)) != CUDA_SUCCESS)
                return r;
        if ((r = SAGE_REAL(cuMemAddressReserve)(&tmp, len, 0, 0, 0)) != CUDA_SUCCESS)
                goto release;
        if ((r = map_at(tmp, len, a->dev, h, CU_MEM_ACCESS_FLAGS_PROT_READWRITE)) != CUDA_SUCCESS)
                goto free_va;
        r = SAGE_REAL(cuMemcpyDtoD_v2)(tmp, a->va + off, len);
        if (r == CUDA_SUCCESS)
                r = drv->ctx_synchronize(); /* a device-to-device copy returns before it is done */
        SAGE_REAL(cuMemUnmap)(tmp, len);
free_va:
        SAGE_REAL(cuMemAddressFree)(tmp, len);
        if (r == CUDA_SUCCESS) {
                *out = h;
                return r;
        }
release:
        SAGE_REAL(cuMemRelease)(h);
        return r;
}

bool sage_share_fresh(const SageShareAlloc *a) {
        return a->epoch == atomic_load_explicit(&write_epoch, memory_order_relaxed);
}

static void note_written(SageShareAlloc *a, size_t off, size_t len) {
        Range *w;

        if (!sage_share_fresh(a) || !len)
                return;
        if (sage_options()->share_assemble) /* what this upload leaves is assembled at the next launch */
                atomic_store_explicit(&sage_share_pending, true, memory_order_relaxed);
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
static bool must_keep(const SageShareAlloc *a, const Piece *p, size_t off, size_t len) {
        if (p->extent_id || !sage_share_fresh(a))
                return true;
        for (size_t i = 0; i < a->nwritten; i++)
                if (a->written[i].off < off + len && off < a->written[i].off + a->written[i].len)
                        return true;
        return false;
}

void sage_share_free_lists(Piece *p) {
        free(p->seen);
        free(p->allow);
        free(p->filled);
        p->seen = p->allow = NULL;
        p->filled = NULL;
        p->nseen = p->nallow = p->nfilled = 0;
}

void sage_share_drop_piece(SageShareAlloc *a, Piece *p) {
        sage_share_free_lists(p);
        SAGE_REAL(cuMemUnmap)(a->va + p->off, p->len);
        SAGE_REAL(cuMemRelease)(p->handle);
        if (p->extent_id && sage_share_broker)
                sage_share_broker_lost(sage_broker_release(sage_share_broker, p->extent_id));
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

static bool insert_pieces(SageShareAlloc *a, size_t at, size_t remove, const Piece *add, size_t nadd) {
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

/*
 * Make [lo, hi) (granule multiples) one piece backed by `with` (read-only if
 * it is a shared extent). The pieces it overlaps go; what remains of them
 * outside [lo, hi) gets new private backing, content kept where it matters.
 * When `with` is an upload's and the upload goes on past hi (its tail, which
 * the caller copies), a right-hand rest with nothing to keep and more than a
 * granule is backed as two pieces, its first granule apart: a framework
 * fills a pool segment upwards, so the next upload starts in that granule,
 * after the tail, and its whole granules begin right after it; splitting
 * there later cuts no piece holding bytes to keep, which would cost a
 * device-to-device copy through a temporary mapping and a synchronize
 * (SHARE_KEEP_COPIES).
 * The caller has synchronized the context. On failure nothing changed.
 */
CUresult sage_share_replace_range(SageShareAlloc *a, size_t lo, size_t hi, const Piece *with) {
        size_t i0 = 0, i1;
        Piece rem[3], add[4];
        bool keep[3] = { false, false, false };
        size_t nrem = 0, nadd = 0;
        CUresult r = CUDA_SUCCESS;

        while (i0 < a->npieces && a->pieces[i0].off + a->pieces[i0].len <= lo)
                i0++;
        for (i1 = i0; i1 < a->npieces && a->pieces[i1].off < hi;)
                i1++;
        if (i0 == i1 || !reserve_pieces(a, a->npieces + 3))
                return CUDA_ERROR_INVALID_VALUE;
        memset(rem, 0, sizeof(rem));
        if (a->pieces[i0].off < lo) {
                rem[nrem] = (Piece){ .off = a->pieces[i0].off, .len = lo - a->pieces[i0].off };
                keep[nrem] = must_keep(a, &a->pieces[i0], rem[nrem].off, rem[nrem].len);
                nrem++;
        }
        if (a->pieces[i1 - 1].off + a->pieces[i1 - 1].len > hi) {
                const Piece *last = &a->pieces[i1 - 1];
                size_t end = last->off + last->len;
                rem[nrem] = (Piece){ .off = hi, .len = end - hi };
                keep[nrem] = must_keep(a, last, rem[nrem].off, rem[nrem].len);
                if (!keep[nrem] && with->span_hi > hi && rem[nrem].len > a->gran) {
                        rem[nrem].len = a->gran;
                        nrem++;
                        rem[nrem] = (Piece){ .off = hi + a->gran, .len = end - hi - a->gran };
                }
                nrem++;
        }
        /*
         * Every new backing exists (and holds what must be kept) before the
         * old pieces go, so a failure up to here changes nothing: out of
         * memory means the plain path, never a hole in the app's memory.
         */
        for (size_t k = 0; k < nrem && r == CUDA_SUCCESS; k++) {
                if (keep[k])
                        sage_stats_count(SAGE_STAT_SHARE_KEEP_COPIES);
                r = keep[k] ? sage_share_copy_into_new(a, rem[k].off, rem[k].len, &rem[k].handle)
                            : create(a, rem[k].len, &rem[k].handle);
        }
        if (r != CUDA_SUCCESS) {
                for (size_t k = 0; k < nrem; k++)
                        if (rem[k].handle)
                                SAGE_REAL(cuMemRelease)(rem[k].handle);
                return r;
        }
        for (size_t i = i0; i < i1; i++)
                sage_share_drop_piece(a, &a->pieces[i]);
        for (size_t k = 0; k < nrem && r == CUDA_SUCCESS; k++)
                r = map_at(a->va + rem[k].off, rem[k].len, a->dev, rem[k].handle, CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
        if (r == CUDA_SUCCESS)
                r = map_at(a->va + lo, hi - lo, a->dev, with->handle,
                           with->extent_id ? CU_MEM_ACCESS_FLAGS_PROT_READ : CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
        if (r != CUDA_SUCCESS) {
                /* Mapping a live handle into its own reserved range failed: nothing sane is left to do. */
                sage_warn("share: cannot re-map %p+%zu (%d)", (void *)(uintptr_t)a->va, a->size, (int)r);
                return r;
        }
        for (size_t k = 0; k < nrem; k++)
                if (rem[k].off < lo)
                        add[nadd++] = rem[k];
        add[nadd++] = *with;
        for (size_t k = 0; k < nrem; k++)
                if (rem[k].off >= hi)
                        add[nadd++] = rem[k];
        insert_pieces(a, i0, i1 - i0, add, nadd); /* capacity reserved above: cannot fail */
        return CUDA_SUCCESS;
}

bool sage_share_map_extent(SageShareAlloc *a, Piece *piece, int fd) {
        bool served = false;

        if (SAGE_REAL(cuMemImportFromShareableHandle)(&piece->handle, (void *)(uintptr_t)fd,
                                                      CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) == CUDA_SUCCESS) {
                served = sage_share_replace_range(a, piece->off, piece->off + piece->len, piece) == CUDA_SUCCESS;
                if (!served)
                        SAGE_REAL(cuMemRelease)(piece->handle);
        }
        close(fd);
        if (!served) {
                sage_share_free_lists(piece);
                if (sage_share_broker)
                        sage_broker_release(sage_share_broker, piece->extent_id);
                sage_stats_count(SAGE_STAT_SHARE_FALLBACKS);
        }
        return served;
}

/* Give shared piece i private backing with the same content (after the work in flight). */
bool sage_share_privatize(SageShareAlloc *a, size_t i) {
        Piece *p = &a->pieces[i];
        CUmemGenericAllocationHandle h;

        sage_share_sync(a);
        if (sage_share_copy_into_new(a, p->off, p->len, &h) != CUDA_SUCCESS)
                return false;
        sage_share_drop_piece(a, p);
        if (map_at(a->va + p->off, p->len, a->dev, h, CU_MEM_ACCESS_FLAGS_PROT_READWRITE) != CUDA_SUCCESS) {
                sage_warn("share: cannot re-back %p+%zu", (void *)(uintptr_t)(a->va + p->off), p->len);
                SAGE_REAL(cuMemRelease)(h);
                return false;
        }
        *p = (Piece){ .off = p->off, .len = p->len, .handle = h, .span_lo = p->span_lo };
        sage_stats_count(SAGE_STAT_SHARE_UNSHARED);
        return true;
}

/* Shared pieces of `a` overlapping [off, off+len) become private. */
static void privatize_shared(SageShareAlloc *a, size_t off, size_t len) {
        for (size_t i = 0; i < a->npieces; i++)
                if (a->pieces[i].extent_id && a->pieces[i].off < off + len && off < a->pieces[i].off + a->pieces[i].len)
                        sage_share_privatize(a, i);
}

void sage_share_privatize_all_shared(void) {
        for (SageShareAlloc *a = sage_share_allocs; a; a = a->next)
                privatize_shared(a, 0, a->padded);
}

void sage_share_sync(SageShareAlloc *a) {
        CUcontext popped;
        bool pushed = drv->ctx_push(a->ctx) == CUDA_SUCCESS;

        drv->ctx_synchronize();
        if (pushed)
                drv->ctx_pop(&popped);
}

/*
 * Bytes [off, off+len) of `a` are about to be written by something other
 * than a shared upload: shared pieces there become private first, and
 * candidates there stop being candidates. Under the lock.
 */
static void before_write_locked(SageShareAlloc *a, size_t off, size_t len) {
        for (size_t i = 0; i < a->npieces; i++)
                if (a->pieces[i].off < off + len && off < a->pieces[i].off + a->pieces[i].len)
                        sage_share_drop_candidate(a, &a->pieces[i], "written by an API call or another upload");
        privatize_shared(a, off, len);
}

void sage_share_drop_candidate(const SageShareAlloc *a, Piece *p, const char *why) {
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

void sage_share_note_write(void) {
        atomic_fetch_add_explicit(&write_epoch, 1, memory_order_relaxed);
}

void sage_share_before_write(CUdeviceptr dst, size_t n) {
        SageShareAlloc *a;

        if (!atomic_load_explicit(&sage_share_active, memory_order_relaxed))
                return;
        sage_share_assemble(); /* while the uploads' granules still hold only what was uploaded */
        sage_share_note_write();
        pthread_mutex_lock(&sage_share_lock);
        for (a = sage_share_allocs; a; a = a->next)
                if (dst < a->va + a->size && a->va < dst + n) {
                        size_t off = dst > a->va ? dst - a->va : 0;
                        size_t end = dst + n - a->va < a->size ? dst + n - a->va : a->size;
                        before_write_locked(a, off, end - off);
                }
        pthread_mutex_unlock(&sage_share_lock);
}

/* ---------------------------------------------------------------- allocation */

static bool share_alloc(CUdeviceptr *dptr, size_t size, CUresult *result) {
        SageShareAlloc *a;
        CUmemAllocationProp prop;
        Piece whole;
        CUresult r;

        if (!sage_options()->share || size < sage_options()->share_min || !dptr)
                return false;
        pthread_mutex_lock(&sage_share_lock);
        if (!share_enabled() || !sage_share_broker) {
                pthread_mutex_unlock(&sage_share_lock);
                return false;
        }
        pthread_mutex_unlock(&sage_share_lock);
        if (!(a = calloc(1, sizeof(*a))))
                return false;
        if (drv->ctx_get_device(&a->dev) != CUDA_SUCCESS || drv->ctx_get_current(&a->ctx) != CUDA_SUCCESS)
                goto fail;
        prop = device_prop(a->dev);
        if (drv->mem_granularity(&a->gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM) != CUDA_SUCCESS || !a->gran)
                goto fail;
        a->size = size;
        a->padded = (size + a->gran - 1) / a->gran * a->gran;
        if (SAGE_REAL(cuMemAddressReserve)(&a->va, a->padded, 0, 0, 0) != CUDA_SUCCESS)
                goto fail;
        whole = (Piece){ .off = 0, .len = a->padded };
        r = create(a, a->padded, &whole.handle);
        if (r != CUDA_SUCCESS) {
                SAGE_REAL(cuMemAddressFree)(a->va, a->padded);
                /* Out of memory is the app's answer too: what cuMemAlloc would say. */
                if (r == CUDA_ERROR_OUT_OF_MEMORY) {
                        free(a);
                        return false;
                }
                goto fail;
        }
        if (map_at(a->va, a->padded, a->dev, whole.handle, CU_MEM_ACCESS_FLAGS_PROT_READWRITE) != CUDA_SUCCESS ||
            !insert_pieces(a, 0, 0, &whole, 1)) {
                SAGE_REAL(cuMemUnmap)(a->va, a->padded);
                SAGE_REAL(cuMemRelease)(whole.handle);
                SAGE_REAL(cuMemAddressFree)(a->va, a->padded);
                goto fail;
        }
        a->epoch = atomic_load_explicit(&write_epoch, memory_order_relaxed);
        /* The context must outlive cudart's own release at exit: publishing reads it back. */
        sage_warmup_note_held(a->dev);
        pthread_mutex_lock(&sage_share_lock);
        a->next = sage_share_allocs;
        sage_share_allocs = a;
        if (a->va < sage_share_lo_va)
                sage_share_lo_va = a->va;
        if (a->va + a->padded > sage_share_hi_va)
                sage_share_hi_va = a->va + a->padded;
        pthread_mutex_unlock(&sage_share_lock);
        sage_stats_count(SAGE_STAT_SHARE_ALLOCS);
        *dptr = a->va;
        *result = CUDA_SUCCESS;
        return true;
fail:
        sage_stats_count(SAGE_STAT_SHARE_FALLBACKS);
        free(a->pieces);
        free(a);
        return false;
}

/* ---------------------------------------------------------------- uploads */

bool sage_share_capturing(CUstream stream) {
        CUstreamCaptureStatus st = CU_STREAM_CAPTURE_STATUS_NONE;

        if (!drv->stream_is_capturing)
                return false;
        /* An error (the legacy stream while another captures: "implicit") counts as capturing. */
        return drv->stream_is_capturing(stream, &st) != CUDA_SUCCESS || st != CU_STREAM_CAPTURE_STATUS_NONE;
}

/*
 * An upload of n bytes from host `src` to `dst`. Returns true when bytes
 * [plan->lo, plan->hi) of it were served by mapping a shared extent: the
 * caller copies the rest. False: the caller copies everything.
 */
static bool share_upload(CUdeviceptr dst, const void *src, size_t n, bool async, CUstream stream, UploadPlan *plan) {
        SageShareAlloc *a;
        size_t o, lo, hi;
        SageHash key, content;
        bool by_file = false, served = false;
        uint64_t extent_id = 0, t;
        uint32_t notes_len = 0;
        int fd = -1, r;
        Piece piece;

        if (!atomic_load_explicit(&sage_share_active, memory_order_relaxed) || !src || !n)
                return false;
        pthread_mutex_lock(&sage_share_lock);
        if (!(a = sage_share_find(dst, n)))
                goto out;
        o = dst - a->va;
        lo = (o + a->gran - 1) / a->gran * a->gran;
        hi = (o + n) / a->gran * a->gran;
        if (async && sage_share_capturing(stream)) {
                sage_share_note_write();
                before_write_locked(a, o, n);
                goto out;
        }
        /* Shared pieces the upload overwrites in part become private; whole ones get replaced. */
        for (size_t i = 0; i < a->npieces; i++) {
                Piece *p = &a->pieces[i];
                if (p->off < o + n && o < p->off + p->len && (p->off < lo || p->off + p->len > hi || lo >= hi)) {
                        before_write_locked(a, o, n);
                        break;
                }
        }
        if (a->no_share || hi <= lo || !sage_share_broker) {
                sage_stats_add(SAGE_STAT_SHARE_BYTES_COPIED, n); /* no whole granule: assembly's, if anyone's */
                note_written(a, o, n);
                goto out;
        }
        t = sage_now_ns();
        if (hi - lo >= FILE_KEY_MIN && sage_share_file_key((const char *)src + (lo - o), hi - lo, &key)) {
                by_file = true;
                sage_stats_count(SAGE_STAT_SHARE_FILE_KEYS);
        } else if (sage_share_content_key((const char *)src + (lo - o), hi - lo, &key) < 0) {
                sage_stats_add(SAGE_STAT_SHARE_BYTES_COPIED, n);
                note_written(a, o, n);
                goto out;
        }
        t = lap(SAGE_STAT_SHARE_NS_KEY, t);
        r = sage_broker_lookup_noted(sage_share_broker, key, hi - lo, (uint32_t)a->dev, &extent_id, &fd,
                                     sage_share_notes_buf, sizeof(sage_share_notes_buf), &notes_len);
        sage_share_broker_lost(r);
        t = lap(SAGE_STAT_SHARE_NS_BROKER, t);
        sage_share_sync(a); /* nothing in flight may use the backing we replace */
        atomic_store(&sage_share_guarding, true);
        if (r == 0 && fd >= 0) {
                piece = (Piece){ .off = lo, .len = hi - lo, .extent_id = extent_id, .span_lo = o, .span_hi = o + n };
                sage_share_notes_apply(&piece, sage_share_notes_buf, notes_len);
                served = sage_share_map_extent(a, &piece, fd);
        }
        lap(SAGE_STAT_SHARE_NS_REMAP, t);
        if (served) {
                sage_stats_count(SAGE_STAT_SHARE_HITS);
                sage_stats_add(SAGE_STAT_SHARE_BYTES_MAPPED, hi - lo);
                sage_stats_add(SAGE_STAT_SHARE_BYTES_COPIED, n - (hi - lo));
                note_written(a, o, lo - o);
                note_written(a, hi, o + n - hi);
                plan->lo = lo - o;
                plan->hi = hi - o;
                goto out;
        }
        /* A miss: [lo, hi) becomes a candidate piece of its own, filled by the caller's copy. */
        sage_stats_count(SAGE_STAT_SHARE_MISSES);
        sage_stats_add(SAGE_STAT_SHARE_BYTES_COPIED, n);
        t = sage_now_ns();
        if (!by_file)
                content = key;
        else if (sage_share_content_key((const char *)src + (lo - o), hi - lo, &content) < 0)
                goto written;
        t = lap(SAGE_STAT_SHARE_NS_KEY, t);
        piece = (Piece){ .off = lo, .len = hi - lo, .candidate = true, .key = key, .content = content, .span_lo = o,
                         .span_hi = o + n };
        if (create(a, hi - lo, &piece.handle) != CUDA_SUCCESS)
                goto written;
        if (sage_share_replace_range(a, lo, hi, &piece) != CUDA_SUCCESS) {
                SAGE_REAL(cuMemRelease)(piece.handle);
                sage_stats_count(SAGE_STAT_SHARE_FALLBACKS);
        }
        lap(SAGE_STAT_SHARE_NS_REMAP, t);
written:
        note_written(a, o, n);
out:
        pthread_mutex_unlock(&sage_share_lock);
        return served;
}

/* ---------------------------------------------------------------- publishing */

static int read_device(void *ctx, size_t off, void *buf, size_t n) {
        const CUdeviceptr *at = ctx;
        return SAGE_REAL(cuMemcpyDtoH_v2)(buf, *at + off, n) == CUDA_SUCCESS ? 0 : -1;
}

int sage_share_device_content(CUdeviceptr at, size_t len, void *buf, SageHash *out) {
        return sage_share_device_key(read_device, &at, len, buf, out);
}

/* Candidates of `a` unchanged since their upload go to the broker, sealed. Under the lock. */
static void publish_candidates(SageShareAlloc *a) {
        void *buf = NULL;
        CUcontext popped;
        bool any = false;

        for (size_t i = 0; i < a->npieces; i++)
                any |= a->pieces[i].candidate;
        if (!any || !sage_share_broker || drv->ctx_push(a->ctx) != CUDA_SUCCESS)
                return;
        if (drv->ctx_synchronize() != CUDA_SUCCESS ||
            SAGE_REAL(cuMemAllocHost_v2)(&buf, sage_share_key_chunk()) != CUDA_SUCCESS)
                goto out;
        for (size_t i = 0; i < a->npieces && sage_share_broker; i++) {
                Piece *p = &a->pieces[i];
                SageHash now;
                uint64_t id;
                void *notes;
                uint32_t notes_len = 0;
                int fd = -1, existed = 0, r;

                if (!p->candidate)
                        continue;
                if (sage_share_device_content(a->va + p->off, p->len, buf, &now) < 0) {
                        p->candidate = false;
                        continue;
                }
                if (!sage_hash_equal(now, p->content)) {
                        sage_share_drop_candidate(a, p, "its content changed after the uploads");
                        continue;
                }
                p->candidate = false;
                if (SAGE_REAL(cuMemExportToShareableHandle)(&fd, p->handle, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
                                                            0) != CUDA_SUCCESS)
                        continue;
                notes = sage_share_notes_build(p, &notes_len); /* NULL, length 0: published without notes */
                /* The broker verifies the bytes against their content key: a file-keyed piece states it. */
                if (sage_hash_equal(p->key, p->content))
                        r = sage_broker_publish_noted(sage_share_broker, p->key, p->len, (uint32_t)a->dev,
                                                      SAGE_PUBLISH_SEALED, fd, notes, notes_len, &id, &existed);
                else
                        r = sage_broker_publish_content(sage_share_broker, p->key, p->content, p->len,
                                                        (uint32_t)a->dev, SAGE_PUBLISH_SEALED, fd, notes, notes_len,
                                                        &id, &existed);
                free(notes);
                if (r == 0) {
                        sage_broker_release(sage_share_broker, id); /* the broker keeps it; we hold no reference */
                        sage_stats_count(SAGE_STAT_SHARE_PUBLISHED);
                } else {
                        sage_share_broker_lost(r);
                }
                close(fd);
        }
out:
        if (buf)
                SAGE_REAL(cuMemFreeHost)(buf);
        drv->ctx_pop(&popped);
}

static void release_allocation(SageShareAlloc *a) {
        for (size_t i = 0; i < a->npieces; i++)
                sage_share_drop_piece(a, &a->pieces[i]);
        SAGE_REAL(cuMemAddressFree)(a->va, a->padded);
        sage_share_ipc_forget(a);
        free(a->pieces);
        free(a->written);
        free(a);
}

bool sage_share_free(CUdeviceptr va, CUresult *result) {
        SageShareAlloc *a = NULL, **link;

        if (!atomic_load_explicit(&sage_share_active, memory_order_relaxed))
                return false;
        pthread_mutex_lock(&sage_share_lock);
        for (link = &sage_share_allocs; *link; link = &(*link)->next)
                if ((*link)->va == va) {
                        a = *link;
                        *link = a->next;
                        break;
                }
        if (a) {
                publish_candidates(a);
                drv->ctx_synchronize(); /* cuMemFree waits for the work using the memory */
                release_allocation(a);
        }
        pthread_mutex_unlock(&sage_share_lock);
        if (!a)
                return false;
        *result = CUDA_SUCCESS;
        return true;
}

static void share_at_exit(void) {
        pthread_mutex_lock(&sage_share_lock);
        for (SageShareAlloc *a = sage_share_allocs; a; a = a->next)
                publish_candidates(a);
        pthread_mutex_unlock(&sage_share_lock);
}

/* ---------------------------------------------------------------- hooks */

void sage_share_after_call(SageSym sym) {
        SageCategory cat = sage_sym_info[sym].category;

        if (cat == SAGE_CAT_LAUNCH || cat == SAGE_CAT_GRAPH)
                sage_share_note_write();
        else if (sage_sym_writes_unknown(sym)) /* hooks.def: SAGE_W_UNKNOWN (pitched copies, launches, graphs) */
                sage_share_note_write(); /* the other copies and sets say where they write (their impl) */
}

CUresult sage_impl_cuMemAlloc_v2(sage_fn_cuMemAlloc_v2_t real, CUdeviceptr *dptr, size_t bytesize) {
        CUresult r;
        return share_alloc(dptr, bytesize, &r) ? r : real(dptr, bytesize);
}

CUresult sage_impl_cuMemFree_v2(sage_fn_cuMemFree_v2_t real, CUdeviceptr dptr) {
        CUresult r;
        return sage_share_free(dptr, &r) ? r : real(dptr);
}

CUresult sage_impl_cuMemGetAddressRange_v2(sage_fn_cuMemGetAddressRange_v2_t real, CUdeviceptr *pbase, size_t *psize,
                                           CUdeviceptr dptr) {
        SageShareAlloc *a;

        if (atomic_load_explicit(&sage_share_active, memory_order_relaxed)) {
                pthread_mutex_lock(&sage_share_lock);
                a = sage_share_find(dptr, 1);
                if (a) {
                        if (pbase)
                                *pbase = a->va;
                        if (psize)
                                *psize = a->size;
                }
                pthread_mutex_unlock(&sage_share_lock);
                if (a)
                        return CUDA_SUCCESS;
        }
        return real(pbase, psize, dptr);
}


/* Uploads: the mapped middle is skipped, the ends are copied by the app's own call. */
#define UPLOAD_SYNC(name)                                                                                  \
        CUresult sage_impl_##name(sage_fn_##name##_t real, CUdeviceptr dst, const void *src, size_t n) {   \
                UploadPlan plan;                                                                           \
                CUresult r = CUDA_SUCCESS;                                                                 \
                if (!share_upload(dst, src, n, false, NULL, &plan))                                        \
                        return real(dst, src, n);                                                          \
                if (plan.lo)                                                                               \
                        r = real(dst, src, plan.lo);                                                       \
                if (r == CUDA_SUCCESS && plan.hi < n)                                                      \
                        r = real(dst + plan.hi, (const char *)src + plan.hi, n - plan.hi);                 \
                return r;                                                                                  \
        }
#define UPLOAD_ASYNC(name, ptsz)                                                                           \
        CUresult sage_impl_##name(sage_fn_##name##_t real, CUdeviceptr dst, const void *src, size_t n,      \
                                  CUstream s) {                                                            \
                UploadPlan plan;                                                                           \
                CUresult r = CUDA_SUCCESS;                                                                 \
                if (!share_upload(dst, src, n, true, sage_share_stream_of(s, ptsz), &plan))                \
                        return real(dst, src, n, s);                                                       \
                if (plan.lo)                                                                               \
                        r = real(dst, src, plan.lo, s);                                                    \
                if (r == CUDA_SUCCESS && plan.hi < n)                                                      \
                        r = real(dst + plan.hi, (const char *)src + plan.hi, n - plan.hi, s);              \
                return r;                                                                                  \
        }
UPLOAD_SYNC(cuMemcpyHtoD_v2)
UPLOAD_SYNC(cuMemcpyHtoD_v2_ptds)
UPLOAD_ASYNC(cuMemcpyHtoDAsync_v2, false)
UPLOAD_ASYNC(cuMemcpyHtoDAsync_v2_ptsz, true)

/* Unified copies: an upload when the source is host memory, a device write otherwise. */
static bool host_source(CUdeviceptr src) {
        CUmemorytype type = 0;
        CUresult r;

        if (!drv->pointer_get_attribute)
                return false;
        r = drv->pointer_get_attribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, src);
        return r == CUDA_ERROR_INVALID_VALUE || (r == CUDA_SUCCESS && type == CU_MEMORYTYPE_HOST);
}

static bool targets_shared_alloc(CUdeviceptr dst, size_t n) {
        bool hit;

        if (!atomic_load_explicit(&sage_share_active, memory_order_relaxed))
                return false;
        pthread_mutex_lock(&sage_share_lock);
        hit = sage_share_find(dst, n) != NULL;
        pthread_mutex_unlock(&sage_share_lock);
        return hit;
}

#define UNIFIED_SYNC(name)                                                                                 \
        CUresult sage_impl_##name(sage_fn_##name##_t real, CUdeviceptr dst, CUdeviceptr src, size_t n) {   \
                UploadPlan plan;                                                                           \
                CUresult r = CUDA_SUCCESS;                                                                 \
                if (!targets_shared_alloc(dst, n))                                                         \
                        return real(dst, src, n);                                                          \
                if (!host_source(src)) {                                                                   \
                        sage_share_before_write(dst, n);                                                   \
                        return real(dst, src, n);                                                          \
                }                                                                                          \
                if (!share_upload(dst, (const void *)(uintptr_t)src, n, false, NULL, &plan))               \
                        return real(dst, src, n);                                                          \
                if (plan.lo)                                                                               \
                        r = real(dst, src, plan.lo);                                                       \
                if (r == CUDA_SUCCESS && plan.hi < n)                                                      \
                        r = real(dst + plan.hi, src + plan.hi, n - plan.hi);                               \
                return r;                                                                                  \
        }
#define UNIFIED_ASYNC(name, ptsz)                                                                          \
        CUresult sage_impl_##name(sage_fn_##name##_t real, CUdeviceptr dst, CUdeviceptr src, size_t n,     \
                                  CUstream s) {                                                            \
                UploadPlan plan;                                                                           \
                CUresult r = CUDA_SUCCESS;                                                                 \
                if (!targets_shared_alloc(dst, n))                                                         \
                        return real(dst, src, n, s);                                                       \
                if (!host_source(src)) {                                                                   \
                        sage_share_before_write(dst, n);                                                   \
                        return real(dst, src, n, s);                                                       \
                }                                                                                          \
                if (!share_upload(dst, (const void *)(uintptr_t)src, n, true, sage_share_stream_of(s, ptsz), &plan)) \
                        return real(dst, src, n, s);                                                       \
                if (plan.lo)                                                                               \
                        r = real(dst, src, plan.lo, s);                                                    \
                if (r == CUDA_SUCCESS && plan.hi < n)                                                      \
                        r = real(dst + plan.hi, src + plan.hi, n - plan.hi, s);                            \
                return r;                                                                                  \
        }
UNIFIED_SYNC(cuMemcpy)
UNIFIED_SYNC(cuMemcpy_ptds)
UNIFIED_ASYNC(cuMemcpyAsync, false)
UNIFIED_ASYNC(cuMemcpyAsync_ptsz, true)

/* Device writes with a destination: shared pieces there turn private first. */
#define WRITE_GUARD(name, params, args, dst, bytes)                          \
        CUresult sage_impl_##name(sage_fn_##name##_t real, SAGE_UNPAREN params) { \
                sage_share_before_write(dst, bytes);                         \
                return real args;                                            \
        }
#define DTOD_PARAMS (CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t n)
#define DTOD_ASYNC_PARAMS (CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t n, CUstream s)
WRITE_GUARD(cuMemcpyDtoD_v2, DTOD_PARAMS, (dstDevice, srcDevice, n), dstDevice, n)
WRITE_GUARD(cuMemcpyDtoD_v2_ptds, DTOD_PARAMS, (dstDevice, srcDevice, n), dstDevice, n)
WRITE_GUARD(cuMemcpyDtoDAsync_v2, DTOD_ASYNC_PARAMS, (dstDevice, srcDevice, n, s), dstDevice, n)
WRITE_GUARD(cuMemcpyDtoDAsync_v2_ptsz, DTOD_ASYNC_PARAMS, (dstDevice, srcDevice, n, s), dstDevice, n)
#define PEER_PARAMS (CUdeviceptr dst, CUcontext dctx, CUdeviceptr src, CUcontext sctx, size_t n)
#define PEER_ASYNC_PARAMS (CUdeviceptr dst, CUcontext dctx, CUdeviceptr src, CUcontext sctx, size_t n, CUstream s)
WRITE_GUARD(cuMemcpyPeer, PEER_PARAMS, (dst, dctx, src, sctx, n), dst, n)
WRITE_GUARD(cuMemcpyPeer_ptds, PEER_PARAMS, (dst, dctx, src, sctx, n), dst, n)
WRITE_GUARD(cuMemcpyPeerAsync, PEER_ASYNC_PARAMS, (dst, dctx, src, sctx, n, s), dst, n)
WRITE_GUARD(cuMemcpyPeerAsync_ptsz, PEER_ASYNC_PARAMS, (dst, dctx, src, sctx, n, s), dst, n)
WRITE_GUARD(cuMemsetD8_v2, (CUdeviceptr d, unsigned char v, size_t n), (d, v, n), d, n)
WRITE_GUARD(cuMemsetD8_v2_ptds, (CUdeviceptr d, unsigned char v, size_t n), (d, v, n), d, n)
WRITE_GUARD(cuMemsetD8Async, (CUdeviceptr d, unsigned char v, size_t n, CUstream s), (d, v, n, s), d, n)
WRITE_GUARD(cuMemsetD8Async_ptsz, (CUdeviceptr d, unsigned char v, size_t n, CUstream s), (d, v, n, s), d, n)
WRITE_GUARD(cuMemsetD32_v2, (CUdeviceptr d, unsigned int v, size_t n), (d, v, n), d, n * 4)
WRITE_GUARD(cuMemsetD32_v2_ptds, (CUdeviceptr d, unsigned int v, size_t n), (d, v, n), d, n * 4)
WRITE_GUARD(cuMemsetD32Async, (CUdeviceptr d, unsigned int v, size_t n, CUstream s), (d, v, n, s), d, n * 4)
WRITE_GUARD(cuMemsetD32Async_ptsz, (CUdeviceptr d, unsigned int v, size_t n, CUstream s), (d, v, n, s), d, n * 4)
