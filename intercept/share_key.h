/* The keys of sharing: content hashes and file identities (share_key.c). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hash.h"

/* Content key of host bytes: chunked XXH3-128, chunks hashed in parallel. -1 on no memory. */
int sage_share_content_key(const void *data, size_t size, SageHash *out);

/* The same key of device bytes, read chunk by chunk into `buf` (one chunk large) by `read`. */
int sage_share_device_key(int (*read)(void *ctx, size_t off, void *buf, size_t n), void *ctx, size_t size,
                          void *buf, SageHash *out);

/* The chunk size of both (the size `buf` must have). */
size_t sage_share_key_chunk(void);

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
} ShareVmaCache;

/*
 * File-identity key of host bytes that lie in one mapping of a regular
 * file, unwritten by this process. False when they do not. Callers
 * serialize use of `cache`.
 */
bool sage_share_file_key(ShareVmaCache *cache, const void *data, size_t size, SageHash *out);
