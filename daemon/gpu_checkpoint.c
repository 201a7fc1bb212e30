/*
 * The driver's checkpoint API (cuCheckpointProcess*) for SUSPEND/RESUME of
 * registered instances: saged locks, checkpoints, restores and unlocks
 * another process's CUDA state by pid. The entry points are optional in
 * the driver table (gpu_driver.h); a driver without them serves no
 * suspend, and every call says so instead of failing obscurely. Nothing here
 * touches the broker's own contexts, so these are safe from the worker
 * threads handle_instance.c runs them on.
 */
#include "gpu.h"

#include <stdio.h>

#include "gpu_driver.h"
#include "proto.h"

bool gpu_can_checkpoint(const Gpu *g) {
        return g && g->cu.cuCheckpointProcessLock && g->cu.cuCheckpointProcessCheckpoint &&
               g->cu.cuCheckpointProcessRestore && g->cu.cuCheckpointProcessUnlock;
}

bool gpu_process_checkpointed(Gpu *g, pid_t pid) {
        CUprocessState state;

        return gpu_can_checkpoint(g) && g->cu.cuCheckpointProcessGetState &&
               g->cu.cuCheckpointProcessGetState((int)pid, &state) == CUDA_SUCCESS &&
               state == CU_PROCESS_STATE_CHECKPOINTED;
}

int gpu_checkpoint_process(Gpu *g, pid_t pid, unsigned timeout_ms, char *why, size_t size) {
        CUcheckpointLockArgs lock = { .timeoutMs = timeout_ms };
        CUresult r;

        if (!gpu_can_checkpoint(g)) {
                snprintf(why, size, "the driver has no checkpoint API");
                return SAGE_ERR_NO_DRIVER;
        }
        r = g->cu.cuCheckpointProcessLock((int)pid, &lock);
        if (r != CUDA_SUCCESS) {
                snprintf(why, size, "lock: %s", gpu_error_name(g, r));
                /* NOT_READY: the lock timed out and the process runs on. */
                return r == CUDA_ERROR_NOT_READY ? SAGE_ERR_BUSY : SAGE_ERR_DRIVER;
        }
        r = g->cu.cuCheckpointProcessCheckpoint((int)pid, NULL);
        if (r != CUDA_SUCCESS) {
                /* Never leave it locked: its blocked calls would wait for good. */
                CUresult u = g->cu.cuCheckpointProcessUnlock((int)pid, NULL);
                snprintf(why, size, "checkpoint: %s%s", gpu_error_name(g, r),
                         u == CUDA_SUCCESS ? " (unlocked again)" : "; unlock failed too");
                return SAGE_ERR_DRIVER;
        }
        return 0;
}

int gpu_restore_process(Gpu *g, pid_t pid, char *why, size_t size) {
        CUresult r;

        if (!gpu_can_checkpoint(g)) {
                snprintf(why, size, "the driver has no checkpoint API");
                return SAGE_ERR_NO_DRIVER;
        }
        r = g->cu.cuCheckpointProcessRestore((int)pid, NULL);
        if (r != CUDA_SUCCESS) {
                snprintf(why, size, "restore: %s", gpu_error_name(g, r));
                return SAGE_ERR_DRIVER;
        }
        r = g->cu.cuCheckpointProcessUnlock((int)pid, NULL);
        if (r != CUDA_SUCCESS) {
                snprintf(why, size, "unlock: %s", gpu_error_name(g, r));
                return SAGE_ERR_DRIVER;
        }
        return 0;
}
