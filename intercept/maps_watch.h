/* The generation count of the process's memory map (maps_watch.c). */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>

/* Moves on every mmap, munmap and mremap through the public symbols. */
extern atomic_ulong sage_maps_generation;

/* Do those calls reach libsage's interposers (so the count can be trusted)? */
bool sage_maps_watch_active(void);
