/*
 * Read-back for keys (assembly): device bytes go to pinned host staging by
 * asynchronous copies on a stream of SAGE's own, a batch of whole ranges
 * into one half of the staging while the batch in the other half is hashed
 * (sage_share_content_key, which spreads a key's chunks over threads). So
 * the read-back runs at DMA speed with the hash behind it; before, one
 * synchronous copy per key chunk, hashed after it, waited for both in turn
 * (bert on the H100: 100 MB in 30.8 ms with the lookups and remaps).
 *
 * Whole ranges per half, because a key is of a range's whole content and
 * the share_key.h functions take it in one piece. Without a stream (no
 * entry points, or making one failed) the same runs with synchronous
 * copies; without pinned memory, through malloc'd memory (the driver then
 * copies synchronously too). A range longer than the largest half is read
 * chunk by chunk as before (share_device_content). Any failure leaves the
 * range unkeyed: it stays private.
 */
#include "share_readback.h"

#include <errno.h>
#include <stdlib.h>

#include "share_key.h"
#include "share_publish.h"

#define MIN_HALF ((size_t)4 << 20)

static void release_staging(ShareReadback *rb, const SageShareDriver *drv) {
        if (rb->host && rb->pinned)
                drv->free_host(rb->host);
        else
                free(rb->host);
        rb->host = NULL;
        rb->half = 0;
        rb->pinned = false;
}

void share_readback_release(ShareReadback *rb, const SageShareDriver *drv) {
        release_staging(rb, drv);
        if (rb->stream_made)
                drv->stream_destroy(rb->stream);
        *rb = (ShareReadback){ 0 };
}

/*
 * The stream for context `ctx`: the one kept, made there at the first
 * read-back (a stream belongs to its context; another context's read-back,
 * rare, gets one for the call: *temp). NULL: synchronous copies.
 */
static CUstream stream_for(ShareReadback *rb, const SageShareDriver *drv, CUcontext ctx, bool *temp) {
        CUstream st = NULL;

        *temp = false;
        if (!drv->stream_create || !drv->stream_destroy || !drv->stream_synchronize || !drv->copy_dtoh_async)
                return NULL;
        if (rb->stream_made && rb->stream_ctx == ctx)
                return rb->stream;
        if (drv->stream_create(&st, CU_STREAM_NON_BLOCKING) != CUDA_SUCCESS)
                return NULL;
        if (rb->stream_made) {
                *temp = true;
                return st;
        }
        rb->stream = st;
        rb->stream_ctx = ctx;
        rb->stream_made = true;
        return st;
}

/* Halves of at least `need` bytes (at most SHARE_READBACK_MAX_HALF); false: no staging at all. */
static bool staging_for(ShareReadback *rb, const SageShareDriver *drv, size_t need) {
        size_t half = need < MIN_HALF ? MIN_HALF : need > SHARE_READBACK_MAX_HALF ? SHARE_READBACK_MAX_HALF : need;
        void *host = NULL;

        half = (half + MIN_HALF - 1) / MIN_HALF * MIN_HALF;
        if (half < sage_share_key_chunk()) /* the chunk-by-chunk path reads a chunk into a half */
                half = sage_share_key_chunk();
        if (rb->half >= half)
                return true;
        release_staging(rb, drv);
        if (drv->alloc_host(&host, 2 * half) == CUDA_SUCCESS && host)
                rb->pinned = true;
        else if (!(host = malloc(2 * half)))
                return false;
        rb->host = host;
        rb->half = half;
        return true;
}

typedef struct Pipe {
        const SageShareDriver *drv;
        CUstream stream; /* NULL: synchronous copies */
        ShareReadback *rb;
        ShareReadRange *r;
        const size_t *idx; /* the ranges that fit a half, in order */
        size_t n;
} Pipe;

/* The end of the batch starting at idx[lo]: the ranges after it that fit one half with it. */
static size_t batch_end(const Pipe *p, size_t lo) {
        size_t end = lo, bytes = 0;

        while (end < p->n && p->r[p->idx[end]].len <= p->rb->half - bytes)
                bytes += p->r[p->idx[end++]].len;
        return end;
}

/* Start copying the ranges idx[lo, hi) into half h, one after the other. */
static void issue(Pipe *p, size_t lo, size_t hi, unsigned h) {
        char *to = (char *)p->rb->host + h * p->rb->half;

        for (size_t k = lo; k < hi; k++) {
                ShareReadRange *x = &p->r[p->idx[k]];
                CUresult c = p->stream ? p->drv->copy_dtoh_async(to, x->at, x->len, p->stream)
                                       : p->drv->copy_dtoh(to, x->at, x->len);

                x->result = c == CUDA_SUCCESS ? 0 : -EIO;
                to += x->len;
        }
}

/* Key the ranges idx[lo, hi) from half h (their copies landed). */
static void hash_batch(Pipe *p, size_t lo, size_t hi, unsigned h) {
        const char *from = (const char *)p->rb->host + h * p->rb->half;

        for (size_t k = lo; k < hi; k++) {
                ShareReadRange *x = &p->r[p->idx[k]];

                if (x->result == 0 && sage_share_content_key(from, x->len, &x->key) < 0)
                        x->result = -ENOMEM;
                from += x->len;
        }
}

/* False: a copy or a synchronize failed. */
static bool run_pipe(Pipe *p) {
        size_t lo = 0, hi = batch_end(p, 0);
        unsigned h = 0;

        issue(p, lo, hi, h);
        while (lo < p->n) {
                size_t next = hi;

                /* Batch [lo, hi) landed; the next one copies into the other half while this one is hashed. */
                if (p->stream && p->drv->stream_synchronize(p->stream) != CUDA_SUCCESS) {
                        for (size_t k = lo; k < p->n; k++)
                                p->r[p->idx[k]].result = -EIO;
                        return false;
                }
                if (hi < p->n)
                        issue(p, hi, next = batch_end(p, hi), h ^ 1);
                hash_batch(p, lo, hi, h);
                lo = hi;
                hi = next;
                h ^= 1;
        }
        for (size_t k = 0; k < p->n; k++)
                if (p->r[p->idx[k]].result == -EIO)
                        return false;
        return true;
}

void share_readback_keys(ShareReadback *rb, ShareVmm *v, CUcontext ctx, ShareReadRange *r, size_t n) {
        const SageShareDriver *drv = v->drv;
        Pipe p = { .drv = drv, .rb = rb, .r = r };
        size_t need = 0, *idx;
        bool temp = false;

        for (size_t i = 0; i < n; i++) {
                r[i].result = -EIO;
                need = r[i].len > need ? r[i].len : need;
        }
        if (!n || !staging_for(rb, drv, need) || !(idx = malloc(n * sizeof(*idx))))
                return;
        p.idx = idx;
        for (size_t i = 0; i < n; i++)
                if (r[i].len <= rb->half)
                        idx[p.n++] = i;
                else /* longer than any half: chunk by chunk, synchronously */
                        r[i].result = share_device_content(v, r[i].at, r[i].len, rb->host, &r[i].key) < 0 ? -EIO : 0;
        if (p.n) {
                p.stream = stream_for(rb, drv, ctx, &temp);
                if (!run_pipe(&p) && p.stream && !temp) {
                        /*
                         * The kept stream failed: its context may be gone
                         * (a reset; a new one may even get its address).
                         * Forgotten, not destroyed (the handle may be stale),
                         * so the next read-back makes a new one.
                         */
                        rb->stream_made = false;
                        rb->stream = NULL;
                }
        }
        if (temp)
                drv->stream_destroy(p.stream);
        free(idx);
}
