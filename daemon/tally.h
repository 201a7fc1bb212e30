/* saged's request counters (hits, misses, publishes, rejections), per namespace while it is connected or holds extents. */
#pragma once

#include <stddef.h>
#include <stdint.h>

typedef struct Tally {
        uint64_t hits;
        uint64_t misses;
        uint64_t publishes;
        uint64_t rejected_budget;
        uint64_t rejected_content; /* published bytes that did not match their content key */
} Tally;

#define TALLY_BUCKETS 1024

typedef struct TallyEntry TallyEntry;
typedef struct TallyTable {
        TallyEntry *buckets[TALLY_BUCKETS];
        size_t count;
} TallyTable;

/* The counters of `namespace_id`, created at first use; NULL only when out of memory. */
Tally *tally_get(TallyTable *table, uint64_t namespace_id);
/* The counters of `namespace_id` if it has any, else NULL (creates nothing). */
Tally *tally_find(TallyTable *table, uint64_t namespace_id);
/* All zero for a namespace never counted. */
Tally tally_of(const TallyTable *table, uint64_t namespace_id);
/* Drop one namespace's counters (its last connection went). */
void tally_forget(TallyTable *table, uint64_t namespace_id);
/* Namespaces with counters. */
size_t tally_count(const TallyTable *table);
void tally_table_clear(TallyTable *table);
