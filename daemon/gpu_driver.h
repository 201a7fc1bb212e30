/*
 * What gpu.c and gpu_checkpoint.c share, and nothing else may see: the
 * driver's dlsym table and the Gpu object. The table is one X-macro list, so
 * resolving and declaring the entry points never drift apart.
 */
#pragma once

#include <cuda.h>
#include <stdbool.h>
#include <stdint.h>

#include "gpu.h"
#include "vmm.h"

#define GPU_MAX_DEVICES 64

/* Symbol names are the versioned ones cuda.h's macros map to. */
#define GPU_DRIVER_FUNCTIONS(X)                                                                               \
        X(cuInit, "cuInit", CUresult, (unsigned int))                                                         \
        X(cuDeviceGetCount, "cuDeviceGetCount", CUresult, (int *))                                            \
        X(cuDeviceGet, "cuDeviceGet", CUresult, (CUdevice *, int))                                            \
        X(cuDeviceTotalMem, "cuDeviceTotalMem_v2", CUresult, (size_t *, CUdevice))                            \
        X(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain", CUresult, (CUcontext *, CUdevice))            \
        X(cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2", CUresult, (CUdevice))                    \
        X(cuCtxSetCurrent, "cuCtxSetCurrent", CUresult, (CUcontext))                                          \
        X(cuMemGetAllocationGranularity, "cuMemGetAllocationGranularity", CUresult,                           \
          (size_t *, const CUmemAllocationProp *, CUmemAllocationGranularity_flags))                          \
        X(cuMemImportFromShareableHandle, "cuMemImportFromShareableHandle", CUresult,                         \
          (CUmemGenericAllocationHandle *, void *, CUmemAllocationHandleType))                                \
        X(cuMemExportToShareableHandle, "cuMemExportToShareableHandle", CUresult,                             \
          (void *, CUmemGenericAllocationHandle, CUmemAllocationHandleType, unsigned long long))              \
        X(cuMemRelease, "cuMemRelease", CUresult, (CUmemGenericAllocationHandle))                             \
        X(cuMemAddressReserve, "cuMemAddressReserve", CUresult,                                               \
          (CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long))                                   \
        X(cuMemAddressFree, "cuMemAddressFree", CUresult, (CUdeviceptr, size_t))                              \
        X(cuMemMap, "cuMemMap", CUresult,                                                                     \
          (CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, unsigned long long))                    \
        X(cuMemUnmap, "cuMemUnmap", CUresult, (CUdeviceptr, size_t))                                          \
        X(cuMemCreate, "cuMemCreate", CUresult,                                                               \
          (CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *, unsigned long long))          \
        X(cuMemSetAccess, "cuMemSetAccess", CUresult, (CUdeviceptr, size_t, const CUmemAccessDesc *, size_t)) \
        X(cuMemcpyDtoD, "cuMemcpyDtoD_v2", CUresult, (CUdeviceptr, CUdeviceptr, size_t))                      \
        X(cuMemcpyDtoH, "cuMemcpyDtoH_v2", CUresult, (void *, CUdeviceptr, size_t))                           \
        X(cuCtxSynchronize, "cuCtxSynchronize", CUresult, (void))

/* Optional: used when present. */
#define GPU_OPTIONAL_FUNCTIONS(X)                                                                               \
        X(cuGetErrorName, "cuGetErrorName", CUresult, (CUresult, const char **))                                \
        X(cuDeviceGetUuid, "cuDeviceGetUuid_v2", CUresult, (CUuuid *, CUdevice))                                \
        X(cuDeviceGetUuidV1, "cuDeviceGetUuid", CUresult, (CUuuid *, CUdevice))                                 \
        X(cuMemGetAllocationPropertiesFromHandle, "cuMemGetAllocationPropertiesFromHandle", CUresult,           \
          (CUmemAllocationProp *, CUmemGenericAllocationHandle))                                                \
        X(cuMemHostAlloc, "cuMemHostAlloc", CUresult, (void **, size_t, unsigned int))                          \
        X(cuMemFreeHost, "cuMemFreeHost", CUresult, (void *))                                                   \
        X(cuCheckpointProcessGetState, "cuCheckpointProcessGetState", CUresult, (int, CUprocessState *))        \
        X(cuCheckpointProcessLock, "cuCheckpointProcessLock", CUresult, (int, CUcheckpointLockArgs *))          \
        X(cuCheckpointProcessCheckpoint, "cuCheckpointProcessCheckpoint", CUresult,                             \
          (int, CUcheckpointCheckpointArgs *))                                                                  \
        X(cuCheckpointProcessRestore, "cuCheckpointProcessRestore", CUresult, (int, CUcheckpointRestoreArgs *)) \
        X(cuCheckpointProcessUnlock, "cuCheckpointProcessUnlock", CUresult, (int, CUcheckpointUnlockArgs *))    \
        X(cuMemcpyHtoD, "cuMemcpyHtoD_v2", CUresult, (CUdeviceptr, const void *, size_t))                       \
        X(cuMemGetInfo, "cuMemGetInfo_v2", CUresult, (size_t *, size_t *))

typedef struct GpuDriver {
#define X(field, sym, ret, args) ret(*field) args;
        GPU_DRIVER_FUNCTIONS(X)
        GPU_OPTIONAL_FUNCTIONS(X)
#undef X
} GpuDriver;

struct Gpu {
        void *library;
        GpuDriver cu;
        SageVmmOps vmm; /* the VMM steps shared with libsage (common/vmm.h), over `cu` */
        uint32_t n_devices;
        uint32_t n_served;
        bool served[GPU_MAX_DEVICES];
        CUdevice device[GPU_MAX_DEVICES];
        CUcontext context[GPU_MAX_DEVICES];
        uint64_t total_memory[GPU_MAX_DEVICES];
        /* Clients name their GPU by UUID (their ordinals are not ours: CUDA_VISIBLE_DEVICES, containers). */
        CUuuid uuid[GPU_MAX_DEVICES];
        bool has_uuid[GPU_MAX_DEVICES];
        uint64_t granularity;
        void *staging; /* SAGE_CONTENT_KEY_BLOCK bytes for read-back: pinned (portable) if the driver gives it */
        bool staging_pinned;
};

/* The driver's name for `r` (cuGetErrorName), or "CUDA error". */
const char *gpu_error_name(const Gpu *g, CUresult r);
