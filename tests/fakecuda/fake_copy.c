/* fake_copy.c: every cuMemcpy form cudart uses, as host memmove.
 *
 * All copies funnel into two checked primitives: a 1D copy and a 3D copy
 * (2D is 3D with depth 1). Before touching memory they ask the VMM
 * bookkeeping whether the ranges are mapped with the needed protection, so a
 * copy into a read-only mapping returns CUDA_ERROR_INVALID_VALUE instead of
 * faulting, as the real driver reports for memset on such a mapping. An
 * async 1D copy between device and pinned memory is queued (fake_queue.c);
 * every other copy drains the queue and runs at once; on a capturing stream
 * copies are recorded into the graph instead. `_ptds`/`_ptsz` variants
 * behave the same: one queue serves every stream.
 */
#include "fake_internal.h"

#include <string.h>
#include <sys/mman.h>

#define PTR(d) ((void *)(uintptr_t)(d))

/* Is the copy's destination writable and its source readable? Lock held. */
static CUresult ranges_check_locked(void *dst, const void *src, size_t bytes) {
        CUresult r = fake_vmm_check_locked((uintptr_t)dst, bytes, PROT_WRITE);
        return r == CUDA_SUCCESS ? fake_vmm_check_locked((uintptr_t)src, bytes, PROT_READ) : r;
}

CUresult fake_copy_checked(void *dst, const void *src, size_t bytes) {
        if (bytes == 0)
                return CUDA_SUCCESS;
        if (!dst || !src)
                return CUDA_ERROR_INVALID_VALUE;
        fake_lock();
        CUresult r = ranges_check_locked(dst, src, bytes);
        fake_unlock();
        if (r == CUDA_SUCCESS)
                memmove(dst, src, bytes);
        return r;
}

/* Device memory (allocated, mapped, or another process's by IPC) or pinned
 * host memory: what the DMA engine reaches without staging. */
static bool dma_reachable_locked(const void *p) {
        return fake_alloc_find_locked((uintptr_t)p) || fake_mapping_find_locked((uintptr_t)p);
}

static CUresult copy1d(void *dst, const void *src, size_t bytes, CUstream stream, bool async) {
        CUcontext ctx;
        FAKE_TRY(fake_require_context(&ctx));
        struct CUgraph_st *capture = NULL;
        if (async)
                FAKE_TRY(fake_stream_check(stream, &capture));
        if (!capture && async && bytes && dst && src) {
                /* Queued, checked now (a bad range is the call's error, as in the
         * driver); pageable host memory is staged synchronously by the
         * real driver, so such copies run at once below. */
                fake_lock();
                bool dma = dma_reachable_locked(dst) && dma_reachable_locked(src);
                CUresult r = ranges_check_locked(dst, src, bytes);
                fake_unlock();
                if (r != CUDA_SUCCESS)
                        return r;
                FakeOp op = { .kind = FAKE_OP_COPY, .u.copy = { dst, src, bytes } };
                if (dma && fake_queue_submit(&op, ctx))
                        return CUDA_SUCCESS;
        }
        if (!capture) {
                fake_queue_drain();
                return fake_copy_checked(dst, src, bytes);
        }
        if (bytes && (!dst || !src))
                return CUDA_ERROR_INVALID_VALUE;
        FakeOp op = { .kind = FAKE_OP_COPY, .u.copy = { dst, src, bytes } };
        return fake_graph_append(capture, &op);
}

/* One side of a 3D copy: its first byte, row pitch and slice height. */
typedef struct Side {
        char *start;
        size_t pitch, height;
} Side;

static CUresult side_of(Side *out, CUmemorytype type, const void *host, CUdeviceptr dev, size_t pitch, size_t height,
                        size_t x, size_t y, size_t z, const CUDA_MEMCPY3D *c) {
        char *base;
        switch (type) {
        case CU_MEMORYTYPE_HOST: base = (char *)(uintptr_t)host; break;
        case CU_MEMORYTYPE_DEVICE:
        case CU_MEMORYTYPE_UNIFIED: base = PTR(dev); break;
        case CU_MEMORYTYPE_ARRAY: return CUDA_ERROR_NOT_SUPPORTED; /* no CUDA arrays here */
        default: return CUDA_ERROR_INVALID_VALUE;
        }
        bool multi_row = c->Height > 1 || c->Depth > 1;
        if (!multi_row && pitch == 0)
                pitch = c->WidthInBytes + x;
        if (!base || pitch < c->WidthInBytes + x)
                return CUDA_ERROR_INVALID_VALUE;
        if (c->Depth > 1 && height < c->Height + y)
                return CUDA_ERROR_INVALID_VALUE;
        out->start = base + (z * height + y) * pitch + x;
        out->pitch = pitch;
        out->height = height;
        return CUDA_SUCCESS;
}

static size_t side_span(const Side *s, const CUDA_MEMCPY3D *c) {
        size_t depth = c->Depth ? c->Depth : 1, rows = c->Height ? c->Height : 1;
        return ((depth - 1) * s->height + (rows - 1)) * s->pitch + c->WidthInBytes;
}

