/* Assembly: keying what no single upload covers whole (share_assemble.c). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "share_alloc.h"
#include "share_readback.h"

/* A key looked up among many (ShareLookup's lookup_many). */
typedef struct ShareLookupReq {
        SageHash key;
        size_t len;
        uint32_t device;
        int result;  /* as ShareLookup's lookup returns */
        uint64_t id; /* a hit: the extent (a reference now ours) */
        int fd;      /* a hit: >= 0; else -1 */
        void *notes; /* the caller's SAGE_SHARE_NOTES_MAX bytes: a hit's notes */
        uint32_t notes_len;
} ShareLookupReq;

/* Where keys are looked up: the broker in libsage, a fake in tests. */
typedef struct ShareLookup {
        /*
         * 0 with *fd >= 0: a hit, extent *id (a reference now ours) with
         * *notes (valid until the next lookup); 0 with *fd < 0 or positive:
         * a miss; negative: the lookup is gone.
         */
        int (*lookup)(void *ctx, SageHash key, size_t len, uint32_t device, uint64_t *id, int *fd, const void **notes,
                      uint32_t *notes_len);
        /* Optional: all of them in one exchange; a request from the one that found the lookup gone on carries it. */
        void (*lookup_many)(void *ctx, ShareLookupReq *reqs, size_t n);
        void *ctx;
        /*
         * Optional, all three or none: lookup_many spread over time. begin
         * (for up to `max`; NULL: lookup_many at the end instead), add each
         * request as soon as its key is known (it stays where it is until
         * end), end fills every request added as lookup_many would.
         * Between begin and end the caller asks nothing else of ctx.
         */
        void *(*begin)(void *ctx, size_t max);
        void (*add)(void *ctx, void *batch, ShareLookupReq *req);
        void (*end)(void *ctx, void *batch);
} ShareLookup;

/*
 * Key the runs of granules that uploads filled in part (or several uploads
 * together) of fresh allocations a[0..n) by their whole content, read back
 * through `rb` (share_readback.h); then look every key up at once; then a
 * run the lookup holds maps its extent, any other becomes a candidate.
 * Each context is synchronized once before its runs are read. Runs
 * v->defer_run chooses are left in their allocation's `due` instead
 * (share_assemble_due). False: the lookup is gone (the runs it did not
 * answer stay private).
 */
bool share_assemble_allocations(ShareVmm *v, SageShareAlloc *const *a, size_t n, const ShareLookup *lk,
                                ShareReadback *rb);
/*
 * The first launch while copies are cheaper than hits (share_cost.h):
 * runs v->defer_run chooses are left due as share_assemble_allocations
 * leaves them; the others are neither keyed nor mapped (nothing read back).
 */
void share_assemble_defer_only(ShareVmm *v, SageShareAlloc *const *a, size_t n);
/*
 * Runs v->defer_run chose at the first launch (share_assemble_allocations
 * left them in each allocation's `due`), keyed from the device now, while
 * the process is idle and none of its calls can run (share_idle.c): a run
 * the lookup holds maps its extent; a miss, or a run no longer on plain
 * private memory, stays as it is. The due lists go either way. False: the
 * lookup is gone.
 */
bool share_assemble_due(ShareVmm *v, SageShareAlloc *const *a, size_t n, const ShareLookup *lk, ShareReadback *rb);
/*
 * Bytes [off, off+len) of `a` were copied although the broker may hold
 * them: a hit would have cost more than the copy (share_cost.h). The
 * granules they touch are not assembled either. False: not recorded
 * (out of memory, too many), and so not kept out.
 */
bool share_assemble_skip(SageShareAlloc *a, size_t off, size_t len);
/*
 * Should an upload's whole granules [lo, hi) of `a` be left to assembly
 * (copied by the app's call, keyed later with the bytes around them as one
 * run) instead of looked up now? Yes when they are fewer than
 * SHARE_ASSEMBLE_TAKES_MAX and their hit would have to keep bytes already
 * copied into the same private piece, which assembly keys anyway: such a
 * hit pays a key, a round trip, a device copy of those bytes and
 * synchronizes, and cuts the run around it in two.
 */
bool share_assemble_takes(const ShareVmm *v, const SageShareAlloc *a, size_t lo, size_t hi);
/* At least this many whole granules' bytes are always looked up: below it a miss is the app's copy too (8 MiB). */
#define SHARE_ASSEMBLE_TAKES_MAX ((size_t)8 << 20)
