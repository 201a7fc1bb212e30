/* The generation count of the process's memory map (maps_watch.c). */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>

#include <stdint.h>

/* The count now: it moves when an mmap (MAP_FIXED), munmap or mremap touches a watched range. */
unsigned long sage_maps_generation_now(void);

/*
 * The counter, read-only, under the name share_key.c reads it by
 * (atomic_load(&sage_maps_generation)); new code calls sage_maps_generation_now().
 */
const atomic_ulong *sage_maps_generation_counter(void);
#define sage_maps_generation (*sage_maps_generation_counter())

/* Watch [lo, hi) from now on (false: too many watched ranges). Callers are serialized. */
bool sage_maps_watch(uintptr_t lo, uintptr_t hi);
/* Is [lo, hi) inside a watched range? */
bool sage_maps_watched(uintptr_t lo, uintptr_t hi);

/* Do those calls reach libsage's interposers (so the count can be trusted)? */
bool sage_maps_watch_active(void);
