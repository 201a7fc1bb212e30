/*
 * API writes into memory SAGE's allocator backs (memset, device-to-device
 * and peer copies; share_upload.c has uploads): a shared piece there turns
 * private first (its content copied), so the write never reaches the extent
 * other processes read; deferred backing is made first, and assembly runs
 * while the uploads' granules still hold only what was uploaded.
 */
#include <cuda.h>

#include "share.h"

#include "impl.h"
#include "share_assemble.h"
#include "share_state.h"

void sage_share_before_write(CUdeviceptr dst, size_t n) {
        SageShare *s = sage_share();

        if (!atomic_load_explicit(&s->active, memory_order_relaxed))
                return;
        sage_share_back_all(); /* a device copy's source may be unbacked too */
        share_predict_settle(s);
        share_assemble(s); /* while the uploads' granules still hold only what was uploaded */
        share_vmm_note_write(&s->vmm);
        pthread_mutex_lock(&s->lock);
        for (SageShareAlloc *a = s->vmm.allocs; a; a = a->next)
                if (dst < a->va + a->size && a->va < dst + n) {
                        size_t off = dst > a->va ? dst - a->va : 0;
                        size_t end = dst + n - a->va < a->size ? dst + n - a->va : a->size;
                        share_vmm_before_write(&s->vmm, a, off, end - off);
                }
        pthread_mutex_unlock(&s->lock);
}

void sage_share_before_unknown_write(CUdeviceptr dst) {
        SageShare *s = sage_share();

        if (!atomic_load_explicit(&s->active, memory_order_relaxed))
                return;
        sage_share_back_all();
        share_predict_settle(s);
        share_assemble(s);
        share_vmm_note_write(&s->vmm);
        pthread_mutex_lock(&s->lock);
        for (SageShareAlloc *a = s->vmm.allocs; a; a = a->next)
                if (!dst || (dst >= a->va && dst - a->va < a->size))
                        share_vmm_before_write(&s->vmm, a, 0, a->padded);
        pthread_mutex_unlock(&s->lock);
}

/* Device writes with a destination: shared pieces there turn private first. */
#define WRITE_GUARD(name, params, args, dst, bytes)                               \
        CUresult sage_impl_##name(sage_fn_##name##_t real, SAGE_UNPAREN params) { \
                sage_share_before_write(dst, bytes);                              \
                return real args;                                                 \
        }
#define DTOD_PARAMS (CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t n)
#define DTOD_ASYNC_PARAMS (CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t n, CUstream s)
WRITE_GUARD(cuMemcpyDtoD_v2, DTOD_PARAMS, (dstDevice, srcDevice, n), dstDevice, n)
WRITE_GUARD(cuMemcpyDtoD_v2_ptds, DTOD_PARAMS, (dstDevice, srcDevice, n), dstDevice, n)
WRITE_GUARD(cuMemcpyDtoDAsync_v2, DTOD_ASYNC_PARAMS, (dstDevice, srcDevice, n, s), dstDevice, n)
WRITE_GUARD(cuMemcpyDtoDAsync_v2_ptsz, DTOD_ASYNC_PARAMS, (dstDevice, srcDevice, n, s), dstDevice, n)
#define PEER_PARAMS (CUdeviceptr dst, CUcontext dctx, CUdeviceptr src, CUcontext sctx, size_t n)
#define PEER_ASYNC_PARAMS (CUdeviceptr dst, CUcontext dctx, CUdeviceptr src, CUcontext sctx, size_t n, CUstream s)
WRITE_GUARD(cuMemcpyPeer, PEER_PARAMS, (dst, dctx, src, sctx, n), dst, n)
WRITE_GUARD(cuMemcpyPeer_ptds, PEER_PARAMS, (dst, dctx, src, sctx, n), dst, n)
WRITE_GUARD(cuMemcpyPeerAsync, PEER_ASYNC_PARAMS, (dst, dctx, src, sctx, n, s), dst, n)
WRITE_GUARD(cuMemcpyPeerAsync_ptsz, PEER_ASYNC_PARAMS, (dst, dctx, src, sctx, n, s), dst, n)
WRITE_GUARD(cuMemsetD8_v2, (CUdeviceptr d, unsigned char v, size_t n), (d, v, n), d, n)
WRITE_GUARD(cuMemsetD8_v2_ptds, (CUdeviceptr d, unsigned char v, size_t n), (d, v, n), d, n)
WRITE_GUARD(cuMemsetD8Async, (CUdeviceptr d, unsigned char v, size_t n, CUstream s), (d, v, n, s), d, n)
WRITE_GUARD(cuMemsetD8Async_ptsz, (CUdeviceptr d, unsigned char v, size_t n, CUstream s), (d, v, n, s), d, n)
WRITE_GUARD(cuMemsetD32_v2, (CUdeviceptr d, unsigned int v, size_t n), (d, v, n), d, n * 4)
WRITE_GUARD(cuMemsetD32_v2_ptds, (CUdeviceptr d, unsigned int v, size_t n), (d, v, n), d, n * 4)
WRITE_GUARD(cuMemsetD32Async, (CUdeviceptr d, unsigned int v, size_t n, CUstream s), (d, v, n, s), d, n * 4)
WRITE_GUARD(cuMemsetD32Async_ptsz, (CUdeviceptr d, unsigned int v, size_t n, CUstream s), (d, v, n, s), d, n * 4)
