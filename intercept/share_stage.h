/*
 * The miss path's copy (share_stage.c): an upload's bytes go to the device
 * through pinned staging buffers, hashed by a few threads while they are
 * copied into them, each buffer sent by an async copy on a stream of
 * SAGE's own. The key is of the bytes that reached the device.
 */
#pragma once

#include <cuda.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hash.h"

#define SHARE_STAGE_SLOTS 4 /* buffers in flight: while one is filled, the others are being sent */

/* The driver calls staging makes (every entry required). */
typedef struct ShareStageDriver {
        CUresult (*alloc_host)(void **, size_t);
        CUresult (*free_host)(void *);
        CUresult (*stream_create)(CUstream *, unsigned int);
        CUresult (*stream_destroy)(CUstream);
        CUresult (*stream_synchronize)(CUstream);
        CUresult (*copy_htod_async)(CUdeviceptr, const void *, size_t, CUstream);
} ShareStageDriver;

/*
 * Staging buffers and streams, made at the first staged upload and kept
 * (pinning host memory costs milliseconds per few MiB): they belong to
 * the context `ctx` they were made in. Callers serialize (SageShare's lock).
 */
typedef struct ShareStage {
        ShareStageDriver drv;
        size_t slot_bytes; /* a multiple of SAGE_CONTENT_KEY_CHUNK; 0: staging off */
        unsigned threads;  /* hashing threads (besides the calling one, which submits) */
        CUcontext ctx;     /* NULL: nothing made yet */
        bool broken;       /* making them failed once: not tried again */
        void *buf[SHARE_STAGE_SLOTS];
        CUstream stream[SHARE_STAGE_SLOTS];
} ShareStage;

/* What a staged upload cost: wall time the caller waited, CPU time of every thread of it. */
typedef struct ShareStageCost {
        uint64_t wall_ns, cpu_ns;
} ShareStageCost;

/* Staging with `bytes` of pinned buffers in all (0: off) and `threads` hashing threads. */
void share_stage_init(ShareStage *st, const ShareStageDriver *drv, size_t bytes, unsigned threads);
/* Release the buffers and streams (in their context, which the caller made current). */
void share_stage_release(ShareStage *st);

/*
 * Copy n host bytes at `src` to `dst` through the staging buffers; *key is
 * the content key (common/hash.h) of the bytes copied. `ctx` is current.
 * Returns when every byte is on the device. 0; or -ENODEV (staging off or
 * unavailable), -ENOMEM, -EIO (a driver call failed; the buffers and
 * streams are released, made again next time): dst may hold any of the
 * bytes, nothing is in flight, the caller copies again.
 */
int share_stage_upload(ShareStage *st, CUcontext ctx, CUdeviceptr dst, const void *src, size_t n, SageHash *key,
                       ShareStageCost *cost);