CUresult fake_copy3d_checked(const CUDA_MEMCPY3D *c) {
        if (c->srcLOD || c->dstLOD)
                return CUDA_ERROR_INVALID_VALUE;
        if (c->WidthInBytes == 0 || c->Height == 0 || c->Depth == 0)
                return CUDA_SUCCESS;
        Side src, dst;
        CUresult r = side_of(&src, c->srcMemoryType, c->srcHost, c->srcDevice, c->srcPitch, c->srcHeight,
                             c->srcXInBytes, c->srcY, c->srcZ, c);
        if (r == CUDA_SUCCESS)
                r = side_of(&dst, c->dstMemoryType, c->dstHost, c->dstDevice, c->dstPitch, c->dstHeight, c->dstXInBytes,
                            c->dstY, c->dstZ, c);
        if (r != CUDA_SUCCESS)
                return r;
        fake_lock();
        r = fake_vmm_check_locked((uintptr_t)dst.start, side_span(&dst, c), PROT_WRITE);
        if (r == CUDA_SUCCESS)
                r = fake_vmm_check_locked((uintptr_t)src.start, side_span(&src, c), PROT_READ);
        fake_unlock();
        if (r != CUDA_SUCCESS)
                return r;
        for (size_t z = 0; z < c->Depth; z++)
                for (size_t y = 0; y < c->Height; y++)
                        memmove(dst.start + (z * dst.height + y) * dst.pitch,
                                src.start + (z * src.height + y) * src.pitch, c->WidthInBytes);
        return CUDA_SUCCESS;
}

static CUresult copy3d(const CUDA_MEMCPY3D *c, CUstream stream, bool async) {
        FAKE_TRY(fake_require_context_args(NULL, !c));
        struct CUgraph_st *capture = NULL;
        if (async)
                FAKE_TRY(fake_stream_check(stream, &capture));
        if (!capture) {
                fake_queue_drain(); /* 3D copies run at submission, after what came before */
                return fake_copy3d_checked(c);
        }
        FakeOp op = { .kind = FAKE_OP_COPY3D };
        op.u.copy3d = *c;
        return fake_graph_append(capture, &op);
}

static CUresult copy2d(const CUDA_MEMCPY2D *c, CUstream stream, bool async) {
        if (!c)
                return CUDA_ERROR_INVALID_VALUE;
        CUDA_MEMCPY3D c3 = {
                .srcXInBytes = c->srcXInBytes,
                .srcY = c->srcY,
                .srcMemoryType = c->srcMemoryType,
                .srcHost = c->srcHost,
                .srcDevice = c->srcDevice,
                .srcArray = c->srcArray,
                .srcPitch = c->srcPitch,
                .dstXInBytes = c->dstXInBytes,
                .dstY = c->dstY,
                .dstMemoryType = c->dstMemoryType,
                .dstHost = c->dstHost,
                .dstDevice = c->dstDevice,
                .dstArray = c->dstArray,
                .dstPitch = c->dstPitch,
                .WidthInBytes = c->WidthInBytes,
                .Height = c->Height,
                .Depth = 1,
        };
        return copy3d(&c3, stream, async);
}

/* ------------------------------------------------------------ exports */
/* Every 1D form is copy1d; the per-thread twins behave as their base. */
FAKE_ENTRY_PTDS(cuMemcpy, (CUdeviceptr dst, CUdeviceptr src, size_t n), copy1d(PTR(dst), PTR(src), n, NULL, false))
FAKE_ENTRY_PTSZ(cuMemcpyAsync, (CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s),
                copy1d(PTR(dst), PTR(src), n, s, true))
FAKE_ENTRY_PTDS(cuMemcpyHtoD_v2, (CUdeviceptr dst, const void *src, size_t n), copy1d(PTR(dst), src, n, NULL, false))
FAKE_ENTRY_PTDS(cuMemcpyDtoH_v2, (void *dst, CUdeviceptr src, size_t n), copy1d(dst, PTR(src), n, NULL, false))
FAKE_ENTRY_PTDS(cuMemcpyDtoD_v2, (CUdeviceptr dst, CUdeviceptr src, size_t n),
                copy1d(PTR(dst), PTR(src), n, NULL, false))
FAKE_ENTRY_PTSZ(cuMemcpyHtoDAsync_v2, (CUdeviceptr dst, const void *src, size_t n, CUstream s),
                copy1d(PTR(dst), src, n, s, true))
FAKE_ENTRY_PTSZ(cuMemcpyDtoHAsync_v2, (void *dst, CUdeviceptr src, size_t n, CUstream s),
                copy1d(dst, PTR(src), n, s, true))
FAKE_ENTRY_PTSZ(cuMemcpyDtoDAsync_v2, (CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s),
                copy1d(PTR(dst), PTR(src), n, s, true))
/* Peer copies: the contexts do not matter where all memory is the host's. */
FAKE_ENTRY_PTDS(cuMemcpyPeer, (CUdeviceptr dst, CUcontext dctx, CUdeviceptr src, CUcontext sctx, size_t n),
                copy1d(PTR(dst), PTR(src), n, NULL, false))
FAKE_ENTRY_PTSZ(cuMemcpyPeerAsync,
                (CUdeviceptr dst, CUcontext dctx, CUdeviceptr src, CUcontext sctx, size_t n, CUstream s),
                copy1d(PTR(dst), PTR(src), n, s, true))

FAKE_ENTRY_PTDS(cuMemcpy2D_v2, (const CUDA_MEMCPY2D *c), copy2d(c, NULL, false))
FAKE_ENTRY_PTDS(cuMemcpy2DUnaligned_v2, (const CUDA_MEMCPY2D *c), copy2d(c, NULL, false))
FAKE_ENTRY_PTSZ(cuMemcpy2DAsync_v2, (const CUDA_MEMCPY2D *c, CUstream s), copy2d(c, s, true))
FAKE_ENTRY_PTDS(cuMemcpy3D_v2, (const CUDA_MEMCPY3D *c), copy3d(c, NULL, false))
FAKE_ENTRY_PTSZ(cuMemcpy3DAsync_v2, (const CUDA_MEMCPY3D *c, CUstream s), copy3d(c, s, true))
