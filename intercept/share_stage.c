/*
 * The miss path's copy: an upload the broker does not hold goes to the
 * device at DMA speed instead of through the driver's pageable path (7x
 * slower, docs/figures.md), and is hashed on the way.
 *
 * The upload is cut into rounds of one staging buffer each. Copying
 * threads take its 512 KiB key chunks in order and copy each into the
 * round's pinned buffer, hashing what they wrote (sage_hash_copy); the
 * calling thread sends chunks as soon as 4 MiB in a row are in (or the
 * rest of the buffer), by one async copy on the buffer's own stream, and
 * before a buffer takes a later round it waits for that stream (the DMA
 * engine may still be reading it). So the host copy, the hash and the DMA
 * overlap, and the chunk hashes give the content key (common/hash.h) of
 * exactly the bytes the device received: another thread of the app
 * writing the source meanwhile cannot make the key describe bytes that
 * were not copied.
 *
 * Where the time goes (an H100 host, issue 14): a thread copies and hashes
 * ~3 GB/s, the DMA takes ~55, so the host needs every idle core
 * (share_stage_threads). Starting the threads per upload, and sending a
 * buffer only once all of it was in, cost each 128 MiB upload half its
 * rate: the threads are a pool kept between uploads, a chunk goes to the
 * DMA as soon as it is in, and a buffer is reused only once the one sent
 * after it is queued too, so the DMA engine has work while the caller
 * waits for a buffer. Each thread asks the kernel to map its chunk of the
 * source in one call (MADV_POPULATE_READ: a file mapping otherwise faults
 * per 64 KiB; only a read hint, errors ignored).
 *
 * Only the calling thread calls the driver (its context is current); the
 * copying threads touch host memory only. The call returns once every
 * stream is idle, so a synchronous upload returns with its bytes on the
 * device, and an async one is complete before anything the app enqueues
 * after it. On any failure the work in flight is waited for and the
 * caller makes the copy its own way.
 */
#include "share_stage.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "capture_mode.h"
#include "util.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 /* Linux 5.14; older kernels say EINVAL, and the threads fault as before */
#endif

#define CHUNK SAGE_CONTENT_KEY_CHUNK
/* A DMA of fewer bytes wastes the engine's time (per-copy overhead); a buffer's last ones go anyway. */
#define SEND_MIN (4u << 20)
_Static_assert(SEND_MIN % CHUNK == 0, "whole chunks");
#define THREAD_STACK (1u << 20)

/* One upload, while it runs: the pool's lock guards it. */
typedef struct ShareStageJob {
        ShareStage *st;
        uint64_t t0;        /* share_stage_begin: the timeline's start */
        uint64_t begin_ns;  /* the time begin took: the caller's wait, with end's (not the work between) */
        uint64_t caller_ns; /* the caller's CPU time in begin and end */
        ShareStageCost c;
        const unsigned char *src;
        size_t n, nchunks, round_chunks, nrounds;
        size_t next;      /* the next chunk a copying thread takes */
        size_t ready;     /* rounds whose buffer may be filled: [0, ready) */
        size_t sent;      /* chunks [0, sent) went to the DMA */
        bool waiting;     /* the caller waits for chunks from `sent` on (`chunk` tells it) */
        unsigned used;    /* buffers this upload took so far: [0, used) */
        uint8_t *slot_of; /* per round: its buffer (set when the round opens) */
        bool *in;         /* per chunk: copied and hashed */
        SageHash *hashes; /* per chunk */
        bool failed;      /* stop: the caller gives up */
        uint64_t cpu_ns, copy_ns, wait_buf_ns;
        uint64_t all_in_ns; /* from t0 to the last chunk in */
        size_t nin;         /* chunks in */
        unsigned joined;
} StageJob;

/*
 * The copying threads, one pool per process, kept between uploads. A
 * child of fork() has none of the parent's threads, and its lock may have
 * been held when it was forked: `pid` tells, and the pool is made anew.
 */
