/*
 * The VMM steps libsage's sharing allocator and the broker both take
 * (reserve + map + grant access, unmap + free, an exportable allocation,
 * a copy into a new one), over a small table of driver entry points: each
 * caller resolves the driver its own way (libsage through its hook table,
 * saged through dlsym) and unit tests pass a fake table.
 */
#pragma once

#include <cuda.h>
#include <stdbool.h>
#include <stddef.h>

/* The driver calls VMM work makes. Every entry is required unless it says otherwise. */
typedef struct SageVmmOps {
        CUresult (*create)(CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *, unsigned long long);
        CUresult (*release)(CUmemGenericAllocationHandle);
        CUresult (*address_reserve)(CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long);
        CUresult (*address_free)(CUdeviceptr, size_t);
        CUresult (*map)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, unsigned long long);
        CUresult (*unmap)(CUdeviceptr, size_t);
        CUresult (*set_access)(CUdeviceptr, size_t, const CUmemAccessDesc *, size_t);
        CUresult (*copy_dtod)(CUdeviceptr, CUdeviceptr, size_t);
        CUresult (*ctx_synchronize)(void);
} SageVmmOps;

/* Are all entries there? */
bool sage_vmm_ops_complete(const SageVmmOps *ops);

/* A pinned device allocation on `device`, exportable as a POSIX fd. */
CUmemAllocationProp sage_vmm_prop(int device);

/* Map all of `h` at [va, va+len) and grant `access` to `device`; on failure nothing stays mapped. */
CUresult sage_vmm_map(const SageVmmOps *ops, CUdeviceptr va, size_t len, int device, CUmemGenericAllocationHandle h,
                      CUmemAccess_flags access);

/* Reserve a new range and map all of `h` there (sage_vmm_map); *va is 0 on failure. */
CUresult sage_vmm_map_new(const SageVmmOps *ops, size_t len, int device, CUmemGenericAllocationHandle h,
                          CUmemAccess_flags access, CUdeviceptr *va);

/* Undo sage_vmm_map_new. */
void sage_vmm_unmap_free(const SageVmmOps *ops, CUdeviceptr va, size_t len);

/*
 * A new exportable allocation on `device` holding a copy of [src, src+len)
 * (a device-to-device copy, finished: the context is synchronized, since
 * such a copy returns before it is done).
 */
CUresult sage_vmm_copy_into_new(const SageVmmOps *ops, int device, CUdeviceptr src, size_t len,
                                CUmemGenericAllocationHandle *out);
/* The same, the new allocation made with `prop` (its location: the device). */
CUresult sage_vmm_copy_into_new_prop(const SageVmmOps *ops, const CUmemAllocationProp *prop, CUdeviceptr src,
                                     size_t len, CUmemGenericAllocationHandle *out);
