/*
 * Does a hit pay? (share_cost.c) What a hit and the copy it replaces cost
 * this process, learned from its own calls; an upload whose hit would cost
 * more than its copy is copied (SHARE_COPY_CHEAPER).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Decayed sums (each new sample weighs as much as the last 8 together), so
 * the rates follow the load: 16 processes at once slow hashing, the
 * driver's VMM calls and copies alike, each by its own factor.
 */
typedef struct ShareCost {
        uint64_t key_ns, key_bytes;   /* content keys of host bytes */
        uint64_t map_ns, maps;        /* a hit's broker lookup and remapping; maps in 1/1024ths */
        uint64_t copy_ns, copy_bytes; /* the app's own copies (whole ones and the ends of hits) */
        uint32_t nkey, nmap, ncopy;   /* samples so far (capped) */
        uint32_t copied;              /* uploads copied because the copy was cheaper */
        bool copying;                 /* the last choice made: the copy (hits do not pay now) */
} ShareCost;

/* Copies shorter than this are not sampled: their cost is the call's, not the bytes'. */
#define SHARE_COST_MIN_COPY (64u << 10)

void share_cost_key(ShareCost *c, size_t bytes, uint64_t ns);
void share_cost_map(ShareCost *c, uint64_t ns);
void share_cost_copy(ShareCost *c, size_t bytes, uint64_t ns);
/*
 * Would a hit on `len` bytes cost more than copying them? `keyed`: their
 * key costs a pass over them (a content key; a file key costs nothing).
 * False until each cost has been seen a few times, and for one in 8 of
 * the uploads it would copy: their hits keep the costs measured.
 */
bool share_cost_copy_cheaper(ShareCost *c, size_t len, bool keyed);
