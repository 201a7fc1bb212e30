/*
 * The instance table and its state machine (instances.h). Lookups are
 * linear: the table is bounded (INSTANCES_MAX) and consulted per operator
 * request, never on a data path. The state machine lives here, apart from
 * the driver calls, so that every transition (including the failure ones:
 * a failed checkpoint leaves the instance ACTIVE because the server unlocks
 * it, a failed restore leaves it FAILED because the driver does) is unit
 * tested without a driver.
 */
#include "instances.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int instances_add(InstanceTable *t, const void *owner, pid_t pid, int pidfd, uint64_t namespace_id,
                  const uint8_t uuid[16], uint32_t flags, uint64_t now_ns, Instance **out) {
        Instance *in;

        /* One registration per connection and per process: a pid names one instance. */
        if (instances_find_owner(t, owner) || instances_find_pid(t, pid)) {
                if (pidfd >= 0)
                        close(pidfd);
                return INSTANCES_E_EXISTS;
        }
        if (t->n >= INSTANCES_MAX ||
            instances_count_namespace(t, namespace_id) >=
                    (t->max_per_namespace ? t->max_per_namespace : INSTANCES_MAX_PER_NAMESPACE)) {
                if (pidfd >= 0)
                        close(pidfd);
                return t->n >= INSTANCES_MAX ? INSTANCES_E_LIMIT : INSTANCES_E_NAMESPACE;
        }
        if (t->n == t->cap) {
                size_t cap = t->cap ? 2 * t->cap : 16;
                Instance **items = realloc(t->items, cap * sizeof(*items));
                if (!items) {
                        if (pidfd >= 0)
                                close(pidfd);
                        return -ENOMEM;
                }
                t->items = items;
                t->cap = cap;
        }
        in = calloc(1, sizeof(*in));
        if (!in) {
                if (pidfd >= 0)
                        close(pidfd);
                return -ENOMEM;
        }
        in->owner = owner;
        in->pid = pid;
        in->pidfd = pidfd;
        in->namespace_id = namespace_id;
        memcpy(in->uuid, uuid, sizeof(in->uuid));
        in->flags = flags;
        in->state = SAGE_INSTANCE_ACTIVE;
        in->changed_ns = now_ns;
        in->used_ns = now_ns;
        t->items[t->n++] = in;
        if (out)
                *out = in;
        return 0;
}

size_t instances_count_namespace(const InstanceTable *t, uint64_t namespace_id) {
        size_t n = 0;
        for (size_t i = 0; i < t->n; i++)
                n += t->items[i]->namespace_id == namespace_id;
        return n;
}

Instance *instances_find_pid(const InstanceTable *t, pid_t pid) {
        for (size_t i = 0; i < t->n; i++)
                if (t->items[i]->pid == pid)
                        return t->items[i];
        return NULL;
}

Instance *instances_find_owner(const InstanceTable *t, const void *owner) {
        for (size_t i = 0; i < t->n; i++)
                if (t->items[i]->owner == owner)
                        return t->items[i];
        return NULL;
}

void instances_remove(InstanceTable *t, Instance *in) {
        for (size_t i = 0; i < t->n; i++) {
                if (t->items[i] != in)
                        continue;
                if (in->state == SAGE_INSTANCE_RESUMING)
                        t->resuming--; /* the operation's end finds no instance to finish */
                t->items[i] = t->items[--t->n];
                if (in->pidfd >= 0)
                        close(in->pidfd);
                free(in);
                return;
        }
}

void instances_clear(InstanceTable *t) {
        while (t->n)
                instances_remove(t, t->items[0]);
        free(t->items);
        t->items = NULL;
        t->cap = 0;
}

uint32_t instance_why_flags(const Instance *in) {
        uint32_t why = 0;
        if (in->flags & SAGE_INSTANCE_KEEP_ALIVE)
                why |= SAGE_INSTANCE_WHY_KEEP_ALIVE;
        if (in->flags & SAGE_INSTANCE_MULTI_GPU)
                why |= SAGE_INSTANCE_WHY_MULTI_GPU;
        if (in->flags & SAGE_INSTANCE_MPS)
                why |= SAGE_INSTANCE_WHY_MPS;
        if (in->flags & SAGE_INSTANCE_MANAGED)
                why |= SAGE_INSTANCE_WHY_MANAGED;
        if (in->flags & SAGE_INSTANCE_IPC)
                why |= SAGE_INSTANCE_WHY_IPC;
        return why;
}

int instance_begin(InstanceTable *t, Instance *in, int op, uint64_t now_ns) {
        unsigned cap = t->max_resumes ? t->max_resumes : 1;

        if (in->state == SAGE_INSTANCE_SUSPENDING || in->state == SAGE_INSTANCE_RESUMING)
                return INSTANCES_E_BUSY;
        if (op == INSTANCE_OP_SUSPEND) {
                if (in->state != SAGE_INSTANCE_ACTIVE)
                        return INSTANCES_E_STATE;
                in->state = SAGE_INSTANCE_SUSPENDING;
        } else {
                if (in->state != SAGE_INSTANCE_SUSPENDED)
                        return INSTANCES_E_STATE;
                if (t->resuming >= cap)
                        return INSTANCES_E_BUSY;
                t->resuming++;
                in->state = SAGE_INSTANCE_RESUMING;
        }
        in->changed_ns = now_ns;
        return 0;
}

static uint32_t to_ms(uint64_t ns) {
        uint64_t ms = (ns + 999999) / 1000000;
        return ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms;
}

void instance_finish(InstanceTable *t, Instance *in, int op, bool ok, uint64_t elapsed_ns, uint64_t now_ns) {
        if (op == INSTANCE_OP_SUSPEND) {
                in->state = ok ? SAGE_INSTANCE_SUSPENDED : SAGE_INSTANCE_ACTIVE;
                if (!ok)
                        in->busy_until_ns = now_ns + INSTANCE_BUSY_BACKOFF_NS; /* in use: others first */
                if (ok) {
                        in->suspend_ms = to_ms(elapsed_ns);
                        in->host_bytes = in->footprint; /* the driver copied it into the process */
                }
        } else {
                t->resuming--;
                in->state = ok ? SAGE_INSTANCE_ACTIVE : SAGE_INSTANCE_FAILED;
                if (ok) {
                        in->resume_ms = to_ms(elapsed_ns);
                        in->idle = false; /* it resumes because it is wanted */
                        in->used_ns = now_ns;
                        in->host_bytes = 0;
                }
        }
        in->changed_ns = now_ns;
}

void instance_cancel(InstanceTable *t, Instance *in, int op) {
        if (op == INSTANCE_OP_SUSPEND)
                in->state = SAGE_INSTANCE_ACTIVE;
        else {
                t->resuming--;
                in->state = SAGE_INSTANCE_SUSPENDED;
        }
}

bool instance_adopt_suspended(Instance *in) {
        if (!(in->flags & SAGE_INSTANCE_CHECKPOINTED) || in->state != SAGE_INSTANCE_ACTIVE)
                return false;
        /* A state, not a property: what it registered as stays in flags. */
        in->flags &= ~SAGE_INSTANCE_CHECKPOINTED;
        in->state = SAGE_INSTANCE_SUSPENDED;
        in->footprint = 0;
        return true;
}

bool instance_exited(const Instance *in) {
        struct pollfd p = { .fd = in->pidfd, .events = POLLIN };
        /* A pidfd polls readable once its process has exited. */
        return in->pidfd >= 0 && poll(&p, 1, 0) == 1 && (p.revents & (POLLIN | POLLHUP));
}
