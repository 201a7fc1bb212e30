/*
 * A stand-in for the driver's checkpoint API (cuda.h "CUDA Checkpointing"),
 * for daemon-test's instance scenarios until the simulated driver has its
 * own: saged loads it with --driver; everything else resolves through its
 * dependency, the simulated libcuda.so.1. It keeps the states of the real
 * API per pid (RUNNING -> Lock -> LOCKED -> Checkpoint -> CHECKPOINTED ->
 * Restore -> LOCKED -> Unlock -> RUNNING; CUDA_ERROR_ILLEGAL_STATE out of
 * order, CUDA_ERROR_INVALID_VALUE for a pid that does not exist) and makes
 * a locked process really stop making progress (SIGSTOP until Unlock), so a
 * test sees a call made while suspended return only after the resume. It
 * does not free the target's memory. SAGE_CKPT_STUB_FAIL=checkpoint or
 * =restore makes that step fail (restore: CUDA_ERROR_NOT_SUPPORTED and the
 * state FAILED, as the driver does for a process holding imported memory).
 */
#include <cuda.h>
#include <pthread.h>
#include <stdbool.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#define STUB_MAX 64
#define STUB_EXPORT __attribute__((visibility("default")))

static struct {
        int pid;
        CUprocessState state;
} table[STUB_MAX];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
/* A reference into the simulated driver keeps it this library's dependency
 * (the linker drops unreferenced ones), so dlsym on us finds the rest there. */
CUresult (*volatile ckpt_stub_keep_driver)(unsigned) = cuInit;

static CUprocessState *state_of(int pid) {
        for (int i = 0; i < STUB_MAX; i++)
                if (table[i].pid == pid)
                        return &table[i].state;
        for (int i = 0; i < STUB_MAX; i++)
                if (table[i].pid == 0) {
                        table[i].pid = pid;
                        table[i].state = CU_PROCESS_STATE_RUNNING;
                        return &table[i].state;
                }
        return NULL;
}

static bool fails(const char *step) {
        const char *f = getenv("SAGE_CKPT_STUB_FAIL");
        return f && strcmp(f, step) == 0;
}

/* One transition: from `from` to `to`, with `sig` sent on success (0: none). */
static CUresult step(int pid, CUprocessState from, CUprocessState to, int sig, const char *name) {
        CUprocessState *s;
        CUresult r = CUDA_SUCCESS;

        if (pid <= 0 || kill(pid, 0) < 0)
                return CUDA_ERROR_INVALID_VALUE;
        pthread_mutex_lock(&lock);
        s = state_of(pid);
        if (!s)
                r = CUDA_ERROR_OUT_OF_MEMORY;
        else if (*s != from)
                r = CUDA_ERROR_ILLEGAL_STATE;
        else if (name && fails(name)) {
                r = strcmp(name, "restore") == 0 ? CUDA_ERROR_NOT_SUPPORTED : CUDA_ERROR_UNKNOWN;
                if (strcmp(name, "restore") == 0)
                        *s = CU_PROCESS_STATE_FAILED;
        } else {
                *s = to;
                if (sig)
                        kill(pid, sig);
        }
        pthread_mutex_unlock(&lock);
        return r;
}

STUB_EXPORT CUresult cuCheckpointProcessGetState(int pid, CUprocessState *state) {
        CUprocessState *s;
        if (pid <= 0 || kill(pid, 0) < 0 || !state)
                return CUDA_ERROR_INVALID_VALUE;
        pthread_mutex_lock(&lock);
        s = state_of(pid);
        if (s)
                *state = *s;
        pthread_mutex_unlock(&lock);
        return s ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

STUB_EXPORT CUresult cuCheckpointProcessLock(int pid, CUcheckpointLockArgs *args) {
        (void)args;
        return step(pid, CU_PROCESS_STATE_RUNNING, CU_PROCESS_STATE_LOCKED, SIGSTOP, NULL);
}

STUB_EXPORT CUresult cuCheckpointProcessCheckpoint(int pid, CUcheckpointCheckpointArgs *args) {
        (void)args;
        return step(pid, CU_PROCESS_STATE_LOCKED, CU_PROCESS_STATE_CHECKPOINTED, 0, "checkpoint");
}

STUB_EXPORT CUresult cuCheckpointProcessRestore(int pid, CUcheckpointRestoreArgs *args) {
        (void)args;
        return step(pid, CU_PROCESS_STATE_CHECKPOINTED, CU_PROCESS_STATE_LOCKED, 0, "restore");
}

STUB_EXPORT CUresult cuCheckpointProcessUnlock(int pid, CUcheckpointUnlockArgs *args) {
        (void)args;
        return step(pid, CU_PROCESS_STATE_LOCKED, CU_PROCESS_STATE_RUNNING, SIGCONT, NULL);
}
