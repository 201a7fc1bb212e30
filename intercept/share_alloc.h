/*
 * Sharing's VMM allocator (share_alloc.c): allocations as reserved ranges
 * covered by pieces, each one physical allocation that can be swapped for
 * a broker extent (read-only) or new private backing. Driver calls go
 * through SageShareDriver, so the allocator is unit-tested with a fake one.
 */
#pragma once

#include <cuda.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "hash.h"
#include "vmm.h"

typedef struct Range {
        size_t off, len;
} Range;

/* One physical allocation mapped at [off, off+len) of an allocation. */
typedef struct Piece {
        size_t off, len;
        CUmemGenericAllocationHandle handle;
        uint64_t extent_id; /* nonzero: a broker extent mapped read-only; the reference we hold */
        bool parked;        /* a broker extent unmapped while suspended (share_vmm_park): `key` maps it again */
        bool candidate;     /* filled by one upload: published at free or exit if unchanged */
        bool unconfirmed;   /* predicted (share_hint.h): an extent mapped before its upload, no span yet */
        bool unbacked;      /* deferred (share_backing.c): address reserved, no memory mapped yet */
        bool private_due;   /* shared, a captured launch's new use: private before a graph runs (share_guard.c) */
        SageHash key;       /* candidate: the broker key (file identity or content) */
        SageHash content;   /* candidate: the content hash, checked against the device */
        size_t span_lo;     /* where the upload that filled it starts (<= off): kernels point from here */
        size_t span_hi;     /* where that upload ends (>= off + len; 0: not an upload's piece) */
        uint64_t *seen;     /* candidate: kernel-parameter uses seen (share_guard.c) */
        size_t nseen;
        bool seen_overflow;
        uint64_t *allow; /* shared: the uses its publisher saw, sorted */
        size_t nallow;
        Range *filled;        /* assembled (several uploads, keyed by content at the first launch): */
        size_t nfilled;       /* the uploads' ranges; a kernel pointing between them is not reading weights */
        bool run_hint;        /* unconfirmed, predicted as an assembled run: its uploads go to `image` (share_hint.h) */
        unsigned char *image; /* run_hint: len bytes mapped, what its uploads wrote (NULL: none yet; share_hint.c) */
        unsigned char
                *image_ahead; /* run_hint: len zero bytes faulted in by the warm-up thread, `image` at an upload */
} Piece;

#define SAGE_SHARE_MAX_USES 4000

/* An allocation SAGE's VMM allocator backs. */
typedef struct SageShareAlloc {
        CUdeviceptr va;            /* the reservation; pieces' offsets count from here */
        size_t size, padded, gran; /* size: lead + what the app asked for */
        size_t lead;               /* the app's allocation starts at va + lead (learned placement, share_place.c) */
        uint32_t ordinal;          /* among the process's allocations of its size (placement's key) */
        size_t tail_use;           /* tail_seen: the app offset a kernel pointed at past the uploads (share_guard.c) */
        bool tail_seen;
        CUdevice dev;
        uint32_t broker_dev; /* the broker's ordinal of dev's GPU (found by UUID): what the protocol says */
        CUcontext ctx;
        uint64_t epoch; /* the write epoch at allocation; unchanged: only tracked uploads wrote it */
        Range *written; /* those uploads, while fresh */
        size_t nwritten;
        Piece *pieces; /* sorted, covering [0, padded) */
        size_t npieces, cap;
        bool no_share; /* exported through CUDA IPC: one private backing for good */
        bool app_vmm;  /* an app's cuMemCreate handle (share_vmm.c): va is the app's mapping (0: unmapped) */
        bool rdma;     /* its pieces are made GPUDirect RDMA capable, as the app asked (XLA does where supported) */
        bool predict_spoiled; /* a predicted piece was written or covered in part before its upload (share_hint.c) */
        Range *plain;         /* uploads copied because a hit would cost more (share_cost.h): never assembled */
        size_t nplain;
        struct ShareGraphUse *graph_uses; /* captured launches' uses of it: a graph may run them any time */
        size_t ngraph_uses;
        bool graph_uses_lost;              /* more than the guard keeps: every use of a later hit counts as unknown */
        CUmemGenericAllocationHandle held; /* deferred: memory made for its unbacked pieces, unmapped (0: none) */
        Piece *due; /* runs left for idleness at the first launch (share_assemble_due): off, len, filled */
        size_t ndue;
        struct SageShareAlloc *next;
} SageShareAlloc;

