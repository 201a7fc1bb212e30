/*
 * The miss path's copy: an upload the broker does not hold goes to the
 * device at DMA speed instead of through the driver's pageable path (7x
 * slower, docs/figures.md), and is hashed on the way.
 *
 * The upload is cut into rounds of one staging buffer each. Hashing
 * threads take its 512 KiB key chunks in order and copy each into the round's
 * pinned buffer, hashing what they wrote (sage_hash_copy); the calling
 * thread sends a round as soon as all its chunks are in, by one async copy
 * on the buffer's own stream, and before a buffer takes a later round it
 * waits for that stream (the DMA engine may still be reading it). So the
 * host copy, the hash and the DMA of different rounds overlap, and the
 * chunk hashes give the content key (common/hash.h) of exactly the bytes
 * the device received: another thread of the app writing the source
 * meanwhile cannot make the key describe bytes that were not copied.
 *
 * Only the calling thread calls the driver (its context is current); the
 * hashing threads touch host memory only. The call returns once every
 * stream is idle, so a synchronous upload returns with its bytes on the
 * device, and an async one is complete before anything the app enqueues
 * after it. On any failure the work in flight is waited for and the
 * caller makes the copy its own way.
 */
#include "share_stage.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

#define CHUNK SAGE_CONTENT_KEY_CHUNK
#define MAX_THREADS 16

typedef struct Pipe {
        pthread_mutex_t lock;
        pthread_cond_t cond; /* `ready` grew, a round got its last chunk, or `failed` */
        ShareStage *st;
        const unsigned char *src;
        size_t n, nchunks, round_chunks, nrounds;
        size_t next;      /* the next chunk a hashing thread takes */
        size_t ready;     /* rounds whose buffer may be filled: [0, ready) */
        size_t *left;     /* per round: chunks not yet in its buffer */
        SageHash *hashes; /* per chunk */
        bool failed;      /* stop: the caller gives up */
        uint64_t cpu_ns;  /* the hashing threads' CPU time */
} Pipe;

static uint64_t thread_cpu_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void *hash_thread(void *arg) {
        Pipe *p = arg;
        uint64_t cpu = thread_cpu_ns();

        pthread_mutex_lock(&p->lock);
        while (!p->failed && p->next < p->nchunks) {
                size_t i = p->next++, round = i / p->round_chunks;
                size_t off = i * (size_t)CHUNK, len = p->n - off < CHUNK ? p->n - off : CHUNK;
                unsigned char *buf = p->st->buf[round % SHARE_STAGE_SLOTS];

                while (!p->failed && round >= p->ready)
                        pthread_cond_wait(&p->cond, &p->lock);
                if (p->failed)
                        break;
                pthread_mutex_unlock(&p->lock);
                p->hashes[i] = sage_hash_copy(buf + (i % p->round_chunks) * (size_t)CHUNK, p->src + off, len);
                pthread_mutex_lock(&p->lock);
                if (--p->left[round] == 0)
                        pthread_cond_broadcast(&p->cond);
        }
        p->cpu_ns += thread_cpu_ns() - cpu;
        pthread_mutex_unlock(&p->lock);
        return NULL;
}

void share_stage_init(ShareStage *st, const ShareStageDriver *drv, size_t bytes, unsigned threads) {
        *st = (ShareStage){ .drv = *drv };
        st->slot_bytes = bytes / SHARE_STAGE_SLOTS / CHUNK * CHUNK;
        st->threads = threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads;
}

void share_stage_release(ShareStage *st) {
        for (unsigned i = 0; i < SHARE_STAGE_SLOTS; i++) {
                if (st->stream[i])
                        st->drv.stream_destroy(st->stream[i]);
                if (st->buf[i])
                        st->drv.free_host(st->buf[i]);
                st->stream[i] = NULL;
                st->buf[i] = NULL;
        }
        st->ctx = NULL;
}

/* Buffers and streams in `ctx`: made once, made again only for another context. */
static int stage_ready(ShareStage *st, CUcontext ctx) {
        if (!st->slot_bytes || st->broken)
                return -ENODEV;
        if (st->ctx == ctx)
                return 0;
        share_stage_release(st); /* another context's: the app may have destroyed it */
        for (unsigned i = 0; i < SHARE_STAGE_SLOTS; i++)
                if (st->drv.alloc_host(&st->buf[i], st->slot_bytes) != CUDA_SUCCESS ||
                    st->drv.stream_create(&st->stream[i], CU_STREAM_NON_BLOCKING) != CUDA_SUCCESS) {
                        share_stage_release(st);
                        st->broken = true;
                        return -ENODEV;
                }
        st->ctx = ctx;
        return 0;
}

