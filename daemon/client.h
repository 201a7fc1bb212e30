/* One connected client of saged: credentials, namespace, references held, pending reply. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "extent_store.h"
#include "ipc_registry.h"
#include "proto.h"

/* Most distinct extents one connection may hold references on. */
#define CLIENT_MAX_REFS 65536

enum {
        CLIENT_E_LIMIT = 1,    /* too many references */
        CLIENT_E_NOT_HELD = 2, /* RELEASE of an extent this client holds no reference on */
};

typedef struct ClientRef {
        Extent *extent; /* stays valid: the store never evicts referenced extents */
        uint32_t count;
} ClientRef;

typedef struct Client Client;
struct Client {
        int fd;
        uid_t uid;
        gid_t gid;
        pid_t pid;
        /* Of the socket it came through (0: the unlabelled one), or, on the
         * unlabelled one, its container's number (identity.h) */
        uint32_t label;
        uint64_t namespace_id; /* client_namespace(uid, label) */
        /* Root on the unlabelled socket, on the host: LIST and EVICT reach
         * every namespace. Root on a labelled socket or in a container is a
         * tenant like any other. */
        bool sees_all;

        ClientRef *refs;
        size_t n_refs, cap_refs;

        /* CUDA-IPC registrations this connection exported; the server drops
         * them (ipc_registry_drop_owner) before client_free. */
        IpcOwner ipc;
        /* CUDA-IPC handles this connection imported (its process maps
         * another's memory: it must never be suspended). */
        uint32_t ipc_imports;

        /* A reply the socket would not take yet (peer not reading). While one
         * is pending the server reads no further requests from this client. */
        uint8_t *pending;
        size_t pending_len;
        int pending_fds[SAGE_PROTO_MAX_FDS];
        size_t n_pending_fds;

        unsigned malformed; /* bad messages so far; too many closes the connection */
        Client *prev, *next;
};

/*
 * The namespace of a peer: its uid, from SO_PEERCRED, never from anything it
 * says, and the label of the socket it connected to (0: none), which only
 * the platform assigns (saged --label-socket, root only). Layout:
 * label << 32 | uid.
 */
uint64_t client_namespace(uid_t uid, uint32_t label);

/* Takes ownership of `fd`. `label`: that of the listening socket it came through. */
int client_new(Client **out, int fd, const struct ucred *cred, uint32_t label);
/* Drops every reference the client holds, closes its socket and pending fds. */
Client *client_free(Client *client, ExtentStore *store);

int client_ref(Client *client, ExtentStore *store, Extent *extent);
int client_unref(Client *client, ExtentStore *store, uint64_t extent_id);
/* Drop every reference the client holds on extent `id` (the broker rejected the extent). */
void client_forget(Client *client, ExtentStore *store, uint64_t extent_id);
uint64_t client_ref_total(const Client *client);

/* Send (or queue, on EAGAIN) a reply. The fds are consumed in every case.
 * Returns 0 (sent), 1 (queued), or negative errno (drop the client). */
int client_send(Client *client, const SageMessage *message, int *fds, size_t n_fds);
/* Retry the pending reply: 0 sent, 1 still pending, negative errno. */
int client_flush(Client *client);