static struct {
        pid_t pid; /* the process the pool belongs to; another one: made anew */
        pthread_mutex_t lock;
        pthread_cond_t work;  /* a job came, a round opened, or the job failed */
        pthread_cond_t done;  /* a thread left a job, the pool is free */
        pthread_cond_t chunk; /* the chunks the caller waits for are in (enough of them to send) */
        unsigned threads;     /* alive */
        unsigned seats;       /* threads the current job still takes */
        unsigned busy;        /* threads in the current job */
        StageJob *job;
} pool;

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void pool_forked(void) {
        pool.pid = 0;
}

static void register_atfork(void) {
        pthread_atfork(NULL, NULL, pool_forked);
}

/* The pool of this process, made anew after a fork (pid check: a raw clone() runs no atfork handler). */
static void pool_claim(void) {
        pthread_condattr_t attr;

        pthread_once(&atfork_once, register_atfork);
        if (pool.pid == getpid())
                return;
        pthread_mutex_init(&pool.lock, NULL);
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&pool.work, &attr);
        pthread_condattr_destroy(&attr);
        pthread_cond_init(&pool.done, NULL);
        pthread_cond_init(&pool.chunk, NULL);
        pool.threads = pool.seats = pool.busy = 0;
        pool.job = NULL;
        pool.pid = getpid();
}

static uint64_t thread_cpu_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Ask the kernel to map the source's pages in one call; only a hint (the copy faults what it did not map). */
static void populate(const unsigned char *p, size_t n) {
        uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), lo = (uintptr_t)p & ~(page - 1);

        (void)madvise((void *)lo, (uintptr_t)p + n - lo, MADV_POPULATE_READ);
}

/* A copying thread's share of job `j`: chunks in order until none is left. Under the pool's lock. */
static void run_job(StageJob *j) {
        uint64_t cpu = thread_cpu_ns(), copy = 0, wait = 0, t;

        while (!j->failed && j->next < j->nchunks) {
                size_t i = j->next++, round = i / j->round_chunks;
                size_t off = i * (size_t)CHUNK, len = j->n - off < CHUNK ? j->n - off : CHUNK;
                unsigned char *buf;

                if (round >= j->ready) {
                        t = sage_now_ns();
                        while (!j->failed && round >= j->ready)
                                pthread_cond_wait(&pool.work, &pool.lock);
                        wait += sage_now_ns() - t;
                }
                if (j->failed)
                        break;
                buf = j->st->buf[j->slot_of[round]];
                pthread_mutex_unlock(&pool.lock);
                t = sage_now_ns();
                populate(j->src + off, len);
                buf += (i % j->round_chunks) * (size_t)CHUNK;
                j->hashes[i] = j->st->streamed ? sage_hash_copy_streamed(buf, j->src + off, len)
                                               : sage_hash_copy(buf, j->src + off, len);
                copy += sage_now_ns() - t;
                pthread_mutex_lock(&pool.lock);
                j->in[i] = true;
                if (++j->nin == j->nchunks)
                        j->all_in_ns = sage_now_ns() - j->t0;
                /* Wake the caller only when it can send: each wake-up costs it the lock and a CPU. */
                if (j->waiting && share_stage_send_end(j->in, j->sent, j->round_chunks, j->nchunks, SEND_MIN / CHUNK))
                        pthread_cond_signal(&pool.chunk);
        }
        j->cpu_ns += thread_cpu_ns() - cpu;
        j->copy_ns += copy;
        j->wait_buf_ns += wait;
}

static void *pool_thread(void *arg) {
        struct timespec idle;

        (void)arg;
        pthread_mutex_lock(&pool.lock);
        for (;;) {
                clock_gettime(CLOCK_MONOTONIC, &idle);
                idle.tv_sec += SHARE_STAGE_IDLE_MS / 1000;
                idle.tv_nsec += (SHARE_STAGE_IDLE_MS % 1000) * 1000000l;
                if (idle.tv_nsec >= 1000000000l) {
                        idle.tv_sec++;
                        idle.tv_nsec -= 1000000000l;
                }
                while (!pool.job || !pool.seats)
                        if (pthread_cond_timedwait(&pool.work, &pool.lock, &idle) == ETIMEDOUT &&
                            (!pool.job || !pool.seats)) {
                                pool.threads--;
                                pthread_mutex_unlock(&pool.lock);
                                return NULL;
                        }
                pool.seats--;
                pool.busy++;
                pool.job->joined++;
                run_job(pool.job);
                pool.busy--;
                pthread_cond_broadcast(&pool.done);
        }
}

