/*
 * Sharing for the allocators beyond cuMemAlloc (docs/sharing.md,
 * "Allocators"): what they hand out is backed by SAGE's VMM allocator, as
 * cuMemAlloc's allocations are, so their uploads take the one upload path
 * (share_upload.c) and the launch guard sees them.
 *
 * - Stream-ordered allocations (cuMemAllocAsync, cuMemAllocFromPoolAsync;
 *   XLA's and TensorFlow's cuda_malloc_async, RAPIDS) from the device's
 *   default pool: backed at once, which the stream order allows (the memory
 *   is usable earlier than promised, never later). The free waits for the
 *   work in flight (sage_share_free synchronizes the context), which the
 *   stream order allows too; a free while its stream is being captured
 *   cannot wait, so it is deferred until the next stream-ordered call that
 *   can. An allocation from a pool the app made (cuMemPoolCreate: its own
 *   handle types, access, IPC export) or one being captured is the
 *   driver's: SAGE cannot give memory a pool's properties.
 * - Pitched allocations (cuMemAllocPitch): backed with the pitch the driver
 *   chooses for that width (asked of the driver with one row). Their 2D
 *   uploads (cuMemcpy2D*, host to device) become one linear upload: as is
 *   when the rows are contiguous; else, while no write reached the span
 *   yet (a fresh allocation), the rows are laid out with zeroed padding in
 *   a host buffer first, so the key is the same in every run. The padding
 *   is memory the app never wrote: zeros are a value it may hold.
 *
 * Every failure takes the driver's own path with the app's arguments.
 */
#include <cuda.h>

#include "share.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"
#include "impl.h"
#include "log.h"
#include "options.h"
#include "share_state.h"

/* ---------------------------------------------------------------- stream-ordered */

/*
 * Frees that came while their stream was captured: the memory is the app's
 * no more, but the work using it may not have run. Global because the
 * frees of every thread and stream meet here; guarded by its own lock
 * (sage_share_free takes the sharing lock).
 */
#define DEFERRED_MAX 64
static pthread_mutex_t deferred_lock = PTHREAD_MUTEX_INITIALIZER;
static CUdeviceptr deferred[DEFERRED_MAX];
static size_t ndeferred;

static void flush_deferred(void) {
        CUdeviceptr va[DEFERRED_MAX];
        CUresult r;
        size_t n;

        pthread_mutex_lock(&deferred_lock);
        n = ndeferred;
        memcpy(va, deferred, n * sizeof(*va));
        ndeferred = 0;
        pthread_mutex_unlock(&deferred_lock);
        for (size_t i = 0; i < n; i++)
                sage_share_free(va[i], &r);
}

/* Is a stream-ordered allocation from `pool` (NULL: the device's current pool) one SAGE may back? */
static bool default_pool(SageShare *s, CUmemoryPool pool, CUstream stream) {
        const SageDriverExtras *x = &sage_driver_extras;
        CUmemoryPool def = NULL, cur = NULL;
        CUdevice dev;

        if (!sage_options()->share || !sage_options()->share_async || share_capturing(s, stream))
                return false;
        if (!x->ctx_get_device || !x->device_get_default_mem_pool || x->ctx_get_device(&dev) != CUDA_SUCCESS ||
            x->device_get_default_mem_pool(&def, dev) != CUDA_SUCCESS)
                return false;
        if (!pool) {
                if (!x->device_get_mem_pool || x->device_get_mem_pool(&cur, dev) != CUDA_SUCCESS)
                        return false;
                pool = cur;
        }
        return pool == def;
}

static CUresult alloc_async(CUdeviceptr *dptr, size_t size, CUmemoryPool pool, CUstream stream, bool *backed) {
        SageShare *s = sage_share();
        CUresult r = CUDA_SUCCESS;

        *backed = false;
        if (!dptr || size < sage_options()->share_min || !default_pool(s, pool, stream))
                return r;
        flush_deferred();
        *backed = sage_share_alloc(dptr, size, &r);
        return r;
}

