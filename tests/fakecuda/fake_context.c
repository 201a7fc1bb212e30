/* fake_context.c: primary and explicit contexts and the per-thread stack.
 *
 * A context is a small record on the live list; a CUcontext that is not on
 * the list (destroyed, or a primary context that was reset) reads as
 * INVALID_CONTEXT, even when another thread still has it current. Each
 * device has one primary context, created by the first retain (after the
 * SAGE_FAKE_CTX_MS delay, taken outside the global lock so that other threads
 * keep running) and destroyed when its last reference is released or on
 * reset. Destroying a context frees everything it owns: allocations, streams,
 * events, modules. The current-context stack is thread-local, as in CUDA.
 */
#include "fake_internal.h"

#include <stdlib.h>

#define STACK_MAX 32

/* Per-thread by definition: the CUDA current-context stack. */
static _Thread_local CUcontext ctx_stack[STACK_MAX];
static _Thread_local int ctx_depth;

bool fake_context_alive_locked(CUcontext ctx) {
        return fake_listed_locked(fake.contexts, ctx);
}

CUcontext fake_current_context(void) {
        if (ctx_depth == 0)
                return NULL;
        CUcontext ctx = ctx_stack[ctx_depth - 1];
        bool alive = fake_listed(&fake.contexts, ctx);
        return alive ? ctx : NULL;
}

CUresult fake_require_context(CUcontext *out) {
        FAKE_REQUIRE_INIT();
        CUcontext ctx = fake_current_context();
        if (!ctx)
                return CUDA_ERROR_INVALID_CONTEXT;
        if (__atomic_load_n(&ctx->faulted, __ATOMIC_RELAXED))
                return CUDA_ERROR_ILLEGAL_ADDRESS; /* sticky, as after a GPU fault */
        if (out)
                *out = ctx;
        return CUDA_SUCCESS;
}

CUresult fake_require_context_args(CUcontext *out, bool bad_args) {
        FAKE_TRY(fake_require_context(out));
        return bad_args ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
}

void fake_context_forget_thread(CUcontext ctx) {
        if (ctx_depth > 0 && ctx_stack[ctx_depth - 1] == ctx)
                ctx_depth--;
}

static CUcontext context_new_locked(int device, unsigned flags, bool primary) {
        CUcontext ctx = calloc(1, sizeof *ctx);
        if (!ctx)
                return NULL;
        ctx->device = device;
        ctx->flags = flags;
        ctx->primary = primary;
        /* The real driver's defaults; a new context (a primary one after a reset too) starts from them. */
        ctx->limits[CU_LIMIT_STACK_SIZE] = 1024;
        ctx->limits[CU_LIMIT_PRINTF_FIFO_SIZE] = 1 << 20;
        ctx->limits[CU_LIMIT_MALLOC_HEAP_SIZE] = 8 << 20;
        ctx->limits[CU_LIMIT_DEV_RUNTIME_SYNC_DEPTH] = 2;
        ctx->limits[CU_LIMIT_DEV_RUNTIME_PENDING_LAUNCH_COUNT] = 2048;
        /* Its local memory counts on the device (fake_internal.h), as NVML shows a context's footprint. */
        fake.mem_used[device] += fake.local_threads * ctx->limits[CU_LIMIT_STACK_SIZE];
        ctx->next = fake.contexts;
        fake.contexts = ctx;
        return ctx;
}

static void context_destroy_locked(CUcontext ctx) {
        fake_free_context_objects_locked(ctx);
        fake.mem_used[ctx->device] -= fake.local_threads * ctx->limits[CU_LIMIT_STACK_SIZE];
        for (CUcontext *p = &fake.contexts; *p; p = &(*p)->next) {
                if (*p == ctx) {
                        *p = ctx->next;
                        break;
                }
        }
        if (ctx->primary && fake.primary[ctx->device] == ctx) {
                fake.primary[ctx->device] = NULL;
                fake.primary_refs[ctx->device] = 0;
        }
        free(ctx);
}

FAKE_EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev) {
        FAKE_GATE();
        FAKE_TRY(fake_device_check(dev));
        if (!pctx)
                return CUDA_ERROR_INVALID_VALUE;
        pthread_mutex_lock(&fake.primary_create_lock[dev]);
        fake_lock();
        bool exists = fake.primary[dev] != NULL;
        fake_unlock();
        if (!exists && fake.ctx_ms)
                fake_sleep_ms(fake.ctx_ms);
        fake_lock();
        if (!fake.primary[dev])
                fake.primary[dev] = context_new_locked(dev, fake.primary_flags[dev], true);
        CUcontext ctx = fake.primary[dev];
        if (ctx)
                fake.primary_refs[dev]++;
        fake_unlock();
        pthread_mutex_unlock(&fake.primary_create_lock[dev]);
        if (!ctx)
                return CUDA_ERROR_OUT_OF_MEMORY;
        *pctx = ctx;
        return CUDA_SUCCESS;
}

