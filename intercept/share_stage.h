/*
 * The miss path's copy (share_stage.c): an upload's bytes go to the device
 * through pinned staging buffers, hashed by a pool of threads while they are
 * copied into them, each chunk sent by an async copy on a stream of SAGE's
 * own as soon as it is in. The key is of the bytes that reached the device.
 */
#pragma once

#include <cuda.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "hash.h"

/* Buffers: while some are filled, the two sent last may still be read by the DMA engine. */
#define SHARE_STAGE_SLOTS 8
/* An upload may start with this many buffers made (the warm-up thread makes the rest meanwhile). */
#define SHARE_STAGE_MIN_SLOTS 2
#define SHARE_STAGE_MAX_THREADS 16

/*
 * The driver calls staging makes (every entry required but the last three: without host_register and
 * host_unregister, alloc_host pins; without exchange_capture_mode, the calls run in the thread's own capture
 * mode).
 */
typedef struct ShareStageDriver {
        CUresult (*alloc_host)(void **, size_t);
        CUresult (*free_host)(void *);
        CUresult (*stream_create)(CUstream *, unsigned int);
        CUresult (*stream_destroy)(CUstream);
        CUresult (*stream_synchronize)(CUstream);
        CUresult (*copy_htod_async)(CUdeviceptr, const void *, size_t, CUstream);
        CUresult (*host_register)(void *, size_t, unsigned int);
        CUresult (*host_unregister)(void *);
        CUresult (*exchange_capture_mode)(CUstreamCaptureMode *);
} ShareStageDriver;

/* A copying thread with nothing to do for this long leaves (the pool starts it again when needed). */
#define SHARE_STAGE_IDLE_MS 2000

/*
 * Staging buffers and streams, made at the first staged upload and kept
 * (pinning host memory costs milliseconds per few MiB): they belong to
 * the context `ctx` they were made in. Callers serialize (SageShare's lock),
 * except the maker of buffers made ahead (share_stage_make_slot), which
 * publishes each buffer through `made` while uploads use those before it.
 */
typedef struct ShareStage {
        ShareStageDriver drv;
        size_t slot_bytes; /* a multiple of SAGE_CONTENT_KEY_CHUNK; 0: staging off */
        CUcontext ctx;     /* NULL: nothing made yet */
        bool broken;       /* making them failed once: not tried again */
        bool no_register;  /* the driver refused to register a buffer once: alloc_host pins the others */
        pid_t owner;       /* the process the buffers belong to (a fork()ed child forgets them) */
        bool making;       /* made ahead by another thread now: [made, SLOTS) are its (share_stage_claim) */
        atomic_uint made;  /* buffers [0, made) and their streams are ready */
        void *buf[SHARE_STAGE_SLOTS];
        bool registered[SHARE_STAGE_SLOTS]; /* buf[i] is SAGE's mapping, registered (else alloc_host's) */
        CUstream stream[SHARE_STAGE_SLOTS];
        atomic_uint pace;       /* copying threads the DMA keeps up with (share_stage_pace; 0: unpaced) */
        unsigned fixed_threads; /* SAGE_SHARE_STAGE_THREADS: this many, never paced (0: not fixed) */
        bool streamed;          /* SAGE_SHARE_STAGE_STORES=streamed: chunks copied by sage_hash_copy_streamed */
} ShareStage;

/*
 * What a staged upload cost and where its time went (the timeline that
 * SAGE_VERBOSE=3 prints per upload). Nanoseconds; the waits are the
 * calling thread's (for chunks: the host is behind; for a stream: the DMA
 * is) and the copying threads' (for a free buffer).
 */
/*
 * Make the buffers and streams in `ctx` (current on the caller) unless they
 * are made there already: 0, or -ENODEV (staging off, making them failed:
 * `broken`, never tried again; or being made ahead, for another context or
 * fewer than SHARE_STAGE_MIN_SLOTS yet).
 */
int share_stage_prepare(ShareStage *st, CUcontext ctx);

/*
 * Making ahead, buffer by buffer, so that an upload can start once
 * SHARE_STAGE_MIN_SLOTS are made instead of waiting for all of them (page-
 * locking 128 MiB took ~50 ms on an H100 host). claim (under the callers'
 * lock): true when nothing is made and it is now `ctx`'s, `making`; then
 * make_slot(i) for i = 0, 1, ... with no lock held, each published to
 * uploads when made (0, or -ENODEV: stop); then made (under the lock):
 * keeps what was made (fewer than SHARE_STAGE_MIN_SLOTS, or an upload
 * that failed meanwhile: released, `broken`), returns the pinned bytes kept.
 */