CUresult sage_impl_cuMemAllocAsync(sage_fn_cuMemAllocAsync_t real, CUdeviceptr *dptr, size_t size, CUstream stream) {
        bool backed;
        CUresult r = alloc_async(dptr, size, NULL, stream, &backed);
        return backed ? r : SHARE_OOM_RETRY(real(dptr, size, stream));
}

CUresult sage_impl_cuMemAllocAsync_ptsz(sage_fn_cuMemAllocAsync_ptsz_t real, CUdeviceptr *dptr, size_t size,
                                        CUstream stream) {
        bool backed;
        CUresult r = alloc_async(dptr, size, NULL, sage_share_stream_of(stream, true), &backed);
        return backed ? r : SHARE_OOM_RETRY(real(dptr, size, stream));
}

CUresult sage_impl_cuMemAllocFromPoolAsync(sage_fn_cuMemAllocFromPoolAsync_t real, CUdeviceptr *dptr, size_t size,
                                           CUmemoryPool pool, CUstream stream) {
        bool backed;
        CUresult r = pool ? alloc_async(dptr, size, pool, stream, &backed) : (backed = false, CUDA_SUCCESS);
        return backed ? r : SHARE_OOM_RETRY(real(dptr, size, pool, stream));
}

CUresult sage_impl_cuMemAllocFromPoolAsync_ptsz(sage_fn_cuMemAllocFromPoolAsync_ptsz_t real, CUdeviceptr *dptr,
                                                size_t size, CUmemoryPool pool, CUstream stream) {
        bool backed;
        CUresult r = pool ? alloc_async(dptr, size, pool, sage_share_stream_of(stream, true), &backed)
                          : (backed = false, CUDA_SUCCESS);
        return backed ? r : SHARE_OOM_RETRY(real(dptr, size, pool, stream));
}

/* Is `va` the start of an allocation SAGE backs? */
static bool backed_here(SageShare *s, CUdeviceptr va) {
        SageShareAlloc *a;

        if (!va || !atomic_load_explicit(&s->active, memory_order_relaxed))
                return false;
        pthread_mutex_lock(&s->lock);
        a = share_vmm_find(&s->vmm, va, 1);
        pthread_mutex_unlock(&s->lock);
        return a && a->va == va;
}

static CUresult free_async(CUdeviceptr va, CUstream stream, bool *ours) {
        SageShare *s = sage_share();
        CUresult r = CUDA_SUCCESS;

        if (!(*ours = backed_here(s, va)))
                return r;
        if (share_capturing(s, stream)) {
                pthread_mutex_lock(&deferred_lock);
                if (ndeferred < DEFERRED_MAX)
                        deferred[ndeferred++] = va;
                else
                        sage_debug("share: %p freed while captured: kept until exit", (void *)(uintptr_t)va);
                pthread_mutex_unlock(&deferred_lock);
                return r;
        }
        flush_deferred();
        if (!sage_share_free(va, &r))
                *ours = false; /* freed by another thread meanwhile: the driver says what it says */
        return r;
}

CUresult sage_impl_cuMemFreeAsync(sage_fn_cuMemFreeAsync_t real, CUdeviceptr va, CUstream stream) {
        bool ours;
        CUresult r = free_async(va, stream, &ours);
        return ours ? r : real(va, stream);
}

CUresult sage_impl_cuMemFreeAsync_ptsz(sage_fn_cuMemFreeAsync_ptsz_t real, CUdeviceptr va, CUstream stream) {
        bool ours;
        CUresult r = free_async(va, sage_share_stream_of(stream, true), &ours);
        return ours ? r : real(va, stream);
}

/* ---------------------------------------------------------------- pitched */

