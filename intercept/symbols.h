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

#define SAGE_HOOK(name, cat, kind, params, args, a0, a1, a2, w, st, res) typedef CUresult(*sage_fn_##name##_t) params;
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
        SAGE_WRITES_UNKNOWN, /* anything may have changed (SageCall.write_dst: where it starts, when known, else 0) */
        SAGE_WRITES_PITCHED, /* computed per call from its descriptor: SageCall.writes is one of the above */
} SageWrites;

/*
 * What one call writes, computed from its arguments (SAGE_W_PITCHED): a
 * pitched copy or set writes `rows` rows of `width` bytes, `pitch` apart,
 * in `depth` slices of `height` rows, from (x bytes, y rows, z slices) past
 * `dst`. The range covers the first to the last byte written (the gaps
 * between rows included: what a feature must treat as written).
 */
typedef struct SageWriteRange {
        SageWrites writes;
        uint64_t dst, bytes;
} SageWriteRange;

static inline SageWriteRange sage_write_pitched(uint64_t dst, uint64_t x, uint64_t y, uint64_t z, uint64_t pitch,
                                                uint64_t height, uint64_t width, uint64_t rows, uint64_t depth) {
        SageWriteRange w = { .writes = SAGE_WRITES_UNKNOWN, .dst = dst };
        uint64_t first_row, last_row, start, span;

        if (!width || !rows || !depth)
                return (SageWriteRange){ .writes = SAGE_WRITES_NONE };
        /* An overflow is a call the driver refuses; if it did not, where it writes is unknown. */
        if (__builtin_mul_overflow(z, height, &first_row) || __builtin_add_overflow(first_row, y, &first_row) ||
            __builtin_mul_overflow(first_row, pitch, &start) || __builtin_add_overflow(start, x, &start) ||
            __builtin_add_overflow(start, dst, &start) || __builtin_mul_overflow(depth - 1, height, &last_row) ||
            __builtin_add_overflow(last_row, rows - 1, &last_row) || __builtin_mul_overflow(last_row, pitch, &span) ||
            __builtin_add_overflow(span, width, &span) || __builtin_add_overflow(start, span, &(uint64_t){ 0 }))
                return w;
        return (SageWriteRange){ .writes = SAGE_WRITES_RANGE, .dst = start, .bytes = span };
}

/*
 * The destination of a pitched copy. Host destinations write no device
 * memory; an array is never linear memory a feature tracks (no device
 * pointer reaches it). A memory type the driver may add later: unknown.
 */
static inline SageWriteRange sage_write_copy_dst(CUmemorytype type, CUdeviceptr dst, size_t x, size_t y, size_t z,
                                                 size_t pitch, size_t height, size_t width, size_t rows, size_t depth) {
        if (type == CU_MEMORYTYPE_HOST || type == CU_MEMORYTYPE_ARRAY)
                return (SageWriteRange){ .writes = SAGE_WRITES_NONE };
        if (type == CU_MEMORYTYPE_DEVICE || type == CU_MEMORYTYPE_UNIFIED)
                return sage_write_pitched(dst, x, y, z, pitch, height, width, rows, depth);
        return (SageWriteRange){ .writes = SAGE_WRITES_UNKNOWN };
}

/* cuMemcpy2D*: the destination rectangle (no descriptor: the driver refuses, nothing written). */
static inline SageWriteRange sage_write_copy2d(const CUDA_MEMCPY2D *p) {
        if (!p)
                return (SageWriteRange){ .writes = SAGE_WRITES_NONE };
        return sage_write_copy_dst(p->dstMemoryType, p->dstDevice, p->dstXInBytes, p->dstY, 0, p->dstPitch, 0,
                                   p->WidthInBytes, p->Height, 1);
}

/* cuMemcpy3D*: the destination box (dstLOD belongs to arrays). */
static inline SageWriteRange sage_write_copy3d(const CUDA_MEMCPY3D *p) {
        if (!p)
                return (SageWriteRange){ .writes = SAGE_WRITES_NONE };
        return sage_write_copy_dst(p->dstMemoryType, p->dstDevice, p->dstXInBytes, p->dstY, p->dstZ, p->dstPitch,
                                   p->dstHeight, p->WidthInBytes, p->Height, p->Depth);
}

/* cuMemcpy3DPeer*: the destination box, as cuMemcpy3D's. */
static inline SageWriteRange sage_write_copy3d_peer(const CUDA_MEMCPY3D_PEER *p) {
        if (!p)
                return (SageWriteRange){ .writes = SAGE_WRITES_NONE };
        return sage_write_copy_dst(p->dstMemoryType, p->dstDevice, p->dstXInBytes, p->dstY, p->dstZ, p->dstPitch,
                                   p->dstHeight, p->WidthInBytes, p->Height, p->Depth);
}

/* cuMemsetD2D*: Height rows of Width elements of elem bytes, dstPitch apart. */
static inline SageWriteRange sage_write_set2d(CUdeviceptr dst, size_t pitch, size_t width, size_t height,
                                              unsigned elem) {
        uint64_t bytes;

        if (__builtin_mul_overflow((uint64_t)width, (uint64_t)elem, &bytes))
                return (SageWriteRange){ .writes = SAGE_WRITES_UNKNOWN, .dst = dst };
        return sage_write_pitched(dst, 0, 0, 0, pitch, 0, bytes, height, 1);
}

/* Which stream a call's work goes to (hooks.def: SAGE_STREAM*). */
typedef enum SageStreamUse {
        SAGE_STREAM_NONE,
        SAGE_STREAM_ARG,        /* SageCall.stream as given */
        SAGE_STREAM_PER_THREAD, /* as given; a 0 stream means CU_STREAM_PER_THREAD (already resolved in SageCall) */
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
        bool impl; /* an IMPL hook: libsage's own logic runs in place of a plain forward */
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
