/* The broker's CUDA-IPC registrations: exported fds by unguessable token, owned by a connection. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto.h"

/* Most registrations one connection may hold, and the broker-wide ceiling
 * (lowered to half the fd limit, since each registration is one open fd). */
#define IPC_REGISTRY_MAX_PER_OWNER 4096
#define IPC_REGISTRY_MAX_TOTAL 65536

/* Positive results callers must handle. */
enum {
        IPC_REGISTRY_E_OWNER_LIMIT = 1, /* the owner holds IPC_REGISTRY_MAX_PER_OWNER already */
        IPC_REGISTRY_E_TOTAL_LIMIT = 2, /* the broker-wide ceiling is reached */
        IPC_REGISTRY_E_NOT_FOUND = 3,   /* no such token (for this namespace, or this owner) */
};

typedef struct IpcExport IpcExport;

/* Embedded in whatever owns registrations (a Client); zero-initialised. */
typedef struct IpcOwner {
        IpcExport *exports;
        size_t n_exports;
} IpcOwner;

struct IpcExport {
        SageIpcToken token;
        uint64_t namespace_id;
        SageIpcAllocation allocation;
        pid_t exporter_pid;
        int fd; /* owned; closed when the registration goes */

        /* private to ipc_registry.c */
        IpcOwner *owner;
        IpcExport *next_in_bucket;
        IpcExport *owner_prev, *owner_next;
};

typedef struct IpcRegistry IpcRegistry;

/* max_per_owner / max_total: 0 for the defaults above. */
int ipc_registry_new(IpcRegistry **out, size_t max_per_owner, size_t max_total);
/* Closes every registered fd; owners still holding registrations must not be used with it again. */
IpcRegistry *ipc_registry_free(IpcRegistry *registry);

/*
 * Register `fd` under a fresh random token. On success (0) the registry owns
 * the fd and *out points to the registration; on failure (positive
 * IPC_REGISTRY_E_*, or negative errno: -ENOMEM, getrandom failing) the fd
 * stays the caller's.
 */
int ipc_registry_add(IpcRegistry *registry, IpcOwner *owner, uint64_t namespace_id, int fd,
                     const SageIpcAllocation *allocation, pid_t exporter_pid, IpcExport **out);

/* The registration with `token` in `namespace_id`, or NULL (also for another namespace). */
const IpcExport *ipc_registry_find(const IpcRegistry *registry, const SageIpcToken *token, uint64_t namespace_id);

/* Drop `owner`'s registration with `token` (closing its fd): 0, or IPC_REGISTRY_E_NOT_FOUND
 * if there is none or it belongs to another owner. */
int ipc_registry_revoke(IpcRegistry *registry, IpcOwner *owner, const SageIpcToken *token);

/* Drop every registration of `owner` (its connection is gone). */
void ipc_registry_drop_owner(IpcRegistry *registry, IpcOwner *owner);

size_t ipc_registry_count(const IpcRegistry *registry);
size_t ipc_registry_max_total(const IpcRegistry *registry);
