/*
 * Assembly at idleness (SAGE_SHARE_ASSEMBLE_IDLE; issue 14: "a hit must
 * never cost more than the copy").
 *
 * Assembly at the first launch reads back, hashes, looks up and remaps what
 * the uploads already copied: it saves memory, never time, and the app
 * waits for it (bert on the H100: ~21 ms on a 34 ms upload). A serverless
 * instance spends most of its life idle between calls; there the same work
 * costs no call anything. So where the program's last invocation shared a
 * run (its hint, share_hint.c: the same allocation, offset and length), the
 * first launch leaves it due (share_assemble_allocations, v->defer_run)
 * and the app's copy is all the hit costs it. Runs without such a hint (the
 * first invocation, a changed program) are assembled at the first launch
 * as before: only there are all their kernel uses seen for the notes a
 * published candidate carries (share_guard.c).
 *
 * When the process has made no driver call, and none is in flight, for
 * the option's time (the suspend listener measures it: suspend.c, which
 * needs SAGE_SUSPEND=1), its contexts are synchronized with the gate open
 * (gpu_done, below); then, no app call made since, the gate closes, the
 * calls in flight drain (none, by then), and the due runs are keyed from
 * the device as the first launch would; a hit maps its extent, a miss
 * stays private. A call made meanwhile waits at the gate
 * (SHARE_NS_ASSEMBLE_IDLE says how long it was closed). A capture open
 * across the idleness (a synchronize would break it) or a drain that fails
 * puts it off to the next idleness. A process that never idles keeps its
 * due runs private (and their hints: share_hints_learn).
 *
 * The breakdown counters of the first launch (SHARE_NS_ASSEMBLE_READ and
 * the others) stay the first launch's: what the idle pass adds to them is
 * taken back, so that `bench sharing-coverage` counts for a hit exactly
 * what the app waited for.
 */
#include "share.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <strings.h>

#include "capture_mode.h"
#include "log.h"
#include "options.h"
#include "share_assemble.h"
#include "share_state.h"
#include "spawn.h"
#include "stats.h"
#include "suspend_gate.h"
#include "util.h"

/* The calls in flight have had the idle time to end: a drain that takes longer is put off. */
#define IDLE_DRAIN_MS 50

static void (*_Atomic idle_wake)(void);
static atomic_bool exiting; /* share_idle_stop: no pass from the process's exit on */

bool share_idle_on(void) {
        const SageOptions *o = sage_options();

        return o->suspend && o->share_assemble && o->share_assemble_idle && o->share_place && *o->share_place;
}

/* Will an idle pass come? Only while the listener runs (registered, its broker there) and before the exit. */
static bool pass_ahead(void) {
        return atomic_load(&idle_wake) && !atomic_load(&exiting);
}

bool share_idle_defer_run(void *ctx, const SageShareAlloc *a, size_t off, size_t len) {
        const SageShare *s = ctx;

        /* Else nothing would ever assemble them. */
        return pass_ahead() && !a->app_vmm && share_hints_has_run(&s->hints, a->size - a->lead, a->ordinal, off, len);
}

/*
 * Copy when the copy is cheaper (SAGE_SHARE_COPY_CHEAPER): auto turns it on
 * where assembly at idleness runs, since there a copy costs memory only
 * until the next idleness (share_idle_take_copy).
 */
bool share_copy_cheaper_on(void) {
        const char *o = sage_options()->share_copy_cheaper;
        bool on = false;

        if (!strcasecmp(o, "auto"))
                return share_idle_on() && pass_ahead();
        return sage_parse_bool(o, &on) == 0 && on;
}

bool share_copying(const SageShare *s) {
        return share_copy_cheaper_on() && s->cost.copying;
}

bool share_idle_take_copy(SageShare *s, SageShareAlloc *a, size_t o, size_t n, size_t lo, size_t hi) {
        Range *filled;

        if (!share_idle_on() || !pass_ahead() || a->app_vmm || a->no_share || !(filled = malloc(sizeof(*filled))))
                return false;
        *filled = (Range){ o, n }; /* the whole upload: its bytes in the run, where kernels point from */
        if (!share_vmm_add_due(&s->vmm, a,
                               (Piece){ .off = lo,
                                        .len = hi - lo,
                                        .filled = filled,
                                        .nfilled = 1,
                                        .span_lo = o,
                                        .span_hi = o + n })) {
                free(filled);
                return false;
        }
        sage_stats_count(SAGE_STAT_SHARE_COPIED_DUE);
        share_idle_wake();
        return true;
}

