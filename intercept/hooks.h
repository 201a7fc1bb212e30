/*
 * The hook layer: the hook functions (generated from hooks.def) and the
 * observers features register to see calls. A hook with no observer on
 * forwards to the driver (PASS) or to its sage_impl_ logic (IMPL) and
 * costs a few loads; with one on, it computes the call's declared facts
 * (symbols.h) and hands them to every active observer, before and after
 * the driver call.
 */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "symbols.h"

/* One intercepted call as observers see it. */
typedef struct SageCall {
        SageSym sym;
        bool own; /* libsage's own call (the warm-up), reported for the record: features acting for the app skip it */
        CUresult result; /* after the call */
        uint64_t t0;     /* set by an observer that times calls (the trace), before */
        SageWrites
                writes; /* what this call writes: hooks.def's declaration, a PITCHED one computed (never PITCHED here) */
        uint64_t write_dst; /* writes == SAGE_WRITES_RANGE: [write_dst, write_dst + write_bytes) */
        uint64_t write_bytes;
        CUstream stream;  /* stream != SAGE_STREAM_NONE: the stream, per-thread default resolved */
        uint64_t handle;  /* resource_op: the handle destroyed (before) or created (after success) */
        uint64_t args[3]; /* the trace's argument values (hooks.def argN), after the call */
} SageCall;

/*
 * Observer slots, in nesting order: before the call, active observers run
 * from the highest slot down; after it, from the lowest up. So the trace
 * (slot 0) times the driver call alone, and a gate in a higher slot (the
 * suspend gate will be one) runs before anything else looks at the call.
 */
typedef enum SageObserverSlot {
        SAGE_OBSERVER_TRACE,
        SAGE_OBSERVER_REDIRECT,
        SAGE_OBSERVER_SHARE,
        SAGE_OBSERVER_SUSPEND, /* registration now; the suspend gate later (suspend.c) */
        SAGE_OBSERVER_COUNT,
} SageObserverSlot;

/*
 * before() may veto the call by setting call->result to an error: the
 * driver is not called, the hook returns that error, lower slots and
 * after() never see it (the suspend gate, when a resume failed).
 */
typedef struct SageObserver {
        void (*before)(SageCall *call); /* may be NULL */
        void (*after)(SageCall *call);  /* may be NULL */
        /* A PASS call ran out of GPU memory: give back memory held on the app's behalf, true if any was (the call
         * is then made once more: hooks.c). May be NULL. */
        bool (*reclaim)(void);
} SageObserver;

/* Register `o` (constant, lives forever) in `slot`; it sees calls once activated. */
void sage_hooks_register(SageObserverSlot slot, const SageObserver *o);
/* Turn a slot's observer on or off. Lock-free; the hooks read one word. */
void sage_hooks_activate(SageObserverSlot slot);
void sage_hooks_deactivate(SageObserverSlot slot);
bool sage_hooks_active(SageObserverSlot slot);

/*
 * A driver call libsage made itself (the warm-up's cuInit and retains):
 * observers that record calls see it, with call->own set.
 */
void sage_hooks_report(SageSym sym, uint64_t t0, CUresult result, uint64_t a0, uint64_t a1, uint64_t a2);

/*
 * Driver calls on this thread between enter and leave go straight to the
 * driver, also through exported names: libsage's own logic (IMPL hooks,
 * the warm-up thread) and whatever the driver calls back. Nest freely.
 */
void sage_hooks_enter(void);
void sage_hooks_leave(void);
/* Is this thread inside libsage's own logic (between enter and leave)? */
bool sage_hooks_inside(void);

/* Our hook for a symbol (what we hand out in place of the driver's pointer). */
extern void *const sage_hook_table[SAGE_SYM_COUNT];

/*
 * The logic behind IMPL hooks: sage_impl_<name>(real, args...), declared
 * from the same list, so a prototype cannot drift. Names are pasted right
 * here: cuda.h #defines some of them (cuGetProcAddress) outside the
 * driver's own build.
 */
#define SAGE_IMPL_DECL_PASS(fn, type, params)
#define SAGE_IMPL_DECL_IMPL(fn, type, params) CUresult fn(type real, SAGE_UNPAREN params);
#define SAGE_HOOK(name, cat, kind, params, args, a0, a1, a2, w, st, res) \
        SAGE_IMPL_DECL_##kind(sage_impl_##name, sage_fn_##name##_t, params)
#include "hooks.def"
#undef SAGE_HOOK
#undef SAGE_IMPL_DECL_PASS
#undef SAGE_IMPL_DECL_IMPL

/*
 * The word of active observer bits, under its old name, for share.c, which
 * still turns its observer on with atomic_fetch_or(&sage_hook_slow,
 * SAGE_SLOW_SHARE). New code calls sage_hooks_activate().
 */
atomic_uint *sage_hooks_slow_word(void);
#define sage_hook_slow (*sage_hooks_slow_word())
enum {
        SAGE_SLOW_TRACE = 1u << SAGE_OBSERVER_TRACE,
        SAGE_SLOW_REDIRECT = 1u << SAGE_OBSERVER_REDIRECT,
        SAGE_SLOW_SHARE = 1u << SAGE_OBSERVER_SHARE,
        SAGE_SLOW_SUSPEND = 1u << SAGE_OBSERVER_SUSPEND,
};
