/*
 * The VMM steps libsage and saged share (common/vmm.c) against an in-test
 * driver: each step undoes what it did when a later one fails, and never
 * releases the caller's handle.
 */
#include "../../common/vmm.h"
#include "check.h"
#include "fake_share_driver.h"

#define G FAKE_GRAN

int main(void) {
        const SageVmmOps *ops = &fake_driver.vmm;
        CUmemGenericAllocationHandle h, copy;
        CUdeviceptr va;
        CUmemAccess_flags access;
        CUmemAllocationProp prop = sage_vmm_prop(3);

        CHECK(sage_vmm_ops_complete(ops));
        CHECK(prop.location.type == CU_MEM_LOCATION_TYPE_DEVICE && prop.location.id == 3);
        CHECK(prop.requestedHandleTypes == CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);

        fake_reset();
        h = fake_handle(2 * G, 0x2c);
        CHECK(sage_vmm_map_new(ops, 2 * G, 0, h, CU_MEM_ACCESS_FLAGS_PROT_READ, &va) == CUDA_SUCCESS && va);
        CHECK(fake_at(va, &access) && access == CU_MEM_ACCESS_FLAGS_PROT_READ && fake_holds(va, 2 * G, 0x2c));

        /* A copy into a new allocation: same bytes, the temporary mapping gone, the copy finished. */
        CHECK(sage_vmm_copy_into_new(ops, 0, va, 2 * G, &copy) == CUDA_SUCCESS);
        CHECK(fake.syncs == 1 && fake_live_maps() == 1 && fake_live_reservations() == 1);
        sage_vmm_unmap_free(ops, va, 2 * G);
        CHECK(fake_live_maps() == 0 && fake_live_reservations() == 0);
        CHECK(sage_vmm_map_new(ops, 2 * G, 0, copy, CU_MEM_ACCESS_FLAGS_PROT_READWRITE, &va) == CUDA_SUCCESS);
        CHECK(fake_holds(va, 2 * G, 0x2c));
        sage_vmm_unmap_free(ops, va, 2 * G);
        CHECK(ops->release(copy) == CUDA_SUCCESS);

        /* Access refused: nothing stays mapped or reserved, the handle is still the caller's. */
        fake.fail_access_at = 1;
        CHECK(sage_vmm_map_new(ops, 2 * G, 0, h, CU_MEM_ACCESS_FLAGS_PROT_READ, &va) == CUDA_ERROR_INVALID_VALUE);
        CHECK(va == 0 && fake_live_maps() == 0 && fake_live_reservations() == 0 && fake.live_handles == 1);

        /* The copy fails: the new allocation goes, the source stays. */
        CHECK(sage_vmm_map_new(ops, 2 * G, 0, h, CU_MEM_ACCESS_FLAGS_PROT_READ, &va) == CUDA_SUCCESS);
        fake.fail_copy_at = 1;
        CHECK(sage_vmm_copy_into_new(ops, 0, va, 2 * G, &copy) == CUDA_ERROR_ILLEGAL_ADDRESS);
        CHECK(fake.live_handles == 1 && fake_live_maps() == 1 && fake_live_reservations() == 1);
        /* No memory for it: nothing was mapped. */
        fake.fail_create_at = 1;
        CHECK(sage_vmm_copy_into_new(ops, 0, va, 2 * G, &copy) == CUDA_ERROR_OUT_OF_MEMORY);
        CHECK(fake.live_handles == 1 && fake_live_maps() == 1 && fake_live_reservations() == 1);
        sage_vmm_unmap_free(ops, va, 2 * G);
        CHECK(ops->release(h) == CUDA_SUCCESS);
        CHECK(fake.live_handles == 0 && fake.bad_unmaps == 0);
        fake_reset();
        return 0;
}
