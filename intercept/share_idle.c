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
 * needs SAGE_SUSPEND=1), the gate closes, the calls in flight drain (none,
 * by then), and the due runs are keyed from the device as the first launch
 * would (each context synchronized first); a hit maps its extent, a miss
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

#include <stdatomic.h>

#include "capture_mode.h"
#include "options.h"
#include "share_state.h"
#include "stats.h"
#include "suspend_gate.h"
#include "util.h"

/* The calls in flight have had the idle time to end: a drain that takes longer is put off. */
#define IDLE_DRAIN_MS 50

bool share_idle_on(void) {
        const SageOptions *o = sage_options();

        return o->suspend && o->share_assemble && o->share_assemble_idle && o->share_place && *o->share_place;
}

bool share_idle_defer_run(void *ctx, const SageShareAlloc *a, size_t off, size_t len) {
        const SageShare *s = ctx;

        return !a->app_vmm && share_hints_has_run(&s->hints, a->size - a->lead, a->ordinal, off, len);
}

static void (*_Atomic idle_wake)(void);

void sage_share_idle_wake_with(void (*wake)(void)) {
        atomic_store(&idle_wake, wake);
}

void share_idle_wake(void) {
        void (*wake)(void) = atomic_load(&idle_wake);

        if (wake)
                wake();
}

bool sage_share_idle_due(void) {
        return atomic_load_explicit(&sage_share()->vmm.idle_due, memory_order_relaxed);
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
        uint64_t before[NPARTS], t;

        if (!sage_share_idle_due() || quiet_ns < sage_options()->share_assemble_idle * 1000000ull ||
            sage_gate_phase() != SAGE_GATE_OPEN || sage_capture_open())
                return false;
        t = sage_now_ns();
        if (!sage_gate_close_and_drain(t + IDLE_DRAIN_MS * 1000000ull)) {
                if (sage_gate_phase() == SAGE_GATE_PREPARING)
                        sage_gate_set_phase(SAGE_GATE_OPEN);
                return false;
        }
        for (size_t i = 0; i < NPARTS; i++)
                before[i] = sage_stats_get(first_launch_parts[i]);
        if (!sage_capture_open()) /* one begun before the gate closed */
                share_assemble_idle(s);
        for (size_t i = 0; i < NPARTS; i++)
                sage_stats_sub(first_launch_parts[i], sage_stats_get(first_launch_parts[i]) - before[i]);
        sage_gate_set_phase(SAGE_GATE_OPEN);
        sage_stats_add(SAGE_STAT_SHARE_NS_ASSEMBLE_IDLE, sage_now_ns() - t);
        return true;
}
