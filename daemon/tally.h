/* saged's request counters (hits, misses, publishes, rejections), broker-wide and per namespace. */
#pragma once

#include <stdint.h>

typedef struct Tally {
        uint64_t hits;
        uint64_t misses;
        uint64_t publishes;
        uint64_t rejected_budget;
        uint64_t rejected_content; /* published bytes that did not match their content key */
} Tally;

typedef struct TallyEntry TallyEntry;
typedef struct TallyTable {
        TallyEntry *head;
} TallyTable;

/* The counters of `namespace_id`, created at first use; NULL only when out of memory. */
Tally *tally_get(TallyTable *table, uint64_t namespace_id);
/* All zero for a namespace never counted. */
Tally tally_of(const TallyTable *table, uint64_t namespace_id);
void tally_table_clear(TallyTable *table);
/* Drop the counters of every namespace whose label half is `label`: for
 * numbers that never come back (a container the broker forgot). */
void tally_forget_label(TallyTable *table, uint32_t label);
