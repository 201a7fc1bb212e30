/*
 * Learned placement of sharing's allocations (share_place.c,
 * SAGE_SHARE_PLACE): where in its reservation an allocation starts, so that
 * what a framework's pool uploads into it ends on a granule.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Offsets into a reservation are multiples of this: what cuMemAlloc's callers may rely on (>= 256). */
#define SHARE_PLACE_ALIGN 512u
#define SHARE_PLACE_MAX 4096u

typedef struct PlaceHint {
        uint64_t size;    /* the allocation's size, as the app asked */
        uint32_t ordinal; /* the how-manieth allocation of that size in the process (from 0) */
        uint32_t lead;    /* where in its reservation it starts */
} PlaceHint;

typedef struct SharePlace {
        char *path;      /* the program's hint file; NULL: placement off */
        PlaceHint *hint; /* sorted by (size, ordinal) */
        size_t nhint;
        PlaceHint *seen; /* per size: how many allocations so far (ordinal = that count) */
        size_t nseen;
        bool dirty;
} SharePlace;

/*
 * Placement for this program, hints from `dir` (a SAGE_SHARE_PLACE
 * directory; "" or NULL: off). The program is named by its executable and
 * command line, so two functions of one user do not share hints.
 */
void share_place_open(SharePlace *p, const char *dir);
/* Forget everything (placement off). */
void share_place_close(SharePlace *p);
/*
 * The next allocation of `size` bytes (granule `gran`): its ordinal among
 * allocations of that size, and the offset into its reservation it is to
 * start at (0 without a hint). Never more than gran - SHARE_PLACE_ALIGN.
 */
size_t share_place_next(SharePlace *p, size_t size, size_t gran, uint32_t *ordinal);
/* The lead share_place_next will give the allocation (size, ordinal); *passed: the app has made it already. */
size_t share_place_lead(const SharePlace *p, size_t size, uint32_t ordinal, size_t gran, bool *passed);
/* Allocation (size, ordinal) is to start at `lead` from now on. */
void share_place_learn(SharePlace *p, size_t size, uint32_t ordinal, size_t lead);
/* Write the hints back if any changed (a new file renamed over the old one). 0 or -errno. */
int share_place_save(SharePlace *p);
/* DIR/KIND-<program>: a hint file of this program (executable and command line); NULL: no memory. */
char *share_place_file(const char *dir, const char *kind);
/* Write `path` anew through write(f, ctx) if *dirty (a new file of our own renamed over it; then *dirty is
 * false). 0 or -errno. */
int share_place_write(const char *path, bool *dirty, void (*write)(FILE *, void *), void *ctx);
/*
 * The lead that puts app offset `x` (where the pool put a buffer after the
 * uploads) on a granule; false: none can (not aligned as the app may expect).
 */
bool share_place_lead_for(size_t x, size_t gran, size_t *lead);
