/*
 * The logic behind IMPL hooks (hooks.def): sage_impl_<name>(real, args...),
 * declared here from the same list, so a prototype cannot drift.
 */
#pragma once

#include "hooks.h"

/* Names are pasted right here: cuda.h #defines some of them (cuGetProcAddress) outside the driver's own build. */
#define SAGE_IMPL_DECL_PASS(fn, type, params)
#define SAGE_IMPL_DECL_IMPL(fn, type, params) CUresult fn(type real, SAGE_UNPAREN params);
#define SAGE_HOOK(name, cat, kind, params, args, a0, a1, a2) \
        SAGE_IMPL_DECL_##kind(sage_impl_##name, sage_fn_##name##_t, params)
#include "hooks.def"
#undef SAGE_HOOK
#undef SAGE_IMPL_DECL_PASS
#undef SAGE_IMPL_DECL_IMPL
