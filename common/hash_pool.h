/* Hashing the chunks of one content key on several threads of a persistent pool (hash_pool.c). */
#pragma once

#include <stddef.h>

#include "hash.h"

/*
 * The hashes of the chunks of `size` bytes into chunks[sage_content_key_nchunks(size)],
 * by the calling thread and up to `threads` - 1 pool threads: returns once every
 * chunk is hashed. Never fails: without helpers the calling thread hashes them all.
 */
void sage_hash_pool_chunks(const void *data, size_t size, SageHash *chunks, unsigned threads);

/* The pool's threads started in this process (tests). */
unsigned sage_hash_pool_threads(void);

#define SAGE_HASH_POOL_MAX 16
