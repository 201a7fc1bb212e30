/*
 * Connection accounting of saged, with no sockets in it.
 *
 * A broker-wide cap alone let one uid hold every connection (issue 11.2:
 * ~4,100 connections of one uid locked every other uid and label out). So
 * connections are counted per namespace (label << 32 | uid: a tenant on the
 * main socket is its uid, a tenant behind a labelled socket is its label
 * and uid) and per label, each with a cap well below the broker-wide one.
 * Per label too, because a tenant with root in its container can take any
 * number of uids behind its own socket. Root on the main socket is the
 * node's operator (or unlabelled root containers, one namespace by design):
 * no per-namespace cap, and a small reserve beyond the broker-wide cap so
 * sagectl still gets in when others filled the broker.
 *
 * A label here is any upper half of a namespace: a labelled socket's, or a
 * container's (identity.c numbers those from 0x80000000), so a root
 * container taking many uids meets the per-label cap too.
 *
 * Counts live in a chained hash table whose entries go when their count
 * drops to zero, so memory follows the connections, never the number of
 * uids or containers ever seen. A label's own count is the entry of the
 * namespace (label, (uid_t)-1): no process has that uid.
 */
#include "conn_table.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#define CONN_TABLE_BUCKETS 1024

typedef struct ConnCount ConnCount;
struct ConnCount {
        uint64_t namespace_id;
        size_t count;
        ConnCount *next;
};

struct ConnTable {
        ConnLimits limits;
        size_t total;
        ConnCount *buckets[CONN_TABLE_BUCKETS];
};

static uint64_t namespace_of(uid_t uid, uint32_t label) {
        return (uint64_t)label << 32 | (uint32_t)uid;
}

static uint64_t label_key(uint32_t label) {
        return namespace_of((uid_t)-1, label);
}

static size_t bucket_of(uint64_t ns) {
        return (size_t)((ns * 0x9e3779b97f4a7c15ull) >> 32) % CONN_TABLE_BUCKETS;
}

static ConnCount **slot(ConnTable *t, uint64_t ns) {
        ConnCount **p = &t->buckets[bucket_of(ns)];

        while (*p && (*p)->namespace_id != ns)
                p = &(*p)->next;
        return p;
}

int conn_table_new(ConnTable **out, const ConnLimits *limits) {
        ConnTable *t = calloc(1, sizeof(*t));

        if (!t)
                return -ENOMEM;
        t->limits = *limits;
        if (!t->limits.max_total)
                t->limits.max_total = CONN_TABLE_MAX_TOTAL;
        if (!t->limits.max_per_namespace)
                t->limits.max_per_namespace = CONN_TABLE_MAX_PER_NAMESPACE;
        if (!t->limits.max_per_label)
                t->limits.max_per_label = CONN_TABLE_MAX_PER_LABEL;
        *out = t;
        return 0;
}

ConnTable *conn_table_free(ConnTable *t) {
        if (!t)
                return NULL;
        for (size_t i = 0; i < CONN_TABLE_BUCKETS; i++)
                while (t->buckets[i]) {
                        ConnCount *c = t->buckets[i];
                        t->buckets[i] = c->next;
                        free(c);
                }
        free(t);
        return NULL;
}

static size_t count_of(ConnTable *t, uint64_t key) {
        ConnCount *c = *slot(t, key);

        return c ? c->count : 0;
}

static int count_up(ConnTable *t, uint64_t key) {
        ConnCount **p = slot(t, key);

        if (!*p) {
                *p = calloc(1, sizeof(**p));
                if (!*p)
                        return -ENOMEM;
                (*p)->namespace_id = key;
        }
        (*p)->count++;
        return 0;
}

static void count_down(ConnTable *t, uint64_t key) {
        ConnCount **p = slot(t, key);
        ConnCount *c = *p;

        if (c && --c->count == 0) {
                *p = c->next;
                free(c);
        }
}

int conn_table_admit(ConnTable *t, uid_t uid, uint32_t label) {
        bool operator= uid == 0 && label == 0;
        uint64_t ns = namespace_of(uid, label);
        int r;

        if (uid == (uid_t)-1)
                return CONN_TABLE_E_NAMESPACE; /* the kernel never reports it; it keys label counts */
        if (t->total >= t->limits.max_total + (operator? CONN_TABLE_ROOT_RESERVE : 0))
                return CONN_TABLE_E_TOTAL;
        if (label != 0 && count_of(t, label_key(label)) >= t->limits.max_per_label)
                return CONN_TABLE_E_LABEL;
        if (!operator&& count_of(t, ns) >= t->limits.max_per_namespace)
                return CONN_TABLE_E_NAMESPACE;
        r = count_up(t, ns);
        if (r == 0 && label != 0 && (r = count_up(t, label_key(label))) != 0)
                count_down(t, ns);
        if (r)
                return r;
        t->total++;
        return 0;
}

void conn_table_release(ConnTable *t, uid_t uid, uint32_t label) {
        uint64_t ns = namespace_of(uid, label);

        if (uid == (uid_t)-1 || count_of(t, ns) == 0)
                return;
        count_down(t, ns);
        if (label != 0)
                count_down(t, label_key(label));
        t->total--;
}

size_t conn_table_total(const ConnTable *t) {
        return t->total;
}

size_t conn_table_namespace_count(const ConnTable *t, uid_t uid, uint32_t label) {
        uint64_t ns = namespace_of(uid, label);

        for (const ConnCount *c = t->buckets[bucket_of(ns)]; c; c = c->next)
                if (c->namespace_id == ns)
                        return c->count;
        return 0;
}

const ConnLimits *conn_table_limits(const ConnTable *t) {
        return &t->limits;
}

const char *conn_table_error(int code) {
        switch (code) {
        case CONN_TABLE_E_TOTAL: return "too many clients";
        case CONN_TABLE_E_NAMESPACE: return "too many connections of this uid";
        case CONN_TABLE_E_LABEL: return "too many connections through this label's sockets or from this container";
        default: return "cannot count the connection";
        }
}
