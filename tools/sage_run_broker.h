/* sage-run --share's broker: the system one if it runs, else a per-user one started on demand. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "broker_client.h"

/* sage-run --broker-grace: how long the per-user broker outlives its last run. */
#define RUN_BROKER_GRACE_DEFAULT 60

typedef struct RunBroker {
        char socket[108]; /* the broker's socket: the child's SAGE_SOCKET */
        SageBroker *held; /* the per-user broker: held while the run lasts (NULL for the system one) */
} RunBroker;

/*
 * Find the broker a `sage-run --share` without --socket/SAGE_SOCKET uses:
 * the system broker (SAGE_DEFAULT_SOCKET_ROOT) if it answers; else the
 * per-user one in $XDG_RUNTIME_DIR/sage/ (or /tmp/sage-UID/), started with
 * `saged --exit-idle GRACE` unless it runs already, under the lock file
 * SOCKET.lock so that concurrent runs start one broker. The per-user broker
 * is held (one connection) until run_broker_release, so it outlives the run
 * by GRACE seconds, not less. `self_dir` is sage-run's folder (a build
 * tree's saged is found from it). Returns 0, or -errno with `why` saying
 * what went wrong (the caller runs without sharing).
 */
int run_broker_find(RunBroker *rb, unsigned grace_s, const char *self_dir, char *why, size_t why_size);
void run_broker_release(RunBroker *rb);

/*
 * Run argv as a child and wait: forward the signals a supervisor should
 * (terminal-generated INT/QUIT reach the child through its process group
 * already), then return what sage-run should exit with; a child killed by a
 * signal gets sage-run killed by the same signal after `before_exit`.
 */
int run_supervised(char **argv, RunBroker *rb);
