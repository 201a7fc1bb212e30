/*
 * Request counters per namespace, so STATS can answer a tenant about its
 * own namespace only (a tenant must not learn another's traffic). An entry
 * lives as long as the broker: namespaces are bounded by the uids and labels
 * that ever connected, and counters must not reset when a tenant's last
 * extent goes. Containers' namespaces are the exception: their numbers are
 * never given again once the broker forgets the container (identity.c), so
 * their counters go with it (tally_forget_label). A list is enough: it is walked once per counted request, as
 * the store's namespace table is.
 */
#include "tally.h"

#include <stdlib.h>

struct TallyEntry {
        uint64_t namespace_id;
        Tally tally;
        TallyEntry *next;
};

static TallyEntry *find(const TallyTable *t, uint64_t ns) {
        for (TallyEntry *e = t->head; e; e = e->next)
                if (e->namespace_id == ns)
                        return e;
        return NULL;
}

Tally *tally_get(TallyTable *t, uint64_t ns) {
        TallyEntry *e = find(t, ns);

        if (!e) {
                e = calloc(1, sizeof(*e));
                if (!e)
                        return NULL;
                e->namespace_id = ns;
                e->next = t->head;
                t->head = e;
        }
        return &e->tally;
}

Tally tally_of(const TallyTable *t, uint64_t ns) {
        const TallyEntry *e = find(t, ns);
        return e ? e->tally : (Tally){ 0 };
}

void tally_forget_label(TallyTable *t, uint32_t label) {
        for (TallyEntry **p = &t->head; *p;) {
                TallyEntry *e = *p;
                if ((uint32_t)(e->namespace_id >> 32) == label) {
                        *p = e->next;
                        free(e);
                } else
                        p = &e->next;
        }
}

void tally_table_clear(TallyTable *t) {
        while (t->head) {
                TallyEntry *e = t->head;
                t->head = e->next;
                free(e);
        }
}
