/*
 * VMM steps over an injected driver table (vmm.h). The driver unmaps whole
 * mappings only and a handle is released only once nothing maps it, so
 * every helper undoes its own steps in reverse on failure and leaves the
 * caller's handle alone.
 */
#include "vmm.h"

bool sage_vmm_ops_complete(const SageVmmOps *ops) {
        return ops->create && ops->release && ops->address_reserve && ops->address_free && ops->map && ops->unmap &&
               ops->set_access && ops->copy_dtod && ops->ctx_synchronize;
}

CUmemAllocationProp sage_vmm_prop(int device) {
        return (CUmemAllocationProp){ .type = CU_MEM_ALLOCATION_TYPE_PINNED,
                                      .requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
                                      .location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = device } };
}

CUresult sage_vmm_map(const SageVmmOps *ops, CUdeviceptr va, size_t len, int device, CUmemGenericAllocationHandle h,
                      CUmemAccess_flags access) {
        CUmemAccessDesc desc = { .location = { CU_MEM_LOCATION_TYPE_DEVICE, device }, .flags = access };
        CUresult r = ops->map(va, len, 0, h, 0);

        if (r == CUDA_SUCCESS && (r = ops->set_access(va, len, &desc, 1)) != CUDA_SUCCESS)
                ops->unmap(va, len);
        return r;
}

CUresult sage_vmm_map_new(const SageVmmOps *ops, size_t len, int device, CUmemGenericAllocationHandle h,
                          CUmemAccess_flags access, CUdeviceptr *va) {
        CUresult r;

        *va = 0;
        if ((r = ops->address_reserve(va, len, 0, 0, 0)) != CUDA_SUCCESS) {
                *va = 0;
                return r;
        }
        if ((r = sage_vmm_map(ops, *va, len, device, h, access)) != CUDA_SUCCESS) {
                ops->address_free(*va, len);
                *va = 0;
        }
        return r;
}

void sage_vmm_unmap_free(const SageVmmOps *ops, CUdeviceptr va, size_t len) {
        ops->unmap(va, len);
        ops->address_free(va, len);
}

CUresult sage_vmm_copy_into_new(const SageVmmOps *ops, int device, CUdeviceptr src, size_t len,
                                CUmemGenericAllocationHandle *out) {
        CUmemAllocationProp prop = sage_vmm_prop(device);
        return sage_vmm_copy_into_new_prop(ops, &prop, src, len, out);
}

CUresult sage_vmm_copy_into_new_prop(const SageVmmOps *ops, const CUmemAllocationProp *prop, CUdeviceptr src,
                                     size_t len, CUmemGenericAllocationHandle *out) {
        int device = prop->location.id;
        CUmemGenericAllocationHandle h;
        CUdeviceptr tmp;
        CUresult r;

        if ((r = ops->create(&h, len, prop, 0)) != CUDA_SUCCESS)
                return r;
        if ((r = sage_vmm_map_new(ops, len, device, h, CU_MEM_ACCESS_FLAGS_PROT_READWRITE, &tmp)) == CUDA_SUCCESS) {
                r = ops->copy_dtod(tmp, src, len);
                if (r == CUDA_SUCCESS)
                        r = ops->ctx_synchronize();
                sage_vmm_unmap_free(ops, tmp, len);
        }
        if (r != CUDA_SUCCESS) {
                ops->release(h);
                return r;
        }
        *out = h;
        return CUDA_SUCCESS;
}