/* At least `want` threads alive (fewer where they cannot be started): how many are. Under the lock. */
static unsigned pool_grow(unsigned want) {
        sigset_t all, old;
        pthread_attr_t attr;
        pthread_t tid;

        if (pool.threads >= want)
                return pool.threads;
        /* The app's signals go to the app's threads, never to ours. */
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, THREAD_STACK);
        while (pool.threads < want && pthread_create(&tid, &attr, pool_thread, NULL) == 0)
                pool.threads++;
        pthread_attr_destroy(&attr);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        return pool.threads;
}

void share_stage_init(ShareStage *st, const ShareStageDriver *drv, size_t bytes) {
        memset(st, 0, sizeof(*st));
        st->drv = *drv;
        atomic_init(&st->made, 0);
        atomic_init(&st->pace, 0);
        st->slot_bytes = share_stage_slot_bytes(bytes);
        st->owner = getpid();
}

size_t share_stage_slot_bytes(size_t bytes) {
        return bytes / SHARE_STAGE_SLOTS / CHUNK * CHUNK;
}

/*
 * Buffers are pinned and streams made or destroyed in the relaxed capture
 * mode (capture_mode.h): on an app thread while another captures,
 * cuMemHostRegister in the global mode would spoil that capture.
 */
static CUstreamCaptureMode relaxed_begin(const ShareStage *st) {
        return sage_capture_relax(st->drv.exchange_capture_mode);
}

static void relaxed_end(const ShareStage *st, CUstreamCaptureMode mode) {
        sage_capture_restore(st->drv.exchange_capture_mode, mode);
}

void share_stage_release(ShareStage *st) {
        CUstreamCaptureMode mode = relaxed_begin(st);

        share_stage_forget_inherited(st);
        for (unsigned i = 0; i < SHARE_STAGE_SLOTS; i++) {
                if (st->stream[i])
                        st->drv.stream_destroy(st->stream[i]);
                share_stage_unpin(st, i);
                st->stream[i] = NULL;
        }
        relaxed_end(st, mode);
        atomic_store(&st->made, 0);
        atomic_store(&st->pace, 0); /* made again for another context (maybe another GPU), or after a failure */
        st->ctx = NULL;
}

int share_stage_make_slot(ShareStage *st, unsigned i) {
        CUstreamCaptureMode mode;
        int r = -ENODEV;

        if (i >= SHARE_STAGE_SLOTS)
                return -ENODEV;
        mode = relaxed_begin(st);
        if (share_stage_pin(st, i) == 0) {
                if (st->drv.stream_create(&st->stream[i], CU_STREAM_NON_BLOCKING) == CUDA_SUCCESS)
                        r = 0;
                else
                        share_stage_unpin(st, i);
        }
        relaxed_end(st, mode);
        if (r == 0)
                atomic_store_explicit(&st->made, i + 1, memory_order_release); /* an upload may take it now */
        return r;
}

bool share_stage_claim(ShareStage *st, CUcontext ctx) {
        share_stage_forget_inherited(st);
        if (!st->slot_bytes || st->broken || st->ctx || st->making)
                return false;
        st->ctx = ctx;
        st->making = true;
        return true;
}

size_t share_stage_made(ShareStage *st) {
        unsigned made = atomic_load(&st->made);

        st->making = false;
        if (made < SHARE_STAGE_MIN_SLOTS || st->broken) {
                share_stage_release(st);
                st->broken = true;
                return 0;
        }
        return made * st->slot_bytes;
}

