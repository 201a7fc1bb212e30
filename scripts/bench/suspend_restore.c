/*
 * The driver's restore alone, the baseline of `bench suspend` part
 * concurrent (issue 12: "SAGE adds at most 40 ms over the driver's
 * restore"). Given the pids of N native instances (no SAGE), it checkpoints
 * them all (one thread each: lock, then checkpoint), then restores them all
 * at once (one thread each, released together: restore, then unlock) and
 * times each restore the way saged's worker does (cuCheckpointProcessRestore
 * + cuCheckpointProcessUnlock). The driver is dlopen'd, as cudart and saged
 * do, so the simulated one (tests/fakecuda) serves a dry run.
 *
 *   suspend_restore PID...
 *   {"checkpoint_ms": [...], "restore_ms": [...], "errors": ["PID step: CUresult", ...]}
 *
 * restore_ms lists the restores that succeeded, in pid order. Exit 0 when
 * every step succeeded, 1 otherwise (an instance left locked or
 * restored but still locked is the caller's to kill), 2 on bad usage or no
 * driver.
 */
#include <cuda.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define LOCK_TIMEOUT_MS 10000
#define MAX_PIDS 64

static struct {
        CUresult (*init)(unsigned);
        CUresult (*lock)(int, CUcheckpointLockArgs *);
        CUresult (*checkpoint)(int, CUcheckpointCheckpointArgs *);
        CUresult (*restore)(int, CUcheckpointRestoreArgs *);
        CUresult (*unlock)(int, CUcheckpointUnlockArgs *);
} cu;

typedef struct Target {
        int pid;
        const char *failed; /* the step that failed, or NULL */
        CUresult result;
        double checkpoint_ms, restore_ms;
} Target;

static pthread_barrier_t go;
static bool restoring;

static double now_ms(void) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static bool step(Target *t, const char *name, CUresult r) {
        if (r != CUDA_SUCCESS && !t->failed) {
                t->failed = name;
                t->result = r;
        }
        return r == CUDA_SUCCESS;
}

static void *work(void *arg) {
        Target *t = arg;
        CUcheckpointLockArgs lock = { .timeoutMs = LOCK_TIMEOUT_MS };
        double t0;

        pthread_barrier_wait(&go);
        t0 = now_ms();
        if (!restoring) {
                /* A failed checkpoint is unlocked again, as saged does: the instance runs on. */
                if (step(t, "lock", cu.lock(t->pid, &lock)) && !step(t, "checkpoint", cu.checkpoint(t->pid, NULL)))
                        cu.unlock(t->pid, NULL);
                t->checkpoint_ms = now_ms() - t0;
        } else if (!t->failed) {
                if (step(t, "restore", cu.restore(t->pid, NULL)) && step(t, "unlock", cu.unlock(t->pid, NULL)))
                        t->restore_ms = now_ms() - t0;
        }
        return NULL;
}

/* Every target's step at once: the threads wait at one barrier. */
static void all_at_once(Target *ts, int n) {
        pthread_t threads[MAX_PIDS];

        pthread_barrier_init(&go, NULL, (unsigned)n);
        for (int i = 0; i < n; i++)
                if (pthread_create(&threads[i], NULL, work, &ts[i]) != 0)
                        exit(2);
        for (int i = 0; i < n; i++)
                pthread_join(threads[i], NULL);
        pthread_barrier_destroy(&go);
}

static void print_list(const char *key, const Target *ts, int n, bool restore) {
        const char *sep = "";

        printf("\"%s\": [", key);
        for (int i = 0; i < n; i++) {
                if (restore && ts[i].failed)
                        continue;
                printf("%s%.3f", sep, restore ? ts[i].restore_ms : ts[i].checkpoint_ms);
                sep = ", ";
        }
        printf("]");
}

int main(int argc, char **argv) {
        static Target ts[MAX_PIDS];
        void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
        int n = argc - 1, bad = 0;
        const char *sep = "";

        if (n < 1 || n > MAX_PIDS) {
                fprintf(stderr, "usage: suspend_restore PID... (at most %d)\n", MAX_PIDS);
                return 2;
        }
        if (!lib || !(*(void **)&cu.init = dlsym(lib, "cuInit")) ||
            !(*(void **)&cu.lock = dlsym(lib, "cuCheckpointProcessLock")) ||
            !(*(void **)&cu.checkpoint = dlsym(lib, "cuCheckpointProcessCheckpoint")) ||
            !(*(void **)&cu.restore = dlsym(lib, "cuCheckpointProcessRestore")) ||
            !(*(void **)&cu.unlock = dlsym(lib, "cuCheckpointProcessUnlock")) || cu.init(0) != CUDA_SUCCESS) {
                fprintf(stderr, "suspend_restore: no driver with the checkpoint API (%s)\n", lib ? "" : dlerror());
                return 2;
        }
        for (int i = 0; i < n; i++)
                ts[i].pid = atoi(argv[i + 1]);
        all_at_once(ts, n);
        restoring = true;
        all_at_once(ts, n);
        printf("{");
        print_list("checkpoint_ms", ts, n, false);
        printf(", ");
        print_list("restore_ms", ts, n, true);
        printf(", \"errors\": [");
        for (int i = 0; i < n; i++) {
                if (!ts[i].failed)
                        continue;
                printf("%s\"%d %s: %d\"", sep, ts[i].pid, ts[i].failed, (int)ts[i].result);
                sep = ", ";
                bad = 1;
        }
        printf("]}\n");
        return bad;
}