/*
 * The driver calls sharing makes: the VMM steps (common/vmm.h) and what its
 * parts need around them. Entries marked optional may be NULL.
 */
typedef struct SageShareDriver {
        SageVmmOps vmm;
        CUresult (*ctx_push)(CUcontext);
        CUresult (*ctx_pop)(CUcontext *);
        CUresult (*ctx_get_device)(CUdevice *);
        CUresult (*ctx_get_current)(CUcontext *);
        CUresult (*granularity)(size_t *, const CUmemAllocationProp *, CUmemAllocationGranularity_flags);
        CUresult (*import_fd)(CUmemGenericAllocationHandle *, void *, CUmemAllocationHandleType);
        CUresult (*export_fd)(void *, CUmemGenericAllocationHandle, CUmemAllocationHandleType, unsigned long long);
        CUresult (*copy_dtoh)(void *, CUdeviceptr, size_t);
        CUresult (*copy_htod)(CUdeviceptr, const void *, size_t);
        CUresult (*copy_htod_async)(CUdeviceptr, const void *, size_t, CUstream); /* optional */
        CUresult (*alloc_host)(void **, size_t);
        CUresult (*free_host)(void *);
        /* optional: */
        CUresult (*stream_is_capturing)(CUstream, CUstreamCaptureStatus *);
        /* read-back on a stream of SAGE's own (share_readback.c; without them: copy_dtoh, no overlap): */
        CUresult (*stream_create)(CUstream *, unsigned int);
        CUresult (*stream_destroy)(CUstream);
        CUresult (*stream_synchronize)(CUstream);
        CUresult (*copy_dtoh_async)(void *, CUdeviceptr, size_t, CUstream);
        CUresult (*stream_query)(CUstream); /* optional: without it the read-back's waits do nothing meanwhile */
        CUresult (*pointer_get_attribute)(void *, CUpointer_attribute, CUdeviceptr);
        /* the launch guard's (share_guard.c; the kernel_ ones optional): */
        CUresult (*func_get_param_info)(CUfunction, size_t, size_t *, size_t *);
        CUresult (*func_get_name)(const char **, CUfunction);
        CUresult (*kernel_get_param_info)(CUkernel, size_t, size_t *, size_t *);
        CUresult (*kernel_get_name)(const char **, CUkernel);
        /* optional; without it no GPU can be named to the broker, nothing is shared: */
        CUresult (*device_get_uuid)(CUuuid *, CUdevice);
        /* optional; without them alloc_host pins the read-back staging (else registered: share_stage_pin.c): */
        CUresult (*host_register)(void *, size_t, unsigned int);
        CUresult (*host_unregister)(void *);
        /* optional; without it pinning the read-back staging runs in the thread's own capture mode (capture_mode.h): */
        CUresult (*exchange_capture_mode)(CUstreamCaptureMode *);
} SageShareDriver;

/*
 * New backing for what remains of the pieces around [lo, hi) of an
 * allocation, made ahead (share_vmm_prepare_rests) while an upload's
 * lookup is on its way: empty pieces only, nothing of them to keep.
 */
typedef struct ShareRests {
        SageShareAlloc *a; /* NULL: none prepared */
        Piece rem[3];      /* off, len, handle */
        size_t n;
} ShareRests;

/*
 * The allocator part of sharing: every allocation it backs and the write
 * epoch. Callers serialize all calls (SageShare's lock); the epoch and
 * `pending` are atomic because hooks read them without it.
 */
