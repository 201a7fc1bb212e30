/* The generation count of the process's memory map (maps_watch.c). */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>

#include <stdint.h>

/* Moves when an mmap (MAP_FIXED), munmap or mremap touches a watched range. */
extern atomic_ulong sage_maps_generation;

/* Watch [lo, hi) from now on (false: too many watched ranges). Callers are serialized. */
bool sage_maps_watch(uintptr_t lo, uintptr_t hi);
/* Is [lo, hi) inside a watched range? */
bool sage_maps_watched(uintptr_t lo, uintptr_t hi);

/* Do those calls reach libsage's interposers (so the count can be trusted)? */
bool sage_maps_watch_active(void);
