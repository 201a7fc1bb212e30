/*
 * The one state object of sharing (share_state.c) and the parts it holds:
 * the VMM allocator (share_alloc.h), the launch guard (share_guard.h), the
 * broker connection and CUDA IPC emulation (share_ipc.c). The parts take
 * what they work on as arguments; only the entry points (share.c,
 * share_upload.c, share_assemble.c, share_ipc.c) reach the object.
 */
#pragma once

#include <pthread.h>
#include <sys/types.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "broker_client.h"
#include "share_alloc.h"
#include "share_assemble.h"
#include "share_cost.h"
#include "share_hint.h"
#include "share_place.h"
#include "share_guard.h"
#include "share_file_key.h"
#include "share_readback.h"
#include "share_stage.h"

struct ShareIpc;

#define SAGE_SHARE_MAX_DEVICES 64

typedef struct SageShare {
        /*
         * Guards everything below but the atomics: the allocations and their
         * pieces, the broker connection, the guard's layouts, the IPC
         * registrations, the memory-map cache and notes_buf. Held across
         * driver calls (remapping must not race a lookup of the same
         * allocation); never across a call into the app.
         */
        pthread_mutex_t lock;
        int state;           /* 0 untried, 1 on, -1 off for this process */
        pid_t pid;           /* the process that turned it on: a fork()ed child's exit publishes nothing */
        SageShareDriver drv; /* filled once the driver is open (share_driver) */
        bool drv_ready;
        ShareVmm vmm;
        ShareGuard guard;
        SageBroker *broker;    /* NULL once lost */
        uint16_t broker_gen;   /* the connection's generation, one more at each connect (share_take_ref) */
        struct ShareIpc *ipc;  /* share_ipc.c, created at the first IPC call */
        ShareVmaCache maps;    /* file keys' view of the memory map */
        SharePlace place;      /* learned placement (SAGE_SHARE_PLACE) */
        ShareHints hints;      /* predicted remap (SAGE_SHARE_PREDICT, share_predict.c); assembly at idleness */
        uint32_t app_vmm_made; /* the app's own VMM allocations so far: their hints' ordinals (SHARE_HINT_APP_VMM) */
        /* The hints' keys asked ahead (share_ahead.c), until taken; held: hooks read it without the lock. */
        struct ShareAhead *ahead;
        bool ahead_asked;
        bool ahead_importing;      /* the warm-up thread imports one of them now, outside the lock */
        bool ahead_closed;         /* suspended once: the warm-up thread asks and imports nothing any more */
        pthread_cond_t ahead_done; /* an import of the warm-up thread returned */
        atomic_bool ahead_held;
        /* Allocations made ahead by the warm-up thread for the hints' (share_predict.c), until the app takes them. */
        struct SharePremade *premade;
        size_t npremade;
        atomic_bool uploaded;   /* an upload into SAGE's memory came: what is asked or made ahead goes at a launch */
        bool premake_closed;    /* the answers given back (a launch after the uploads, suspend, exit): none made now */
        bool premade_reclaimed; /* some given back because a call ran out of memory (share_predict_reclaim) */
        atomic_bool active;     /* some allocation may be VMM-backed: hooks read it without the lock */
        atomic_bool guarding;   /* some piece is a candidate or shared: launches are scanned */
        int8_t device_state[SAGE_SHARE_MAX_DEVICES]; /* by the process's ordinal: 0 unknown, 1 found, -1 not served */
        uint32_t broker_device[SAGE_SHARE_MAX_DEVICES];
        uint64_t notes_buf[SAGE_SHARE_NOTES_MAX / 8]; /* a lookup's notes: too big for an app thread's stack */
        ShareStage stage;       /* the miss path's staged copy (share_upload.c), set up at its first use */
        ShareReadback readback; /* assembly's read-back staging (share_readback.c), kept once made */
        bool stage_set;
        int8_t expect_hit; /* large content-keyed uploads: 1 hit (hash before copying), -1 miss, 0 unknown yet */
        ShareCost cost;    /* what hits and copies cost this process (share_upload.c) */
} SageShare;

/*
 * The process's sharing state. One per process because the driver API it
 * interposes is process-wide and hooks carry no context of ours.
 */
SageShare *sage_share(void);

/* Is sharing on (connecting to the broker the first time)? Under the lock. */
bool share_enabled(SageShare *s);
/* The driver table, filled the first time (NULL: the driver lacks part of it). Under the lock. */
const SageShareDriver *share_driver(SageShare *s);
/* A broker call failed at the transport level (r < 0): stop sharing, keep running. Under the lock. */
void share_broker_lost(SageShare *s, int r);
/* Connect to the broker (s->broker; NULL and -errno, `why` says it, if none): a new generation. Under the lock. */
int share_broker_connect(SageShare *s, char *why, size_t why_size);
/*
 * A lookup's answer (r, the extent's *id and *fd) made a reference of the
 * current connection, as the pieces hold it (Piece.extent_id): the id
 * tagged with the connection's generation. A new broker numbers its
 * extents from 1 again, and an app's unmapped VMM handle keeps the old
 * broker's across a reconnect: only a reference of the current connection
 * is ever given back (the old broker's died with it). An id too large to
 * tag is a reply not understood: -EPROTO, the fd closed. Under the lock.
 */