/* The calling thread: opens rounds as buffers come free, sends each round once it is full. */
static int submit_rounds(Pipe *p, CUdeviceptr dst) {
        ShareStage *st = p->st;
        size_t sent = 0;
        int r = 0;

        pthread_mutex_lock(&p->lock);
        while (sent < p->nrounds) {
                /* Open what the buffers allow: round k reuses round k - SLOTS's buffer, which was sent. */
                while (p->ready < p->nrounds && p->ready < sent + SHARE_STAGE_SLOTS) {
                        if (p->ready >= SHARE_STAGE_SLOTS) {
                                CUresult sync;

                                pthread_mutex_unlock(&p->lock); /* the hashing threads go on with open rounds */
                                sync = st->drv.stream_synchronize(st->stream[p->ready % SHARE_STAGE_SLOTS]);
                                pthread_mutex_lock(&p->lock);
                                if (sync != CUDA_SUCCESS) {
                                        r = -EIO;
                                        goto out;
                                }
                        }
                        p->ready++;
                        pthread_cond_broadcast(&p->cond);
                }
                while (p->left[sent])
                        pthread_cond_wait(&p->cond, &p->lock);
                {
                        size_t off = sent * p->round_chunks * (size_t)CHUNK;
                        size_t len = p->n - off < st->slot_bytes ? p->n - off : st->slot_bytes;
                        unsigned slot = sent % SHARE_STAGE_SLOTS;

                        if (st->drv.copy_htod_async(dst + off, st->buf[slot], len, st->stream[slot]) != CUDA_SUCCESS) {
                                r = -EIO;
                                goto out;
                        }
                }
                sent++;
        }
out:
        if (r < 0) {
                p->failed = true;
                pthread_cond_broadcast(&p->cond);
        }
        pthread_mutex_unlock(&p->lock);
        return r;
}

int share_stage_upload(ShareStage *st, CUcontext ctx, CUdeviceptr dst, const void *src, size_t n, SageHash *key,
                       ShareStageCost *cost) {
        uint64_t t0 = sage_now_ns(), cpu0 = thread_cpu_ns();
        pthread_t tids[MAX_THREADS];
        unsigned started = 0;
        Pipe p;
        int r;

        if (!n || (r = stage_ready(st, ctx)) < 0)
                return !n ? -EINVAL : r;
        p = (Pipe){ .st = st, .src = src, .n = n };
        p.nchunks = (n + CHUNK - 1) / CHUNK;
        p.round_chunks = st->slot_bytes / CHUNK;
        p.nrounds = (p.nchunks + p.round_chunks - 1) / p.round_chunks;
        p.left = calloc(p.nrounds, sizeof(*p.left));
        p.hashes = calloc(p.nchunks, sizeof(*p.hashes));
        if (!p.left || !p.hashes) {
                free(p.left);
                free(p.hashes);
                return -ENOMEM;
        }
        for (size_t k = 0; k < p.nrounds; k++)
                p.left[k] = k + 1 < p.nrounds ? p.round_chunks : p.nchunks - k * p.round_chunks;
        pthread_mutex_init(&p.lock, NULL);
        pthread_cond_init(&p.cond, NULL);
        for (unsigned t = 0; t < st->threads && t < p.nchunks; t++)
                if (pthread_create(&tids[started], NULL, hash_thread, &p) == 0)
                        started++;
        r = started ? submit_rounds(&p, dst) : -ENOMEM;
        if (!started)
                p.failed = true;
        for (unsigned t = 0; t < started; t++)
                pthread_join(tids[t], NULL);
        /* Every byte on the device, and no buffer read any more, whatever happened. */
        for (unsigned i = 0; i < SHARE_STAGE_SLOTS; i++)
                if (st->drv.stream_synchronize(st->stream[i]) != CUDA_SUCCESS)
                        r = -EIO;
        if (r == 0)
                *key = sage_content_key_combine(p.hashes, p.nchunks);
        else if (r == -EIO)
                share_stage_release(st); /* made again next time: the context may be gone */
        if (cost) {
                cost->wall_ns = sage_now_ns() - t0;
                cost->cpu_ns = p.cpu_ns + thread_cpu_ns() - cpu0;
        }
        pthread_cond_destroy(&p.cond);
        pthread_mutex_destroy(&p.lock);
        free(p.left);
        free(p.hashes);
        return r;
}
