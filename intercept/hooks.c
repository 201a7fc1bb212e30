/*
 * The hook functions, generated from hooks.def, and the observers that see
 * them. Each hook is thin: find the real entry point, and either forward
 * (PASS) or call its sage_impl_ logic (IMPL). Features do not live here:
 * the trace, the context redirect and sharing register an observer
 * (hooks.h) and turn it on while they need to see calls; the hooks know
 * only the facts hooks.def declares. With no observer on, a PASS hook is a
 * load, two tests and a tail call: no lock, no call of ours.
 *
 * This file includes cuda.h the way the driver itself is built
 * (__CUDA_API_VERSION_INTERNAL): every exported name, legacy and _ptds/_ptsz
 * forms included, is then declared with its exact prototype, and the
 * compiler checks each hook's signature against it.
 */
#define __CUDA_API_VERSION_INTERNAL 1
#include <cuda.h>

#include "hooks.h"

#include <stdatomic.h>
#include <string.h>

#include "driver.h"
#include "util.h"

/*
 * Re-entrancy depth of driver hooks on this thread (sage_hooks_enter): a
 * driver call made while a hook is running goes straight to the driver.
 */
static _Thread_local unsigned hook_depth __attribute__((tls_model("initial-exec")));

/* Which observer slots are on: one relaxed load per hook call decides the path. */
static atomic_uint observers_on;
/* Registered once at start-up (init.c), read by every observed call. */
static const SageObserver *_Atomic observers[SAGE_OBSERVER_COUNT];
/* The slots whose observer has a before(): sharing and the redirect have none, so their calls skip it. */
static atomic_uint observers_before;

void sage_hooks_register(SageObserverSlot slot, const SageObserver *o) {
        if (slot >= SAGE_OBSERVER_COUNT)
                return;
        atomic_store_explicit(&observers[slot], o, memory_order_release);
        if (o && o->before)
                atomic_fetch_or(&observers_before, 1u << slot);
        else
                atomic_fetch_and(&observers_before, ~(1u << slot));
}

void sage_hooks_activate(SageObserverSlot slot) {
        atomic_fetch_or(&observers_on, 1u << slot);
}

void sage_hooks_deactivate(SageObserverSlot slot) {
        atomic_fetch_and(&observers_on, ~(1u << slot));
}

bool sage_hooks_active(SageObserverSlot slot) {
        return atomic_load_explicit(&observers_on, memory_order_relaxed) & (1u << slot);
}

atomic_uint *sage_hooks_slow_word(void) {
        return &observers_on;
}

void sage_hooks_enter(void) {
        hook_depth++;
}

void sage_hooks_leave(void) {
        hook_depth--;
}

bool sage_hooks_inside(void) {
        return hook_depth != 0;
}

/*
 * Observers run with the guard raised, as IMPL logic does: a driver call an
 * observer makes (or the driver makes back into an exported entry point)
 * goes straight to the driver, never into the observers again.
 */
static void observe_before(SageCall *call, unsigned on) {
        hook_depth++;
        for (int slot = SAGE_OBSERVER_COUNT; slot-- > 0;) {
                const SageObserver *o;

                if ((on & (1u << slot)) && (o = atomic_load_explicit(&observers[slot], memory_order_acquire)) &&
                    o->before) {
                        o->before(call);
                        if (SAGE_UNLIKELY(call->result != CUDA_SUCCESS))
                                break; /* vetoed (the suspend gate): lower slots never see the call */
                }
        }
        hook_depth--;
}

/* After the call the word is read again: a feature the call turned on (sharing, a redirect) sees it. */
static void observe_after(SageCall *call) {
        unsigned on = atomic_load_explicit(&observers_on, memory_order_relaxed);

        hook_depth++;
        for (int slot = 0; slot < SAGE_OBSERVER_COUNT; slot++) {
                const SageObserver *o;

                if ((on & (1u << slot)) && (o = atomic_load_explicit(&observers[slot], memory_order_acquire)) &&
                    o->after)
                        o->after(call);
        }
        hook_depth--;
}

void sage_hooks_report(SageSym sym, uint64_t t0, CUresult result, uint64_t a0, uint64_t a1, uint64_t a2) {
        SageCall call = { .sym = sym, .own = true, .result = result, .t0 = t0, .args = { a0, a1, a2 } };

        if (atomic_load_explicit(&observers_on, memory_order_relaxed))
                observe_after(&call);
}

/* ---- the hook table: what we hand out in place of the driver's pointers */
void *const sage_hook_table[SAGE_SYM_COUNT] = {
#define SAGE_HOOK(name, cat, kind, params, args, a0, a1, a2, w, st, res) [SAGE_SYM_##name] = SAGE_FN_CAST(void *, name),
#include "hooks.def"
#undef SAGE_HOOK
};

/*
 * An observed PASS call the driver refused for want of GPU memory: each
 * active observer may give back memory it holds for the app (sharing's
 * allocations made ahead); if one did, the call is made once more. A driver
 * call that fails out of memory has done nothing, so making it again is
 * what the app would have seen had the memory been free. An IMPL hook is
 * not made again here (its logic has done things by then): the ones that
 * allocate retry their own driver call (SHARE_OOM_RETRY). Host memory's
 * calls are not helped by GPU memory.
 */