typedef struct ShareVmm {
        const SageShareDriver *drv;
        void (*release_extent)(void *ctx, uint64_t extent_id); /* give a broker reference back */
        void *release_ctx;
        bool track_pending;        /* SAGE_SHARE_ASSEMBLE: partial uploads raise `pending` */
        atomic_ullong write_epoch; /* bumped by anything that may write memory SAGE does not see */
        atomic_bool pending;       /* a fresh allocation holds uploads not keyed yet (partial granules) */
        SageShareAlloc *allocs;
        uint64_t lo_va, hi_va; /* bounds of every allocation it backs */
        ShareRests prepared;   /* share_vmm_prepare_rests's, until taken or discarded */
        /* Unconfirmed pieces (share_hint.h): hooks read it without the lock. */
        atomic_uint unconfirmed;
        bool defer;              /* SAGE_SHARE_DEFER: new allocations' pieces unbacked until used (share_backing.c) */
        atomic_uint unbacked;    /* unbacked pieces: hooks read it without the lock */
        atomic_bool private_due; /* a piece is private_due (share_guard.c): hooks read it without the lock */
        /* Should assembly leave run [off, off+len) of `a` for idleness? (SAGE_SHARE_ASSEMBLE_IDLE; NULL: no) */
        bool (*defer_run)(void *ctx, const struct SageShareAlloc *a, size_t off, size_t len);
        void *defer_ctx;
        atomic_bool idle_due; /* an allocation holds due runs: the suspend listener reads it without the lock */
        /* Is shared piece `with`, replacing pieces [i0, i1) of `a`, due at once? (share_guard_due_over; NULL: no) */
        bool (*due_over)(const struct SageShareAlloc *a, size_t i0, size_t i1, const struct Piece *with);
} ShareVmm;

void share_vmm_init(ShareVmm *v, const SageShareDriver *drv, void (*release_extent)(void *, uint64_t), void *ctx);

/*
 * A new allocation of `size` bytes on `dev` (its granule: `gran`), not yet
 * linked: only its epoch is read, so the caller need not serialize (the
 * driver work runs outside the lock). CUresult of the failing step.
 */
CUresult share_vmm_alloc(ShareVmm *v, size_t size, size_t gran, CUdevice dev, uint32_t broker_dev, CUcontext ctx,
                         SageShareAlloc **out);
/*
 * The same, its ranges pre[0..npre) backed by the broker extents the
 * caller imported (handle, extent_id, key and notes set; on granules
 * inside it, sorted, apart: share_hints_for checks): mapped read-only, one
 * access call per run of adjacent ones, unconfirmed (share_hint.h); only
 * the rest gets private backing. On failure they are the caller's again.
 */
CUresult share_vmm_alloc_predicted(ShareVmm *v, size_t size, size_t gran, CUdevice dev, uint32_t broker_dev,
                                   CUcontext ctx, Piece *pre, size_t npre, SageShareAlloc **out);
/*
 * The same, but nothing reserved or mapped (va 0): the backing of an app's
 * cuMemCreate handle (share_vmm.c), mapped where the app maps it; its
 * pieces GPUDirect RDMA capable if `rdma` (as the app asked).
 */
CUresult share_vmm_alloc_unmapped(ShareVmm *v, size_t size, size_t gran, CUdevice dev, uint32_t broker_dev,
                                  CUcontext ctx, bool rdma, SageShareAlloc **out);
/* The address the app knows `a` by. */
static inline CUdeviceptr share_vmm_user_va(const SageShareAlloc *a) {
        return a->va + a->lead;
}
/* Make `a` one of the allocations the allocator backs (found, scanned, published). */
void share_vmm_link(ShareVmm *v, SageShareAlloc *a);
/* The allocation holding [p, p+n), or NULL. */
SageShareAlloc *share_vmm_find(const ShareVmm *v, CUdeviceptr p, size_t n);
/* Unlink the allocation the app knows by `va`; NULL if none. */
SageShareAlloc *share_vmm_unlink(ShareVmm *v, CUdeviceptr va);
/* Unmap and release every piece and the range of an unlinked allocation; frees it. */
void share_vmm_release(ShareVmm *v, SageShareAlloc *a);

