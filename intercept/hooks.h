/*
 * Generated from hooks.def: the symbol enum, per-symbol tables and the
 * function-pointer typedefs. cuda.h may be included before it in any mode (hooks.c uses the driver's internal one).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <cuda.h>

#define SAGE_UNPAREN(...) __VA_ARGS__

typedef enum SageCategory {
        SAGE_CAT_INIT,
        SAGE_CAT_CTX,
        SAGE_CAT_MEM,
        SAGE_CAT_VMM,
        SAGE_CAT_IPC,
        SAGE_CAT_COPY,
        SAGE_CAT_MODULE,
        SAGE_CAT_LAUNCH,
        SAGE_CAT_GRAPH,
        SAGE_CAT_SYNC,
        SAGE_CAT_PROC,
        SAGE_CAT_COUNT,
} SageCategory;

typedef enum SageSym {
#define SAGE_HOOK(name, cat, kind, params, args, a0, a1, a2) SAGE_SYM_##name,
#include "hooks.def"
#undef SAGE_HOOK
        SAGE_SYM_COUNT,
} SageSym;

#define SAGE_HOOK(name, cat, kind, params, args, a0, a1, a2) typedef CUresult (*sage_fn_##name##_t) params;
#include "hooks.def"
#undef SAGE_HOOK

/* How a recorded trace argument is printed. */
typedef enum SageArgFormat {
        SAGE_ARG_NONE,
        SAGE_ARG_UINT,
        SAGE_ARG_HEX,
        SAGE_ARG_BYTES,
        SAGE_ARG_STRING,
} SageArgFormat;

typedef struct SageArgInfo {
        SageArgFormat format;
        const char *label;
} SageArgInfo;

typedef struct SageSymInfo {
        const char *name;
        SageCategory category;
        SageArgInfo args[3];
} SageSymInfo;

extern const SageSymInfo sage_sym_info[SAGE_SYM_COUNT];
extern const char *const sage_category_name[SAGE_CAT_COUNT];

/* Our hook for a symbol (what we hand out in place of the driver's pointer). */
extern void *const sage_hook_table[SAGE_SYM_COUNT];
