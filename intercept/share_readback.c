/*
 * Read-back for keys (assembly): device bytes go to pinned host staging by
 * asynchronous copies on a stream of SAGE's own, a batch of pieces into
 * one half of the staging while the batch in the other half is hashed
 * (sage_share_content_chunks, which spreads a piece's chunks over
 * threads). So the read-back runs at DMA speed with the hash behind it;
 * before, one synchronous copy per key chunk, hashed after it, waited for
 * both in turn (bert on the H100: 100 MB in 30.8 ms with the lookups and
 * remaps).
 *
 * The staging is small and fixed (two halves of SHARE_READBACK_HALF): a
 * range longer than a half is read in pieces of a half, each a whole
 * number of key chunks, whose chunk hashes make the range's key once all
 * landed. Staging sized to the longest range (up to 2 x 32 MiB) was made
 * at the first assembly, on the app's path: pinning that much cost ~5 ms
 * there (resnet50, bert on the H100). It is made once per process, ahead
 * of time where the warm-up ran (share_prestage).
 *
 * While a half's copies are in flight the caller's thread has nothing to
 * do but wait: it takes steps of the caller's work there (ShareReadbackHooks:
 * assembly backs the deferred pieces, which the first launch needs too;
 * resnet50's 1.26 ms of backing came after its 2.14 ms read-back on the
 * H100, f3ef3ed), as long as the stream says its copies are not done. Each
 * key is told as soon as its range is hashed, not at the end: assembly's
 * lookups go to the broker while the rest is read (bert's 34 waited
 * 4.5-7 ms after a 10 ms read-back there).
 *
 * Without a stream (no entry points, or making one failed) the same runs
 * with synchronous copies; without pinned memory, through malloc'd memory
 * (the driver then copies synchronously too). Any failure leaves the range
 * unkeyed: it stays private.
 */
#include "share_readback.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "capture_mode.h"
#include "share_key.h"
#include "share_stage.h"
#include "stats.h"
#include "util.h"

#define HALF SHARE_READBACK_HALF
_Static_assert(HALF % SAGE_CONTENT_KEY_CHUNK == 0, "a piece hashes whole key chunks");

/* What a fork()ed parent made is not this process's to use or free (its CUDA is not the child's). */
static void forget_if_inherited(ShareReadback *rb) {
        if (rb->owner != getpid())
                *rb = (ShareReadback){ .owner = getpid() };
}

static void release_staging(ShareReadback *rb, const SageShareDriver *drv) {
        if (rb->host && rb->registered)
                share_unpin_registered(rb->host, 2 * HALF, drv->host_unregister);
        else if (rb->host && rb->pinned)
                drv->free_host(rb->host);
        else
                free(rb->host);
        rb->host = NULL;
        rb->pinned = rb->registered = false;
}

void share_readback_release(ShareReadback *rb, const SageShareDriver *drv) {
        forget_if_inherited(rb);
        release_staging(rb, drv);
        if (rb->stream_made)
                drv->stream_destroy(rb->stream);
        *rb = (ShareReadback){ 0 };
}

static bool have_streams(const SageShareDriver *drv) {
        return drv->stream_create && drv->stream_destroy && drv->stream_synchronize && drv->copy_dtoh_async;
}

/*
 * The stream for context `ctx`: the one kept, made there at the first
 * read-back (a stream belongs to its context; another context's read-back,
 * rare, gets one for the call: *temp). NULL: synchronous copies.
 */
