/*
 * Request counters per namespace, so STATS can answer a tenant about its
 * own namespace only (a tenant must not learn another's traffic).
 *
 * A namespace's counters live while it has connections or holds extents:
 * the server creates them on a connected client's request and drops them
 * (tally_forget) once the namespace has neither. Keeping them for the
 * broker's life let a tenant that can take many uids (root in a container,
 * or behind a label) grow the table without bound, and a list made every
 * request pay for it; so entries sit in a chained hash table and memory
 * follows connections (capped per label) and extents (capped by the
 * budget), never the uids ever seen. What a namespace
 * counted is not lost when it goes: the broker-wide figures (root's STATS)
 * keep it.
 */
#include "tally.h"

#include <stdlib.h>

#include "list.h"

struct TallyEntry {
        uint64_t namespace_id;
        Tally tally;
        TallyEntry *next;
};

static size_t bucket_of(uint64_t ns) {
        return (size_t)((ns * 0x9e3779b97f4a7c15ull) >> 32) % TALLY_BUCKETS;
}

static TallyEntry **slot(const TallyTable *t, uint64_t ns) {
        TallyEntry **p = (TallyEntry **)&t->buckets[bucket_of(ns)];

        while (*p && (*p)->namespace_id != ns)
                p = &(*p)->next;
        return p;
}

Tally *tally_find(TallyTable *t, uint64_t ns) {
        TallyEntry *e = *slot(t, ns);
        return e ? &e->tally : NULL;
}

Tally *tally_get(TallyTable *t, uint64_t ns) {
        TallyEntry **p = slot(t, ns);

        if (!*p) {
                TallyEntry *e = calloc(1, sizeof(*e));
                if (!e)
                        return NULL;
                e->namespace_id = ns;
                *p = e;
                t->count++;
        }
        return &(*p)->tally;
}

Tally tally_of(const TallyTable *t, uint64_t ns) {
        const TallyEntry *e = *slot(t, ns);
        return e ? e->tally : (Tally){ 0 };
}

void tally_forget(TallyTable *t, uint64_t ns) {
        TallyEntry **p = slot(t, ns);
        TallyEntry *e = *p;

        if (!e)
                return;
        *p = e->next;
        free(e);
        t->count--;
}

size_t tally_count(const TallyTable *t) {
        return t->count;
}

void tally_table_clear(TallyTable *t) {
        SAGE_BUCKETS_FREE(t->buckets, TALLY_BUCKETS, next);
        t->count = 0;
}
