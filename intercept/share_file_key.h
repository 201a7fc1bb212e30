/* File-identity keys of sharing (share_file_key.c). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hash.h"

/* A file mapping of /proc/self/maps. */
typedef struct ShareVma {
        uintptr_t start, end;
        uint64_t pgoff, ino;
        unsigned major, minor;
        bool shared;
        char path[512];
} ShareVma;

/* The file mappings of the last parse of /proc/self/maps, kept while the map does not change. */
typedef struct ShareVmaCache {
        ShareVma *vmas;
        size_t n, cap;
        unsigned long generation; /* sage_maps_generation at the parse; 0: keep nothing */
        bool no_query;            /* the kernel has no PROCMAP_QUERY: parse (learned at the first lookup) */
} ShareVmaCache;

/*
 * File-identity key of host bytes that lie in one mapping of a regular
 * file, unwritten by this process. False when they do not. Callers
 * serialize use of `cache`.
 */
bool sage_share_file_key(ShareVmaCache *cache, const void *data, size_t size, SageHash *out);
