/*
 * Driver entry points that reach device memory outside SAGE's upload,
 * launch and IPC logic (hooks.def's last section), so that memory SAGE
 * leaves unmapped until it is reached (deferred backing, share_backing.c)
 * is mapped before the driver sees the call: an app that runs without SAGE
 * runs with it. The PASS ones (stream memory operations, DtoA, 3D peer
 * copies, prefetches, dma-buf export, multicast binding) are the share
 * observer's: it backs everything before a copy or IPC call (share.c).
 * Here the IMPLs, which run whether or not an observer is on:
 * - pointer queries back the allocation asked about, so the driver answers
 *   as for the mapped memory a native allocation is (Triton asks
 *   CU_POINTER_ATTRIBUTE_DEVICE_POINTER of every argument before a launch,
 *   CuPy, NCCL and DLPack ask too). Nothing deferred: one atomic load.
 * - batches back everything (their descriptors are the app's, read once
 *   here), then guard each write as an API write's: a shared piece it
 *   reaches turns private first (the driver refuses a write into a
 *   read-only mapping).
 */
#include "hooks.h"
#include "share.h"

CUresult sage_impl_cuPointerGetAttribute(sage_fn_cuPointerGetAttribute_t real, void *data,
                                         CUpointer_attribute attribute, CUdeviceptr ptr) {
        sage_share_back_alloc(ptr);
        return real(data, attribute, ptr);
}

CUresult sage_impl_cuPointerGetAttributes(sage_fn_cuPointerGetAttributes_t real, unsigned int numAttributes,
                                          CUpointer_attribute *attributes, void **data, CUdeviceptr ptr) {
        sage_share_back_alloc(ptr);
        return real(numAttributes, attributes, data, ptr);
}

CUresult sage_impl_cuPointerSetAttribute(sage_fn_cuPointerSetAttribute_t real, const void *value,
                                         CUpointer_attribute attribute, CUdeviceptr ptr) {
        sage_share_back_alloc(ptr);
        return real(value, attribute, ptr);
}

/* Waits, barriers and flushes write nothing; a write names its word; any other operation: anything. */
static void before_memops(unsigned count, const CUstreamBatchMemOpParams *ops) {
        sage_share_back_all();
        for (unsigned i = 0; ops && i < count; i++)
                switch (ops[i].operation) {
                case CU_STREAM_MEM_OP_WAIT_VALUE_32:
                case CU_STREAM_MEM_OP_WAIT_VALUE_64:
                case CU_STREAM_MEM_OP_BARRIER:
                case CU_STREAM_MEM_OP_FLUSH_REMOTE_WRITES: break;
                case CU_STREAM_MEM_OP_WRITE_VALUE_32: sage_share_before_write(ops[i].writeValue.address, 4); break;
                case CU_STREAM_MEM_OP_WRITE_VALUE_64: sage_share_before_write(ops[i].writeValue.address, 8); break;
                default: sage_share_before_unknown_write(0); return;
                }
}

#define MEMOPS(name)                                                                            \
        CUresult sage_impl_##name(sage_fn_##name##_t real, CUstream stream, unsigned int count, \
                                  CUstreamBatchMemOpParams *paramArray, unsigned int flags) {   \
                before_memops(count, paramArray);                                               \
                return real(stream, count, paramArray, flags);                                  \
        }
MEMOPS(cuStreamBatchMemOp)
MEMOPS(cuStreamBatchMemOp_ptsz)
MEMOPS(cuStreamBatchMemOp_v2)
MEMOPS(cuStreamBatchMemOp_v2_ptsz)

/* The first forms report the failing index; the _v2 forms lost that parameter. */
#define FAIL_PARAM size_t *failIdx,
#define FAIL_ARG failIdx,

/* Each copy's destination range (a host one matches no allocation). */
static void before_copies(const CUdeviceptr *dsts, const size_t *sizes, size_t count) {
        sage_share_back_all();
        for (size_t i = 0; dsts && sizes && i < count; i++)
                sage_share_before_write(dsts[i], sizes[i]);
}

#define COPIES(name, fail_param, fail_arg)                                                                      \
        CUresult sage_impl_##name(sage_fn_##name##_t real, CUdeviceptr *dsts, CUdeviceptr *srcs, size_t *sizes, \
                                  size_t count, CUmemcpyAttributes *attrs, size_t *attrsIdxs, size_t numAttrs,  \
                                  fail_param CUstream hStream) {                                                \
                before_copies(dsts, sizes, count);                                                              \
                return real(dsts, srcs, sizes, count, attrs, attrsIdxs, numAttrs, fail_arg hStream);            \
        }
COPIES(cuMemcpyBatchAsync, FAIL_PARAM, FAIL_ARG)
COPIES(cuMemcpyBatchAsync_ptsz, FAIL_PARAM, FAIL_ARG)
COPIES(cuMemcpyBatchAsync_v2, , )
COPIES(cuMemcpyBatchAsync_v2_ptsz, , )

/* A 3D operation's box in a pointer operand: the allocation it starts in (as an unknown API write's). */
static void before_3d(size_t n, const CUDA_MEMCPY3D_BATCH_OP *ops) {
        sage_share_settle_runs(); /* an operation may read a predicted run, its uploads on the host */
        sage_share_back_all();
        for (size_t i = 0; ops && i < n; i++)
                if (ops[i].dst.type == CU_MEMCPY_OPERAND_TYPE_POINTER)
                        sage_share_before_unknown_write(ops[i].dst.op.ptr.ptr);
}

#define COPIES_3D(name, fail_param, fail_arg)                                                             \
        CUresult sage_impl_##name(sage_fn_##name##_t real, size_t numOps, CUDA_MEMCPY3D_BATCH_OP *opList, \
                                  fail_param unsigned long long flags, CUstream hStream) {                \
                before_3d(numOps, opList);                                                                \
                return real(numOps, opList, fail_arg flags, hStream);                                     \
        }
COPIES_3D(cuMemcpy3DBatchAsync, FAIL_PARAM, FAIL_ARG)
COPIES_3D(cuMemcpy3DBatchAsync_ptsz, FAIL_PARAM, FAIL_ARG)
COPIES_3D(cuMemcpy3DBatchAsync_v2, , )
COPIES_3D(cuMemcpy3DBatchAsync_v2_ptsz, , )
