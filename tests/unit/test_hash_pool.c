/*
 * Unit test of common/hash_pool.c: the chunk hashes of the pool are those
 * of one thread for any size and thread count, every chunk is written
 * before the call returns, callers on several threads at once each get
 * theirs, the pool is kept (no thread per key), and a child after fork
 * starts a pool of its own instead of counting on the parent's threads.
 */
#include <dirent.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "hash.h"
#include "hash_pool.h"
#include "util.h"

#define CHUNK ((size_t)SAGE_CONTENT_KEY_CHUNK)
#define MAX_CHUNKS 40

static unsigned char *data;
static const size_t data_size = MAX_CHUNKS * CHUNK;

/* The pool's chunks of [off, off+size) equal one thread's; each chunk was written (no 0xff sentinel left). */
static void pool_matches(size_t off, size_t size, unsigned threads) {
        SageHash want[MAX_CHUNKS], got[MAX_CHUNKS];
        size_t n = sage_content_key_nchunks(size);

        memset(got, 0xff, sizeof(got));
        sage_content_key_chunks(data + off, size, want);
        sage_hash_pool_chunks(data + off, size, got, threads);
        for (size_t i = 0; i < n; i++)
                CHECK(sage_hash_equal(got[i], want[i]));
        for (size_t i = n; i < MAX_CHUNKS; i++)
                CHECK(got[i].low == UINT64_MAX && got[i].high == UINT64_MAX); /* nothing past the last */
}

static unsigned live_threads(void) {
        DIR *d = opendir("/proc/self/task");
        unsigned n = 0;

        CHECK(d);
        while (readdir(d))
                n++;
        closedir(d);
        return n - 2; /* . and .. */
}

static void *caller(void *arg) {
        unsigned seed = (unsigned)(uintptr_t)arg;

        for (unsigned i = 0; i < 40; i++)
                pool_matches((seed * 7 + i) % 64, (8 + seed) * CHUNK + i * 1000, 2 + (seed + i) % 6);
        return NULL;
}

int main(void) {
        data = malloc(data_size + 64);
        CHECK(data);
        for (size_t i = 0; i < data_size + 64; i++)
                data[i] = (unsigned char)(i * 131 + (i >> 11));

        /* Small keys and one thread: the calling thread alone, no pool. */
        pool_matches(0, 0, 8);
        pool_matches(3, 1000, 8);
        pool_matches(0, CHUNK, 8);
        pool_matches(1, 5 * CHUNK + 1, 1);
        CHECK(sage_hash_pool_threads() == 0);

        /* Any thread count, sizes around chunk edges; the helpers are kept, one fewer than the threads. */
        for (unsigned t = 2; t <= SAGE_HASH_POOL_MAX + 2; t++) {
                for (size_t size = CHUNK - 1; size < 6 * CHUNK; size += CHUNK / 2 + 1)
                        pool_matches(t % 64, size, t);
                pool_matches(0, 20 * CHUNK, t);
        }
        CHECK(sage_hash_pool_threads() == SAGE_HASH_POOL_MAX - 1);

        /* Every chunk done before the return, whoever hashed it: many rounds, many chunks. */
        for (unsigned i = 0; i < 100; i++)
                pool_matches(0, MAX_CHUNKS * CHUNK - i, 3 + i % 4);

        /*
         * What a call used: alone, no helper and no wait; pooled, at most the
         * helpers asked for (threads - 1, chunks - 1), the caller's tail after
         * its last chunk within the call; over many calls a helper takes part.
         * The caller's CPU time is counted either way, never more than the call took
         * (not for one chunk: the clock's system calls would cost more than the count is worth).
         */
        {
                SageHash got[MAX_CHUNKS];
                SageHashPoolUse use = sage_hash_pool_chunks(data, 20 * CHUNK, got, 1);
                unsigned joined = 0;

                CHECK(use.helpers == 0 && use.tail_ns == 0 && use.cpu_ns > 0);
                use = sage_hash_pool_chunks(data, CHUNK, got, 8); /* one chunk: on the calling thread */
                CHECK(use.helpers == 0 && use.tail_ns == 0 && use.cpu_ns == 0);
                for (unsigned i = 0; i < 200; i++) {
                        unsigned t = 2 + i % 6;
                        size_t chunks = 2 + i % 3;
                        uint64_t a = sage_now_ns(), took;
                        use = sage_hash_pool_chunks(data, chunks * CHUNK, got, t);
                        took = sage_now_ns() - a;
                        CHECK(use.helpers <= t - 1 && use.helpers <= chunks - 1);
                        CHECK(use.tail_ns > 0);
                        CHECK(use.tail_ns <= took);
                        CHECK(use.cpu_ns > 0 && use.cpu_ns <= took);
                        joined += use.helpers;
                }
                /* A loaded machine may run the caller through its chunks first: larger jobs, more tries. */
                for (unsigned i = 0; joined == 0 && i < 2000; i++)
                        joined += sage_hash_pool_chunks(data, MAX_CHUNKS * CHUNK, got, 4).helpers;
                CHECK(joined > 0);
        }

        /* Callers on several threads at once. */
        {
                pthread_t t[4];
                for (uintptr_t i = 0; i < 4; i++)
                        CHECK(pthread_create(&t[i], NULL, caller, (void *)i) == 0);
                for (unsigned i = 0; i < 4; i++)
                        CHECK(pthread_join(t[i], NULL) == 0);
        }

        /* A child has none of the parent's threads: it starts its own and does not wait on the parent's. */
        {
                unsigned before = live_threads();
                pid_t pid = fork();
                int status;

                CHECK(before >= SAGE_HASH_POOL_MAX);
                CHECK(pid >= 0);
                if (pid == 0) {
                        alarm(20); /* a hang fails the test, and is bounded */
                        CHECK(live_threads() == 1 && sage_hash_pool_threads() == 0);
                        pool_matches(0, 16 * CHUNK, 4);
                        CHECK(sage_hash_pool_threads() == 3 && live_threads() == 4);
                        _exit(0);
                }
                CHECK(waitpid(pid, &status, 0) == pid);
                CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
                pool_matches(0, 16 * CHUNK, 4); /* the parent's pool goes on */
        }
        free(data);
        puts("hash_pool: ok");
        return 0;
}
