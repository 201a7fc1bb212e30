/*
 * Context redirect. A function that creates its own context (driver API
 * cuCtxCreate) pays for a new context every invocation — ~200 ms on an
 * H200 — although the process already holds a warm primary context. When
 * the request is one the primary context can honour (same flags, no
 * execution affinity or CIG parameters, no other redirected context alive
 * on that device), cuCtxCreate is served by the primary context: it is
 * retained and pushed, exactly as a created context would be made current.
 *
 * While a redirected context is alive, every resource the app creates
 * while it is current (device and host allocations, IPC mappings, modules,
 * streams, events: what hooks.def declares with SAGE_CREATES) is attributed to it, and cuCtxDestroy frees
 * them — what destroying a real context would have freed — then pops it,
 * and keeps the primary context itself alive (one standing retain) for the
 * next invocation. Anything else goes to the driver unchanged.
 */
#include <cuda.h>

#include "redirect.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ctx_limit.h"
#include "driver.h"
#include "hooks.h"
#include "log.h"
#include "options.h"
#include "share.h"
#include "stats.h"
#include "util.h"
#include "warmup.h"

#define REDIRECT_MAX_DEVICES 64

typedef struct Resource {
        SageResource kind;
        uint64_t handle;
} Resource;

typedef struct Slot {
        bool alive;
        bool standing_retain; /* SAGE holds the primary context warm between invocations */
        CUcontext ctx;
        Resource *resources;
        size_t count, capacity;
} Slot;

static pthread_mutex_t redirect_lock = PTHREAD_MUTEX_INITIALIZER;
static Slot slots[REDIRECT_MAX_DEVICES];
static unsigned slots_alive;

/* The driver entry points this module calls without hooking them (driver.h). */
static const SageDriverExtras *const drv = &sage_driver_extras;

static bool drv_ready(void) {
        return drv->ctx_get_current && drv->ctx_push && drv->ctx_pop && drv->ctx_synchronize && drv->primary_get_state;
}

/* Serve the request from the primary context if it can be; false: let the driver create one. */
static bool redirect_create(CUcontext *pctx, unsigned flags, CUdevice dev, CUresult *result) {
        unsigned primary_flags = 0;
        int active = 0;
        CUcontext ctx = NULL;
        Slot *slot;
        bool served = false;

        if (!sage_options()->ctx_redirect || !pctx || dev < 0 || dev >= REDIRECT_MAX_DEVICES || !drv_ready())
                return false;
        pthread_mutex_lock(&redirect_lock);
        slot = &slots[dev];
        if (slot->alive)
                goto out; /* a second live context: a real one, with its own isolation */
        if (drv->primary_get_state(dev, &primary_flags, &active) != CUDA_SUCCESS)
                goto out; /* bad device, driver not initialised: the driver says so itself */
        if (primary_flags != flags) {
                if (active)
                        goto out;
                if (SAGE_REAL(cuDevicePrimaryCtxSetFlags_v2)(dev, flags) != CUDA_SUCCESS)
                        goto out;
        }
        if (!slot->standing_retain) {
                CUcontext standing;
                if (SAGE_REAL(cuDevicePrimaryCtxRetain)(&standing, dev) != CUDA_SUCCESS)
                        goto out;
                slot->standing_retain = true;
                sage_warmup_note_held(dev);
        }
        if (SAGE_REAL(cuDevicePrimaryCtxRetain)(&ctx, dev) != CUDA_SUCCESS)
                goto out;
        sage_ctx_limit_apply(dev, ctx); /* warm-up off, or another device: lean here too */
        if (drv->ctx_push(ctx) != CUDA_SUCCESS) {
                SAGE_REAL(cuDevicePrimaryCtxRelease_v2)(dev);
                goto out;
        }
        slot->alive = true;
        slot->ctx = ctx;
        slot->count = 0;
        if (slots_alive++ == 0)
                sage_hooks_activate(SAGE_OBSERVER_REDIRECT);
        *pctx = ctx;
        *result = CUDA_SUCCESS;
        served = true;
out:
        pthread_mutex_unlock(&redirect_lock);
        sage_stats_count(served ? SAGE_STAT_CTX_REDIRECTED : SAGE_STAT_CTX_NOT_REDIRECTED);
        return served;
}