CUresult sage_impl_cuMemAllocPitch_v2(sage_fn_cuMemAllocPitch_v2_t real, CUdeviceptr *dptr, size_t *pitch, size_t width,
                                      size_t height, unsigned elem) {
        CUdeviceptr probe;
        size_t p = 0, bytes;
        CUresult r;

        if (!dptr || !pitch || !sage_options()->share || !sage_options()->share_async ||
            __builtin_mul_overflow(width, height, &bytes) || bytes < sage_options()->share_min)
                return SHARE_OOM_RETRY(real(dptr, pitch, width, height, elem));
        /* The pitch is the driver's choice for this width and element size: one row tells it. */
        if (real(&probe, &p, width, 1, elem) != CUDA_SUCCESS)
                return SHARE_OOM_RETRY(real(dptr, pitch, width, height, elem));
        SAGE_REAL(cuMemFree_v2)(probe);
        if (!p || __builtin_mul_overflow(p, height, &bytes) || !sage_share_alloc(dptr, bytes, &r))
                return SHARE_OOM_RETRY(real(dptr, pitch, width, height, elem));
        *pitch = p;
        return r;
}

/* ---------------------------------------------------------------- 2D uploads */

/* One of the app's 2D copies: its own entry point, and the linear upload hooks that serve it. */
typedef struct Copy2D {
        const CUDA_MEMCPY2D *p;
        bool async, ptds;
        CUstream stream; /* as the app passed it */
} Copy2D;

/* Upload [src, src+n) to dst through sharing's linear upload entry points. */
static CUresult linear_upload(const Copy2D *c, CUdeviceptr dst, const void *src, size_t n) {
        if (c->async && c->ptds)
                return sage_impl_cuMemcpyHtoDAsync_v2_ptsz(SAGE_REAL(cuMemcpyHtoDAsync_v2_ptsz), dst, src, n,
                                                           c->stream);
        if (c->async)
                return sage_impl_cuMemcpyHtoDAsync_v2(SAGE_REAL(cuMemcpyHtoDAsync_v2), dst, src, n, c->stream);
        if (c->ptds)
                return sage_impl_cuMemcpyHtoD_v2_ptds(SAGE_REAL(cuMemcpyHtoD_v2_ptds), dst, src, n);
        return sage_impl_cuMemcpyHtoD_v2(SAGE_REAL(cuMemcpyHtoD_v2), dst, src, n);
}

/* May [dst, dst+n) get zeroed padding: inside one allocation SAGE backs, nothing written there yet? */
static bool untouched(SageShare *s, CUdeviceptr dst, size_t n) {
        SageShareAlloc *a;
        bool ok = false;

        pthread_mutex_lock(&s->lock);
        if ((a = share_vmm_find(&s->vmm, dst, n)) && share_vmm_fresh(&s->vmm, a)) {
                size_t off = dst - a->va;
                ok = !share_vmm_written_in(a, off, off + n);
        }
        pthread_mutex_unlock(&s->lock);
        return ok;
}

/* The host memory a 2D copy reads, or NULL: cudart names it unified (a UVA address) as often as host. */
static const char *host_source(SageShare *s, const CUDA_MEMCPY2D *p) {
        CUmemorytype type = 0;
        CUresult r;

        if (p->srcMemoryType == CU_MEMORYTYPE_HOST)
                return p->srcHost;
        if (p->srcMemoryType != CU_MEMORYTYPE_UNIFIED || !p->srcDevice || !s->drv.pointer_get_attribute)
                return NULL;
        r = s->drv.pointer_get_attribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, p->srcDevice);
        if (r == CUDA_ERROR_INVALID_VALUE || (r == CUDA_SUCCESS && type == CU_MEMORYTYPE_HOST))
                return (const char *)(uintptr_t)p->srcDevice;
        return NULL;
}

/*
 * A host-to-device 2D copy into memory SAGE backs as one linear upload.
 * False: not such a copy (or a step failed before anything was written);
 * the caller runs the app's own call.
 */
