/*
 * Micro-benchmark of the content key (common/hash.h), not a test: GB/s of
 * the key of 2 MiB, 4 MiB and 64 MiB buffers, the way keys were made
 * before (SSE2 kernel, 4 MiB chunks, threads started per key, the load
 * read per key) and now (the best kernel, 512 KiB chunks, the persistent
 * pool), on 1 and N threads. The buffers are taken in turn from an arena
 * larger than the CPU caches, so the bytes come from DRAM as a hit's do.
 *
 *   build/tests/unit/hash-bench [N threads (default: CPUs/2, at least 2)] [arena MiB (default 1024)]
 */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hash.h"
#include "hash_kernel.h"
#include "hash_pool.h"

#define OLD_CHUNK (4u << 20)

typedef struct OldJob {
        const unsigned char *data;
        size_t size, nchunks;
        SageHash *chunks;
        unsigned thread, threads;
} OldJob;

static void *old_worker(void *arg) {
        OldJob *j = arg;

        for (size_t i = j->thread; i < j->nchunks; i += j->threads) {
                size_t off = i * (size_t)OLD_CHUNK;
                j->chunks[i] = sage_hash_base_kernel.hash(j->data + off,
                                                          j->size - off < OLD_CHUNK ? j->size - off : OLD_CHUNK);
        }
        return NULL;
}

/* What each multi-chunk key cost before: the affinity and the load read, then threads started and joined. */
static SageHash old_key(const unsigned char *data, size_t size, unsigned threads) {
        size_t nchunks = (size + OLD_CHUNK - 1) / OLD_CHUNK;
        SageHash chunks[64], key;
        OldJob jobs[SAGE_HASH_POOL_MAX];
        pthread_t tids[SAGE_HASH_POOL_MAX];

        if (nchunks > 1) {
                cpu_set_t set;
                FILE *f = fopen("/proc/loadavg", "re");
                long running;
                (void)sched_getaffinity(0, sizeof(set), &set);
                if (f && fscanf(f, "%*s %*s %*s %ld/", &running) != 1)
                        running = 0;
                if (f)
                        fclose(f);
        }
        if (threads > nchunks)
                threads = (unsigned)nchunks;
        for (unsigned t = 0; t < threads; t++) {
                jobs[t] = (OldJob){ data, size, nchunks, chunks, t, threads };
                if (t > 0 && pthread_create(&tids[t], NULL, old_worker, &jobs[t]) != 0)
                        abort();
        }
        old_worker(&jobs[0]);
        for (unsigned t = 1; t < threads; t++)
                pthread_join(tids[t], NULL);
        key = sage_hash_base_kernel.hash(chunks, nchunks * sizeof(*chunks));
        return key;
}

static SageHash new_key(const unsigned char *data, size_t size, unsigned threads) {
        SageHash chunks[128];
        size_t n = sage_content_key_nchunks(size);

        sage_hash_pool_chunks(data, size, chunks, threads);
        return sage_content_key_combine(chunks, n);
}

static double now_s(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* GB/s of `key` over buffers of `size` taken in turn from the arena, for at least 0.3 s. */
static double rate(SageHash (*key)(const unsigned char *, size_t, unsigned), const unsigned char *arena,
                   size_t arena_size, size_t size, unsigned threads) {
        size_t slots = arena_size / size, done = 0;
        double t0 = now_s(), t;
        volatile uint64_t sink = 0;

        do {
                for (unsigned i = 0; i < 8; i++, done++)
                        sink += key(arena + (done % slots) * size, size, threads).low;
        } while ((t = now_s() - t0) < 0.3);
        return (double)done * (double)size / t / 1e9;
}

int main(int argc, char **argv) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        unsigned n = argc > 1 ? (unsigned)atoi(argv[1]) : (unsigned)(cpus / 2 > 2 ? cpus / 2 : 2);
        size_t arena_size = (argc > 2 ? (size_t)atoi(argv[2]) : 1024) << 20;
        const size_t sizes[] = { 2u << 20, 4u << 20, 64u << 20 };
        unsigned char *arena = malloc(arena_size);

        if (!arena || n < 1 || n > SAGE_HASH_POOL_MAX || arena_size < (64u << 20)) {
                fprintf(stderr, "usage: hash-bench [threads 1-%d] [arena MiB >= 64]\n", SAGE_HASH_POOL_MAX);
                return 2;
        }
        for (size_t i = 0; i < arena_size; i++)
                arena[i] = (unsigned char)(i * 131 + (i >> 12));
        /* The two give different keys (the chunk size differs); each agrees with itself on every thread count. */
        if (!sage_hash_equal(new_key(arena, 64u << 20, 1), new_key(arena, 64u << 20, n)) ||
            !sage_hash_equal(new_key(arena, 64u << 20, 1), sage_content_key(arena, 64u << 20)) ||
            !sage_hash_equal(old_key(arena, 64u << 20, 1), old_key(arena, 64u << 20, n))) {
                fprintf(stderr, "hash-bench: keys differ across thread counts\n");
                return 1;
        }
        printf("content key GB/s, %ld CPUs online, kernel now: %s, arena %zu MiB (DRAM-resident)\n", cpus,
               sage_hash_kernel()->name, arena_size >> 20);
        printf("%-8s %12s %12s %12s %12s\n", "size", "old 1 thr", "new 1 thr", "old N thr", "new N thr");
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
                printf("%-4zu MiB %12.2f %12.2f %12.2f %12.2f   (N = %u)\n", sizes[i] >> 20,
                       rate(old_key, arena, arena_size, sizes[i], 1), rate(new_key, arena, arena_size, sizes[i], 1),
                       rate(old_key, arena, arena_size, sizes[i], n), rate(new_key, arena, arena_size, sizes[i], n), n);
        free(arena);
        return 0;
}
