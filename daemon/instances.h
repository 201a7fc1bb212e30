/*
 * Instances: processes that registered for suspend (INSTANCE_REGISTER), and
 * their state machine (docs/suspend.md):
 *
 *   ACTIVE --suspend--> SUSPENDING --ok--> SUSPENDED --resume--> RESUMING --ok--> ACTIVE
 *                           |fail (unlocked again)                  |fail
 *                           v                                       v
 *                         ACTIVE                                  FAILED (the driver keeps it stuck)
 *
 * A pure table: no driver, no sockets. The server (handle_instance.c) runs
 * the driver's checkpoint calls in a worker thread between instance_begin
 * and instance_finish; whatever watches the instance later (the automatic
 * idle suspend, the gate of resume on demand) drives the same transitions.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto.h"

/* Most instances one broker keeps (a registration past it: SAGE_ERR_LIMIT). */
#define INSTANCES_MAX 4096
/* Most one namespace (label, uid) keeps by default (saged --max-instances-per-uid): one tenant
 * filling the table would leave every other tenant's instances unregistered, never suspended. */
#define INSTANCES_MAX_PER_NAMESPACE 256
/* After a failed suspend (its calls were in flight), how long it is left alone for room. */
#define INSTANCE_BUSY_BACKOFF_NS (1000 * 1000000ull)

enum {
        INSTANCES_E_LIMIT = 1,     /* table full */
        INSTANCES_E_EXISTS = 2,    /* the owner, or another connection of that pid, registered already */
        INSTANCES_E_STATE = 3,     /* not in a state the operation starts from */
        INSTANCES_E_BUSY = 4,      /* an operation runs, or the resume cap is reached */
        INSTANCES_E_NAMESPACE = 5, /* its namespace holds max_per_namespace already */
};

enum {
        INSTANCE_OP_SUSPEND,
        INSTANCE_OP_RESUME
};

typedef struct Instance {
        const void *owner;     /* the registering connection: the instance lives as long as it */
        pid_t pid;             /* SO_PEERCRED, in saged's pid namespace */
        int pidfd;             /* that very process (owned; -1 if none could be had) */
        uint64_t namespace_id; /* the connection's */
        uint8_t uuid[16];
        uint32_t flags; /* SAGE_INSTANCE_* as registered */
        unsigned state; /* SAGE_INSTANCE_* state */
        uint32_t suspend_ms, resume_ms;
        uint64_t changed_ns; /* last state change */
        /* What the broker's memory policy goes by (instance_policy.h). */
        uint32_t idle_suspend_ms; /* suspend after idling this long (0: never for idleness) */
        bool idle;                /* libsage said INSTANCE_IDLE, and nothing since */
        uint64_t idle_since_ns;
        uint64_t used_ns;       /* last sign of use (registration, INSTANCE_ACTIVE, resume): LRU order */
        uint64_t footprint;     /* device bytes when its last suspend began: what its restore needs */
        uint64_t host_bytes;    /* host memory its checkpoint holds while suspended (estimate: footprint) */
        uint64_t busy_until_ns; /* a suspend failed (busy): not suspended for room before then */
        /* Extents pinned for it while it does not map them (instance_gate.c; NULL: none). */
        struct InstancePins *pins;
        /* A SUSPEND_PREPARE the broker gave up on (its deadline passed) that libsage may still be
         * carrying out (a long kernel outlasts its synchronize): the handshake id, 0 if none. Until
         * libsage answered it and mapped again (INSTANCE_REMAPPED to late_remap, the id of the last
         * INSTANCE_RESUMED sent), what it releases is pinned and it is not suspended again. */
        uint32_t late_prepare, late_remap;
        /* What the spool (instance_spool.c) keeps for it on disk while suspended; NULL: nothing. */
        struct SpoolList *spool;
} Instance;

typedef struct InstanceTable {
        Instance **items;
        size_t n, cap;
        unsigned resuming;        /* instances in RESUMING */
        unsigned max_resumes;     /* cap on RESUMING at once (0: 1) */
        size_t max_per_namespace; /* instances of one namespace (0: INSTANCES_MAX_PER_NAMESPACE) */
} InstanceTable;

/* Takes the pidfd (closed on failure too). 0, -ENOMEM or INSTANCES_E_EXISTS, _LIMIT, _NAMESPACE. */
int instances_add(InstanceTable *t, const void *owner, pid_t pid, int pidfd, uint64_t namespace_id,
                  const uint8_t uuid[16], uint32_t flags, uint64_t now_ns, Instance **out);
Instance *instances_find_pid(const InstanceTable *t, pid_t pid);
/* How many instances `namespace_id` holds (linear: registrations are rare, the table bounded). */
size_t instances_count_namespace(const InstanceTable *t, uint64_t namespace_id);
Instance *instances_find_owner(const InstanceTable *t, const void *owner);
/* Forget one (closes its pidfd). */
void instances_remove(InstanceTable *t, Instance *instance);
void instances_clear(InstanceTable *t);

/* Reasons from the registration flags alone (SAGE_INSTANCE_WHY_*). */
uint32_t instance_why_flags(const Instance *instance);
/* Start `op`: SUSPEND from ACTIVE, RESUME from SUSPENDED (within the resume cap). 0 or INSTANCES_E_*. */
int instance_begin(InstanceTable *t, Instance *instance, int op, uint64_t now_ns);
/* End `op` started by instance_begin; `ok` says whether the driver succeeded. */
void instance_finish(InstanceTable *t, Instance *instance, int op, bool ok, uint64_t elapsed_ns, uint64_t now_ns);
/* Undo instance_begin before anything was tried. */
void instance_cancel(InstanceTable *t, Instance *instance, int op);
/* Registered with SAGE_INSTANCE_CHECKPOINTED (the caller checked with the driver): SUSPENDED from the start,
 * its footprint unknown. Returns whether it was so flagged. */
bool instance_adopt_suspended(Instance *instance);
/* Has the pidfd's process exited? (false without a pidfd) */
bool instance_exited(const Instance *instance);
