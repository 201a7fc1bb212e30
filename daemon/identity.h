/* Container identities: which namespace family a client of the main socket belongs to. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "extent_store.h"
#include "proto.h"

/*
 * Container numbers take the label half of a namespace id (number << 32 |
 * uid), in a range labels never reach (labels are 1..LABEL_MAX_SOCKETS):
 * IDENTITY_FIRST and up, handed out once each, never again.
 */
#define IDENTITY_FIRST SAGE_NAMESPACE_CONTAINER_FIRST
/* Containers the broker keeps track of at once (each pins 3 namespace files). */
#define IDENTITY_MAX 1024

typedef enum IdentityMode {
        IDENTITY_ISOLATE, /* a client in another container than saged gets that container's namespaces */
        IDENTITY_SHARE,   /* uid only, whatever container (the behaviour before isolation) */
} IdentityMode;

/* Positive results callers must handle. */
enum {
        IDENTITY_E_FULL = 1, /* IDENTITY_MAX containers have clients, or numbers ran out */
};

typedef struct IdentityTable IdentityTable;

/* Called when a container number is gone for good (forgotten, or a private
 * namespace's client gone): what is kept per namespace of it may go too. */
typedef void (*IdentityForgetFn)(void *userdata, uint32_t number);

/* Reads saged's own namespaces: the "host" its clients are compared with.
 * `max`: containers tracked at once (0 or more than IDENTITY_MAX: IDENTITY_MAX). */
int identity_table_new(IdentityTable **out, IdentityMode mode, ExtentStore *store, size_t max, IdentityForgetFn forget,
                       void *userdata);
IdentityTable *identity_table_free(IdentityTable *table);

/*
 * The namespace family of a client accepted on the main socket: *number 0
 * when it shares saged's pid, mount and user namespaces (or in SHARE mode),
 * else its container's number, which the table keeps (pinning the
 * container's namespace files, so their inode numbers cannot be reused by a
 * later container) while the container has clients or extents, or, when its
 * namespaces cannot be established, a private number nobody else gets. Each
 * successful attach with a nonzero number is paired with one
 * identity_detach. Returns 0, IDENTITY_E_* (refuse the client) or -errno.
 */
int identity_attach(IdentityTable *table, int fd, const struct ucred *cred, uint32_t *number);
/* A pidfd of the process that connected on `fd` (SO_PEERPIDFD; before Linux
 * 6.5, pidfd_open of the SO_PEERCRED pid, which may have been reused since:
 * daemon/README.md). Returns the fd or -errno. */
int identity_peer_pidfd(int fd, const struct ucred *cred);
void identity_detach(IdentityTable *table, uint32_t number);

static inline bool identity_is_container(uint32_t label) {
        return label >= IDENTITY_FIRST;
}

/* Containers tracked now (for tests and logs). */
size_t identity_count(const IdentityTable *table);

/* identity_attach without the kernel, for tests: a peer whose pid, mount and
 * user namespaces are ids[0..5] (dev, inode of each), with nothing to pin. */
int identity_attach_ids(IdentityTable *table, const uint64_t ids[6], uint32_t *number);
