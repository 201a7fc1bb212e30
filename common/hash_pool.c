/*
 * A small pool of hashing threads, started on first use and kept: a hit
 * hashes every byte it maps, and starting threads for each key cost more
 * than hashing a 2 MiB tensor. The calling thread hashes too; the helpers
 * take chunks of its job from a shared counter until none is left, so a
 * helper that is slow to wake costs nothing (the caller takes its chunks);
 * one descheduled holding a chunk makes the caller wait (tail_ns says how
 * long: the time from its last chunk to the return; cpu_ns the caller's
 * CPU time, so that a key's wait for a CPU shows beside it).
 *
 * Fork: a child has none of the parent's threads; the atfork handler
 * forgets them (and any job of a thread the child lacks), so a child never
 * waits on a thread that does not exist, and starts its own pool.
 * Helpers block every signal: the app's signals go to the app's threads.
 */
#include "hash_pool.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "util.h"

#define HELPER_STACK (256u << 10)

typedef struct Job {
        const unsigned char *data;
        size_t size, nchunks;
        SageHash *chunks;
        atomic_size_t next; /* the next chunk to take */
        unsigned helpers;   /* helpers working on it (pool.lock) */
        unsigned joined;    /* helpers that hashed a chunk of it (pool.lock) */
        unsigned want;      /* at most this many helpers */
        struct Job *later;  /* the pool's list of jobs */
} Job;

static struct {
        pthread_mutex_t lock;
        pthread_cond_t work; /* a job came */
        pthread_cond_t left; /* a helper left a job */
        Job *jobs;
        _Atomic unsigned threads; /* written under lock, read by tests without */
} pool = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0 };

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* Chunks of `j` until none is left to take; how many this thread hashed. */
static size_t hash_chunks(Job *j) {
        size_t i, done = 0;

        while ((i = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) < j->nchunks) {
                size_t off = i * (size_t)SAGE_CONTENT_KEY_CHUNK;
                sage_content_key_chunks(j->data + off,
                                        j->size - off < SAGE_CONTENT_KEY_CHUNK ? j->size - off : SAGE_CONTENT_KEY_CHUNK,
                                        &j->chunks[i]);
                done++;
        }
        return done;
}

/* A job that wants another helper and has chunks left; pool.lock held. */
static Job *job_to_help(void) {
        for (Job *j = pool.jobs; j; j = j->later)
                if (j->helpers < j->want && atomic_load_explicit(&j->next, memory_order_relaxed) < j->nchunks)
                        return j;
        return NULL;
}

static void *helper(void *arg) {
        size_t done;

        pthread_mutex_lock(&pool.lock);
        for (;;) {
                Job *j = job_to_help();

                if (!j) {
                        pthread_cond_wait(&pool.work, &pool.lock);
                        continue;
                }
                j->helpers++;
                pthread_mutex_unlock(&pool.lock);
                done = hash_chunks(j);
                pthread_mutex_lock(&pool.lock);
                if (done) /* the caller may have taken the last chunk between the look and the take */
                        j->joined++;
                if (--j->helpers == 0)
                        pthread_cond_broadcast(&pool.left);
        }
        return arg;
}

static void forget_after_fork(void) {
        pool.lock = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
        pool.work = (pthread_cond_t)PTHREAD_COND_INITIALIZER;
        pool.left = (pthread_cond_t)PTHREAD_COND_INITIALIZER;
        pool.jobs = NULL;
        pool.threads = 0;
}

static void register_atfork(void) {
        (void)pthread_atfork(NULL, NULL, forget_after_fork);
}

/* Up to `n` helpers in the pool; pool.lock held. A thread that cannot start is done without. */
static void grow(unsigned n) {
        pthread_attr_t attr;
        sigset_t all, old;

        if (pool.threads >= n || pthread_attr_init(&attr) != 0)
                return;
        pthread_once(&atfork_once, register_atfork);
        (void)pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        (void)pthread_attr_setstacksize(&attr, HELPER_STACK);
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        while (pool.threads < n) {
                pthread_t t;
                if (pthread_create(&t, &attr, helper, NULL) != 0)
                        break;
                pool.threads++;
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        pthread_attr_destroy(&attr);
}

/* `job` on the calling thread and up to `threads` - 1 helpers (2 or more of each); what it used but CPU time. */
static SageHashPoolUse pooled(Job *job, unsigned threads) {
        SageHashPoolUse use = { 0, 0, 0 };
        uint64_t t;

        job->want = threads - 1 < job->nchunks - 1 ? threads - 1 : (unsigned)job->nchunks - 1;
        pthread_mutex_lock(&pool.lock);
        grow(job->want);
        job->later = pool.jobs;
        pool.jobs = job;
        for (unsigned i = 0; i < job->want; i++)
                pthread_cond_signal(&pool.work);
        pthread_mutex_unlock(&pool.lock);

        hash_chunks(job);
        t = sage_now_ns();

        /* Every chunk is taken; those a helper took are done once no helper is left in the job. */
        pthread_mutex_lock(&pool.lock);
        for (Job **p = &pool.jobs; *p; p = &(*p)->later)
                if (*p == job) {
                        *p = job->later;
                        break;
                }
        while (job->helpers)
                pthread_cond_wait(&pool.left, &pool.lock);
        use.helpers = job->joined;
        pthread_mutex_unlock(&pool.lock);
        use.tail_ns = sage_now_ns() - t;
        return use;
}

SageHashPoolUse sage_hash_pool_chunks(const void *data, size_t size, SageHash *chunks, unsigned threads) {
        Job job = { .data = data, .size = size, .chunks = chunks, .nchunks = sage_content_key_nchunks(size) };
        SageHashPoolUse use = { 0, 0, 0 };
        uint64_t cpu;

        if (threads > SAGE_HASH_POOL_MAX)
                threads = SAGE_HASH_POOL_MAX;
        if (job.nchunks < 2) { /* ~25 us of hashing: two CPU clock reads (system calls) would add 4% */
                sage_content_key_chunks(data, size, chunks);
                return use;
        }
        cpu = sage_clock_ns(CLOCK_THREAD_CPUTIME_ID);
        if (threads < 2)
                sage_content_key_chunks(data, size, chunks);
        else
                use = pooled(&job, threads);
        use.cpu_ns = sage_clock_ns(CLOCK_THREAD_CPUTIME_ID) - cpu;
        return use;
}

unsigned sage_hash_pool_threads(void) {
        return atomic_load(&pool.threads);
}
