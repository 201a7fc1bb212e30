/* Platform labels: `--label-socket PATH=LABEL` parsing and the label table. */
#pragma once

#include <stdint.h>

#include "proto.h"

/* Labelled sockets one broker may listen on (so also distinct labels). */
#define LABEL_MAX_SOCKETS 64

typedef struct LabelSocket {
        char *path;  /* owned */
        char *label; /* owned */
} LabelSocket;

/*
 * Parse PATH=LABEL. The split is at the last '=' (a label cannot contain
 * one, a path may). PATH must be nonempty; LABEL 1..SAGE_PROTO_LABEL_MAX
 * bytes of [A-Za-z0-9._-]. Returns 0, -EINVAL (bad syntax) or -ENOMEM.
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

/* 0 with *number set, -EINVAL for an invalid name, -ENOSPC when full. */
int label_table_add(LabelTable *table, const char *name, uint32_t *number);
/* The name of `number`, or NULL (0, or never assigned). */
const char *label_table_name(const LabelTable *table, uint32_t number);
