/*
 * The hooked driver symbols, generated from hooks.def: the symbol enum, the
 * function-pointer typedefs and one table of what is known about each call
 * (name, category, trace argument layout, and the declared facts: what it
 * writes, its stream, the resource it creates or destroys). Pure data: the
 * driver loader, the hooks and every observer read it, it reads nothing.
 * cuda.h may be included before it in any mode (hooks.c uses the driver's
 * internal one).
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
#define SAGE_HOOK(name, cat, kind, params, args, a0, a1, a2, w, st, res) SAGE_SYM_##name,
#include "hooks.def"
#undef SAGE_HOOK
        SAGE_SYM_COUNT,
} SageSym;

#define SAGE_HOOK(name, cat, kind, params, args, a0, a1, a2, w, st, res) typedef CUresult (*sage_fn_##name##_t) params;
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

/* What a call writes in device memory (hooks.def: SAGE_W_*). */
typedef enum SageWrites {
        SAGE_WRITES_NONE,
        SAGE_WRITES_RANGE,   /* [SageCall.write_dst, + write_bytes) */
        SAGE_WRITES_UNKNOWN, /* anything may have changed */
} SageWrites;

/* Which stream a call's work goes to (hooks.def: SAGE_STREAM*). */
typedef enum SageStreamUse {
        SAGE_STREAM_NONE,
        SAGE_STREAM_ARG,         /* SageCall.stream as given */
        SAGE_STREAM_PER_THREAD,  /* as given; a 0 stream means CU_STREAM_PER_THREAD (already resolved in SageCall) */
} SageStreamUse;

typedef enum SageResource {
        SAGE_RESOURCE_NONE,
        SAGE_RESOURCE_DEVICE_MEMORY,
        SAGE_RESOURCE_HOST_MEMORY,
        SAGE_RESOURCE_IPC_MAPPING,
        SAGE_RESOURCE_MODULE,
        SAGE_RESOURCE_STREAM,
        SAGE_RESOURCE_EVENT,
        SAGE_RESOURCE_COUNT,
} SageResource;

typedef enum SageResourceOp {
        SAGE_RESOURCE_KEEPS,    /* creates or destroys nothing */
        SAGE_RESOURCE_CREATES,  /* SageCall.handle, after success */
        SAGE_RESOURCE_DESTROYS, /* SageCall.handle */
} SageResourceOp;

typedef struct SageSymInfo {
        const char *name;
        SageCategory category;
        SageArgInfo args[3];
        SageWrites writes;
        SageStreamUse stream;
        SageResourceOp resource_op;
        SageResource resource;
} SageSymInfo;

extern const SageSymInfo sage_sym_info[SAGE_SYM_COUNT];
extern const char *const sage_category_name[SAGE_CAT_COUNT];

/* Does `sym` write device memory that its arguments do not name? */
static inline bool sage_sym_writes_unknown(SageSym sym) {
        return sage_sym_info[sym].writes == SAGE_WRITES_UNKNOWN;
}
