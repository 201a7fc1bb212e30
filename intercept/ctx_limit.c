/*
 * Lean contexts. A context's per-thread stack is reserved for every thread
 * the device can hold, so its size dominates a context's footprint: 518 MiB
 * with the driver's default of 1024 bytes, 258 MiB with 16 bytes (H100,
 * measured). The driver grows the stack at a launch to the kernel's static
 * frame size, so a small limit costs nothing for kernels whose need the
 * compiler knows; kernels with recursion or indirect calls can need more
 * than the driver knows and then fault. Hence opt-in (SAGE_CTX_STACK_LIMIT),
 * and only on the primary contexts SAGE itself retains.
 *
 * The app's own setting wins. Its cuCtxSetLimit(CU_LIMIT_STACK_SIZE) marks
 * the device of its current context, under the same lock SAGE holds while it
 * sets the limit: either SAGE set the limit first and the app's call, made
 * after, overrides it, or the mark is there and SAGE leaves the context
 * alone. A reset of the primary context drops the app's setting with the
 * context, so it drops the mark too. The app's cuCtxGetLimit waits for a
 * running warm-up (bounded, warmup.c), so it shows the lean value
 * deterministically.
 */
#include <cuda.h>

#include "ctx_limit.h"

#include <pthread.h>
#include <stdatomic.h>

#include "driver.h"
#include "hooks.h"
#include "log.h"
#include "options.h"
#include "suspend_shrink.h"
#include "util.h"

#define CTX_LIMIT_MAX_DEVICES 64

/* Devices whose stack limit the app set itself (bit per CUdevice); written
 * under lean_lock. */
static atomic_ullong app_set_devices;
/* Serialises SAGE's setting with the app's marking (the order decides who
 * wins). */
static pthread_mutex_t lean_lock = PTHREAD_MUTEX_INITIALIZER;

static bool device_bit(CUdevice dev, unsigned long long *bit) {
        if (dev < 0 || dev >= CTX_LIMIT_MAX_DEVICES)
                return false;
        *bit = 1ull << dev;
        return true;
}

void sage_ctx_limit_apply(CUdevice dev, CUcontext ctx) {
        size_t want = sage_options()->ctx_stack_limit;
        const SageDriverExtras *drv = &sage_driver_extras;
        unsigned long long bit;
        CUcontext popped;
        CUresult r = CUDA_ERROR_NOT_INITIALIZED;
        uint64_t t0;

        if (want == 0 || !ctx || !device_bit(dev, &bit) || !SAGE_REAL(cuCtxSetLimit) || !drv->ctx_push || !drv->ctx_pop)
                return;
        pthread_mutex_lock(&lean_lock);
        if (atomic_load(&app_set_devices) & bit) {
                pthread_mutex_unlock(&lean_lock);
                sage_info("lean context: device %d keeps the stack limit the app set", (int)dev);
                return;
        }
        t0 = sage_now_ns();
        if (drv->ctx_push(ctx) == CUDA_SUCCESS) {
                r = SAGE_REAL(cuCtxSetLimit)(CU_LIMIT_STACK_SIZE, want);
                drv->ctx_pop(&popped);
        }
        pthread_mutex_unlock(&lean_lock);
        /* SAGE's own call, shown in the trace as the process's. */
        sage_hooks_report(SAGE_SYM_cuCtxSetLimit, t0, r, CU_LIMIT_STACK_SIZE, want, 0);
        if (r == CUDA_SUCCESS)
                sage_info("lean context: device %d stack limit %zu bytes", (int)dev, want);
        else
                sage_warn("lean context: cuCtxSetLimit(CU_LIMIT_STACK_SIZE, %zu) on device "
                          "%d failed (%d); the "
                          "context keeps the driver's default",
                          want, (int)dev, (int)r);
}

void sage_ctx_limit_forget(CUdevice dev) {
        unsigned long long bit;

        if (!device_bit(dev, &bit))
                return;
        pthread_mutex_lock(&lean_lock);
        atomic_fetch_and(&app_set_devices, ~bit);
        pthread_mutex_unlock(&lean_lock);
}

/* ---------------------------------------------------------------- hooks */

CUresult sage_impl_cuCtxSetLimit(sage_fn_cuCtxSetLimit_t real, CUlimit limit, size_t value) {
        const SageDriverExtras *drv = &sage_driver_extras;
        unsigned long long bit;
        CUdevice dev;
        CUresult r;

        if (limit == CU_LIMIT_STACK_SIZE && sage_options()->ctx_stack_limit && drv->ctx_get_device &&
            drv->ctx_get_device(&dev) == CUDA_SUCCESS && device_bit(dev, &bit)) {
                pthread_mutex_lock(&lean_lock);
                atomic_fetch_or(&app_set_devices, bit);
                pthread_mutex_unlock(&lean_lock);
        }
        r = real(limit, value);
        /* The app's value wins over one a failed resume still owes (suspend_shrink.c). */
        if (r == CUDA_SUCCESS && limit == CU_LIMIT_STACK_SIZE && sage_options()->suspend)
                sage_suspend_shrink_app_set();
        return r;
}