bool share_stage_claim(ShareStage *st, CUcontext ctx);
int share_stage_make_slot(ShareStage *st, unsigned i);
size_t share_stage_made(ShareStage *st);

/*
 * Pin buffer i (share_stage_pin.c): SAGE's own anonymous mapping, its
 * pages made by the kernel first (no driver lock held), then registered;
 * where the driver refuses, cuMemAllocHost as before. 0 or -ENODEV. unpin:
 * its counterpart; forget_inherited: a fork()ed child drops its parent's
 * buffers unreleased (not its own: the mappings are not even inherited).
 */
int share_stage_pin(ShareStage *st, unsigned i);
/*
 * The same for any pinned host memory of SAGE's: n bytes mapped, populated
 * and registered (flags 0); NULL and *r (CUDA_ERROR_OUT_OF_MEMORY: no
 * memory; else the driver's refusal) where not. unpin: unregistered and
 * unmapped (kept mapped where the driver still holds the range).
 */
void *share_pin_registered(size_t n, CUresult (*host_register)(void *, size_t, unsigned int), CUresult *r);
/*
 * The staging's pages made ahead, before any driver is there (the warm-up
 * thread's cuInit): claim (any thread, once per process: true, the caller
 * then runs populate_ahead on a thread of its own) for buffers of
 * `slot_bytes` (share_stage_slot_bytes); share_pin_registered takes them, waiting for each while
 * the populater is at work. drop: no more (what was not taken unmapped;
 * returns how many): the staging is made, or never will be.
 */
bool share_stage_populate_claim(size_t slot_bytes);
void share_stage_populate_ahead(void);
unsigned share_stage_ahead_drop(void);
/* A staging buffer's size for `bytes` of staging in all (0: too small: staging off). */
size_t share_stage_slot_bytes(size_t bytes);
void share_unpin_registered(void *p, size_t n, CUresult (*host_unregister)(void *));
void share_stage_unpin(ShareStage *st, unsigned i);
void share_stage_forget_inherited(ShareStage *st);

typedef struct ShareStageCost {
        uint64_t wall_ns; /* the caller's wait in the upload (begin and end: not the work between) */
        uint64_t cpu_ns;
        uint64_t first_dma_ns; /* from the call (begin) to the first async copy */
        uint64_t copy_ns;      /* the copying threads' time in copy and hash, summed */
        uint64_t wait_host_ns; /* the caller waiting for chunks to be copied */
        uint64_t wait_dma_ns;  /* the caller waiting for a buffer's stream, the drain included */
        uint64_t drain_ns;     /* the last wait, for every stream to be idle */
        uint64_t wait_buf_ns;  /* the copying threads waiting for a free buffer, summed */
        uint64_t dma_ns;       /* from the first async copy to the last byte on the device */
        uint64_t tail_ns;      /* of that, after the last chunk was in (and the first copy sent) */
        unsigned threads;      /* copying threads that took part */
        unsigned offered;      /* copying threads it asked for (its CPU rule, pace or fixed count) */
        bool streamed;         /* its chunks copied by streamed stores (ShareStage.streamed) */
        unsigned pace;         /* the pace after it (share_stage_pace; 0: not paced) */
        unsigned buffers;      /* staging buffers it used: fewer than SHARE_STAGE_SLOTS while made ahead */
        size_t rounds, copies; /* buffer fills; async copies sent */
} ShareStageCost;

/*
 * Copying threads for an upload: every idle CPU but the calling thread's
 * while the machine is (nearly) idle: the DMA takes ~55 GB/s and a thread
 * copies and hashes ~3-4, and the calling thread must run as chunks come
 * in to send them (with a thread on every CPU it waited for a CPU until the
 * copying was over, and the DMA started only then: issue 14); when others
 * run, no more than half the CPUs nor more than are idle, as the key
 * threads (share_key.c). cpus: those this process may run on; running:
 * runnable threads on the machine, this one included (0: unknown).
 */
