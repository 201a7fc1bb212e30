/*
 * Stream memory operations (cuStreamWriteValue*, cuStreamWaitValue*,
 * cuStreamBatchMemOp) and cuPointerGetAttributes. As the real driver, a
 * word in a VMM reservation that is not mapped (readable to wait, writable
 * to write) fails the call before anything runs: what SAGE's deferred
 * backing must map first. A write is a one-element memset, ordered on its
 * stream; a wait checks its word and returns (the simulation runs a
 * stream's work in order, nothing else could satisfy it later).
 */
#include <string.h>
#include <sys/mman.h>

#include "fake_internal.h"

static CUresult check_word(CUdeviceptr addr, size_t bytes, int prot, CUstream stream) {
        CUcontext ctx;
        FAKE_TRY(fake_require_context_args(&ctx, !addr || addr % bytes));
        if (stream)
                FAKE_TRY(fake_stream_check(stream, NULL));
        fake_lock();
        CUresult r = fake_vmm_check_locked((uintptr_t)addr, bytes, prot);
        fake_unlock();
        return r;
}

static CUresult write_value(CUstream stream, CUdeviceptr addr, uint64_t value, size_t bytes) {
        FAKE_TRY(check_word(addr, bytes, PROT_WRITE, stream));
        if (bytes == 4)
                return fake_memset((void *)(uintptr_t)addr, (unsigned)value, 4, 1, stream);
        FAKE_TRY(fake_memset((void *)(uintptr_t)addr, (unsigned)value, 4, 1, stream)); /* little-endian halves */
        return fake_memset((void *)(uintptr_t)(addr + 4), (unsigned)(value >> 32), 4, 1, stream);
}

/* The _v2 forms (CUDA 11.7 on: what cuda.h's names stand for); the first ones are not simulated. */
#define MEMOP_ENTRIES(name, type, call) \
        FAKE_ENTRY_PTSZ(name, (CUstream s, CUdeviceptr a, type v, unsigned int f), ((void)f, call))
MEMOP_ENTRIES(cuStreamWriteValue32_v2, cuuint32_t, write_value(s, a, v, 4))
MEMOP_ENTRIES(cuStreamWriteValue64_v2, cuuint64_t, write_value(s, a, v, 8))
MEMOP_ENTRIES(cuStreamWaitValue32_v2, cuuint32_t, ((void)v, check_word(a, 4, PROT_READ, s)))
MEMOP_ENTRIES(cuStreamWaitValue64_v2, cuuint64_t, ((void)v, check_word(a, 8, PROT_READ, s)))

/* Every operation checked before any runs: a bad word fails the whole batch. */
static CUresult batch(CUstream stream, unsigned count, const CUstreamBatchMemOpParams *ops) {
        FAKE_TRY(fake_require_context_args(NULL, !ops || !count || count > 256));
        for (unsigned i = 0; i < count; i++) {
                const CUstreamBatchMemOpParams *o = &ops[i];
                size_t bytes = o->operation == CU_STREAM_MEM_OP_WAIT_VALUE_64 ||
                                               o->operation == CU_STREAM_MEM_OP_WRITE_VALUE_64
                                       ? 8
                                       : 4;
                switch (o->operation) {
                case CU_STREAM_MEM_OP_WAIT_VALUE_32:
                case CU_STREAM_MEM_OP_WAIT_VALUE_64:
                        FAKE_TRY(check_word(o->waitValue.address, bytes, PROT_READ, stream));
                        break;
                case CU_STREAM_MEM_OP_WRITE_VALUE_32:
                case CU_STREAM_MEM_OP_WRITE_VALUE_64:
                        FAKE_TRY(check_word(o->writeValue.address, bytes, PROT_WRITE, stream));
                        break;
                case CU_STREAM_MEM_OP_BARRIER:
                case CU_STREAM_MEM_OP_FLUSH_REMOTE_WRITES: break;
                default: return CUDA_ERROR_NOT_SUPPORTED;
                }
        }
        for (unsigned i = 0; i < count; i++)
                if (ops[i].operation == CU_STREAM_MEM_OP_WRITE_VALUE_32)
                        FAKE_TRY(write_value(stream, ops[i].writeValue.address, ops[i].writeValue.value, 4));
                else if (ops[i].operation == CU_STREAM_MEM_OP_WRITE_VALUE_64)
                        FAKE_TRY(write_value(stream, ops[i].writeValue.address, ops[i].writeValue.value64, 8));
        return CUDA_SUCCESS;
}

FAKE_ENTRY_PTSZ(cuStreamBatchMemOp_v2, (CUstream s, unsigned int n, CUstreamBatchMemOpParams *p, unsigned int f),
                ((void)f, batch(s, n, p)))

/* The size of an attribute's answer (what cuPointerGetAttributes zeroes where the pointer is not CUDA's). */
static size_t attribute_size(CUpointer_attribute a) {
        switch (a) {
        case CU_POINTER_ATTRIBUTE_MEMORY_TYPE: return sizeof(unsigned int);
        case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL: return sizeof(int);
        default: return sizeof(void *);
        }
}

/* Unlike cuPointerGetAttribute, not an error for memory the driver does not know: zeroed answers. */
FAKE_EXPORT CUresult cuPointerGetAttributes(unsigned int n, CUpointer_attribute *attributes, void **data,
                                            CUdeviceptr ptr) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT_ARGS(!n || !attributes || !data);
        for (unsigned i = 0; i < n; i++)
                if (data[i] && cuPointerGetAttribute(data[i], attributes[i], ptr) != CUDA_SUCCESS)
                        memset(data[i], 0, attribute_size(attributes[i]));
        return CUDA_SUCCESS;
}