int share_take_ref(const SageShare *s, int r, uint64_t *id, int *fd);
/*
 * The broker's ordinal of the GPU this process calls `dev`, found by UUID
 * (the process's ordinals are not the broker's: CUDA_VISIBLE_DEVICES, a
 * container). 0, or -ENODEV: the broker does not serve that GPU (said once
 * per device), or the driver cannot name it; sharing is off on it. Under the lock.
 */
int share_broker_device(SageShare *s, CUdevice dev, uint32_t *broker_dev);
/* Ask the broker for `key` (share_assemble.h's ShareLookup: notes in s->notes_buf). Under the lock. */
int share_lookup(SageShare *s, SageHash key, size_t len, uint32_t device, uint64_t *id, int *fd, const void **notes,
                 uint32_t *notes_len);
/* share_lookup running meanwhile(ctx) once while the broker answers (broker_client.h). Under the lock. */
int share_lookup_meanwhile(SageShare *s, SageHash key, size_t len, uint32_t device, uint64_t *id, int *fd,
                           const void **notes, uint32_t *notes_len, SageBrokerMeanwhile meanwhile, void *ctx);
/* Many keys in one pipelined exchange (share_assemble.h's lookup_many). Under the lock. */
void share_lookup_many(SageShare *s, ShareLookupReq *reqs, size_t n);
/*
 * Predicted remap (share_predict.c). At cuMemAlloc of (size, ordinal),
 * its app bytes `lead` into the reservation: the hinted extents the broker
 * holds mapped as it is made; false: no prediction made (the caller
 * allocates as usual). Under the lock.
 */
bool share_predict_alloc(SageShare *s, size_t size, uint32_t ordinal, size_t lead, size_t gran, CUdevice dev,
                         uint32_t broker_dev, CUcontext ctx, SageShareAlloc **out);
/*
 * The warm-up thread, once the hints' keys are asked ahead: every hinted
 * allocation the app has not made yet made now, as share_predict_alloc
 * would at its cuMemAlloc (imports, maps, the private rest), one at a time
 * with the lock given up between, while the function still imports and
 * reads; its cuMemAlloc then takes it with no driver call. Takes the lock.
 */
void share_predict_premake(SageShare *s);
/* What no cuMemAlloc took, released (settle after the uploads, suspend, exit). Under the lock. */
void share_predict_premade_drop(SageShare *s);
/*
 * Out of memory: the allocations made ahead (and the answers) given back, if
 * any are held, and none made from now. True if some were, now or before (a
 * call that ran out at the same moment as the one that got them back is
 * made again too). Takes the lock.
 */
bool share_predict_reclaim(SageShare *s);
/* Sharing's observer, for any call the driver refused for want of memory (hooks.h): share_predict_reclaim. */
bool share_predict_oom(void);
/* An IMPL hook's own driver call, made once more when it ran out of memory and share_predict_oom gave some back. */
#define SHARE_OOM_RETRY(call)                                                       \
        __extension__({                                                             \
                CUresult share_oom_r = (call);                                      \
                if (share_oom_r == CUDA_ERROR_OUT_OF_MEMORY && share_predict_oom()) \
                        share_oom_r = (call);                                       \
                share_oom_r;                                                        \
        })
/* A fork()ed child: the list forgotten, nothing released (the parent's CUDA). */
void share_predict_premade_forget(SageShare *s);
/* An upload [o, o+n) of `a` whose whole granules [lo, hi) have `key`: true when an unconfirmed piece there
 * had it (a hit, nothing else to do but copy the ends). Under the lock. */
bool share_predict_confirm(SageShare *s, SageShareAlloc *a, size_t o, size_t n, size_t lo, size_t hi, SageHash key);
/* Before a launch or an API write: every unconfirmed piece private (share_hint.h), and the answers asked
 * ahead that nothing took given back (share_ahead.h). Takes the lock. */
void share_predict_settle(SageShare *s);
/*
 * Give back every answer asked ahead that nothing took (share_ahead.c):
 * after the warm-up thread's import under way (bounded: past it, that thread
 * gives them back once its import returns). Under the lock (released while it waits).
 */
void share_ahead_drop(SageShare *s);
/*
 * On the warm-up thread once the context `ctx` is current (SAGE_SHARE_AHEAD,
 * hints there): the hinted whole-granule keys asked (the answers held at
 * once) and their extents imported one by one, before the app uploads.
 * True when the broker held every one (hits expected, misses not). Takes
 * the lock (not while importing).
 */
bool share_ahead_prepare(SageShare *s);
/* In a fork()ed child: the parent's answers forgotten (fds closed, nothing asked of a driver or broker). */
void share_ahead_forget(SageShare *s);
/*
 * Granules that uploads filled in part (or several uploads together) are
 * keyed by their content before anything else writes them: called before a
 * launch or an API write while s->vmm.pending. Takes the lock.
 */
