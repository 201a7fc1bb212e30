/* Device bytes read back and keyed at DMA speed (share_readback.c). */
#pragma once

#include <cuda.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "hash.h"
#include "share_alloc.h"

/*
 * Pinned host staging, two halves of SHARE_READBACK_HALF, made once per
 * process: by the warm-up thread when sharing is on (share_prestage), else
 * at the first read-back (pinning costs milliseconds per few MiB, on the
 * app's path there). Callers serialize (SageShare's lock).
 */
typedef struct ShareReadback {
        void *host;      /* halves [0, SHARE_READBACK_HALF) and [SHARE_READBACK_HALF, 2 x) */
        bool pinned;     /* host from alloc_host; else malloc'd (the pinned allocation failed) */
        bool registered; /* pinned: SAGE's mapping, registered (share_stage_pin.c), not alloc_host's */
        pid_t owner;     /* the process that made host and stream: a fork()ed child makes its own */
        CUstream stream; /* SAGE's stream in `stream_ctx`, made at the first read-back there and kept */
        CUcontext stream_ctx;
        bool stream_made;
} ShareReadback;

/*
 * A half: a longer range is read in pieces of this size through the same
 * pipeline (a whole number of key chunks, so each piece hashes whole
 * chunks of the key). 8 MiB: at DMA speed (~25 GB/s) a piece lands in
 * ~0.3 ms, hashed in about as long by the pool, while the per-piece
 * synchronize costs microseconds; 16 MiB pinned per process, not 64.
 */
#define SHARE_READBACK_HALF ((size_t)8 << 20)

/* One range to key: device bytes [at, at+len). result 0: `key` is their content key; negative: unread. */
typedef struct ShareReadRange {
        CUdeviceptr at;
        size_t len;
        SageHash key;
        int result;
} ShareReadRange;

/*
 * The caller's work during a read-back (share_assemble.c), each optional:
 * `step` while it waits for its copies, one step per call, false when
 * there is none left (then it is not called again): assembly backs
 * deferred pieces there; `keyed` as soon as range i's key is known, in
 * range order (a range that failed is never told): assembly sends its
 * lookup there, which the broker answers while the rest is read.
 */
typedef struct ShareReadbackHooks {
        bool (*step)(void *ctx);
        void (*keyed)(void *ctx, size_t i, SageHash key);
        void *ctx;
} ShareReadbackHooks;

/*
 * Key each of r[0..n) by its device bytes (sage_share_content_key of what
 * was read): ranges, in pieces of at most a half, are copied on a stream
 * of SAGE's own into one half while those in the other are hashed. The
 * ranges lie in context `ctx`, current, whose work on them the caller has
 * waited for. While a half's copies are still in flight (the stream not
 * done), `hooks` (NULL: none) takes steps; it is told each key as it is known.
 */
void share_readback_keys(ShareReadback *rb, ShareVmm *v, CUcontext ctx, ShareReadRange *r, size_t n,
                         const ShareReadbackHooks *hooks);
/*
 * Make the staging, and the stream in `ctx` (current; NULL: none), if not
 * made yet: ahead of the first read-back, off the app's path. False: no
 * staging (the read-back then tries again).
 */
bool share_readback_prepare(ShareReadback *rb, const SageShareDriver *drv, CUcontext ctx);
/* Give the staging and the stream back. */
void share_readback_release(ShareReadback *rb, const SageShareDriver *drv);
