/* Lean contexts: a small stack limit on the primary contexts SAGE warms
 * (SAGE_CTX_STACK_LIMIT). */
#pragma once

#include <cuda.h>

/*
 * SAGE retained the primary context `ctx` of `dev` (warm-up, re-warm after a
 * reset, context redirect): set its stack limit to SAGE_CTX_STACK_LIMIT,
 * unless the option is 0 or the app already set the stack limit of a context
 * on that device itself. Called on a thread with no context of the app's
 * current (it pushes and pops `ctx`).
 */
void sage_ctx_limit_apply(CUdevice dev, CUcontext ctx);

/* The primary context of `dev` was reset: the app's setting went with it. */
void sage_ctx_limit_forget(CUdevice dev);
