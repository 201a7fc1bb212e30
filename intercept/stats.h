/* libsage's counters (stats.def): one relaxed atomic each, printed at exit and in the trace. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef enum SageStat {
#define SAGE_STAT(name, text) SAGE_STAT_##name,
#include "stats.def"
#undef SAGE_STAT
        SAGE_STAT_COUNT,
} SageStat;

/* Add `n` to a counter (relaxed: counters order nothing). */
void sage_stats_add(SageStat stat, uint64_t n);

static inline void sage_stats_count(SageStat stat) {
        sage_stats_add(stat, 1);
}

/* Take `n` back from a counter (what a pass that is not the counter's own added meanwhile). */
void sage_stats_sub(SageStat stat, uint64_t n);

/* The value of one counter now. */
uint64_t sage_stats_get(SageStat stat);

/* The counter's name as stats.def spells it ("SHARE_HITS"). */
const char *sage_stats_name(SageStat stat);

/* Print every counter (text; or a JSON object body when json is true). */
void sage_stats_print(FILE *f, bool json);