static CUstream stream_for(ShareReadback *rb, const SageShareDriver *drv, CUcontext ctx, bool *temp) {
        CUstream st = NULL;

        *temp = false;
        if (!have_streams(drv))
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

/*
 * The two halves, made once; false: no staging at all. Pinned as the miss
 * path's staging is (the pages made outside the driver, then registered:
 * cuMemAllocHost held the app's copies for as long as it made them), else
 * by cuMemAllocHost, else malloc'd.
 */
static bool staging(ShareReadback *rb, const SageShareDriver *drv) {
        CUstreamCaptureMode mode;
        void *host = NULL;
        CUresult r;

        if (rb->host)
                return true;
        mode = sage_capture_relax(drv->exchange_capture_mode); /* an app thread may capture elsewhere */
        if (drv->host_register && drv->host_unregister &&
            (host = share_pin_registered(2 * HALF, drv->host_register, &r)))
                rb->pinned = rb->registered = true;
        else if (drv->alloc_host(&host, 2 * HALF) == CUDA_SUCCESS && host)
                rb->pinned = true;
        sage_capture_restore(drv->exchange_capture_mode, mode);
        if (!host && !(host = malloc(2 * HALF)))
                return false;
        rb->host = host;
        return true;
}

bool share_readback_prepare(ShareReadback *rb, const SageShareDriver *drv, CUcontext ctx) {
        bool temp;

        forget_if_inherited(rb);
        if (!staging(rb, drv))
                return false;
        if (ctx && !rb->stream_made)
                stream_for(rb, drv, ctx, &temp); /* nothing kept yet: never a temporary */
        return true;
}

/* A piece of range r[range]: bytes [off, off+len) of it, at most a half. */
typedef struct Slice {
        size_t range, off, len;
} Slice;

typedef struct Pipe {
        const SageShareDriver *drv;
        CUstream stream; /* NULL: synchronous copies */
        char *host;
        ShareReadRange *r;
        const Slice *s;
        size_t n;
        SageHash *chunks; /* the chunk hashes of every range, range i's from chunks + first[i] */
        const size_t *first;
        const ShareReadbackHooks *hooks; /* NULL: none */
        bool stepping;                   /* hooks->step has steps left */
} Pipe;

/* The end of the batch starting at s[lo]: the pieces after it that fit one half with it. */
static size_t batch_end(const Pipe *p, size_t lo) {
        size_t end = lo, bytes = 0;

        while (end < p->n && p->s[end].len <= HALF - bytes)
                bytes += p->s[end++].len;
        return end;
}

/* Start copying the pieces s[lo, hi) into half h, one after the other. */
static void issue(Pipe *p, size_t lo, size_t hi, unsigned h) {
        char *to = p->host + h * HALF;

        for (size_t k = lo; k < hi; k++) {
                const Slice *x = &p->s[k];
                CUdeviceptr at = p->r[x->range].at + x->off;
                CUresult c = p->stream ? p->drv->copy_dtoh_async(to, at, x->len, p->stream)
                                       : p->drv->copy_dtoh(to, at, x->len);

                if (c != CUDA_SUCCESS)
                        p->r[x->range].result = -EIO;
                to += x->len;
        }
}

/*
 * Hash the pieces s[lo, hi) from half h (their copies landed) into their
 * ranges' chunk hashes. Pieces of whole chunks lie in the half as their
 * chunk hashes lie in p->chunks (in order, back to back), so a stretch of
 * them is hashed in one call: a half of 2 MiB runs (bert's) was four calls
 * of four chunks each, on four threads of the pool and one after the
 * other, and is one call of sixteen chunks on all of them. A piece that
 * failed to copy is hashed too, never used.
 */
static void hash_batch(Pipe *p, size_t lo, size_t hi, unsigned h) {
        const char *from = p->host + h * HALF;

        for (size_t k = lo, end; k < hi; k = end) {
                size_t len = p->s[k].len;

                for (end = k + 1; end < hi && p->s[end - 1].len % SAGE_CONTENT_KEY_CHUNK == 0; end++)
                        len += p->s[end].len;
                sage_share_content_chunks(from, len,
                                          p->chunks + p->first[p->s[k].range] + p->s[k].off / SAGE_CONTENT_KEY_CHUNK);
                from += len;
        }
}

/* The caller's steps while the copies issued are in flight (a stream of ours, which says when it is done). */
static void meanwhile(Pipe *p) {
        if (!p->stepping || !p->stream || !p->drv->stream_query)
                return;
        while (p->drv->stream_query(p->stream) == CUDA_ERROR_NOT_READY)
                if (!p->hooks->step(p->hooks->ctx)) {
                        p->stepping = false;
                        return;
                }
}

/* The ranges whose last piece is among s[lo, hi) (hashed): their keys, told to the hooks. */
static void keys_known(Pipe *p, size_t lo, size_t hi) {
        for (size_t k = lo; k < hi; k++) {
                ShareReadRange *r = &p->r[p->s[k].range];

                if (p->s[k].off + p->s[k].len < r->len || r->result != 0)
                        continue;
                r->key =
                        sage_content_key_combine(p->chunks + p->first[p->s[k].range], sage_content_key_nchunks(r->len));
                if (p->hooks && p->hooks->keyed)
                        p->hooks->keyed(p->hooks->ctx, p->s[k].range, r->key);
        }
}

/* False: a copy or a synchronize failed. */
static bool run_pipe(Pipe *p) {
        size_t lo = 0, hi = batch_end(p, 0);
        unsigned h = 0;
        bool ok = true;

        issue(p, lo, hi, h);
        while (lo < p->n) {
                size_t next = hi;
                uint64_t t;

                meanwhile(p);
                t = sage_now_ns();
                /* Batch [lo, hi) landed; the next one copies into the other half while this one is hashed. */
                if (p->stream && p->drv->stream_synchronize(p->stream) != CUDA_SUCCESS) {
                        for (size_t k = lo; k < p->n; k++)
                                p->r[p->s[k].range].result = -EIO;
                        return false;
                }
                if (hi < p->n)
                        issue(p, hi, next = batch_end(p, hi), h ^ 1);
                sage_stats_add(SAGE_STAT_SHARE_NS_ASSEMBLE_READ_DMA, sage_now_ns() - t);
                t = sage_now_ns();
                hash_batch(p, lo, hi, h);
                sage_stats_add(SAGE_STAT_SHARE_NS_ASSEMBLE_READ_HASH, sage_now_ns() - t);
                keys_known(p, lo, hi);
                lo = hi;
                hi = next;
                h ^= 1;
        }
        for (size_t k = 0; k < p->n; k++)
                ok &= p->r[p->s[k].range].result == 0;
        return ok;
}

/* r[0..n) cut into pieces of at most a half, in order; each range's first chunk hash. NULL: no memory. */
static Slice *slice(const ShareReadRange *r, size_t n, size_t *nslices, size_t *first, size_t *nchunks) {
        size_t count = 0;
        Slice *s;

        for (size_t i = 0; i < n; i++)
                count += r[i].len ? (r[i].len + HALF - 1) / HALF : 1;
        if (!(s = malloc(count * sizeof(*s))))
                return NULL;
        *nslices = 0;
        *nchunks = 0;
        for (size_t i = 0; i < n; i++) {
                size_t off = 0;

                first[i] = *nchunks;
                *nchunks += sage_content_key_nchunks(r[i].len);
                do {
                        size_t len = r[i].len - off < HALF ? r[i].len - off : HALF;

                        s[(*nslices)++] = (Slice){ i, off, len };
                        off += len;
                } while (off < r[i].len);
        }
        return s;
}

void share_readback_keys(ShareReadback *rb, ShareVmm *v, CUcontext ctx, ShareReadRange *r, size_t n,
                         const ShareReadbackHooks *hooks) {
        const SageShareDriver *drv = v->drv;
        size_t *first = NULL, nchunks = 0;
        Pipe p = { .drv = drv, .r = r, .hooks = hooks, .stepping = hooks && hooks->step };
        Slice *s = NULL;
        bool temp = false;

        for (size_t i = 0; i < n; i++)
                r[i].result = -EIO;
        if (!n || !share_readback_prepare(rb, drv, NULL) || !(first = malloc(n * sizeof(*first))) ||
            !(s = slice(r, n, &p.n, first, &nchunks)) || !(p.chunks = calloc(nchunks ? nchunks : 1, sizeof(SageHash))))
                goto out;
        for (size_t i = 0; i < n; i++)
                r[i].result = 0;
        if (!rb->pinned)
                sage_stats_count(SAGE_STAT_SHARE_READBACK_UNPINNED);
        p.host = rb->host;
        p.s = s;
        p.first = first;
        p.stream = stream_for(rb, drv, ctx, &temp);
        if (!run_pipe(&p) && p.stream && !temp) {
                /*
                 * The kept stream failed: its context may be gone (a reset;
                 * a new one may even get its address). Forgotten, not
                 * destroyed (the handle may be stale), so the next
                 * read-back makes a new one.
                 */
                rb->stream_made = false;
                rb->stream = NULL;
        }
        if (temp)
                drv->stream_destroy(p.stream);
out:
        free(p.chunks);
        free(s);
        free(first);
}