void share_assemble(SageShare *s);
/* The runs left due at the first launch (share_assemble_due), while the process is idle. Takes the lock. */
void share_assemble_idle(SageShare *s);
/* Assembly at idleness (share_idle.c): on for this process; which runs wait for it (ShareVmm.defer_run). */
bool share_idle_on(void);
bool share_idle_defer_run(void *ctx, const SageShareAlloc *a, size_t off, size_t len);
/*
 * Predicted runs (SAGE_SHARE_PREDICT): runs mapped at allocation, their
 * uploads kept on the host and settled at the first launch; not where
 * assembly at idleness takes the runs off the app's path (share_predict.c).
 */
bool share_predict_runs(void);
/* In the child of a fork(): sharing off, nothing of the parent's used (sage_share_forked). */
void share_forked(SageShare *s);
/* Copy an upload whose hit costs more (SAGE_SHARE_COPY_CHEAPER, auto: where assembly at idleness runs)? */
bool share_copy_cheaper_on(void);
/* Copying now: the option on and this process's last choice the copy (share_cost.h). */
bool share_copying(const SageShare *s);
/*
 * The whole granules [lo, hi) of upload [o, o + n) into `a` were copied
 * because their hit cost more: due at the next idleness, keyed from the
 * device then (false: no listener, nothing will). Under the lock.
 */
bool share_idle_take_copy(SageShare *s, SageShareAlloc *a, size_t o, size_t n, size_t lo, size_t hi);
/*
 * Upload [o, o+n) of `a` (whole granules [lo, hi)) copied instead of a hit
 * (its cost, or a fold while copying): the allocation backed whole, the
 * upload written, its whole granules due at idleness where a pass will
 * come and `keyed` (content-keyed), else kept out of every run. Under the lock.
 */
void share_idle_copy_due(SageShare *s, SageShareAlloc *a, size_t o, size_t n, size_t lo, size_t hi, bool keyed);
/* Runs became due: the suspend listener is woken to measure idleness (share_idle.c). */
void share_idle_wake(void);
/* The process exits (share_at_exit): no idle pass any more, none left due. Under the lock. */
void share_idle_stop(SageShare *s);
/*
 * What `a` taught about its placement goes to the hints (saved at exit).
 * True: from the next invocation on it starts elsewhere. Under the lock.
 */
bool share_learn_placement(SageShare *s, const SageShareAlloc *a);
/* `a` goes (freed, or the process exits): placement learned, its candidates published. Under the lock. */
void share_retire(SageShare *s, SageShareAlloc *a);
/* Publish the candidates of `a` to the broker. Under the lock. */
void share_publish(SageShare *s, SageShareAlloc *a);
/* May work submitted to `stream` be captured rather than run (no synchronizing then)? */
bool share_capturing(SageShare *s, CUstream stream);
/* The miss path's staging (share_upload_stage.c): set up at its first use, under the lock; or made ahead
 * by the warm-up thread, `ctx` current (the bytes kept; 0: not made there). */
ShareStage *share_stage_of(SageShare *s);
size_t share_upload_prestage(SageShare *s, CUcontext ctx);
/* Misses at least this large are staged (smaller ones: the app's own copy, hashed before). */
#define SHARE_UPLOAD_STAGE_MIN (8u << 20)
/* Would a miss of `len` bytes be staged? Under the lock, as the rest. */
bool share_upload_stage_possible(SageShare *s, size_t len);
/*
 * share_stage_begin/end for allocation `a`, in its context: begin starts
 * copying `len` bytes at `src` into the staging buffers, so the copying
 * threads work while the caller makes the piece they go to (NULL: nothing
 * started, the caller copies: staging off, too small, or a fallback); end
 * sends them to bytes [lo, hi) of `a`, *key the content key of what was
 * copied (false: nothing to rely on, the caller copies; a fallback).
 */
ShareStageJob *share_upload_stage_begin(SageShare *s, SageShareAlloc *a, size_t len, const void *src);
bool share_upload_stage_end(SageShare *s, ShareStageJob *j, SageShareAlloc *a, size_t lo, size_t hi, SageHash *key,
                            void (*meanwhile)(void *, SageHash), void *arg);
/* A staged copy's key asked of the broker while its last bytes land (share_lookup_staged: end's meanwhile). */
typedef struct ShareStagedLookup {
        SageShare *s;
        size_t len;
        uint32_t device;
        uint64_t extent_id, ns; /* ns: the broker's time */
        const void *notes;
        uint32_t notes_len;
        int fd, r; /* r: share_lookup's (-1: not asked) */
} ShareStagedLookup;
void share_lookup_staged(void *arg, SageHash key);
/*
 * The broker's extents in app VMM handles not mapped now (share_vmm.c)
 * become private: parking maps at an allocation's address, which these
 * have not, and the driver cannot restore imported memory. How many
 * handles could not? Under s->lock.
 */
size_t share_app_privatize_unmapped(SageShare *s);
