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

#include "broker_client.h"
#include "driver.h"
#include "impl.h"
#include "intercept.h"
#include "log.h"
#include "share.h"

static const char magic[8] = { 'S', 'A', 'G', 'E', 'I', 'P', 'C', 1 };

/* What the 64-byte CUipcMemHandle holds for an emulated handle. */
typedef struct IpcHandle {
        char magic[8];
        uint8_t token[SAGE_IPC_TOKEN_SIZE];
        uint64_t size;
        uint32_t device;
} IpcHandle;
_Static_assert(sizeof(IpcHandle) <= sizeof(CUipcMemHandle), "an emulated handle fits a CUipcMemHandle");

typedef struct Export {
        SageShareAlloc *alloc;
        uint8_t token[SAGE_IPC_TOKEN_SIZE];
        struct Export *next;
} Export;

typedef struct Import {
        CUdeviceptr va;
        size_t size;
        CUmemGenericAllocationHandle handle;
        struct Import *next;
} Import;

static Export *exports;           /* under sage_share_lock */
static Import *imports;           /* under sage_share_lock */
static SageBroker *import_broker; /* for processes that do not share themselves; under sage_share_lock */

static const SageDriverExtras *const drv = &sage_driver_extras;

bool sage_share_consolidate(SageShareAlloc *a) {
        CUmemGenericAllocationHandle h;
        CUcontext popped;
        bool ok = false;

        a->no_share = true;
        for (size_t i = 0; i < a->npieces; i++)
                sage_share_drop_candidate(a, &a->pieces[i], "the allocation was exported through CUDA IPC");
        if (a->npieces == 1 && !a->pieces[0].extent_id)
                return true;
        if (drv->ctx_push(a->ctx) != CUDA_SUCCESS)
                return false;
        drv->ctx_synchronize();
        if (sage_share_copy_into_new(a, 0, a->padded, &h) != CUDA_SUCCESS)
                goto out;
        for (size_t i = 0; i < a->npieces; i++)
                sage_share_drop_piece(a, &a->pieces[i]);
        a->npieces = 1;
        a->pieces[0] = (Piece){ .off = 0, .len = a->padded, .handle = h };
        ok = sage_share_map(a->va, a->padded, a->dev, h, CU_MEM_ACCESS_FLAGS_PROT_READWRITE) == CUDA_SUCCESS;
        if (!ok)
                sage_warn("share: cannot re-back %p+%zu for IPC", (void *)(uintptr_t)a->va, a->size);
out:
        drv->ctx_pop(&popped);
        return ok;
}

void sage_share_ipc_forget(SageShareAlloc *a) {
        for (Export **l = &exports; *l;) {
                Export *e = *l;
                if (e->alloc != a) {
                        l = &e->next;
                        continue;
                }
                if (sage_share_broker)
                        sage_share_broker_lost(sage_broker_ipc_revoke(sage_share_broker, e->token));
                *l = e->next;
                free(e);
        }
}

/* Under the lock: the handle of `a`, registering it with the broker the first time. */
static CUresult export_handle(SageShareAlloc *a, CUipcMemHandle *out) {
        IpcHandle h;
        Export *e;
        int fd = -1, r;

        for (e = exports; e && e->alloc != a; e = e->next)
                ;
        if (!e) {
                if (!sage_share_broker || !sage_share_consolidate(a) || !(e = calloc(1, sizeof(*e))))
                        return CUDA_ERROR_INVALID_VALUE;
                if (SAGE_REAL(cuMemExportToShareableHandle)(&fd, a->pieces[0].handle,
                                                            CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0) != CUDA_SUCCESS) {
                        free(e);
                        return CUDA_ERROR_INVALID_VALUE;
                }
                r = sage_broker_ipc_export(sage_share_broker, fd, a->padded, (uint32_t)a->dev, e->token);
                close(fd);
                if (r != 0) {
                        sage_share_broker_lost(r);
                        free(e);
                        return CUDA_ERROR_INVALID_VALUE;
                }
                e->alloc = a;
                e->next = exports;
                exports = e;
                sage_stats_count(SAGE_STAT_SHARE_IPC_EXPORTS);
        }
        memset(&h, 0, sizeof(h));
        memcpy(h.magic, magic, sizeof(magic));
        memcpy(h.token, e->token, sizeof(h.token));
        h.size = a->padded;
        h.device = (uint32_t)a->dev;
        memset(out, 0, sizeof(*out));
        memcpy(out, &h, sizeof(h));
        return CUDA_SUCCESS;
}

