/* Connections counted per namespace and per label: who may connect next. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "label.h"

/* Defaults (saged --max-clients, --max-clients-per-uid, --max-clients-per-label). */
#define CONN_TABLE_MAX_TOTAL 4096
#define CONN_TABLE_MAX_PER_NAMESPACE 256
#define CONN_TABLE_MAX_PER_LABEL 1024
/* Connections beyond max_total that only root on the main socket may take,
 * so the operator can always reach a full broker (sagectl). */
#define CONN_TABLE_ROOT_RESERVE 16

typedef struct ConnLimits {
        size_t max_total;         /* every client; 0: the default */
        size_t max_per_namespace; /* per (label, uid); root on the main socket is exempt */
        size_t max_per_label;     /* per label, all its uids together; the main socket (label 0) is exempt */
} ConnLimits;

/* Positive results: which limit refused the connection. */
enum {
        CONN_TABLE_E_TOTAL = 1,
        CONN_TABLE_E_NAMESPACE = 2,
        CONN_TABLE_E_LABEL = 3,
};

typedef struct ConnTable ConnTable;

int conn_table_new(ConnTable **out, const ConnLimits *limits);
ConnTable *conn_table_free(ConnTable *table);

/* Count a new connection of `uid` through the socket of `label` (0: the
 * main one): 0, a positive CONN_TABLE_E_* (not counted), or -ENOMEM. */
int conn_table_admit(ConnTable *table, uid_t uid, uint32_t label);
/* Forget one admitted connection. */
void conn_table_release(ConnTable *table, uid_t uid, uint32_t label);

size_t conn_table_total(const ConnTable *table);
size_t conn_table_namespace_count(const ConnTable *table, uid_t uid, uint32_t label);
/* The limits in force (defaults filled in). */
const ConnLimits *conn_table_limits(const ConnTable *table);
/* What a refusal says, for logs and the LIMIT reply. */
const char *conn_table_error(int code);
