/*
 * The trampolines' way through the suspend gate (suspend_gate.h), apart
 * from tramp.c so that the trampoline table can be tested over a gate of
 * the test's own. A call is counted in flight from the gate until the
 * driver function returns (tramp_entry.S's landing pad), like a hooked
 * call: the drain before a suspend waits for it.
 *
 * A failed gate (a resume that failed, or ran out of time) returns its
 * CUresult from an entry point known to return one. An export-table slot's
 * return type is not known (a pointer, void, a size): 46 there could crash
 * cudart. Such a call waits for its resume as long as one may come (a wait
 * that runs out asks again), and when the gate broke for good it calls
 * through to the driver: the driver itself blocks a locked or checkpointed
 * process's calls and returns them once it is restored (measured on the
 * H100), and a process whose restore failed is stuck in the driver anyway.
 * So it waits, or runs on the driver's word; it never returns garbage.
 */
#include "tramp.h"

#include "hooks.h"
#include "options.h"
#include "suspend_gate.h"

uint32_t sage_tramp_gate_pass(uint32_t entered, bool untyped) {
        CUresult r;

        /* The trace alone, or a call from inside libsage (the gate's own resume): straight in. */
        if (!sage_options()->suspend || sage_hooks_inside()) {
                if (entered)
                        sage_gate_leave();
                return SAGE_TRAMP_TAIL;
        }
        for (;;) {
                sage_hooks_enter();
                r = entered ? sage_gate_wait(sage_gate_slot) : sage_gate_enter();
                sage_hooks_leave();
                if (r == CUDA_SUCCESS)
                        break;
                /* Not counted in flight any more. */
                if (!untyped)
                        return (uint32_t)r;
                if (sage_gate_phase() == SAGE_GATE_BROKEN)
                        return SAGE_TRAMP_TAIL;
                entered = 0;
        }
        if (sage_gate_slot->depth >= SAGE_TRAMP_SHADOW_MAX) {
                /* The shared fallback slot, or nested too deep: counted only while it passed. */
                sage_gate_leave();
                return SAGE_TRAMP_TAIL;
        }
        return SAGE_TRAMP_TRACK;
}