/* Buffers and streams in `ctx`: made once, made again only for another context. */
int share_stage_prepare(ShareStage *st, CUcontext ctx) {
        share_stage_forget_inherited(st);
        if (!st->slot_bytes || st->broken)
                return -ENODEV;
        if (st->ctx == ctx)
                return atomic_load_explicit(&st->made, memory_order_acquire) >= SHARE_STAGE_MIN_SLOTS ? 0 : -ENODEV;
        if (st->making) /* for another context: its buffers are not ours to release */
                return -ENODEV;
        share_stage_release(st); /* another context's: the app may have destroyed it */
        for (unsigned i = 0; i < SHARE_STAGE_SLOTS; i++)
                if (share_stage_make_slot(st, i) < 0) {
                        share_stage_release(st);
                        st->broken = true;
                        return -ENODEV;
                }
        st->ctx = ctx;
        return 0;
}

/*
 * Which buffer round `k` takes: one this upload has not used yet, where
 * one is made (buffers made ahead come one by one), else the one used
 * longest ago, the round `used` before (the last `used` rounds took every
 * buffer once). Under the lock.
 */
static unsigned slot_for(const StageJob *j, size_t k, bool *fresh) {
        unsigned made = atomic_load_explicit(&j->st->made, memory_order_acquire);

        *fresh = j->used < made;
        return *fresh ? j->used : j->slot_of[k - j->used];
}

/*
 * May round `k` take its buffer, after `sent` chunks went to the DMA? A
 * buffer no round used yet, or the buffer's previous round and the one
 * after it must be sent: waiting for the first's stream then leaves the
 * second queued on the DMA engine.
 */
static bool may_open(const StageJob *j, size_t k, size_t sent) {
        bool fresh;

        (void)slot_for(j, k, &fresh);
        return fresh || (k - j->used + 2) * j->round_chunks <= sent;
}

size_t share_stage_send_end(const bool *in, size_t sent, size_t round_chunks, size_t nchunks, size_t min_chunks) {
        size_t end = sent, round_end = (sent / round_chunks + 1) * round_chunks;

        if (round_end > nchunks)
                round_end = nchunks;
        while (end < round_end && in[end])
                end++;
        if (end - sent < min_chunks && end < round_end)
                return 0;
        return end;
}

/* A staging stream waited for, relaxed: the driver refuses even that while another thread captures (global mode). */
static CUresult sync_slot(ShareStage *st, unsigned slot) {
        CUstreamCaptureMode mode = relaxed_begin(st);
        CUresult r = st->drv.stream_synchronize(st->stream[slot]);

        relaxed_end(st, mode);
        return r;
}

/* Wait for a stream with the pool's lock dropped (the copying threads go on). */
static CUresult sync_unlocked(ShareStage *st, unsigned slot, uint64_t *waited) {
        uint64_t t = sage_now_ns();
        CUresult r;

        pthread_mutex_unlock(&pool.lock);
        r = sync_slot(st, slot);
        pthread_mutex_lock(&pool.lock);
        *waited += sage_now_ns() - t;
        return r;
}

/*
 * Open the rounds whose buffers may be filled now, `sent` chunks sent (a
 * reused buffer's stream waited for; a fresh one needs no driver call).
 * Under the lock.
 */
static int open_rounds(StageJob *j, size_t sent) {
        unsigned slot;
        bool fresh;

        while (j->ready < j->nrounds && may_open(j, j->ready, sent)) {
                slot = slot_for(j, j->ready, &fresh);
                if (!fresh && sync_unlocked(j->st, slot, &j->c.wait_dma_ns) != CUDA_SUCCESS)
                        return -EIO;
                j->used += fresh;
                j->slot_of[j->ready++] = (uint8_t)slot;
                j->c.rounds++;
                pthread_cond_broadcast(&pool.work);
        }
        return 0;
}