/*
 * Release and reset, as the real driver: the context goes at the last
 * release, or at once on a reset, which keeps everyone's retains (releasing
 * after a reset is fine) and forgets the flags.
 */
static CUresult primary_drop(CUdevice dev, bool reset) {
        FAKE_TRY(fake_device_check(dev));
        fake_queue_drain();
        fake_lock();
        CUcontext ctx = fake.primary[dev];
        CUresult r = CUDA_SUCCESS;
        if (reset) {
                unsigned refs = fake.primary_refs[dev];
                if (ctx)
                        context_destroy_locked(ctx);
                fake.primary_refs[dev] = refs;
                fake.primary_flags[dev] = 0;
        } else if (fake.primary_refs[dev] == 0) {
                r = CUDA_ERROR_INVALID_CONTEXT;
        } else if (--fake.primary_refs[dev] == 0 && ctx) {
                context_destroy_locked(ctx);
        }
        fake_unlock();
        return r;
}

FAKE_ENTRY(cuDevicePrimaryCtxRelease_v2, (CUdevice dev), primary_drop(dev, false))
FAKE_ENTRY(cuDevicePrimaryCtxReset_v2, (CUdevice dev), primary_drop(dev, true))

FAKE_EXPORT CUresult cuDevicePrimaryCtxGetState(CUdevice dev, unsigned int *flags, int *active) {
        FAKE_GATE();
        FAKE_TRY(fake_device_check(dev));
        if (!flags || !active)
                return CUDA_ERROR_INVALID_VALUE;
        fake_lock();
        *flags = fake.primary_flags[dev];
        *active = fake.primary[dev] != NULL;
        fake_unlock();
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDevicePrimaryCtxSetFlags_v2(CUdevice dev, unsigned int flags) {
        FAKE_GATE();
        FAKE_TRY(fake_device_check(dev));
        fake_lock();
        fake.primary_flags[dev] = flags;
        if (fake.primary[dev])
                fake.primary[dev]->flags = flags;
        fake_unlock();
        return CUDA_SUCCESS;
}

static CUresult push(CUcontext ctx) {
        if (ctx_depth >= STACK_MAX)
                return CUDA_ERROR_INVALID_VALUE;
        ctx_stack[ctx_depth++] = ctx;
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuCtxCreate_v2(CUcontext *pctx, unsigned int flags, CUdevice dev) {
        FAKE_GATE();
        FAKE_TRY(fake_device_check(dev));
        if (!pctx)
                return CUDA_ERROR_INVALID_VALUE;
        if (fake.ctx_ms)
                fake_sleep_ms(fake.ctx_ms);
        fake_lock();
        CUcontext ctx = context_new_locked(dev, flags, false);
        fake_unlock();
        if (!ctx)
                return CUDA_ERROR_OUT_OF_MEMORY;
        CUresult r = push(ctx);
        if (r != CUDA_SUCCESS) {
                fake_lock();
                context_destroy_locked(ctx);
                fake_unlock();
                return r;
        }
        *pctx = ctx;
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuCtxCreate_v3(CUcontext *pctx, CUexecAffinityParam *paramsArray, int numParams,
                                    unsigned int flags, CUdevice dev) {
        FAKE_GATE();
        if (numParams < 0 || (numParams > 0 && !paramsArray))
                return CUDA_ERROR_INVALID_VALUE;
        return cuCtxCreate_v2(pctx, flags, dev);
}

FAKE_EXPORT CUresult cuCtxCreate_v4(CUcontext *pctx, CUctxCreateParams *params, unsigned int flags, CUdevice dev) {
        FAKE_GATE();
        if (params && params->numExecAffinityParams > 0 && !params->execAffinityParams)
                return CUDA_ERROR_INVALID_VALUE;
        return cuCtxCreate_v2(pctx, flags, dev);
}

FAKE_EXPORT CUresult cuCtxDestroy_v2(CUcontext ctx) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT();
        fake_queue_drain();
        fake_lock();
        if (!ctx || !fake_context_alive_locked(ctx) || ctx->primary) {
                fake_unlock();
                return CUDA_ERROR_INVALID_CONTEXT;
        }
        context_destroy_locked(ctx);
        fake_unlock();
        fake_context_forget_thread(ctx);
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuCtxSetCurrent(CUcontext ctx) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT();
        if (ctx) {
                bool alive = fake_listed(&fake.contexts, ctx);
                if (!alive)
                        return CUDA_ERROR_INVALID_CONTEXT;
        }
        if (ctx_depth == 0) {
                if (ctx)
                        ctx_stack[ctx_depth++] = ctx;
        } else if (ctx) {
                ctx_stack[ctx_depth - 1] = ctx;
        } else {
                ctx_depth--;
        }
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuCtxGetCurrent(CUcontext *pctx) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT_ARGS(!pctx);
        *pctx = fake_current_context();
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuCtxPushCurrent_v2(CUcontext ctx) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT();
        bool alive = fake_listed(&fake.contexts, ctx);
        if (!alive)
                return CUDA_ERROR_INVALID_CONTEXT;
        return push(ctx);
}

FAKE_EXPORT CUresult cuCtxPopCurrent_v2(CUcontext *pctx) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT();
        if (ctx_depth == 0)
                return CUDA_ERROR_INVALID_CONTEXT;
        CUcontext ctx = ctx_stack[--ctx_depth];
        if (pctx)
                *pctx = ctx;
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuCtxGetDevice(CUdevice *device) {
        FAKE_GATE();
        CUcontext ctx;
        FAKE_TRY(fake_require_context_args(&ctx, !device));
        *device = ctx->device;
        return CUDA_SUCCESS;
}

/*
 * Limits of the current context, as the driver keeps them: per context,
 * the driver's defaults in a new one. The L2, shared-memory and CIG limits
 * are not simulated (CUDA_ERROR_UNSUPPORTED_LIMIT, as on a device without
 * them). A stack size is kept as set; the real driver may round it. Its
 * local memory is taken or given back at once (fake_internal.h): a growth
 * the device has no room for is CUDA_ERROR_OUT_OF_MEMORY, the old limit kept.
 */
static CUresult limit_slot(CUlimit limit, size_t **slot, CUcontext *out) {
        CUcontext ctx;
        FAKE_TRY(fake_require_context_args(&ctx, (unsigned)limit >= CU_LIMIT_MAX));
        if (out)
                *out = ctx;
        if ((unsigned)limit > CU_LIMIT_DEV_RUNTIME_PENDING_LAUNCH_COUNT)
                return CUDA_ERROR_UNSUPPORTED_LIMIT;
        *slot = &ctx->limits[limit];
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuCtxSetLimit(CUlimit limit, size_t value) {
        FAKE_GATE();
        size_t *slot;
        CUcontext ctx;
        FAKE_TRY(limit_slot(limit, &slot, &ctx));
        fake_lock();
        if (limit == CU_LIMIT_STACK_SIZE) {
                size_t now = fake.local_threads * *slot, want = fake.local_threads * value;
                if (want > now && fake.mem_used[ctx->device] + (want - now) > fake.mem_total) {
                        fake_unlock();
                        return CUDA_ERROR_OUT_OF_MEMORY;
                }
                fake.mem_used[ctx->device] = fake.mem_used[ctx->device] - now + want;
        }
        *slot = value;
        fake_unlock();
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuCtxGetLimit(size_t *pvalue, CUlimit limit) {
        FAKE_GATE();
        size_t *slot;
        FAKE_TRY(limit_slot(limit, &slot, NULL));
        if (!pvalue)
                return CUDA_ERROR_INVALID_VALUE;
        fake_lock();
        *pvalue = *slot;
        fake_unlock();
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuCtxSynchronize(void) {
        FAKE_GATE();
        FAKE_TRY(fake_require_context(NULL));
        fake_queue_drain();
        FAKE_TRY(fake_require_context(NULL)); /* the work waited for faulted */
        /* As the driver: synchronizing while a stream captures is not allowed and breaks the capture. */
        if (fake_invalidate_captures())
                return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuCtxGetApiVersion(CUcontext ctx, unsigned int *version) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT_ARGS(!version);
        if (!ctx)
                ctx = fake_current_context();
        bool alive = fake_listed(&fake.contexts, ctx);
        if (!alive)
                return CUDA_ERROR_INVALID_CONTEXT;
        *version = 12050; /* what current drivers report for contexts */
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuCtxGetFlags(unsigned int *flags) {
        FAKE_GATE();
        CUcontext ctx;
        FAKE_TRY(fake_require_context_args(&ctx, !flags));
        *flags = ctx->flags;
        return CUDA_SUCCESS;
}
