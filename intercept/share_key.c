/*
 * The content keys of sharing: what an upload's bytes are known by when
 * nothing better is (file identity: share_file_key.c). XXH3-128 of each
 * 4 MiB chunk, then of the chunk hashes. The chunks are hashed by several
 * threads, but never by more than half the CPUs nor by more than are idle:
 * 16 processes hashing at once with 16 threads each made every one of
 * them 20 times slower (issue 14).
 * Device read-back (publishing, assembly) hashes the same chunks, so the
 * two compare, and the broker verifies the same key (common/hash.h).
 */
#include "share_key.h"

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define CHUNK SAGE_CONTENT_KEY_CHUNK /* common/hash.h: the broker verifies the same key */
#define MAX_HASH_THREADS 16

typedef struct HashJob {
        const unsigned char *data;
        size_t size;
        SageHash *chunks;
        size_t nchunks;
        unsigned thread, threads;
} HashJob;

static void *hash_worker(void *arg) {
        HashJob *j = arg;

        for (size_t i = j->thread; i < j->nchunks; i += j->threads) {
                size_t off = i * (size_t)CHUNK;
                size_t n = j->size - off < CHUNK ? j->size - off : CHUNK;
                j->chunks[i] = sage_hash(j->data + off, n);
        }
        return NULL;
}

unsigned sage_share_hash_threads(long cpus, long running) {
        long others = running > 1 ? running - 1 : 0, t = cpus / 2;

        if (cpus - others < t)
                t = cpus - others;
        return t < 1 ? 1 : t > MAX_HASH_THREADS ? MAX_HASH_THREADS : (unsigned)t;
}

/* The CPUs this process may run on (a container's cpuset, taskset), else those online. */
static long cpu_count(void) {
        cpu_set_t set;

        if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
                return CPU_COUNT(&set);
        return sysconf(_SC_NPROCESSORS_ONLN);
}

/* Threads runnable on the machine now, this one included (/proc/loadavg's 4th field); 0: unknown. */
static long running_now(void) {
        FILE *f = fopen("/proc/loadavg", "re");
        long running = 0;

        if (f && fscanf(f, "%*s %*s %*s %ld/", &running) != 1)
                running = 0;
        if (f)
                fclose(f);
        return running;
}

int sage_share_content_key(const void *data, size_t size, SageHash *out) {
        size_t nchunks = (size + CHUNK - 1) / CHUNK;
        unsigned threads = nchunks > 1 ? sage_share_hash_threads(cpu_count(), running_now()) : 1;
        SageHash *chunks = calloc(nchunks ? nchunks : 1, sizeof(*chunks));
        HashJob jobs[MAX_HASH_THREADS];
        pthread_t tids[MAX_HASH_THREADS];
        unsigned started = 0;

        if (!chunks)
                return -1;
        if (threads > nchunks)
                threads = nchunks ? (unsigned)nchunks : 1;
        for (unsigned t = 0; t < threads; t++) {
                jobs[t] = (HashJob){ data, size, chunks, nchunks, t, threads };
                if (t > 0 && pthread_create(&tids[t], NULL, hash_worker, &jobs[t]) == 0)
                        started |= 1u << t;
        }
        hash_worker(&jobs[0]);
        for (unsigned t = 1; t < threads; t++) {
                if (started & (1u << t))
                        pthread_join(tids[t], NULL);
                else
                        hash_worker(&jobs[t]);
        }
        *out = sage_content_key_combine(chunks, nchunks);
        free(chunks);
        return 0;
}

int sage_share_device_key(int (*read)(void *ctx, size_t off, void *buf, size_t n), void *ctx, size_t size, void *buf,
                          SageHash *out) {
        size_t nchunks = (size + CHUNK - 1) / CHUNK;
        SageHash *chunks = calloc(nchunks ? nchunks : 1, sizeof(*chunks));

        if (!chunks)
                return -1;
        for (size_t i = 0; i < nchunks; i++) {
                size_t off = i * (size_t)CHUNK, n = size - off < CHUNK ? size - off : CHUNK;
                if (read(ctx, off, buf, n) < 0) {
                        free(chunks);
                        return -1;
                }
                chunks[i] = sage_hash(buf, n);
        }
        *out = sage_content_key_combine(chunks, nchunks);
        free(chunks);
        return 0;
}

size_t sage_share_key_chunk(void) {
        return CHUNK;
}
