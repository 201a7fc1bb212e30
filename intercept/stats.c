/*
 * The counters of libsage, declared once in stats.def. They live here, not
 * in the modules that count, so that every module can count without
 * depending on another one, and so that what prints them (the exit line
 * with SAGE_VERBOSE, the trace's otherData.stats, sage-trace through the
 * same .def) never needs a list of its own. Counting is a relaxed atomic
 * add: counters order nothing and are read only for reporting.
 */
#include "stats.h"

#include <stdatomic.h>

/* Process-wide by nature: what the process did. Written only through sage_stats_add. */
static atomic_ullong counters[SAGE_STAT_COUNT];

static const char *const names[SAGE_STAT_COUNT] = {
#define SAGE_STAT(name, text) #name,
#include "stats.def"
#undef SAGE_STAT
};

void sage_stats_add(SageStat stat, uint64_t n) {
        atomic_fetch_add_explicit(&counters[stat], n, memory_order_relaxed);
}

void sage_stats_sub(SageStat stat, uint64_t n) {
        atomic_fetch_sub_explicit(&counters[stat], n, memory_order_relaxed);
}

uint64_t sage_stats_get(SageStat stat) {
        return atomic_load_explicit(&counters[stat], memory_order_relaxed);
}

const char *sage_stats_name(SageStat stat) {
        return stat < SAGE_STAT_COUNT ? names[stat] : "?";
}

void sage_stats_print(FILE *f, bool json) {
        if (json)
                fputs("\"stats\":{", f);
        for (int i = 0; i < SAGE_STAT_COUNT; i++) {
                unsigned long long v = sage_stats_get((SageStat)i);
                if (json)
                        fprintf(f, "%s\"%s\":%llu", i ? "," : "", names[i], v);
                else
                        fprintf(f, "sage: stat %s=%llu\n", names[i], v);
        }
        if (json)
                fputs("}", f);
}