/* Something may write device memory SAGE does not see: no allocation is fresh any more. */
void share_vmm_note_write(ShareVmm *v);
/* Has nothing but tracked uploads written `a` since it was allocated? */
bool share_vmm_fresh(const ShareVmm *v, const SageShareAlloc *a);
/* A tracked upload wrote a->va[off, off+len). */
void share_vmm_note_written(ShareVmm *v, SageShareAlloc *a, size_t off, size_t len);
/* Did a tracked upload write any of a->va[lo, hi)? */
static inline bool share_vmm_written_in(const SageShareAlloc *a, size_t lo, size_t hi) {
        for (size_t i = 0; i < a->nwritten; i++)
                if (a->written[i].off < hi && lo < a->written[i].off + a->written[i].len)
                        return true;
        return false;
}

/* Wait for the work in flight in the context of `a`. */
void share_vmm_sync(ShareVmm *v, SageShareAlloc *a);
/*
 * Before replacing [lo, hi) of `a` (share_vmm_replace_range): must the work
 * in flight be waited for? No when `a` is fresh and no tracked upload wrote
 * the pieces that go. sync_for_replace waits only then (else counts a skip).
 */
bool share_vmm_replace_needs_sync(const ShareVmm *v, const SageShareAlloc *a, size_t lo, size_t hi);
void share_vmm_sync_for_replace(ShareVmm *v, SageShareAlloc *a, size_t lo, size_t hi);
/* A new physical allocation holding a copy of a->va[off, off+len) (device copy, finished). */
CUresult share_vmm_copy_into_new(ShareVmm *v, SageShareAlloc *a, size_t off, size_t len,
                                 CUmemGenericAllocationHandle *out);
/* A new, empty physical allocation of `len` bytes on the device of `a`. */
CUresult share_vmm_create(ShareVmm *v, const SageShareAlloc *a, size_t len, CUmemGenericAllocationHandle *out);
/*
 * Make [lo, hi) (granule multiples) one piece backed by `with` (read-only
 * if it is a shared extent). The caller has synchronized. On failure
 * nothing changed and `with` is still the caller's. It takes the prepared
 * rests when they are exactly the ones it needs (none to keep).
 */
CUresult share_vmm_replace_range(ShareVmm *v, SageShareAlloc *a, size_t lo, size_t hi, const Piece *with);
/*
 * Make the new backing a replace of [lo, hi) by an upload spanning up to
 * span_hi will need, now (the caller has synchronized as for the replace):
 * done while the broker answers the upload's lookup, since a hit and a
 * miss both replace that range. Only when nothing of the rests is to be
 * kept (a copy would read bytes a later write could change). False:
 * nothing prepared (the replace makes its own). Either way one prepare at
 * a time: the last one's unused rests are released first.
 */
bool share_vmm_prepare_rests(ShareVmm *v, SageShareAlloc *a, size_t lo, size_t hi, size_t span_hi);
/* Release prepared rests no replace took (the caller is done with the range). */
void share_vmm_discard_rests(ShareVmm *v);
/*
 * Import broker extent fd (closed; -1: piece->handle is imported already)
 * and map it read-only as `piece`, whose off, len, extent_id (our
 * reference) and notes are set. False: nothing
 * changed, the reference is given back, the piece's lists freed. Synced.
 */
bool share_vmm_map_extent(ShareVmm *v, SageShareAlloc *a, Piece *piece, int fd);
/* Give shared piece i of `a` private backing with the same content (after the work in flight). */
bool share_vmm_privatize(ShareVmm *v, SageShareAlloc *a, size_t i);
/*
 * Bytes [off, off+len) of `a` are about to be written by something other
 * than a shared upload: shared pieces there become private first (a
 * predicted run's uploads kept on the host copied in), and candidates
 * there stop being candidates. Defined in share_hint.c, which holds runs.
 */
