/*
 * The trampolines' way through the suspend gate (suspend_gate.h), apart
 * from tramp.c so that the trampoline table can be tested over a gate of
 * the test's own. A trampoline tail-jumps into the driver and never sees
 * the call return, so the call is entered and left here, before it runs:
 * it is not counted in flight while the driver runs it. Only a call that
 * reached the driver before the gate closed can be running then, and the
 * driver's own checkpoint lock waits for it.
 */
#include "tramp.h"

#include "suspend_gate.h"

int sage_tramp_gate_pass(void) {
        CUresult r = sage_gate_enter();

        if (r != CUDA_SUCCESS)
                return (int)r;
        sage_gate_leave();
        return 0;
}
