/*
 * STUB of the suspend gate until susp-core's lands (the contract of
 * prompts/s3/suspend-common.md). At the merge, susp-core's suspend_gate.h
 * and suspend_gate.c replace this file and suspend_gate_stub.c. The
 * trampolines rely on two things only:
 *   sage_gate_word     a 32-bit word, nonzero while calls must take the slow
 *                      path; the trampolines' fast path is one load of it
 *                      and a branch (tramp_table.S reads it by name);
 *   sage_gate_enter()  0, or the CUresult a call must return without
 *   sage_gate_leave()  reaching the driver (tramp_gate.c calls them).
 */
#pragma once

#include <cuda.h>
#include <stdatomic.h>

#include "util.h"

extern atomic_uint sage_gate_word;

CUresult sage_gate_wait(void);

static inline CUresult sage_gate_enter(void) {
        if (SAGE_UNLIKELY(atomic_load_explicit(&sage_gate_word, memory_order_relaxed)))
                return sage_gate_wait();
        return CUDA_SUCCESS;
}

static inline void sage_gate_leave(void) {
}