CUresult sage_impl_cuIpcGetMemHandle(sage_fn_cuIpcGetMemHandle_t real, CUipcMemHandle *pHandle, CUdeviceptr dptr) {
        SageShareAlloc *a;
        CUresult r = CUDA_SUCCESS;

        if (!atomic_load_explicit(&sage_share_active, memory_order_relaxed) || !pHandle)
                return real(pHandle, dptr);
        pthread_mutex_lock(&sage_share_lock);
        a = sage_share_find(dptr, 1);
        if (a)
                r = export_handle(a, pHandle);
        pthread_mutex_unlock(&sage_share_lock);
        return a ? r : real(pHandle, dptr);
}

static bool is_emulated(const CUipcMemHandle *handle, IpcHandle *out) {
        memcpy(out, handle, sizeof(*out));
        return memcmp(out->magic, magic, sizeof(magic)) == 0;
}

static CUresult open_emulated(const IpcHandle *h, CUdeviceptr *pdptr) {
        SageBroker *b;
        Import *im;
        CUdevice dev;
        CUmemAccessDesc desc = { .location = { CU_MEM_LOCATION_TYPE_DEVICE, 0 },
                                 .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
        uint64_t size = 0;
        uint32_t device = 0;
        int fd = -1, r;
        CUresult cr = CUDA_ERROR_INVALID_HANDLE;

        if (!pdptr)
                return CUDA_ERROR_INVALID_VALUE;
        if (!drv->ctx_get_device || drv->ctx_get_device(&dev) != CUDA_SUCCESS)
                return CUDA_ERROR_INVALID_CONTEXT;
        b = sage_share_broker ? sage_share_broker : import_broker;
        if (!b && sage_broker_connect(&import_broker, NULL, 500) == 0)
                b = import_broker;
        if (!b)
                return CUDA_ERROR_INVALID_HANDLE;
        r = sage_broker_ipc_import(b, h->token, &fd, &size, &device);
        if (r < 0 && b == import_broker)
                import_broker = sage_broker_free(import_broker);
        else if (r < 0)
                sage_share_broker_lost(r);
        if (r != 0 || fd < 0 || size != h->size || !(im = calloc(1, sizeof(*im)))) {
                if (fd >= 0)
                        close(fd);
                return CUDA_ERROR_INVALID_HANDLE;
        }
        im->size = (size_t)size;
        desc.location.id = dev;
        if (SAGE_REAL(cuMemImportFromShareableHandle)(&im->handle, (void *)(uintptr_t)fd,
                                                      CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) != CUDA_SUCCESS)
                goto fail;
        if ((cr = SAGE_REAL(cuMemAddressReserve)(&im->va, im->size, 0, 0, 0)) != CUDA_SUCCESS)
                goto release;
        if ((cr = SAGE_REAL(cuMemMap)(im->va, im->size, 0, im->handle, 0)) != CUDA_SUCCESS)
                goto free_va;
        if ((cr = SAGE_REAL(cuMemSetAccess)(im->va, im->size, &desc, 1)) != CUDA_SUCCESS) {
                SAGE_REAL(cuMemUnmap)(im->va, im->size);
                goto free_va;
        }
        close(fd);
        im->next = imports;
        imports = im;
        *pdptr = im->va;
        sage_stats_count(SAGE_STAT_SHARE_IPC_IMPORTS);
        return CUDA_SUCCESS;
free_va:
        SAGE_REAL(cuMemAddressFree)(im->va, im->size);
release:
        SAGE_REAL(cuMemRelease)(im->handle);
fail:
        close(fd);
        free(im);
        return cr == CUDA_SUCCESS ? CUDA_ERROR_INVALID_HANDLE : cr;
}

static CUresult open_handle(CUdeviceptr *pdptr, CUipcMemHandle handle, CUresult (*real)(CUdeviceptr *, CUipcMemHandle, unsigned),
                            unsigned flags) {
        IpcHandle h;
        CUresult r;

        if (!is_emulated(&handle, &h))
                return real(pdptr, handle, flags);
        pthread_mutex_lock(&sage_share_lock);
        r = open_emulated(&h, pdptr);
        pthread_mutex_unlock(&sage_share_lock);
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
        Import *im = NULL;

        pthread_mutex_lock(&sage_share_lock);
        for (Import **l = &imports; *l; l = &(*l)->next)
                if ((*l)->va == dptr) {
                        im = *l;
                        *l = im->next;
                        break;
                }
        pthread_mutex_unlock(&sage_share_lock);
        if (!im)
                return real(dptr);
        if (drv->ctx_synchronize)
                drv->ctx_synchronize();
        SAGE_REAL(cuMemUnmap)(im->va, im->size);
        SAGE_REAL(cuMemRelease)(im->handle);
        SAGE_REAL(cuMemAddressFree)(im->va, im->size);
        free(im);
        return CUDA_SUCCESS;
}