void share_vmm_before_write(ShareVmm *v, SageShareAlloc *a, size_t off, size_t len);
/* Candidate p is not to be published (why: one debug line). */
void share_vmm_drop_candidate(const SageShareAlloc *a, Piece *p, const char *why);
/* Unmap and release piece `p` (and the broker reference of a shared one); its entry stays. */
void share_vmm_drop_piece(ShareVmm *v, SageShareAlloc *a, Piece *p);
/* Free a piece's use lists (seen, allow, filled). */
void share_vmm_free_lists(Piece *p);
/* Leave run `p` for idleness in `a` (its lists then `a`'s): false, out of memory (`p` is the caller's still). */
static inline bool share_vmm_add_due(ShareVmm *v, SageShareAlloc *a, Piece p) {
        Piece *grown = realloc(a->due, (a->ndue + 1) * sizeof(*grown));

        if (!grown)
                return false;
        a->due = grown;
        a->due[a->ndue++] = p;
        atomic_store(&v->idle_due, true);
        return true;
}
/* Drop the runs `a` left for idleness (share_assemble_due): their lists freed, none left. */
static inline void share_vmm_drop_due(SageShareAlloc *a) {
        for (size_t i = 0; i < a->ndue; i++)
                share_vmm_free_lists(&a->due[i]);
        free(a->due);
        a->due = NULL;
        a->ndue = 0;
}
/* Its image and the one made ahead (a predicted run's, share_hint.c) unmapped, if any; free_lists does it too. */
void share_vmm_free_image(Piece *p);
/*
 * Suspend (docs/suspend.md): the driver cannot restore imported memory, so
 * before a checkpoint every broker extent is unmapped and released, its
 * piece "parked" (place and key kept, the address range still reserved);
 * after the restore all are looked up again by their keys at once and each
 * mapped at the same address, read-only, with one access call per run of
 * adjacent pieces. The caller has synchronized and keeps every other call out.
 * park returns how many pieces are parked (also those parked before). unpark returns how many it could
 * not map (they stay parked: the memory is not what it was).
 */
typedef struct ShareParkedLookup {
        SageHash key;
        size_t len;
        uint32_t device;
        uint64_t extent_id; /* answers: a hit has both (the fd is the callee's to close) */
        int fd;
} ShareParkedLookup;
/* Every parked piece's key at once, in one call (the broker is asked once for all of them): fill in each
 * hit's extent_id and fd, leave a miss's at 0 and -1. */
typedef void (*ShareLookupFn)(void *ctx, ShareParkedLookup *lookups, size_t n);
size_t share_vmm_park(ShareVmm *v);
size_t share_vmm_unpark(ShareVmm *v, ShareLookupFn lookup, void *ctx);

/* Give `a` a single private backing for good (content kept): CUDA IPC exports it (share_backing.c). */
bool share_vmm_consolidate(ShareVmm *v, SageShareAlloc *a);

/*
 * Deferred backing (share_backing.c, SAGE_SHARE_DEFER). An allocation made
 * with `defer` on reserves its range and creates its memory (`held`, so
 * the app's cuMemAlloc fails where the driver's would) but maps nothing:
 * its pieces are unbacked. A hit replaces unbacked pieces at the cost of
 * its own import, map and access; nothing is created to be released. Before
 * anything else may reach the range, its pieces get private backing: the
 * granules an app's copy writes (share_vmm_back), everything at any call
 * that may touch device memory (share_vmm_back_all). An allocation no hit
 * reached before that is mapped with `held` itself (2 calls, as the eager
 * path's); else `held` goes once the last unbacked piece has backing.
 * CUDA_SUCCESS, or the create's error (pieces left unbacked: the caller
 * must not let the app reach them).
 */
CUresult share_vmm_back(ShareVmm *v, SageShareAlloc *a, size_t off, size_t len);
/* Every unbacked piece of every allocation; false if one could not be backed. */
bool share_vmm_back_all(ShareVmm *v);
/* A step of that: every unbacked piece of the first allocation with any. False: none left, or it failed. */
bool share_vmm_back_next(ShareVmm *v);
/* The allocator's own steps, for share_backing.c. */
bool share_vmm_insert_pieces(SageShareAlloc *a, size_t at, size_t remove, const Piece *add, size_t nadd);
CUresult share_vmm_map_run(ShareVmm *v, const SageShareAlloc *a, const Piece *ps, size_t n, CUmemAccess_flags access);
static inline bool share_vmm_has_unbacked(const SageShareAlloc *a) {
        for (size_t i = 0; i < a->npieces; i++)
                if (a->pieces[i].unbacked)
                        return true;
        return false;
}
/* No piece of `a` needs its held memory any more: it goes. */
static inline void share_vmm_drop_held(ShareVmm *v, SageShareAlloc *a) {
        if (a->held)
                v->drv->vmm.release(a->held);
        a->held = 0;
}
