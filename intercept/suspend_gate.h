/*
 * The suspend gate (docs/suspend.md): every app call into the driver, while
 * SAGE_SUSPEND=1, passes sage_gate_enter() before and sage_gate_leave()
 * after (the hooks through the suspend observer; the trampolines of entry
 * points without a hook count on the same slot from their assembly, until
 * the driver function returns: tramp_entry.S). It counts calls in flight and lets
 * suspend.c close the gate, drain the calls, and open it again.
 *
 * Fast path: a store to this thread's own counter (no contended atomic),
 * a compiler-only fence, and one relaxed load of the gate word. The thread
 * that closes the gate makes that safe with membarrier(PRIVATE_EXPEDITED):
 * after it, every thread either shows its count or sees the gate closed.
 * Where membarrier is missing the fast path takes a full fence instead.
 */
#pragma once

#include <cuda.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tramp_abi.h"
#include "util.h"

/* Bits of the gate word: any set sends a call down the slow path. */
enum {
        SAGE_GATE_BIT_CLOSED = 0x1, /* preparing, suspended or resuming: calls wait (or ask for a resume) */
        SAGE_GATE_BIT_NOTE = 0x2,   /* idleness was reported: the next call tells suspend.c it is active */
        SAGE_GATE_BIT_FAILED = 0x4, /* a resume failed: calls return SAGE_GATE_ERROR */
};

/*
 * What a call returns when the gate cannot let it through: its resume
 * failed, or did not finish within SAGE_GATE_RESUME_MS. DEVICE_UNAVAILABLE
 * ("the device is unavailable") is what frameworks already treat as a
 * device that went away, so a platform restarts the process.
 */
#define SAGE_GATE_ERROR CUDA_ERROR_DEVICE_UNAVAILABLE
/* The longest a call waits for its resume (restore, re-map, queued behind saged --max-resumes). */
#define SAGE_GATE_RESUME_MS 30000

/* A trampoline call in flight (tramp_entry.S): where it returns to, and %rsp once it has. */
typedef struct SageGateShadow {
        uintptr_t ret, sp;
} SageGateShadow;

typedef struct SageGateSlot {
        _Atomic uint64_t enters, leaves; /* written by their thread only */
        struct SageGateSlot *next;
        atomic_bool in_use;
        /* Trampoline calls of this thread in flight, innermost last (tramp_entry.S only, and
         * slot_release when the thread exits). The fallback slot, shared, keeps depth full. */
        uint32_t depth;
        SageGateShadow shadow[SAGE_TRAMP_SHADOW_MAX];
} __attribute__((aligned(64))) SageGateSlot;

_Static_assert(offsetof(SageGateSlot, enters) == SAGE_TRAMP_SLOT_ENTERS, "tramp_abi.h");
_Static_assert(offsetof(SageGateSlot, leaves) == SAGE_TRAMP_SLOT_LEAVES, "tramp_abi.h");
_Static_assert(offsetof(SageGateSlot, depth) == SAGE_TRAMP_SLOT_DEPTH, "tramp_abi.h");
_Static_assert(offsetof(SageGateSlot, shadow) == SAGE_TRAMP_SLOT_SHADOW, "tramp_abi.h");
_Static_assert(sizeof(SageGateShadow) == SAGE_TRAMP_SHADOW_ENTRY, "tramp_abi.h");
_Static_assert(offsetof(SageGateShadow, sp) == SAGE_TRAMP_SHADOW_SP, "tramp_abi.h");

extern atomic_uint sage_gate_word;
extern atomic_bool sage_gate_fence_mode; /* no membarrier: the fast path fences itself */
extern _Thread_local SageGateSlot *sage_gate_slot __attribute__((tls_model("initial-exec")));

SageGateSlot *sage_gate_slot_new(void);
CUresult sage_gate_wait(SageGateSlot *t);
void sage_gate_left(void);

/* Before an app's driver call: 0, or the CUresult the call must return without reaching the driver. */
static inline CUresult sage_gate_enter(void) {
        SageGateSlot *t = sage_gate_slot;

        if (SAGE_UNLIKELY(!t))
                t = sage_gate_slot_new();
        atomic_store_explicit(&t->enters, atomic_load_explicit(&t->enters, memory_order_relaxed) + 1,
                              memory_order_relaxed);
        if (SAGE_UNLIKELY(atomic_load_explicit(&sage_gate_fence_mode, memory_order_relaxed)))
                atomic_thread_fence(memory_order_seq_cst);
        else
                atomic_signal_fence(memory_order_seq_cst);
        if (SAGE_UNLIKELY(atomic_load_explicit(&sage_gate_word, memory_order_relaxed)))
                return sage_gate_wait(t);
        return CUDA_SUCCESS;
}

/* After it (only when enter returned 0). */
static inline void sage_gate_leave(void) {
        SageGateSlot *t = sage_gate_slot;

        atomic_store_explicit(&t->leaves, atomic_load_explicit(&t->leaves, memory_order_relaxed) + 1,
                              memory_order_release);
        if (SAGE_UNLIKELY(atomic_load_explicit(&sage_gate_word, memory_order_relaxed) & SAGE_GATE_BIT_CLOSED))
                sage_gate_left();
}

/* ---- suspend.c's side */
typedef enum SageGatePhase {
        SAGE_GATE_OPEN,
        SAGE_GATE_PREPARING, /* closed, draining */
        SAGE_GATE_SUSPENDED, /* closed, extents released: a call asks for a resume */
        SAGE_GATE_BROKEN,    /* failed for good */
} SageGatePhase;

/* How a waiting call asks for its resume (suspend.c): 0 once the broker answered it is under way,
 * a positive SageProtoError when it refused (the gate breaks), a negative errno when the connection
 * failed (the listener, which sees the broker go, decides). */
typedef int (*SageGateResumeFn)(uint64_t deadline_ns);

/* Turn the gate's machinery on (membarrier registration); `resume` serves waiting calls. */
void sage_gate_init(SageGateResumeFn resume, void (*on_active)(void));
/* A new broker took the instance (suspend.c, broker_gone): a waiting call may ask it for the resume again. */
void sage_gate_resume_again(void);
/* Nothing will close the gate (not registered): the fast paths need no fence, membarrier or not. */
void sage_gate_never_closes(void);
/*
 * In the child of a fork(): the gate is open for good and asks no resume.
 * The parent may have been suspended, or mid-pass with the gate closed and
 * its lock held, when an app thread forked; the child's calls (which the
 * driver fails, as without SAGE) and its exit handlers must not wait for a
 * listener it does not have, nor speak on the parent's broker connection.
 */
void sage_gate_forked(void);
/* Close and wait, until `deadline_ns`, for the calls in flight: true once none is. */
bool sage_gate_close_and_drain(uint64_t deadline_ns);
void sage_gate_set_phase(SageGatePhase phase);
SageGatePhase sage_gate_phase(void);
/* Calls made so far (idleness: unchanged means none), and those in flight now. */
uint64_t sage_gate_calls(void);
uint64_t sage_gate_in_flight(void);
/* Idleness reported: the next call runs on_active. */
void sage_gate_note_idle(void);
