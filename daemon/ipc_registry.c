/*
 * CUDA-IPC emulation in the broker: a table of exported fds keyed by token.
 *
 * The driver refuses cuIpcGetMemHandle on VMM memory, so libsage makes IPC
 * handles of its own: the exporter gives the broker a POSIX-fd export of the
 * allocation, the broker answers with 128 random bits (getrandom), and an
 * importer trades those bits back for a duplicate of the fd. The broker never
 * imports the fd into the driver; holding it open is all it does, and that
 * keeps the physical memory alive only as long as the exporter's connection.
 *
 * Tokens are capabilities, and namespaces bound them: a token only works for
 * a peer of the exporter's namespace, and a wrong namespace looks exactly
 * like a wrong token. Being random, a token's first bytes are also its hash;
 * the comparison itself is constant-time so that probing cannot learn a
 * token's prefix from timing. Each registration is linked both into its hash
 * bucket and into its owner's list, so that a dying connection drops all of
 * its registrations without a scan of the table. Limits are per owner and in
 * total: every registration costs the broker one open fd.
 */
#include "ipc_registry.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "list.h"

struct IpcRegistry {
        IpcExport **buckets;
        size_t mask; /* buckets - 1, a power of two minus one */
        size_t count;
        size_t max_per_owner, max_total;
};

int ipc_registry_new(IpcRegistry **out, size_t max_per_owner, size_t max_total) {
        IpcRegistry *r = calloc(1, sizeof(*r));
        size_t n = 16;

        if (!r)
                return -ENOMEM;
        r->max_per_owner = max_per_owner ? max_per_owner : IPC_REGISTRY_MAX_PER_OWNER;
        r->max_total = max_total ? max_total : IPC_REGISTRY_MAX_TOTAL;
        /* About two registrations per bucket when full. */
        while (n < r->max_total / 2 && n < (1u << 20))
                n *= 2;
        r->buckets = calloc(n, sizeof(*r->buckets));
        if (!r->buckets) {
                free(r);
                return -ENOMEM;
        }
        r->mask = n - 1;
        *out = r;
        return 0;
}

static bool token_equal(const SageIpcToken *a, const SageIpcToken *b) {
        uint8_t diff = 0;
        for (size_t i = 0; i < sizeof(a->bytes); i++)
                diff |= a->bytes[i] ^ b->bytes[i];
        return diff == 0;
}

static IpcExport **bucket_of(const IpcRegistry *r, const SageIpcToken *t) {
        uint64_t h = 0;
        memcpy(&h, t->bytes, sizeof(h));
        return &r->buckets[h & r->mask];
}

static IpcExport *find(const IpcRegistry *r, const SageIpcToken *t) {
        for (IpcExport *e = *bucket_of(r, t); e; e = e->next_in_bucket)
                if (token_equal(&e->token, t))
                        return e;
        return NULL;
}

static int random_token(SageIpcToken *t) {
        size_t got = 0;
        while (got < sizeof(t->bytes)) {
                ssize_t n = getrandom(t->bytes + got, sizeof(t->bytes) - got, 0);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                got += (size_t)n;
        }
        return 0;
}

int ipc_registry_add(IpcRegistry *r, IpcOwner *owner, uint64_t namespace_id, int fd,
                     const SageIpcAllocation *allocation, pid_t exporter_pid, IpcExport **out) {
        IpcExport *e, **bucket;
        int ret;

        if (owner->n_exports >= r->max_per_owner)
                return IPC_REGISTRY_E_OWNER_LIMIT;
        if (r->count >= r->max_total)
                return IPC_REGISTRY_E_TOTAL_LIMIT;
        e = calloc(1, sizeof(*e));
        if (!e)
                return -ENOMEM;
        /* 2^-128 per pair, but a duplicate would hand out the wrong memory. */
        do {
                ret = random_token(&e->token);
                if (ret < 0) {
                        free(e);
                        return ret;
                }
        } while (find(r, &e->token));
        e->namespace_id = namespace_id;
        e->allocation = *allocation;
        e->exporter_pid = exporter_pid;
        e->fd = fd;
        e->owner = owner;

        bucket = bucket_of(r, &e->token);
        e->next_in_bucket = *bucket;
        *bucket = e;
        SAGE_LIST_PUSH_FRONT(owner->exports, e, owner_prev, owner_next);
        owner->n_exports++;
        r->count++;
        if (out)
                *out = e;
        return 0;
}

const IpcExport *ipc_registry_find(const IpcRegistry *r, const SageIpcToken *t, uint64_t namespace_id) {
        IpcExport *e = find(r, t);
        return e && e->namespace_id == namespace_id ? e : NULL;
}

static void remove_export(IpcRegistry *r, IpcExport *e) {
        IpcOwner *owner = e->owner;

        for (IpcExport **p = bucket_of(r, &e->token); *p; p = &(*p)->next_in_bucket)
                if (*p == e) {
                        *p = e->next_in_bucket;
                        break;
                }
        SAGE_LIST_UNLINK(owner->exports, e, owner_prev, owner_next);
        owner->n_exports--;
        r->count--;
        close(e->fd);
        free(e);
}

int ipc_registry_revoke(IpcRegistry *r, IpcOwner *owner, const SageIpcToken *t) {
        IpcExport *e = find(r, t);

        if (!e || e->owner != owner)
                return IPC_REGISTRY_E_NOT_FOUND;
        remove_export(r, e);
        return 0;
}

void ipc_registry_drop_owner(IpcRegistry *r, IpcOwner *owner) {
        while (owner->exports)
                remove_export(r, owner->exports);
}

size_t ipc_registry_count(const IpcRegistry *r) {
        return r->count;
}

size_t ipc_registry_max_total(const IpcRegistry *r) {
        return r->max_total;
}

IpcRegistry *ipc_registry_free(IpcRegistry *r) {
        if (!r)
                return NULL;
        /* Owners may be gone already: free without unlinking from them. */
        for (size_t i = 0; i <= r->mask; i++)
                for (IpcExport *e = r->buckets[i], *next; e; e = next) {
                        next = e->next_in_bucket;
                        close(e->fd);
                        free(e);
                }
        free(r->buckets);
        free(r);
        return NULL;
}