void share_idle_copy_due(SageShare *s, SageShareAlloc *a, size_t o, size_t n, size_t lo, size_t hi, bool keyed) {
        /*
         * Its uploads copied from now on: all of the allocation backed at
         * once (where nothing is yet, its held memory: one map, one access),
         * not a create, map and access for each copy's granules: those are
         * the driver calls contention makes slow (share_backing.c).
         */
        if (share_vmm_has_unbacked(a))
                share_vmm_back(&s->vmm, a, 0, a->padded);
        share_vmm_before_write(&s->vmm, a, o, n);
        share_vmm_note_written(&s->vmm, a, o, n);
        /* Due: its ends join their neighbours' runs, as a hit's do (the same runs whichever it was). Kept out of
         * the first launch's runs first: a run there must never overlap a due one. */
        if (keyed && share_assemble_skip(a, lo, hi - lo) && share_idle_take_copy(s, a, o, n, lo, hi)) {
                sage_debug("share: upload +%#zx %#zx of allocation %zu/%u copied, due at idleness", o, n,
                           (size_t)(a->size - a->lead), a->ordinal);
                return;
        }
        share_assemble_skip(a, o, n);
}

void sage_share_idle_wake_with(void (*wake)(void)) {
        atomic_store(&idle_wake, wake);
        if (!wake) /* the listener stopped: nothing will assemble at idleness (the due runs stay private) */
                atomic_store(&sage_share()->vmm.idle_due, false);
}

void share_idle_wake(void) {
        void (*wake)(void) = atomic_load(&idle_wake);

        if (wake)
                wake();
}

void share_idle_stop(SageShare *s) {
        atomic_store(&exiting, true);
        atomic_store(&s->vmm.idle_due, false);
}

bool sage_share_idle_due(void) {
        return atomic_load_explicit(&sage_share()->vmm.idle_due, memory_order_relaxed);
}

/*
 * Is the GPU done with what the app queued? A quiet host is not an idle
 * GPU, and a synchronize with the gate closed would hold the app's next
 * call for all of it, or for ever where queued work waits for a later host
 * call (a stream wait on a value the app writes next). So every context
 * of sharing's allocations is synchronized first by a thread of its own,
 * the gate open; the pass runs only if no app call was made from before
 * that synchronize to the closed gate (then the work it waited for was
 * all there was). A synchronize that does not end keeps that thread, and
 * only it, waiting; the app goes on, and the next quiet time tries again.
 */
static struct {
        pthread_mutex_t lock;
        bool running, done;
        uint64_t calls; /* sage_gate_calls() when the synchronize began */
} gpu = { .lock = PTHREAD_MUTEX_INITIALIZER };

typedef struct SyncJob {
        const SageShareDriver *drv;
        size_t n;
        CUcontext ctx[];
} SyncJob;

static void *sync_contexts(void *arg) {
        SyncJob *job = arg;
        CUcontext popped;

        for (size_t i = 0; i < job->n; i++)
                if (job->drv->ctx_push(job->ctx[i]) == CUDA_SUCCESS) {
                        job->drv->vmm.ctx_synchronize();
                        job->drv->ctx_pop(&popped);
                }
        free(job);
        pthread_mutex_lock(&gpu.lock);
        gpu.running = false;
        gpu.done = true;
        pthread_mutex_unlock(&gpu.lock);
        share_idle_wake();
        return NULL;
}

/* Start the synchronize of every context sharing's allocations are in (none runs). Under s->lock. */
static void start_sync(SageShare *s) {
        size_t n = 0;
        SyncJob *job;

        for (SageShareAlloc *a = s->vmm.allocs; a; a = a->next)
                n++;
        if (!(job = malloc(sizeof(*job) + (n ? n : 1) * sizeof(CUcontext))))
                return;
        *job = (SyncJob){ .drv = &s->drv };
        for (SageShareAlloc *a = s->vmm.allocs; a; a = a->next) {
                size_t j = 0;
                while (j < job->n && job->ctx[j] != a->ctx)
                        j++;
                if (j == job->n && a->ctx)
                        job->ctx[job->n++] = a->ctx;
        }
        gpu.calls = sage_gate_calls();
        gpu.running = true;
        gpu.done = false;
        if (sage_spawn_thread(sync_contexts, job, "sage-idle-sync") != 0) {
                gpu.running = false;
                free(job);
        }
}

