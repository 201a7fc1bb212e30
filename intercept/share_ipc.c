/*
 * CUDA IPC on allocations SAGE's VMM allocator backs (share.c). The driver
 * refuses cuIpcGetMemHandle on VMM memory, so it is emulated through the
 * broker: the allocation gets one private backing for good (its pieces,
 * shared or not, are copied into it), its POSIX fd is registered with the
 * broker for a random 128-bit token, and the IPC handle carries that token.
 * cuIpcOpenMemHandle in another process running under SAGE trades the token
 * for the fd (same namespace only: the broker checks) and maps it read-write
 * at a fresh address, as the driver would. The registration goes when the
 * allocation is freed or the exporter exits; mappings already opened stay.
 * Handles of any other memory are the driver's business, untouched.
 */
#include <cuda.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "share_ipc.h"

#include "broker_client.h"
#include "impl.h"
#include "log.h"
#include "share_state.h"
#include "stats.h"
#include "vmm.h"

static const char magic[8] = { 'S', 'A', 'G', 'E', 'I', 'P', 'C', 1 };

/* What the 64-byte CUipcMemHandle holds for an emulated handle. */
typedef struct IpcHandle {
        char magic[8];
        uint8_t token[SAGE_IPC_TOKEN_SIZE];
        uint64_t size;
        uint32_t device;
        uint32_t lead; /* the allocation starts this far into the mapping (learned placement) */
} IpcHandle;
_Static_assert(sizeof(IpcHandle) <= sizeof(CUipcMemHandle), "an emulated handle fits a CUipcMemHandle");

typedef struct Export {
        SageShareAlloc *alloc;
        uint8_t token[SAGE_IPC_TOKEN_SIZE];
        struct Export *next;
} Export;

typedef struct Import {
        CUdeviceptr va;
        size_t size, lead;
        CUmemGenericAllocationHandle handle;
        struct Import *next;
} Import;

/* The IPC part of sharing (SageShare.ipc), under its lock. */
struct ShareIpc {
        Export *exports;
        Import *imports;
        SageBroker *import_broker; /* for processes that do not share themselves */
};

static struct ShareIpc *ipc_of(SageShare *s) {
        if (!s->ipc)
                s->ipc = calloc(1, sizeof(*s->ipc));
        return s->ipc;
}

void share_ipc_forget(SageShare *s, SageShareAlloc *a) {
        if (!s->ipc)
                return;
        for (Export **l = &s->ipc->exports; *l;) {
                Export *e = *l;
                if (e->alloc != a) {
                        l = &e->next;
                        continue;
                }
                if (s->broker)
                        share_broker_lost(s, sage_broker_ipc_revoke(s->broker, e->token));
                *l = e->next;
                free(e);
        }
}

/* Under the lock: the handle of `a`, registering it with the broker the first time. */
static CUresult export_handle(SageShare *s, SageShareAlloc *a, CUipcMemHandle *out) {
        struct ShareIpc *ipc = ipc_of(s);
        IpcHandle h;
        Export *e;
        int fd = -1, r;

        if (!ipc)
                return CUDA_ERROR_INVALID_VALUE;
        for (e = ipc->exports; e && e->alloc != a; e = e->next)
                ;
        if (!e) {
                if (!s->broker || !share_vmm_consolidate(&s->vmm, a) || !(e = calloc(1, sizeof(*e))))
                        return CUDA_ERROR_INVALID_VALUE;
                if (s->drv.export_fd(&fd, a->pieces[0].handle, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0) !=
                    CUDA_SUCCESS) {
                        free(e);
                        return CUDA_ERROR_INVALID_VALUE;
                }
                r = sage_broker_ipc_export(s->broker, fd, a->padded, a->broker_dev, e->token);
                close(fd);
                if (r != 0) {
                        share_broker_lost(s, r);
                        free(e);
                        return CUDA_ERROR_INVALID_VALUE;
                }
                e->alloc = a;
                e->next = ipc->exports;
                ipc->exports = e;
                sage_stats_count(SAGE_STAT_SHARE_IPC_EXPORTS);
        }
        memset(&h, 0, sizeof(h));
        memcpy(h.magic, magic, sizeof(magic));
        memcpy(h.token, e->token, sizeof(h.token));
        h.size = a->padded;
        h.device = a->broker_dev;
        h.lead = (uint32_t)a->lead;
        memset(out, 0, sizeof(*out));
        memcpy(out, &h, sizeof(h));
        return CUDA_SUCCESS;
}

CUresult sage_impl_cuIpcGetMemHandle(sage_fn_cuIpcGetMemHandle_t real, CUipcMemHandle *pHandle, CUdeviceptr dptr) {
        SageShare *s = sage_share();
        SageShareAlloc *a;
        CUresult r = CUDA_SUCCESS;

        if (!atomic_load_explicit(&s->active, memory_order_relaxed) || !pHandle)
                return real(pHandle, dptr);
        pthread_mutex_lock(&s->lock);
        a = share_vmm_find(&s->vmm, dptr, 1);
        if (a && a->app_vmm) /* the driver refuses VMM memory the app mapped: so does SAGE */
                a = NULL;
        if (a)
                r = export_handle(s, a, pHandle);
        pthread_mutex_unlock(&s->lock);
        return a ? r : real(pHandle, dptr);
}

static bool is_emulated(const CUipcMemHandle *handle, IpcHandle *out) {
        memcpy(out, handle, sizeof(*out));
        return memcmp(out->magic, magic, sizeof(magic)) == 0;
}

/*
 * Is the broker's ordinal `device` (where the exporter's memory lies) the
 * GPU this process calls `dev`? Compared by UUID, since the two processes
 * may number their GPUs differently (CUDA_VISIBLE_DEVICES, containers).
 * Unknown counts as the same: the driver has the last word anyway.
 */
