/*
 * Sharing-based memory, client side (SAGE_SHARE=1): what the rest of
 * libsage calls. share.c describes the design and lists its modules; the
 * state object is share_state.h.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "hooks.h"

/*
 * Back an allocation of `size` bytes in the current context with SAGE's VMM
 * allocator (share.c); false: not backed, the caller takes the driver's path.
 */
bool sage_share_alloc(CUdeviceptr *dptr, size_t size, CUresult *result);
/* Is `va` the start of an allocation SAGE's VMM allocator backs? Frees it if so. */
bool sage_share_free(CUdeviceptr va, CUresult *result);

/*
 * An upload of [dst, dst+n) that crosses the edge of an app VMM mapping SAGE
 * backs (share_vmm.c): the bytes before the first edge; 0 when it crosses none.
 */
size_t sage_share_app_split(CUdeviceptr dst, size_t n);
/* Something may write device memory SAGE does not see (a launch, a 2D/3D copy). */
void sage_share_note_write(void);
/* The app is about to write [dst, dst+n) through the API. */
void sage_share_before_write(CUdeviceptr dst, size_t n);
/*
 * Deferred backing (share_backing.c): before a call that may reach device
 * memory, every unbacked piece gets its backing; before the app's own copy
 * into [dst, dst+n), the granules it writes (an error: it must not run).
 */
void sage_share_back_all(void);
/*
 * Before anything that may read memory SAGE backs (a device-to-host or
 * device copy, an IPC export): predicted runs holding uploads on the host
 * (share_hint.h) are confirmed or copied in; other predictions stay.
 */
void sage_share_settle_runs(void);
CUresult sage_share_back(CUdeviceptr dst, size_t n);
/* Before a pointer query: the whole allocation `p` falls in. */
void sage_share_back_alloc(CUdeviceptr p);
/* Before a kernel launch: assembly, then the launch guard (share_guard.c). */
void sage_share_guard_launch(CUstream stream, CUfunction f, void **params, void **extra);
/* The last open stream capture ended: make private what captured launches left due (share_guard.h). */
void sage_share_captures_closed(void);
/* The child of a fork(): sharing off, nothing of the parent's used (share_state.c; an atfork handler). */
void sage_share_forked(void);
/* Called by the hooks' slow path after every call while sharing is active. */
void sage_share_after_call(SageSym sym);
/*
 * The app is about to write device memory from `dst` on, how far unknown
 * (0: not even where): every shared piece of the allocation holding `dst`
 * (of every allocation) turns private first.
 */
void sage_share_before_unknown_write(CUdeviceptr dst);
/*
 * Suspend (share_alloc.h, share_vmm_park): unmap and release every broker
 * extent the process maps, after the work in flight, keeping the address
 * reservations; -1 when sharing is off (nothing is mapped). unpark maps
 * them again at the same addresses and returns how many it could not.
 * The caller keeps every app call out meanwhile (the suspend gate).
 */
long sage_share_park(void);
/*
 * Before a suspend, the gate drained: no extent imported ahead may be held
 * (the driver restores no imported memory). False: the warm-up thread still
 * imports one (past a bound): not now. From here on nothing is asked ahead.
 */
bool sage_share_park_ready(void);
size_t sage_share_unpark(void);
/* Pieces parked now (no driver call: safe while the process is checkpointed). */
size_t sage_share_parked(void);
/*
 * The broker went and another may have come (suspend's re-registration):
 * a dead sharing connection is dropped and, with no piece of the old
 * broker still mapped, a new one opened (unpark's LOOKUPs go to it). 0 (a
 * live connection kept, or a new one, or sharing off), -EBUSY (pieces of
 * the gone broker still mapped: sharing stays off, their ids are not the
 * new broker's), or connect's error. No driver call.
 */
int sage_share_reconnect(void);
/* Pieces of a broker that went are mapped: such a process cannot park them and map them again. */
bool sage_share_orphaned(void);
/*
 * The warm-up thread, once done, with the primary context it retained:
 * when sharing is on (SAGE_SHARE, a broker), the sharing connection,
 * assembly's pinned read-back staging and stream (SAGE_SHARE_ASSEMBLE),
 * under the lock assembly takes (an assembly that comes first makes its
 * own; this then finds it made), and the miss path's pinned staging
 * (SAGE_SHARE_STAGING), outside it (a miss meanwhile waits for it), are made
 * here, off the app's path.
 */
void sage_share_prestage(CUcontext ctx);
/*
 * The warm-up thread, before its cuInit: the miss path's staging pages are
 * made meanwhile by a short-lived thread (share_stage_populate_ahead), so
 * sage_share_prestage only registers them. NULL ctx there drops them.
 */
void sage_share_populate_ahead(void);
/*
 * Assembly at idleness (share_idle.c): runs the first launch left due
 * (SAGE_SHARE_ASSEMBLE_IDLE) are waiting. The suspend listener asks at each
 * tick, and calls sage_share_idle_step with how long the process has made
 * no driver call (and has none in flight): once that reaches the option's
 * time, the gate closes, the runs are assembled, it opens. True: it ran.
 */
bool sage_share_idle_due(void);
bool sage_share_idle_step(uint64_t quiet_ns);
/* Who to wake when runs become due (the listener; set once, before any launch can leave one). */
void sage_share_idle_wake_with(void (*wake)(void));
/* Sharing's observer (init.c registers it; share_state.c turns it on once a broker answers). */
extern const SageObserver sage_share_observer;

/* The stream a call means: a _ptsz entry point means the per-thread stream by 0. */
static inline CUstream sage_share_stream_of(CUstream s, bool ptsz) {
        return !s && ptsz ? CU_STREAM_PER_THREAD : s;
}
