/*
 * The hook functions, generated from hooks.def. Each is thin: find the real
 * entry point, and either forward (PASS) or call the logic of impl.c (IMPL);
 * when tracing is on, time the call and record one event. With tracing off
 * a PASS hook is a load, two tests and a tail call.
 *
 * This file includes cuda.h the way the driver itself is built
 * (__CUDA_API_VERSION_INTERNAL): every exported name, legacy and _ptds/_ptsz
 * forms included, is then declared with its exact prototype, and the
 * compiler checks each hook's signature against it.
 */
#define __CUDA_API_VERSION_INTERNAL 1
#include <cuda.h>

#include <string.h>

#include "driver.h"
#include "hooks.h"
#include "impl.h"
#include "intercept.h"
#include "redirect.h"
#include "share.h"
#include "trace.h"
#include "util.h"

_Thread_local unsigned sage_hook_depth __attribute__((tls_model("initial-exec")));

const char *const sage_category_name[SAGE_CAT_COUNT] = {
        "init", "ctx", "mem", "vmm", "ipc", "copy", "module", "launch", "graph", "sync", "proc",
};

/* ---- tables */
#define SAGE_NONE { SAGE_ARG_NONE, NULL }
#define SAGE_U(label, v) { SAGE_ARG_UINT, label }
#define SAGE_X(label, v) { SAGE_ARG_HEX, label }
#define SAGE_B(v) { SAGE_ARG_BYTES, "bytes" }
#define SAGE_S(label, v) { SAGE_ARG_STRING, label }
const SageSymInfo sage_sym_info[SAGE_SYM_COUNT] = {
#define SAGE_HOOK(name, cat, kind, params, args, a0, a1, a2) \
        [SAGE_SYM_##name] = { #name, SAGE_CAT_##cat, { a0, a1, a2 } },
#include "hooks.def"
#undef SAGE_HOOK
};
#undef SAGE_NONE
#undef SAGE_U
#undef SAGE_X
#undef SAGE_B
#undef SAGE_S

void *const sage_hook_table[SAGE_SYM_COUNT] = {
#define SAGE_HOOK(name, cat, kind, params, args, a0, a1, a2) [SAGE_SYM_##name] = SAGE_FN_CAST(void *, name),
#include "hooks.def"
#undef SAGE_HOOK
};

const SageTrackInfo sage_track_table[SAGE_SYM_COUNT] = {
#define SAGE_TRACK(name, op, resource, arg) \
        [SAGE_SYM_##name] = { SAGE_TRACK_##op, SAGE_RESOURCE_##resource, arg },
#include "track.def"
#undef SAGE_TRACK
};

/* ---- hooks */
#define SAGE_CALL_PASS(name, args) real args
/* IMPL logic runs with the guard raised: driver calls it causes, even through
 * exported names, go straight to the driver. */
#define SAGE_CALL_IMPL(name, args)                                                \
        __extension__({                                                           \
                sage_hook_depth++;                                                \
                CUresult sage_impl_r = sage_impl_##name(real, SAGE_UNPAREN args); \
                sage_hook_depth--;                                                \
                sage_impl_r;                                                      \
        })

/* Trace argument values, evaluated after the call (sage_r holds its result). */
#define SAGE_NONE 0
#define SAGE_U(label, v) (uint64_t)(v)
#define SAGE_X(label, v) (uint64_t)(uintptr_t)(v)
#define SAGE_B(v) (uint64_t)(v)
#define SAGE_S(label, v) (uint64_t)(uintptr_t)(v)
#define SAGE_OUT(p) ((sage_r == CUDA_SUCCESS && (p)) ? (uint64_t)(uintptr_t) * (p) : 0)

/*
 * The slow path is taken only while tracing, while a redirected context is
 * alive (redirect.c), or while sharing is on (share.c: launches bump its
 * write epoch): one load of sage_hook_slow decides.
 */
#define SAGE_HOOK(name, cat, kind, params, args, a0, a1, a2)                                      \
        SAGE_EXPORT CUresult name params {                                                        \
                sage_fn_##name##_t real = SAGE_FN_CAST(sage_fn_##name##_t, sage_real(SAGE_SYM_##name)); \
                CUresult sage_r;                                                                  \
                uint64_t t0;                                                                      \
                if (SAGE_UNLIKELY(!real))                                                         \
                        return sage_driver_handle() ? CUDA_ERROR_NOT_FOUND : CUDA_ERROR_NO_DEVICE;    \
                if (SAGE_UNLIKELY(sage_hook_depth))                                               \
                        return real args;                                                         \
                if (SAGE_LIKELY(!atomic_load_explicit(&sage_hook_slow, memory_order_relaxed)))    \
                        return SAGE_CALL_##kind(name, args);                                      \
                t0 = sage_tracing ? sage_now_ns() : 0;                                            \
                sage_r = SAGE_CALL_##kind(name, args);                                            \
                {                                                                                 \
                        uint64_t sage_v[3] = { a0, a1, a2 };                                      \
                        if (sage_tracing)                                                         \
                                sage_trace_record(SAGE_SYM_##name, t0, sage_now_ns(), sage_r,    \
                                                  sage_v[0], sage_v[1], sage_v[2]);               \
                        if (sage_track_table[SAGE_SYM_##name].op && sage_r == CUDA_SUCCESS)       \
                                sage_redirect_track(SAGE_SYM_##name,                              \
                                                    sage_v[sage_track_table[SAGE_SYM_##name].arg]); \
                        if (atomic_load_explicit(&sage_hook_slow, memory_order_relaxed) & SAGE_SLOW_SHARE) \
                                sage_share_after_call(SAGE_SYM_##name);                           \
                }                                                                                 \
                return sage_r;                                                                    \
        }
#include "hooks.def"
#undef SAGE_HOOK