static bool same_gpu(SageShare *s, SageBroker *b, CUdevice dev, uint32_t device) {
        const SageShareDriver *drv = share_driver(s);
        const SageDevicesReply *table;
        CUuuid mine;

        if (!drv || !drv->device_get_uuid || drv->device_get_uuid(&mine, dev) != CUDA_SUCCESS ||
            sage_broker_devices(b, &table) != 0 || device >= table->n_devices)
                return true;
        return memcmp(table->devices[device].uuid, mine.bytes, sizeof(mine.bytes)) == 0;
}

/*
 * Memory of another GPU is mapped for this one as the driver's own
 * cuIpcOpenMemHandle would (its documentation: for contexts on different
 * devices it enables peer access, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS); where
 * the driver refuses that mapping, the app gets the driver's answer for
 * devices that cannot reach each other, CUDA_ERROR_PEER_ACCESS_UNSUPPORTED
 * (cuCtxEnablePeerAccess), not an invalid handle.
 */
static CUresult open_emulated(SageShare *s, const IpcHandle *h, CUdeviceptr *pdptr) {
        struct ShareIpc *ipc = ipc_of(s);
        const SageShareDriver *drv = share_driver(s);
        SageBroker *b;
        Import *im;
        CUdevice dev;
        uint64_t size = 0;
        uint32_t device = 0;
        int fd = -1, r;
        bool other_gpu;
        CUresult cr;

        if (!pdptr)
                return CUDA_ERROR_INVALID_VALUE;
        if (!ipc || !drv)
                return CUDA_ERROR_INVALID_HANDLE;
        if (drv->ctx_get_device(&dev) != CUDA_SUCCESS)
                return CUDA_ERROR_INVALID_CONTEXT;
        b = s->broker ? s->broker : ipc->import_broker;
        if (!b && sage_broker_connect(&ipc->import_broker, NULL, 500) == 0)
                b = ipc->import_broker;
        if (!b)
                return CUDA_ERROR_INVALID_HANDLE;
        r = sage_broker_ipc_import(b, h->token, &fd, &size, &device);
        if (r < 0 && b == ipc->import_broker)
                ipc->import_broker = sage_broker_free(ipc->import_broker);
        else if (r < 0)
                share_broker_lost(s, r);
        if (r != 0 || fd < 0 || size != h->size || h->lead >= size || !(im = calloc(1, sizeof(*im)))) {
                if (fd >= 0)
                        close(fd);
                return CUDA_ERROR_INVALID_HANDLE;
        }
        other_gpu = !same_gpu(s, b, dev, device);
        im->size = (size_t)size;
        im->lead = h->lead;
        cr = drv->import_fd(&im->handle, (void *)(uintptr_t)fd, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
        close(fd);
        if (cr != CUDA_SUCCESS) {
                free(im);
                return other_gpu ? CUDA_ERROR_PEER_ACCESS_UNSUPPORTED : CUDA_ERROR_INVALID_HANDLE;
        }
        cr = sage_vmm_map_new(&drv->vmm, im->size, dev, im->handle, CU_MEM_ACCESS_FLAGS_PROT_READWRITE, &im->va);
        if (cr != CUDA_SUCCESS) {
                drv->vmm.release(im->handle);
                free(im);
                return other_gpu ? CUDA_ERROR_PEER_ACCESS_UNSUPPORTED : cr;
        }
        im->next = ipc->imports;
        ipc->imports = im;
        *pdptr = im->va + im->lead;
        sage_stats_count(SAGE_STAT_SHARE_IPC_IMPORTS);
        return CUDA_SUCCESS;
}

static CUresult open_handle(CUdeviceptr *pdptr, CUipcMemHandle handle,
                            CUresult (*real)(CUdeviceptr *, CUipcMemHandle, unsigned), unsigned flags) {
        SageShare *s = sage_share();
        IpcHandle h;
        CUresult r;

        if (!is_emulated(&handle, &h))
                return real(pdptr, handle, flags);
        pthread_mutex_lock(&s->lock);
        r = open_emulated(s, &h, pdptr);
        pthread_mutex_unlock(&s->lock);
        return r;
}

CUresult sage_impl_cuIpcOpenMemHandle(sage_fn_cuIpcOpenMemHandle_t real, CUdeviceptr *pdptr, CUipcMemHandle handle,
                                      unsigned int Flags) {
        return open_handle(pdptr, handle, real, Flags);
}

CUresult sage_impl_cuIpcOpenMemHandle_v2(sage_fn_cuIpcOpenMemHandle_v2_t real, CUdeviceptr *pdptr,
                                         CUipcMemHandle handle, unsigned int Flags) {
        return open_handle(pdptr, handle, real, Flags);
}

CUresult sage_impl_cuIpcCloseMemHandle(sage_fn_cuIpcCloseMemHandle_t real, CUdeviceptr dptr) {
        SageShare *s = sage_share();
        const SageShareDriver *drv = NULL;
        Import *im = NULL;

        pthread_mutex_lock(&s->lock);
        for (Import **l = s->ipc ? &s->ipc->imports : NULL; l && *l; l = &(*l)->next)
                if ((*l)->va + (*l)->lead == dptr) {
                        im = *l;
                        *l = im->next;
                        drv = share_driver(s); /* filled when the import was opened */
                        break;
                }
        pthread_mutex_unlock(&s->lock);
        if (!im)
                return real(dptr);
        drv->vmm.ctx_synchronize();
        sage_vmm_unmap_free(&drv->vmm, im->va, im->size);
        drv->vmm.release(im->handle);
        free(im);
        return CUDA_SUCCESS;
}
