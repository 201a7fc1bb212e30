/* Device bytes read back and keyed at DMA speed (share_readback.c). */
#pragma once

#include <cuda.h>
#include <stdbool.h>
#include <stddef.h>

#include "hash.h"
#include "share_alloc.h"

/*
 * Pinned host staging, two halves, made at the first read-back and kept for
 * the process (pinning costs milliseconds per few MiB), grown when a longer
 * range comes. Callers serialize (SageShare's lock).
 */
typedef struct ShareReadback {
        void *host;      /* halves [0, half) and [half, 2 half) */
        size_t half;     /* 0: nothing made yet */
        bool pinned;     /* host from alloc_host; else malloc'd (the pinned allocation failed) */
        CUstream stream; /* SAGE's stream in `stream_ctx`, made at the first read-back there and kept */
        CUcontext stream_ctx;
        bool stream_made;
} ShareReadback;

/* The largest half made: a longer range is read back chunk by chunk, synchronously. */
#define SHARE_READBACK_MAX_HALF ((size_t)32 << 20)

/* One range to key: device bytes [at, at+len). result 0: `key` is their content key; negative: unread. */
typedef struct ShareReadRange {
        CUdeviceptr at;
        size_t len;
        SageHash key;
        int result;
} ShareReadRange;

/*
 * Key each of r[0..n) by its device bytes (sage_share_content_key of what
 * was read): ranges are copied on a stream of SAGE's own into one half
 * while those in the other are hashed. The ranges lie in context `ctx`,
 * current, whose work on them the caller has waited for.
 */
void share_readback_keys(ShareReadback *rb, ShareVmm *v, CUcontext ctx, ShareReadRange *r, size_t n);
/* Give the staging and the stream back. */
void share_readback_release(ShareReadback *rb, const SageShareDriver *drv);