static void free_resource(const Resource *r) {
        switch (r->kind) {
        case SAGE_RESOURCE_DEVICE_MEMORY: {
                CUresult ignored;
                if (!sage_share_free((CUdeviceptr)r->handle, &ignored))
                        SAGE_REAL(cuMemFree_v2)((CUdeviceptr)r->handle);
                break;
        }
        case SAGE_RESOURCE_HOST_MEMORY: SAGE_REAL(cuMemFreeHost)((void *)(uintptr_t)r->handle); break;
        case SAGE_RESOURCE_IPC_MAPPING: SAGE_REAL(cuIpcCloseMemHandle)((CUdeviceptr)r->handle); break;
        case SAGE_RESOURCE_MODULE: SAGE_REAL(cuModuleUnload)((CUmodule)(uintptr_t)r->handle); break;
        case SAGE_RESOURCE_STREAM: SAGE_REAL(cuStreamDestroy_v2)((CUstream)(uintptr_t)r->handle); break;
        case SAGE_RESOURCE_EVENT: SAGE_REAL(cuEventDestroy_v2)((CUevent)(uintptr_t)r->handle); break;
        case SAGE_RESOURCE_NONE:
        case SAGE_RESOURCE_COUNT: break;
        }
}

static bool redirect_destroy(CUcontext ctx, CUresult *result) {
        Resource *resources;
        size_t count;
        CUcontext current = NULL, popped;
        int dev = -1;

        if (!ctx || !drv_ready())
                return false;
        pthread_mutex_lock(&redirect_lock);
        for (int i = 0; i < REDIRECT_MAX_DEVICES && dev < 0; i++)
                if (slots[i].alive && slots[i].ctx == ctx)
                        dev = i;
        pthread_mutex_unlock(&redirect_lock);
        if (dev < 0)
                return false; /* a real context (or a bad handle): the driver's business */

        /* Destroying a context waits for its work; do it before taking the lock,
         * since that work (host functions) may create resources itself. */
        if (drv->ctx_push(ctx) == CUDA_SUCCESS) {
                drv->ctx_synchronize();
                drv->ctx_pop(&popped);
        }
        pthread_mutex_lock(&redirect_lock);
        resources = slots[dev].resources;
        count = slots[dev].count;
        slots[dev].resources = NULL;
        slots[dev].count = slots[dev].capacity = 0;
        slots[dev].alive = false;
        if (--slots_alive == 0)
                sage_hooks_deactivate(SAGE_OBSERVER_REDIRECT);
        pthread_mutex_unlock(&redirect_lock);

        if (count && drv->ctx_push(ctx) == CUDA_SUCCESS) {
                for (size_t i = count; i-- > 0;)
                        free_resource(&resources[i]);
                drv->ctx_pop(&popped);
                sage_stats_add(SAGE_STAT_CTX_RESOURCES_FREED, count);
        }
        free(resources);
        /* As cuCtxDestroy does: a context current to the calling thread is popped. */
        if (drv->ctx_get_current(&current) == CUDA_SUCCESS && current == ctx)
                drv->ctx_pop(&popped);
        SAGE_REAL(cuDevicePrimaryCtxRelease_v2)(dev);
        *result = CUDA_SUCCESS;
        return true;
}