unsigned share_stage_threads(long cpus, long running);
/*
 * The pace: the most copying threads an upload of SHARE_STAGE_PACE_ROUNDS
 * to SHARE_STAGE_PACED_MAX buffers takes, from the last such upload's
 * timeline (`pace` before it, 0: none; it asked for `offered` threads to
 * copy `n` bytes through buffers of `slot_bytes`). Where the DMA was still
 * busy for over a quarter of its time after the last chunk was in, the
 * host copy ran ahead (an H100 host: 128 MiB tensors drained 3.3 ms of 5.5
 * with 15 threads, issue 14; the copies and the DMA share the host's
 * memory, so more threads buy nothing and may slow the DMA): as many as
 * match the DMA's rate at one thread's copy rate, and one more (at least
 * 2), where that is fewer than it asked for. Where it was busy for under a
 * tenth, the host was behind: a paced upload's pace grows by a quarter and
 * one, and goes (0) once it reaches SHARE_STAGE_MAX_THREADS. Otherwise, and
 * for an upload of another size, the pace stays. Larger uploads are paced
 * by the buffers already (threads wait for those the DMA frees: a 6 GiB
 * upload ran at 43.7 GB/s with 14 threads on the same host), smaller ones
 * tell little; neither is held to a pace learnt while others' DMAs ran.
 */
#define SHARE_STAGE_PACE_ROUNDS 4
#define SHARE_STAGE_PACED_MAX (2 * SHARE_STAGE_SLOTS)
bool share_stage_paced(size_t n, size_t slot_bytes);
unsigned share_stage_pace(unsigned pace, unsigned offered, size_t n, size_t slot_bytes, const ShareStageCost *c);
/* SAGE_VERBOSE=3's line of a staged upload's timeline (where its time went: host, DMA, buffers, start). */
void share_stage_log_timeline(size_t n, const ShareStageCost *c);
/* CPUs the process may use: its affinity mask's, or fewer where its cgroup's quota (per period) is less. */
long share_stage_cpus(long affinity, long quota, long period);
/* share_stage_threads for this process now: its CPUs (mask, cgroup quota), /proc/loadavg's runnable threads. */
unsigned share_stage_threads_now(void);
/*
 * The cgroup CPU quota as CPUs (0: none), read once per process (at its
 * first use; a fork()ed child reads its own): reading /proc/self/cgroup and
 * the cgroup files at every upload cost each miss file opens for a number
 * that does not change. The paths are /proc/self/cgroup and /sys/fs/cgroup
 * unless a test names others (read again then).
 */
long share_stage_quota_cpus(void);
void share_stage_quota_paths(const char *self_cgroup, const char *cgroup_root);

/*
 * What goes to the DMA next, once `sent` chunks went (in[]: which are
 * copied): chunk `sent` and those after it in the same buffer that are in,
 * as one copy, once they are at least `min_chunks` or reach the buffer's
 * end, without waiting for the rest of the buffer. The end of that run;
 * 0: not yet.
 */
size_t share_stage_send_end(const bool *in, size_t sent, size_t round_chunks, size_t nchunks, size_t min_chunks);

/* Staging with `bytes` of pinned buffers in all (0: off). */
void share_stage_init(ShareStage *st, const ShareStageDriver *drv, size_t bytes);
/* Release the buffers and streams (in their context, which the caller made current). */
void share_stage_release(ShareStage *st);

/*
 * Copy n host bytes at `src` to `dst` through the staging buffers, by up to
 * `threads` copying threads; *key is the content key (common/hash.h) of the
 * bytes copied. `ctx` is current. Returns when every byte is on the device.
 * 0; or -ENODEV (staging off or unavailable), -ENOMEM, -EIO (a driver call
 * failed; the buffers and streams are released, made again next time): dst
 * may hold any of the bytes, nothing is in flight, the caller copies again.
 */
int share_stage_upload(ShareStage *st, CUcontext ctx, CUdeviceptr dst, const void *src, size_t n, unsigned threads,
                       SageHash *key, ShareStageCost *cost);

/*
 * share_stage_upload in two steps, so the copying threads fill the first
 * buffers while the caller does the driver work the destination needs
 * (a synchronize, a new piece to copy into). begin (`ctx` current): the
 * copy of n bytes at `src` is started into the buffers, nothing sent yet;
 * the errors of share_stage_upload, nothing started. end (`ctx` current):
 * sends them to `dst` and returns once every byte is there, as
 * share_stage_upload; `meanwhile` (may be NULL) is called once with the
 * key when every byte is sent and hashed, before the wait for the DMA's
 * last bytes (the broker asked while they land), and its time is not the
 * staging's (cost->wall_ns). cancel: nothing sent, the job gone.
 */
typedef struct ShareStageJob ShareStageJob;
int share_stage_begin(ShareStage *st, CUcontext ctx, const void *src, size_t n, unsigned threads, ShareStageJob **out);
int share_stage_end(ShareStageJob *j, CUdeviceptr dst, SageHash *key, ShareStageCost *cost,
                    void (*meanwhile)(void *arg, SageHash key), void *arg);
void share_stage_cancel(ShareStageJob *j);
