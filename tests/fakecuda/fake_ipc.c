/* fake_ipc.c: legacy CUDA IPC (cuIpcGetMemHandle / cuIpcOpenMemHandle).
 *
 * A cuMemAlloc allocation is a memfd, so the 64-byte handle simply names it:
 * exporter pid, fd number, offset and size. The importer opens
 * /proc/<pid>/fd/<n> (same user, the exporter still alive, as the real driver
 * also needs the exporter alive) and maps the whole allocation. As with the
 * real driver: the handle names the allocation, so opening it returns the
 * allocation's base even when the handle was taken from an interior
 * pointer; memory that is not a cuMemAlloc allocation (VMM mappings
 * included) is refused with INVALID_VALUE; opening a handle in the process
 * that exported it is refused with INVALID_CONTEXT. A handle of another GPU
 * than the importer's: the real driver maps it through peer access (the
 * documentation of cuIpcOpenMemHandle: it enables peer access between the
 * devices, as cuCtxEnablePeerAccess would); the simulated GPUs have none
 * (fake_vmm.c, cuMemSetAccess), so the open fails as cuCtxEnablePeerAccess
 * documents it for devices that cannot reach each other:
 * CUDA_ERROR_PEER_ACCESS_UNSUPPORTED. GPUs are compared by their physical
 * index, so two processes with different CUDA_VISIBLE_DEVICES agree.
 */
#include "fake_internal.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define IPC_MAGIC "SAGEIPC1"

typedef struct FakeIpcHandle {
        char magic[8];
        int32_t pid;
        int32_t fd;
        uint64_t offset; /* of the allocation in the memfd */
        uint64_t size;
        uint64_t map_size;
        int32_t gpu; /* the simulated GPU (physical index) the allocation lies on */
} FakeIpcHandle;

_Static_assert(sizeof(FakeIpcHandle) <= sizeof(CUipcMemHandle), "IPC handle must fit in 64 bytes");

FAKE_EXPORT CUresult cuIpcGetMemHandle(CUipcMemHandle *pHandle, CUdeviceptr dptr) {
        FAKE_GATE();
        FAKE_TRY(fake_require_context_args(NULL, !pHandle));
        FakeIpcHandle h = { .pid = (int32_t)getpid() };
        memcpy(h.magic, IPC_MAGIC, sizeof h.magic);
        fake_lock();
        FakeAlloc *a = fake_alloc_find_locked((uintptr_t)dptr);
        bool ok = a && a->kind == FAKE_ALLOC_DEVICE && a->fd >= 0;
        if (ok) {
                h.fd = a->fd;
                h.size = a->size;
                h.map_size = a->map_size;
                h.gpu = fake.physical[a->device];
        }
        fake_unlock();
        if (!ok)
                return CUDA_ERROR_INVALID_VALUE;
        memset(pHandle, 0, sizeof *pHandle);
        memcpy(pHandle->reserved, &h, sizeof h);
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuIpcOpenMemHandle_v2(CUdeviceptr *pdptr, CUipcMemHandle handle, unsigned int Flags) {
        FAKE_GATE();
        CUcontext ctx;
        FAKE_TRY(fake_require_context(&ctx));
        FakeIpcHandle h;
        memcpy(&h, handle.reserved, sizeof h);
        if (!pdptr || memcmp(h.magic, IPC_MAGIC, sizeof h.magic) || h.map_size == 0)
                return CUDA_ERROR_INVALID_VALUE;
        if (h.pid == (int32_t)getpid())
                return CUDA_ERROR_INVALID_CONTEXT;
        if (h.gpu != fake.physical[ctx->device])
                return CUDA_ERROR_PEER_ACCESS_UNSUPPORTED;
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)h.pid, (int)h.fd);
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0)
                return CUDA_ERROR_INVALID_VALUE;
        void *p = mmap(NULL, (size_t)h.map_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)h.offset);
        close(fd);
        if (p == MAP_FAILED)
                return CUDA_ERROR_INVALID_VALUE;
        fake_lock();
        FakeAlloc *a = fake_alloc_record_locked(FAKE_ALLOC_IPC, p, (size_t)h.size, (size_t)h.map_size, -1, ctx);
        fake_unlock();
        if (!a) {
                munmap(p, (size_t)h.map_size);
                return CUDA_ERROR_OUT_OF_MEMORY;
        }
        *pdptr = (CUdeviceptr)(uintptr_t)p;
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuIpcCloseMemHandle(CUdeviceptr dptr) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT();
        fake_queue_drain();
        fake_lock();
        for (FakeAlloc *a = fake.allocs; a; a = a->next) {
                if (a->kind == FAKE_ALLOC_IPC && (uintptr_t)a->base == (uintptr_t)dptr) {
                        fake_alloc_free_locked(a);
                        fake_unlock();
                        return CUDA_SUCCESS;
                }
        }
        fake_unlock();
        return CUDA_ERROR_INVALID_VALUE;
}
