/* Platform labels: `--label-socket PATH=LABEL` parsing and the label table. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "proto.h"

/* Labelled sockets one broker may listen on (so also distinct labels). */
#define LABEL_MAX_SOCKETS 64

/* uid= and gid= entries one label socket may list, each. */
#define LABEL_MAX_IDS 16

/*
 * Who may use a labelled socket: root, the uids listed, members of the gids
 * listed (primary or supplementary group), and whoever the socket file's
 * mode grants (owner: the first uid, else root; group: the first gid, else
 * root). The file gets that owner, group and mode; the broker checks the
 * same rule again at accept, from the peer's credentials.
 */
typedef struct LabelAccess {
        uid_t uids[LABEL_MAX_IDS];
        size_t n_uids;
        gid_t gids[LABEL_MAX_IDS];
        size_t n_gids;
        mode_t mode; /* 0660; 0666 when several uids are listed (a file has one owner) */
} LabelAccess;

typedef struct LabelSocket {
        char *path;  /* owned */
        char *label; /* owned */
        LabelAccess access;
} LabelSocket;

/*
 * Parse PATH=LABEL[,uid=U][,gid=G][,mode=OCTAL] (uid= and gid= repeatable, up
 * to LABEL_MAX_IDS each; mode at most 0666 and without execute or special
 * bits). The options are taken from the end; the split of the rest is at the
 * last '=' (a label cannot contain one, a path may). PATH must be nonempty;
 * LABEL 1..SAGE_PROTO_LABEL_MAX bytes of [A-Za-z0-9._-]. Returns 0, -EINVAL
 * (bad syntax) or -ENOMEM.
 */
int label_socket_parse(const char *text, LabelSocket *out);
void label_socket_clear(LabelSocket *socket);

/*
 * Label numbers, for the upper 32 bits of a namespace id: 1..N in the order
 * names are first added; adding a name again answers its number (two sockets
 * with one label are two doors of one tenant). 0 is never assigned: it is
 * "unlabelled".
 */
typedef struct LabelTable {
        char names[LABEL_MAX_SOCKETS][SAGE_PROTO_LABEL_MAX + 1];
        uint32_t n;
} LabelTable;

/* Does `access` let a peer with these credentials (and supplementary `groups`) in? */
bool label_access_allows(const LabelAccess *access, const struct ucred *cred, const gid_t *groups, size_t n_groups);
uid_t label_access_owner(const LabelAccess *access);
gid_t label_access_group(const LabelAccess *access);

/* 0 with *number set, -EINVAL for an invalid name, -ENOSPC when full. */
int label_table_add(LabelTable *table, const char *name, uint32_t *number);
/* The name of `number`, or NULL (0, or never assigned). */
const char *label_table_name(const LabelTable *table, uint32_t number);