static bool reclaim(unsigned on, SageSym sym) {
        bool any = false;

        if (sym == SAGE_SYM_cuMemAllocHost_v2 || sym == SAGE_SYM_cuMemHostAlloc || sym == SAGE_SYM_cuMemHostRegister_v2)
                return false;
        for (int i = 0; i < SAGE_OBSERVER_COUNT; i++) {
                const SageObserver *o = atomic_load_explicit(&observers[i], memory_order_acquire);
                if ((on & (1u << i)) && o && o->reclaim && o->reclaim())
                        any = true;
        }
        return any;
}

/* ---- hooks */
#define SAGE_CALL_PASS(name, args) real args
/* Which kinds of hook are made again after an out of memory that an observer's reclaim answered (reclaim). */
#define SAGE_RETRIES_PASS 1
#define SAGE_RETRIES_IMPL 0
/* IMPL logic runs with the guard raised: driver calls it causes, even through
 * exported names, go straight to the driver. */
#define SAGE_CALL_IMPL(name, args)                                                \
        __extension__({                                                           \
                hook_depth++;                                                     \
                CUresult sage_impl_r = sage_impl_##name(real, SAGE_UNPAREN args); \
                hook_depth--;                                                     \
                sage_impl_r;                                                      \
        })

/* The declared facts, as statements on `call`: inputs before the call... */
#define SAGE_W_NONE call.writes = SAGE_WRITES_NONE;
#define SAGE_W_UNKNOWN call.writes = SAGE_WRITES_UNKNOWN;
#define SAGE_W_RANGE(dst, bytes)          \
        call.writes = SAGE_WRITES_RANGE;  \
        call.write_dst = (uint64_t)(dst); \
        call.write_bytes = (uint64_t)(bytes);
#define SAGE_W_PITCHED(range)                    \
        {                                        \
                SageWriteRange sage_w = (range); \
                call.writes = sage_w.writes;     \
                call.write_dst = sage_w.dst;     \
                call.write_bytes = sage_w.bytes; \
        }
#define SAGE_NO_STREAM
#define SAGE_STREAM(s) call.stream = (s);
#define SAGE_STREAM_PT(s) call.stream = (s) ? (s) : CU_STREAM_PER_THREAD;
#define SAGE_NO_RESOURCE
#define SAGE_CREATES(kind, h)
#define SAGE_DESTROYS(kind, h) call.handle = (uint64_t)(uintptr_t)(h);
/* ...and what the call created, after it (sage_r holds its result). */
#define SAGE_AFTER_SAGE_NO_RESOURCE
#define SAGE_AFTER_SAGE_CREATES(kind, h) call.handle = (uint64_t)(uintptr_t)(h);
#define SAGE_AFTER_SAGE_DESTROYS(kind, h)

/* Trace argument values, evaluated after the call. */
#define SAGE_NONE 0
#define SAGE_U(label, v) (uint64_t)(v)
#define SAGE_X(label, v) (uint64_t)(uintptr_t)(v)
#define SAGE_B(v) (uint64_t)(v)
#define SAGE_S(label, v) (uint64_t)(uintptr_t)(v)
#define SAGE_OUT(p) ((sage_r == CUDA_SUCCESS && (p)) ? (uint64_t)(uintptr_t) * (p) : 0)

#define SAGE_HOOK(name, cat, kind, params, fwd, a0, a1, a2, w, st, res)                                    \
        SAGE_EXPORT CUresult name params {                                                                 \
                sage_fn_##name##_t real = SAGE_FN_CAST(sage_fn_##name##_t, sage_real(SAGE_SYM_##name));    \
                unsigned on;                                                                               \
                if (SAGE_UNLIKELY(!real))                                                                  \
                        return sage_driver_handle() ? CUDA_ERROR_NOT_FOUND : CUDA_ERROR_NO_DEVICE;         \
                if (SAGE_UNLIKELY(hook_depth))                                                             \
                        return real fwd;                                                                   \
                on = atomic_load_explicit(&observers_on, memory_order_relaxed);                            \
                if (SAGE_LIKELY(!on))                                                                      \
                        return SAGE_CALL_##kind(name, fwd);                                                \
                {                                                                                          \
                        SageCall call = { .sym = SAGE_SYM_##name };                                        \
                        CUresult sage_r;                                                                   \
                        w st res if (on & atomic_load_explicit(&observers_before, memory_order_relaxed)) { \
                                observe_before(&call, on);                                                 \
                                if (SAGE_UNLIKELY(call.result != CUDA_SUCCESS))                            \
                                        return call.result;                                                \
                        }                                                                                  \
                        sage_r = call.result = SAGE_CALL_##kind(name, fwd);                                \
                        if (SAGE_RETRIES_##kind && SAGE_UNLIKELY(sage_r == CUDA_ERROR_OUT_OF_MEMORY) &&    \
                            reclaim(on, SAGE_SYM_##name))                                                  \
                                sage_r = call.result = SAGE_CALL_##kind(name, fwd);                        \
                        SAGE_AFTER_##res call.args[0] = a0;                                                \
                        call.args[1] = a1;                                                                 \
                        call.args[2] = a2;                                                                 \
                        observe_after(&call);                                                              \
                        return sage_r;                                                                     \
                }                                                                                          \
        }
#include "hooks.def"
#undef SAGE_HOOK