/* The calling thread: opens rounds as buffers come free, sends chunks as they come in. Under the lock. */
static int submit(StageJob *j, CUdeviceptr dst) {
        ShareStage *st = j->st;
        ShareStageCost *c = &j->c;
        size_t sent = 0;

        while (sent < j->nchunks) {
                size_t round = sent / j->round_chunks, end, off = sent * (size_t)CHUNK, len;
                unsigned slot;
                uint64_t t;
                CUresult r;

                if (open_rounds(j, sent) < 0)
                        return -EIO;
                if (!(end = share_stage_send_end(j->in, sent, j->round_chunks, j->nchunks, SEND_MIN / CHUNK))) {
                        t = sage_now_ns();
                        j->waiting = true;
                        while (!(
                                end = share_stage_send_end(j->in, sent, j->round_chunks, j->nchunks, SEND_MIN / CHUNK)))
                                pthread_cond_wait(&pool.chunk, &pool.lock);
                        j->waiting = false;
                        c->wait_host_ns += sage_now_ns() - t;
                }
                len = (end == j->nchunks ? j->n : end * (size_t)CHUNK) - off;
                slot = j->slot_of[round];
                pthread_mutex_unlock(&pool.lock);
                r = st->drv.copy_htod_async(dst + off,
                                            (unsigned char *)st->buf[slot] + (sent % j->round_chunks) * (size_t)CHUNK,
                                            len, st->stream[slot]);
                pthread_mutex_lock(&pool.lock);
                if (r != CUDA_SUCCESS)
                        return -EIO;
                if (!c->copies++)
                        c->first_dma_ns = sage_now_ns() - j->t0;
                j->sent = sent = end;
        }
        return 0;
}

/* Post job `j` to the pool with `want` seats; false: no thread could be started. Under the lock. */
static bool pool_post(StageJob *j, unsigned want) {
        while (pool.job) /* another ShareStage's upload (one per process in libsage; tests have more) */
                pthread_cond_wait(&pool.done, &pool.lock);
        want = pool_grow(want) < want ? pool.threads : want;
        if (!want)
                return false;
        pool.job = j;
        pool.seats = want;
        pthread_cond_broadcast(&pool.work);
        return true;
}

/* Take job `j` back: no thread touches it or its buffers any more. Under the lock. */
static void pool_finish(StageJob *j, int r) {
        if (r < 0) {
                j->failed = true;
                pthread_cond_broadcast(&pool.work);
        }
        pool.seats = 0;
        while (pool.busy)
                pthread_cond_wait(&pool.done, &pool.lock);
        pool.job = NULL;
        pthread_cond_broadcast(&pool.done);
}

static void job_free(StageJob *j) {
        free(j->in);
        free(j->hashes);
        free(j->slot_of);
        free(j);
}

int share_stage_begin(ShareStage *st, CUcontext ctx, const void *src, size_t n, unsigned threads, ShareStageJob **out) {
        uint64_t t0 = sage_now_ns(), cpu0 = thread_cpu_ns();
        unsigned pace;
        StageJob *j;
        int r;

        *out = NULL;
        if (!n || (r = share_stage_prepare(st, ctx)) < 0)
                return !n ? -EINVAL : r;
        if (!(j = calloc(1, sizeof(*j))))
                return -ENOMEM;
        *j = (StageJob){ .st = st, .src = src, .n = n, .t0 = t0 };
        j->nchunks = (n + CHUNK - 1) / CHUNK;
        j->round_chunks = st->slot_bytes / CHUNK;
        j->nrounds = (j->nchunks + j->round_chunks - 1) / j->round_chunks;
        j->in = calloc(j->nchunks, sizeof(*j->in));
        j->hashes = calloc(j->nchunks, sizeof(*j->hashes));
        j->slot_of = calloc(j->nrounds, sizeof(*j->slot_of));
        if (!j->in || !j->hashes || !j->slot_of) {
                job_free(j);
                return -ENOMEM;
        }
        if (st->fixed_threads)
                threads = st->fixed_threads;
        else if (share_stage_paced(n, st->slot_bytes) &&
                 (pace = atomic_load_explicit(&st->pace, memory_order_relaxed)) && pace < threads)
                threads = pace; /* more would only slow the DMA (share_stage_pace) */
        threads = threads < 1 ? 1 : threads > SHARE_STAGE_MAX_THREADS ? SHARE_STAGE_MAX_THREADS : threads;
        j->c.offered = threads;
        j->c.streamed = st->streamed;
        pool_claim();
        pthread_mutex_lock(&pool.lock);
        if (!pool_post(j, threads < j->nchunks ? threads : (unsigned)j->nchunks)) {
                pthread_mutex_unlock(&pool.lock);
                job_free(j);
                return -ENOMEM;
        }
        (void)open_rounds(j, 0); /* the fresh buffers only: no driver call, cannot fail */
        pthread_mutex_unlock(&pool.lock);
        j->caller_ns = thread_cpu_ns() - cpu0;
        j->begin_ns = sage_now_ns() - t0;
        *out = j;
        return 0;
}

