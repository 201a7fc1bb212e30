/*
 * The stack shrink of a suspend (docs/suspend.md, "What the checkpoint
 * holds"). A context reserves its stack limit (CU_LIMIT_STACK_SIZE) for
 * every thread the device can hold: 1024 bytes cost ~264 MiB on an H100,
 * 16 bytes ~4 MiB. That local memory is scratch between launches, and
 * while the instance is suspended no kernel runs (the gate is closed and
 * the context synchronized), so before the checkpoint every context of the
 * process gets the smallest limit and the driver copies ~260 MiB less
 * into host memory and back at the restore (measured on the H100: 0.25 ms
 * to shrink, 0.15 ms to grow again). At the resume, before the gate opens,
 * each context gets back exactly the value read, so cuCtxGetLimit and
 * every kernel see what they saw before: the app's own setting and a lean
 * context's (SAGE_CTX_STACK_LIMIT) alike.
 *
 * Growing back can fail if others took the memory meanwhile (the broker
 * restores only into free memory and counts these bytes: its footprint is
 * measured before SUSPEND_PREPARE). The process then runs on with the small
 * limit: the driver still grows the stack at each launch to the kernel's
 * static frame, so only what the compiler could not size (recursion deeper
 * than a frame, indirect calls) is at risk. That is reported (a warning,
 * SUSPEND_STACK_NOT_RESTORED) and tried again at the next resume; an app
 * setting the limit itself meanwhile ends the retry (its value wins).
 *
 * Contexts: the primary context of the instance's device (never created
 * here) and those the app created with cuCtxCreate, kept by the suspend
 * observer (at most SHRINK_MAX_CONTEXTS; more go unshrunk). Only the
 * listener thread shrinks and grows; the table has its own lock because
 * app threads create and destroy contexts.
 */
#include "suspend_shrink.h"

#include <pthread.h>
#include <stdatomic.h>

#include "driver.h"
#include "hooks.h"
#include "log.h"
#include "options.h"
#include "stats.h"

/* The smallest stack limit measured to be accepted (H100, driver 580): 0 is not promised by cuda.h. */
#define SHRINK_STACK_BYTES 16
#define SHRINK_MAX_CONTEXTS 16

typedef struct Shrunk {
        CUcontext ctx;
        size_t restore; /* the limit to give back at the resume; 0: not shrunk */
} Shrunk;

static pthread_mutex_t shrink_lock = PTHREAD_MUTEX_INITIALIZER;
static Shrunk created[SHRINK_MAX_CONTEXTS]; /* app-created contexts (ctx set), under shrink_lock */
static Shrunk primary;                      /* the device's primary context; listener only */

void sage_suspend_shrink_track(CUcontext ctx, bool alive) {
        pthread_mutex_lock(&shrink_lock);
        for (size_t i = 0; ctx && i < SHRINK_MAX_CONTEXTS; i++) {
                if (alive && !created[i].ctx) {
                        created[i] = (Shrunk){ ctx, 0 };
                        break;
                }
                if (!alive && created[i].ctx == ctx) {
                        created[i] = (Shrunk){ 0 };
                        break;
                }
        }
        pthread_mutex_unlock(&shrink_lock);
}

void sage_suspend_shrink_app_set(void) {
        pthread_mutex_lock(&shrink_lock);
        for (size_t i = 0; i < SHRINK_MAX_CONTEXTS; i++)
                created[i].restore = 0;
        primary.restore = 0;
        pthread_mutex_unlock(&shrink_lock);
}

/* In ctx: shrink (restore == 0: read and set the smallest) or grow back. False when growing back failed. */
static bool apply(Shrunk *s, bool shrink) {
        const SageDriverExtras *x = &sage_driver_extras;
        CUcontext popped;
        size_t now = 0;
        CUresult r;

        if (!s->ctx || !SAGE_REAL(cuCtxSetLimit) || !SAGE_REAL(cuCtxGetLimit) || x->ctx_push(s->ctx) != CUDA_SUCCESS)
                return true;
        if (shrink) {
                /* A limit a failed resume could not give back stays the one to give back. */
                if (SAGE_REAL(cuCtxGetLimit)(&now, CU_LIMIT_STACK_SIZE) == CUDA_SUCCESS && now > SHRINK_STACK_BYTES &&
                    SAGE_REAL(cuCtxSetLimit)(CU_LIMIT_STACK_SIZE, SHRINK_STACK_BYTES) == CUDA_SUCCESS) {
                        if (now > s->restore)
                                s->restore = now;
                        sage_stats_count(SAGE_STAT_SUSPEND_STACK_SHRUNK);
                }
                x->ctx_pop(&popped);
                return true;
        }
        r = s->restore ? SAGE_REAL(cuCtxSetLimit)(CU_LIMIT_STACK_SIZE, s->restore) : CUDA_SUCCESS;
        x->ctx_pop(&popped);
        if (r == CUDA_SUCCESS) {
                s->restore = 0;
                return true;
        }
        sage_warn("suspend: the stack limit (%zu bytes) could not be given back (%d): kernels keep %d bytes "
                  "plus what the driver grows per launch; recursion deeper than before may fault. Tried "
                  "again at the next resume",
                  s->restore, (int)r, SHRINK_STACK_BYTES);
        sage_stats_count(SAGE_STAT_SUSPEND_STACK_NOT_RESTORED);
        return false;
}

/* The primary context if the device has one active (never created here): retained, or NULL. */
static CUcontext primary_active(CUdevice dev) {
        const SageDriverExtras *x = &sage_driver_extras;
        unsigned flags = 0;
        int active = 0;
        CUcontext ctx = NULL;

        if (!x->primary_get_state || !x->primary_retain || x->primary_get_state(dev, &flags, &active) != CUDA_SUCCESS ||
            !active || x->primary_retain(&ctx, dev) != CUDA_SUCCESS)
                return NULL;
        return ctx;
}

static void each_context(CUdevice dev, bool shrink) {
        const SageDriverExtras *x = &sage_driver_extras;
        CUcontext ctx;

        if (!x->ctx_push || !x->ctx_pop)
                return;
        ctx = primary_active(dev);
        pthread_mutex_lock(&shrink_lock);
        if (primary.ctx != ctx)
                primary = (Shrunk){ ctx, 0 }; /* reset meanwhile: a new context has the driver's default */
        apply(&primary, shrink);
        for (size_t i = 0; i < SHRINK_MAX_CONTEXTS; i++)
                if (created[i].ctx != ctx) /* a redirected cuCtxCreate hands out the primary context */
                        apply(&created[i], shrink);
        pthread_mutex_unlock(&shrink_lock);
        if (ctx && x->primary_release)
                x->primary_release(dev);
}

void sage_suspend_shrink(CUdevice dev) {
        if (sage_options()->suspend_shrink)
                each_context(dev, true);
}

void sage_suspend_shrink_undo(CUdevice dev) {
        each_context(dev, false);
}