/* A call that declares a resource succeeded while a redirected context is alive. */
static void track(const SageSymInfo *t, uint64_t handle) {
        CUcontext current = NULL;

        if (!handle || !drv_ready())
                return;
        if (t->resource_op == SAGE_RESOURCE_CREATES && drv->ctx_get_current(&current) != CUDA_SUCCESS)
                return;
        pthread_mutex_lock(&redirect_lock);
        for (int i = 0; i < REDIRECT_MAX_DEVICES; i++) {
                Slot *s = &slots[i];

                if (!s->alive)
                        continue;
                if (t->resource_op == SAGE_RESOURCE_CREATES && s->ctx == current) {
                        if (s->count == s->capacity) {
                                size_t cap = s->capacity ? s->capacity * 2 : 64;
                                Resource *grown = realloc(s->resources, cap * sizeof(*grown));
                                if (!grown)
                                        break; /* not tracked: leaks at destroy, never breaks the app */
                                s->resources = grown;
                                s->capacity = cap;
                        }
                        s->resources[s->count++] = (Resource){ t->resource, handle };
                        break;
                }
                if (t->resource_op == SAGE_RESOURCE_DESTROYS) {
                        for (size_t k = s->count; k-- > 0;) {
                                if (s->resources[k].kind == t->resource && s->resources[k].handle == handle) {
                                        s->resources[k] = s->resources[--s->count];
                                        break;
                                }
                        }
                }
        }
        pthread_mutex_unlock(&redirect_lock);
}

static void observe_after(SageCall *call) {
        const SageSymInfo *t = &sage_sym_info[call->sym];

        if (t->resource_op != SAGE_RESOURCE_KEEPS && call->result == CUDA_SUCCESS && !call->own)
                track(t, call->handle);
}

const SageObserver sage_redirect_observer = { .after = observe_after };

/* ---------------------------------------------------------------- hooks */

CUresult sage_impl_cuCtxCreate_v2(sage_fn_cuCtxCreate_v2_t real, CUcontext *pctx, unsigned int flags, CUdevice dev) {
        CUresult r;
        return redirect_create(pctx, flags, dev, &r) ? r : real(pctx, flags, dev);
}

CUresult sage_impl_cuCtxCreate_v3(sage_fn_cuCtxCreate_v3_t real, CUcontext *pctx, CUexecAffinityParam *paramsArray,
                                  int numParams, unsigned int flags, CUdevice dev) {
        CUresult r;
        if ((!paramsArray || numParams == 0) && redirect_create(pctx, flags, dev, &r))
                return r;
        return real(pctx, paramsArray, numParams, flags, dev);
}

CUresult sage_impl_cuCtxCreate_v4(sage_fn_cuCtxCreate_v4_t real, CUcontext *pctx, CUctxCreateParams *params,
                                  unsigned int flags, CUdevice dev) {
        CUresult r;
        bool plain =
                !params || ((!params->execAffinityParams || params->numExecAffinityParams == 0) && !params->cigParams);
        if (plain && redirect_create(pctx, flags, dev, &r))
                return r;
        return real(pctx, params, flags, dev);
}

CUresult sage_impl_cuCtxDestroy_v2(sage_fn_cuCtxDestroy_v2_t real, CUcontext ctx) {
        CUresult r;
        return redirect_destroy(ctx, &r) ? r : real(ctx);
}

/* Device reset at the end of an invocation: the driver frees everything, as
 * natively; SAGE then re-creates the context in the background (warmup.c). */
static CUresult after_reset(CUdevice dev, CUresult r) {
        if (r == CUDA_SUCCESS) {
                sage_ctx_limit_forget(dev);
                sage_warmup_rewarm(dev);
        }
        return r;
}

CUresult sage_impl_cuDevicePrimaryCtxReset(sage_fn_cuDevicePrimaryCtxReset_t real, CUdevice dev) {
        return after_reset(dev, real(dev));
}

CUresult sage_impl_cuDevicePrimaryCtxReset_v2(sage_fn_cuDevicePrimaryCtxReset_v2_t real, CUdevice dev) {
        return after_reset(dev, real(dev));
}
