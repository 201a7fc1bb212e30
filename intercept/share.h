/*
 * Sharing-based memory, client side (SAGE_SHARE=1): share.c (allocator,
 * uploads, publishing), share_assemble.c, share_guard.c, share_key.c,
 * share_ipc.c.
 */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker_client.h"
#include "hash.h"
#include "hooks.h"

typedef struct Range {
        size_t off, len;
} Range;

/* One physical allocation mapped at [off, off+len) of an allocation. */
typedef struct Piece {
        size_t off, len;
        CUmemGenericAllocationHandle handle;
        uint64_t extent_id; /* nonzero: a broker extent mapped read-only; the reference we hold */
        bool candidate;     /* filled by one upload: published at free or exit if unchanged */
        SageHash key;       /* candidate: the broker key (file identity or content) */
        SageHash content;   /* candidate: the content hash, checked against the device */
        size_t span_lo;     /* where the upload that filled it starts (<= off): kernels point from here */
        size_t span_hi;     /* where that upload ends (>= off + len; 0: not an upload's piece) */
        uint64_t *seen;     /* candidate: kernel-parameter uses seen (share_guard.c) */
        size_t nseen;
        bool seen_overflow;
        uint64_t *allow;    /* shared: the uses its publisher saw, sorted */
        size_t nallow;
        Range *filled;      /* assembled (several uploads, keyed by content at the first launch): */
        size_t nfilled;     /* the uploads' ranges; a kernel pointing between them is not reading weights */
} Piece;

#define SAGE_SHARE_MAX_USES 4000
#define SAGE_SHARE_NOTES_MAX 32768

/* An allocation SAGE's VMM allocator backs. */
typedef struct SageShareAlloc {
        CUdeviceptr va;
        size_t size, padded, gran;
        CUdevice dev;
        CUcontext ctx;
        uint64_t epoch;       /* the write epoch at allocation; unchanged: only tracked uploads wrote it */
        Range *written;       /* those uploads, while fresh */
        size_t nwritten;
        Piece *pieces;        /* sorted, covering [0, padded) */
        size_t npieces, cap;
        bool no_share;        /* exported through CUDA IPC: one private backing for good */
        struct SageShareAlloc *next;
} SageShareAlloc;

/* Bytes [lo, hi) of an upload served by mapping; the caller copies the rest. */
typedef struct UploadPlan {
        size_t lo, hi;
} UploadPlan;

extern pthread_mutex_t sage_share_lock;
extern SageShareAlloc *sage_share_allocs; /* under sage_share_lock */
extern SageBroker *sage_share_broker;     /* under sage_share_lock; NULL once lost */
extern atomic_bool sage_share_active;     /* some allocation may be VMM-backed */
extern atomic_bool sage_share_guarding;   /* some piece is a candidate or shared: launches are scanned */
extern atomic_bool sage_share_pending;    /* a fresh allocation holds uploads not keyed yet (partial granules) */
extern uint64_t sage_share_lo_va, sage_share_hi_va; /* bounds of every VMM-backed allocation; under the lock */

/* The allocation holding [p, p+n), or NULL. Under the lock. */
SageShareAlloc *sage_share_find(CUdeviceptr p, size_t n);

/* A broker call failed at the transport level (r < 0): stop sharing, keep running. Under the lock. */
void sage_share_broker_lost(int r);

/* Is `va` the start of an allocation SAGE's VMM allocator backs? Frees it if so. */
bool sage_share_free(CUdeviceptr va, CUresult *result);

/* Something may write device memory SAGE does not see (a launch, a 2D/3D copy). */
void sage_share_note_write(void);
/* The app is about to write [dst, dst+n) through the API. */
void sage_share_before_write(CUdeviceptr dst, size_t n);
/*
 * Granules that uploads filled in part (or several uploads together) are
 * keyed by their content before anything else writes them: called before a
 * launch or an API write while sage_share_pending.
 */
void sage_share_assemble(void);
/* The stream a call means: a _ptsz entry point means the per-thread stream by 0. */
static inline CUstream sage_share_stream_of(CUstream s, bool ptsz) {
        return !s && ptsz ? CU_STREAM_PER_THREAD : s;
}
/* May work submitted to `stream` be captured rather than run (no synchronizing then)? */
bool sage_share_capturing(CUstream stream);
/* Called by the hooks' slow path after every call while sharing is active. */
void sage_share_after_call(SageSym sym);

/* Has nothing but tracked uploads written `a` since it was allocated? */
bool sage_share_fresh(const SageShareAlloc *a);
/* Make [lo, hi) of `a` one piece backed by `with` (see share.c). Under the lock. */
CUresult sage_share_replace_range(SageShareAlloc *a, size_t lo, size_t hi, const Piece *with);
/*
 * Import broker extent fd (closed) and map it read-only as `piece`, whose
 * off, len, extent_id (our reference) and notes are set. False: nothing
 * changed, the reference is given back, the piece's lists freed. Under the
 * lock, synced.
 */
bool sage_share_map_extent(SageShareAlloc *a, Piece *piece, int fd);
/* Free a piece's use lists (seen, allow, filled). */
void sage_share_free_lists(Piece *p);
/* Key device bytes [at, at+len) by content, read back through `buf` (sage_share_key_chunk() bytes, pinned). */
int sage_share_device_content(CUdeviceptr at, size_t len, void *buf, SageHash *out);
/* The notes of a broker lookup's answer. Under the lock. */
extern uint64_t sage_share_notes_buf[SAGE_SHARE_NOTES_MAX / 8];

/* A new physical allocation holding a copy of a->va[off, off+len) (device copy, finished). */
CUresult sage_share_copy_into_new(SageShareAlloc *a, size_t off, size_t len, CUmemGenericAllocationHandle *out);
/* Map `h` at [va, va+len) with `access` for `dev`. */
CUresult sage_share_map(CUdeviceptr va, size_t len, CUdevice dev, CUmemGenericAllocationHandle h,
                        CUmemAccess_flags access);

/* Wait for the work in flight in the context of `a`. */
void sage_share_sync(SageShareAlloc *a);
/* Give shared piece i of `a` private backing with the same content; every shared piece. Under the lock. */
bool sage_share_privatize(SageShareAlloc *a, size_t i);
/* Candidate p is not to be published (why: one debug line). Under the lock. */
void sage_share_drop_candidate(const SageShareAlloc *a, Piece *p, const char *why);
void sage_share_privatize_all_shared(void);
/* Unmap and release piece `p` (and the broker reference of a shared one); its entry stays. Under the lock. */
void sage_share_drop_piece(SageShareAlloc *a, Piece *p);

/* Launch guard (share_guard.c). */
bool sage_share_guard_available(void);
void sage_share_guard_launch(CUstream stream, CUfunction f, void **params, void **extra);
/* The notes a candidate is published with (malloc'ed; NULL: none), and their use on a mapped piece. */
void *sage_share_notes_build(const Piece *p, uint32_t *len);
void sage_share_notes_apply(Piece *p, const void *notes, uint32_t len);

/* Give `a` a single private backing (content kept). Under the lock. */
bool sage_share_consolidate(SageShareAlloc *a);
/* `a` is going away: drop its IPC registrations. Under the lock. */
void sage_share_ipc_forget(SageShareAlloc *a);
