/*
 * The stack shrink of a suspend (suspend_shrink.c): every context's stack
 * limit set to the smallest before the checkpoint, given back exactly at
 * the resume. Called by the suspend listener only, with the gate closed.
 */
#pragma once

#include <cuda.h>
#include <stdbool.h>

/* An app's context created (alive) or destroyed: kept to be shrunk with the primary one. */
void sage_suspend_shrink_track(CUcontext ctx, bool alive);
/* The app set a stack limit itself: its value wins over one a failed resume still owes. */
void sage_suspend_shrink_app_set(void);
/* Before the checkpoint (SAGE_SUSPEND_SHRINK=1): the smallest stack limit in each context of `dev`. */
void sage_suspend_shrink(CUdevice dev);
/* At the resume, before the gate opens: each context's limit back to the value read. */
void sage_suspend_shrink_undo(CUdevice dev);