/* Any allocation still holding due runs? (False: idle_due cleared.) Under s->lock. */
static bool any_due(SageShare *s) {
        for (SageShareAlloc *a = s->vmm.allocs; a; a = a->next)
                if (a->ndue)
                        return true;
        atomic_store(&s->vmm.idle_due, false);
        return false;
}

/*
 * Where the pass stands: 1 the GPU is done with everything queued before
 * the app's last call (the pass may run), 0 not yet (a synchronize started
 * or running), -1 nothing is due any more.
 */
static int gpu_done(SageShare *s) {
        int ready = 0;

        if (pthread_mutex_trylock(&s->lock) != 0)
                return 0; /* an app call holds it: not idle after all */
        pthread_mutex_lock(&gpu.lock);
        if (!any_due(s))
                ready = -1;
        else if (gpu.done && gpu.calls == sage_gate_calls())
                ready = 1;
        else if (!gpu.running)
                start_sync(s);
        pthread_mutex_unlock(&gpu.lock);
        pthread_mutex_unlock(&s->lock);
        return ready;
}

/* The first launch's breakdown: what assembly at idleness adds to them is taken back. */
static const SageStat first_launch_parts[] = {
        SAGE_STAT_SHARE_NS_ASSEMBLE_SYNC,
        SAGE_STAT_SHARE_NS_ASSEMBLE_READ,
        SAGE_STAT_SHARE_NS_ASSEMBLE_READ_DMA,
        SAGE_STAT_SHARE_NS_ASSEMBLE_READ_HASH,
        SAGE_STAT_SHARE_NS_ASSEMBLE_LOOKUP,
        SAGE_STAT_SHARE_NS_ASSEMBLE_LOOKUP_FIRST,
        SAGE_STAT_SHARE_NS_ASSEMBLE_LOOKUP_SLOWEST,
        SAGE_STAT_SHARE_ASSEMBLE_LOOKUP_SLOWEST_AT,
        SAGE_STAT_SHARE_NS_ASSEMBLE_MAP,
};
#define NPARTS (sizeof(first_launch_parts) / sizeof(first_launch_parts[0]))

bool sage_share_idle_step(uint64_t quiet_ns) {
        SageShare *s = sage_share();
        uint64_t before[NPARTS], t, calls;
        bool ran = false;

        if (!sage_share_idle_due() || atomic_load(&exiting) ||
            quiet_ns < sage_options()->share_assemble_idle * 1000000ull || sage_gate_phase() != SAGE_GATE_OPEN ||
            sage_capture_open() || gpu_done(s) <= 0)
                return false;
        t = sage_now_ns();
        if (!sage_gate_close_and_drain(t + IDLE_DRAIN_MS * 1000000ull)) {
                if (sage_gate_phase() == SAGE_GATE_PREPARING)
                        sage_gate_set_phase(SAGE_GATE_OPEN);
                return false;
        }
        for (size_t i = 0; i < NPARTS; i++)
                before[i] = sage_stats_get(first_launch_parts[i]);
        pthread_mutex_lock(&gpu.lock);
        calls = gpu.calls;
        gpu.done = false; /* the next pass synchronizes again */
        pthread_mutex_unlock(&gpu.lock);
        /* No app call since the synchronize (its work all done), none began a capture, the process not exiting. */
        if (calls == sage_gate_calls() && !sage_capture_open() && !atomic_load(&exiting)) {
                share_assemble_idle(s);
                ran = true;
        }
        for (size_t i = 0; i < NPARTS; i++)
                sage_stats_sub(first_launch_parts[i], sage_stats_get(first_launch_parts[i]) - before[i]);
        sage_gate_set_phase(SAGE_GATE_OPEN);
        if (ran)
                sage_stats_add(SAGE_STAT_SHARE_NS_ASSEMBLE_IDLE, sage_now_ns() - t);
        return ran;
}