static bool upload_2d(const Copy2D *c, CUresult *result) {
        const CUDA_MEMCPY2D *p = c->p;
        SageShare *s = sage_share();
        SageWriteRange w = sage_write_copy2d(p);
        const char *src;
        char *buf;
        CUresult r;

        if (!atomic_load_explicit(&s->active, memory_order_relaxed) || !(src = host_source(s, p)) ||
            w.writes != SAGE_WRITES_RANGE || !w.bytes || p->srcPitch < p->WidthInBytes ||
            p->dstPitch < p->WidthInBytes || (c->async && share_capturing(s, sage_share_stream_of(c->stream, c->ptds))))
                return false;
        src += p->srcY * p->srcPitch + p->srcXInBytes;
        if (p->Height == 1 || (p->srcPitch == p->WidthInBytes && p->dstPitch == p->WidthInBytes)) {
                pthread_mutex_lock(&s->lock);
                bool inside = share_vmm_find(&s->vmm, w.dst, w.bytes) != NULL;
                pthread_mutex_unlock(&s->lock);
                if (!inside)
                        return false;
                *result = linear_upload(c, w.dst, src, w.bytes);
                return true;
        }
        if (!untouched(s, w.dst, w.bytes) || !(buf = calloc(1, w.bytes)))
                return false;
        for (size_t row = 0; row < p->Height; row++)
                memcpy(buf + row * p->dstPitch, src + row * p->srcPitch, p->WidthInBytes);
        r = linear_upload(c, w.dst, buf, w.bytes);
        /* The buffer is ours to free only once the copies read it (a part may be queued even if another failed). */
        if (c->async) {
                CUresult synced = SAGE_REAL(cuStreamSynchronize)(sage_share_stream_of(c->stream, c->ptds));
                if (r == CUDA_SUCCESS)
                        r = synced;
        }
        free(buf);
        *result = r;
        return true;
}

/* Not an upload SAGE serves: the observer's privatizing (share.c), since IMPL hooks bypass it. */
static CUresult copy_2d_plain(const Copy2D *c, CUresult (*sync)(const CUDA_MEMCPY2D *),
                              CUresult (*async)(const CUDA_MEMCPY2D *, CUstream)) {
        SageWriteRange w = sage_write_copy2d(c->p);

        sage_share_settle_runs(); /* its source may be a predicted run, its uploads on the host */
        sage_share_back_all();    /* its source or destination may be unbacked (share_backing.c) */
        if (w.writes == SAGE_WRITES_RANGE && w.bytes)
                sage_share_before_write(w.dst, w.bytes);
        else if (w.writes == SAGE_WRITES_UNKNOWN)
                sage_share_before_unknown_write(w.dst);
        return c->async ? async(c->p, c->stream) : sync(c->p);
}

#define COPY2D_SYNC(name, is_ptds)                                                   \
        CUresult sage_impl_##name(sage_fn_##name##_t real, const CUDA_MEMCPY2D *p) { \
                Copy2D c = { .p = p, .ptds = is_ptds };                              \
                CUresult r;                                                          \
                return p && upload_2d(&c, &r) ? r : copy_2d_plain(&c, real, NULL);   \
        }
#define COPY2D_ASYNC(name, is_ptsz)                                                                   \
        CUresult sage_impl_##name(sage_fn_##name##_t real, const CUDA_MEMCPY2D *p, CUstream stream) { \
                Copy2D c = { .p = p, .async = true, .ptds = is_ptsz, .stream = stream };              \
                CUresult r;                                                                           \
                return p && upload_2d(&c, &r) ? r : copy_2d_plain(&c, NULL, real);                    \
        }
COPY2D_SYNC(cuMemcpy2D_v2, false)
COPY2D_SYNC(cuMemcpy2D_v2_ptds, true)
COPY2D_SYNC(cuMemcpy2DUnaligned_v2, false)
COPY2D_SYNC(cuMemcpy2DUnaligned_v2_ptds, true)
COPY2D_ASYNC(cuMemcpy2DAsync_v2, false)
COPY2D_ASYNC(cuMemcpy2DAsync_v2_ptsz, true)
