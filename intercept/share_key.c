/*
 * The content keys of sharing: what an upload's bytes are known by when
 * nothing better is (file identity: share_file_key.c). XXH3-128 of each
 * 512 KiB chunk, then of the chunk hashes (common/hash.h). The chunks are
 * hashed by the calling thread and the threads of a persistent pool
 * (common/hash_pool.c), but never by more than half the CPUs nor by more
 * than are idle: 16 processes hashing at once with 16 threads each made
 * every one of them 20 times slower (issue 14); SAGE_SHARE_KEY_THREADS
 * fixes the number. A key of one chunk stays on the calling thread.
 * Device read-back (publishing, assembly) hashes the same chunks, so the
 * two compare, and the broker verifies the same key (common/hash.h).
 */
#include "share_key.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "hash_pool.h"
#include "options.h"
#include "util.h"

#define CHUNK SAGE_CONTENT_KEY_CHUNK /* common/hash.h: the broker verifies the same key */
#define BLOCK SAGE_CONTENT_KEY_BLOCK
/* The load is read again after this long: a hit keys dozens of tensors within a few ms. */
#define LOAD_TTL_NS (5u * 1000 * 1000)

unsigned sage_share_hash_threads(long cpus, long running) {
        long others = running > 1 ? running - 1 : 0, t = cpus / 2;

        if (cpus - others < t)
                t = cpus - others;
        return t < 1 ? 1 : t > SAGE_HASH_POOL_MAX ? SAGE_HASH_POOL_MAX : (unsigned)t;
}

/* The CPUs this process may run on (a container's cpuset, taskset), else those online. */
long sage_share_cpu_count(void) {
        cpu_set_t set;

        if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
                return CPU_COUNT(&set);
        return sysconf(_SC_NPROCESSORS_ONLN);
}

/* Threads runnable on the machine now, this one included (/proc/loadavg's 4th field); 0: unknown. */
long sage_share_running_now(void) {
        FILE *f = fopen("/proc/loadavg", "re");
        long running = 0;

        if (f && fscanf(f, "%*s %*s %*s %ld/", &running) != 1)
                running = 0;
        if (f)
                fclose(f);
        return running;
}

/* sage_share_hash_threads of now, read at most once per LOAD_TTL_NS (racing readers both read: harmless). */
static unsigned hash_threads_now(void) {
        static _Atomic uint64_t read_at;
        static _Atomic unsigned threads;
        uint64_t fixed = sage_options()->share_key_threads, now;

        if (fixed) /* SAGE_SHARE_KEY_THREADS */
                return fixed > SAGE_HASH_POOL_MAX ? SAGE_HASH_POOL_MAX : (unsigned)fixed;
        now = sage_clock_ns(CLOCK_MONOTONIC_COARSE) + 1; /* never 0: 0 is "not read" */
        if (atomic_load_explicit(&threads, memory_order_relaxed) &&
            now - atomic_load_explicit(&read_at, memory_order_relaxed) < LOAD_TTL_NS)
                return atomic_load_explicit(&threads, memory_order_relaxed);
        atomic_store_explicit(&threads, sage_share_hash_threads(sage_share_cpu_count(), sage_share_running_now()),
                              memory_order_relaxed);
        atomic_store_explicit(&read_at, now, memory_order_relaxed);
        return atomic_load_explicit(&threads, memory_order_relaxed);
}

/* Calls of sage_share_content_chunks in this process: each wakes the pool once (tests count them). */
static atomic_ulong chunk_calls;

unsigned long sage_share_chunk_calls(void) {
        return atomic_load_explicit(&chunk_calls, memory_order_relaxed);
}

static _Thread_local SageHashPoolUse key_use;

SageHashPoolUse sage_share_key_use(void) {
        return key_use;
}

/* On this thread if one chunk, else on the pool too. */
void sage_share_content_chunks(const void *data, size_t size, SageHash *chunks) {
        SageHashPoolUse use;

        atomic_fetch_add_explicit(&chunk_calls, 1, memory_order_relaxed);
        use = sage_hash_pool_chunks(data, size, chunks, size > CHUNK ? hash_threads_now() : 1);
        key_use.helpers += use.helpers;
        key_use.tail_ns += use.tail_ns;
        key_use.cpu_ns += use.cpu_ns;
}

int sage_share_content_key(const void *data, size_t size, SageHash *out) {
        size_t nchunks = sage_content_key_nchunks(size);
        SageHash *chunks = calloc(nchunks ? nchunks : 1, sizeof(*chunks));

        if (!chunks)
                return -1;
        sage_share_content_chunks(data, size, chunks);
        *out = sage_content_key_combine(chunks, nchunks);
        free(chunks);
        return 0;
}

int sage_share_device_key(int (*read)(void *ctx, size_t off, void *buf, size_t n), void *ctx, size_t size, void *buf,
                          SageHash *out) {
        size_t nchunks = sage_content_key_nchunks(size);
        SageHash *chunks = calloc(nchunks ? nchunks : 1, sizeof(*chunks));

        if (!chunks)
                return -1;
        for (size_t off = 0; off < size; off += BLOCK) {
                size_t n = size - off < BLOCK ? size - off : BLOCK;
                if (read(ctx, off, buf, n) < 0) {
                        free(chunks);
                        return -1;
                }
                sage_share_content_chunks(buf, n, &chunks[off / CHUNK]);
        }
        *out = sage_content_key_combine(chunks, nchunks);
        free(chunks);
        return 0;
}

size_t sage_share_key_chunk(void) {
        return BLOCK;
}
