/* CUDA IPC on memory SAGE's allocator backs, emulated through the broker (share_ipc.c). */
#pragma once

#include "share_state.h"

/* `a` is going away: drop its IPC registrations. Under the lock. */
void share_ipc_forget(SageShare *s, SageShareAlloc *a);
