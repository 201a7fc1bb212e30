/* The content keys of sharing (share_key.c). */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "hash.h"
#include "hash_pool.h"

/*
 * Content key of host bytes (common/hash.h): chunked XXH3-128, the chunks
 * hashed by this thread and a persistent pool of up to
 * sage_share_hash_threads() - 1 more. -1 on no memory. Callable on any host
 * memory, pinned included (assembly's read-back buffer).
 */
int sage_share_content_key(const void *data, size_t size, SageHash *out);

/*
 * The chunk hashes of `size` bytes (a whole number of chunks unless they
 * end the key) into chunks[sage_content_key_nchunks(size)], as
 * sage_share_content_key hashes them: a key read in pieces.
 */
void sage_share_content_chunks(const void *data, size_t size, SageHash *chunks);
/* How many times sage_share_content_chunks was called in this process (tests). */
unsigned long sage_share_chunk_calls(void);
/*
 * This thread's use of the hashing pool so far, summed over its calls of
 * sage_share_content_chunks (helpers that hashed a chunk, the waits for them,
 * its CPU time): an upload adds the difference over its keys to
 * SHARE_KEY_HELPERS, SHARE_NS_KEY_TAIL and SHARE_NS_KEY_CPU.
 */
SageHashPoolUse sage_share_key_use(void);

/*
 * How many threads hash a content key of several chunks on a machine of
 * `cpus` CPUs where `running` threads are runnable (this one included; 0:
 * unknown): at most half the CPUs, at most those idle, at least one.
 */
unsigned sage_share_hash_threads(long cpus, long running);
/* The CPUs this process may run on (its affinity mask, else those online). */
long sage_share_cpu_count(void);
/* Threads runnable on the machine now, the caller included (/proc/loadavg's 4th field); 0: unknown. */
long sage_share_running_now(void);

/* The same key of device bytes, read block by block into `buf` (sage_share_key_chunk() bytes) by `read`. */
int sage_share_device_key(int (*read)(void *ctx, size_t off, void *buf, size_t n), void *ctx, size_t size, void *buf,
                          SageHash *out);

/*
 * The size `buf` must have: SAGE_CONTENT_KEY_BLOCK, a whole number of
 * content-key chunks (one device copy hashes several chunks).
 */
size_t sage_share_key_chunk(void);