int share_stage_end(ShareStageJob *j, CUdeviceptr dst, SageHash *key, ShareStageCost *cost,
                    void (*meanwhile)(void *arg, SageHash key), void *arg) {
        ShareStage *st = j->st;
        uint64_t t0 = sage_now_ns(), cpu0 = thread_cpu_ns(), t, aside = 0;
        ShareStageCost *c = &j->c;
        int r;

        pthread_mutex_lock(&pool.lock);
        r = dst ? submit(j, dst) : -ECANCELED;
        pool_finish(j, r);
        pthread_mutex_unlock(&pool.lock);
        /* Every byte sent and hashed: the key is known while the DMA drains (nothing refills the buffers). */
        if (r == 0 && meanwhile) {
                t = sage_now_ns();
                meanwhile(arg, sage_content_key_combine(j->hashes, j->nchunks));
                aside = sage_now_ns() - t;
        }
        /* Every byte on the device, and no buffer read any more, whatever happened (cancelled: none sent). */
        t = sage_now_ns();
        for (unsigned i = 0; dst && i < j->used; i++) /* the buffers past them may be being made ahead */
                if (sync_slot(st, i) != CUDA_SUCCESS)
                        r = -EIO;
        c->drain_ns = sage_now_ns() - t;
        c->wait_dma_ns += c->drain_ns;
        t = sage_now_ns() - j->t0; /* the last byte on the device */
        c->dma_ns = c->copies ? t - c->first_dma_ns : 0;
        c->tail_ns = c->copies ? t - (j->all_in_ns > c->first_dma_ns ? j->all_in_ns : c->first_dma_ns) : 0;
        if (r == 0)
                *key = sage_content_key_combine(j->hashes, j->nchunks);
        else if (r == -EIO && st->making)
                st->broken = true; /* the maker releases them when it is done (share_stage_made) */
        else if (r == -EIO)
                share_stage_release(st); /* made again next time: the context may be gone */
        /* The caller's wait: not its own work between begin and end, nor meanwhile's (the broker's). */
        c->wall_ns = j->begin_ns + sage_now_ns() - t0 - aside;
        c->cpu_ns = j->cpu_ns + j->caller_ns + thread_cpu_ns() - cpu0;
        c->copy_ns = j->copy_ns;
        c->wait_buf_ns = j->wait_buf_ns;
        c->threads = j->joined;
        c->buffers = j->used;
        c->pace = atomic_load_explicit(&st->pace, memory_order_relaxed);
        if (r == 0 && !st->fixed_threads) {
                c->pace = share_stage_pace(c->pace, c->offered, j->n, st->slot_bytes, c);
                atomic_store_explicit(&st->pace, c->pace, memory_order_relaxed);
        }
        if (cost)
                *cost = *c;
        if (r == 0)
                share_stage_log_timeline(j->n, c);
        job_free(j);
        return r;
}

void share_stage_cancel(ShareStageJob *j) {
        share_stage_end(j, 0, NULL, NULL, NULL, NULL);
}

int share_stage_upload(ShareStage *st, CUcontext ctx, CUdeviceptr dst, const void *src, size_t n, unsigned threads,
                       SageHash *key, ShareStageCost *cost) {
        ShareStageJob *j;
        int r = share_stage_begin(st, ctx, src, n, threads, &j);

        return r < 0 ? r : share_stage_end(j, dst, key, cost, NULL, NULL);
}
