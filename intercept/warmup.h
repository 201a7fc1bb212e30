/* Parallel set-up: warm the driver and the primary context(s) in the background. */
#pragma once

#include <cuda.h>
#include <stdbool.h>

typedef enum SageWarmupTrigger {
        SAGE_WARMUP_AT_LOAD,   /* constructor: eager or auto, for a CUDA program only */
        SAGE_WARMUP_AT_LOOKUP, /* the app resolved a driver symbol (dlsym, cuGetProcAddress): lazy, eager */
        SAGE_WARMUP_AT_INIT,   /* the app called cuInit: every mode but off */
} SageWarmupTrigger;

/* Start the warm-up if the mode says this trigger should (idempotent, cheap after the first call). */
void sage_warmup_trigger(SageWarmupTrigger trigger);

/* SAGE holds a retain on `dev` (warm-up or redirect): record it. */
void sage_warmup_note_held(int dev);

/*
 * The app reset the primary context of `dev` (end of an invocation): the
 * driver freed everything, as natively; re-create the context in the
 * background so the next invocation finds it warm. Started after a short
 * grace period, so a process that resets and exits is not held up.
 */
void sage_warmup_rewarm(int dev);

/* What started the warm-up ("load", "lookup", "cuInit"), or NULL. */
const char *sage_warmup_trigger_name(void);

/* Wait (bounded) for a running warm-up: called at exit so the driver is never torn down under it. */
void sage_warmup_wait(unsigned max_ms);
/*
 * Sharing's work around the warm-up (init.c sets it before any warm-up).
 * before: at the warm-up thread's start, work that needs no driver
 * (sharing's staging pages), started on a thread of its own: it returns at
 * once. after: what the warm-up thread does after WARMUP_DONE with the
 * first context it retained, or NULL where it retained none (what `before`
 * prepared is let go then). The app never waits for it; fork() and exit() do.
 */
void sage_warmup_set_work(void (*before)(void), void (*after)(CUcontext ctx));

/* Does this process carry CUDA code (a .nv_fatbin section, or a CUDA library loaded)? */
bool sage_process_is_cuda_program(void);

/* Is the library at `path` (a dlopen() argument or a loaded object's name) a CUDA library? */
bool sage_library_is_cuda(const char *path);

/*
 * A library is being dlopen()ed (`requested`: its name as asked, may be
 * NULL), or one may have been (NULL: after a dlopen, e.g. at a dlsym):
 * under eager, start the warm-up once a CUDA library is, or is being, loaded.
 */
void sage_warmup_note_library(const char *requested);
