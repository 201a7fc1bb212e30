/* Hashing the chunks of one content key on several threads of a persistent pool (hash_pool.c). */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "hash.h"

/* What one call used of the pool: how its key's time went when the CPUs are shared. */
typedef struct {
        unsigned helpers; /* pool threads that hashed a chunk (0: the calling thread alone) */
        uint64_t tail_ns; /* from the caller's last chunk to the return: its wait for the helpers' */
        uint64_t cpu_ns;  /* the calling thread's CPU time in the call, if over one chunk (helpers' not counted) */
} SageHashPoolUse;

/*
 * The hashes of the chunks of `size` bytes into chunks[sage_content_key_nchunks(size)],
 * by the calling thread and up to `threads` - 1 pool threads: returns once every
 * chunk is hashed. Never fails: without helpers the calling thread hashes them all.
 */
SageHashPoolUse sage_hash_pool_chunks(const void *data, size_t size, SageHash *chunks, unsigned threads);

/* The pool's threads started in this process (tests). */
unsigned sage_hash_pool_threads(void);

#define SAGE_HASH_POOL_MAX 16
