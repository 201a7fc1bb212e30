/* fake_pool.c: stream-ordered memory pools, as far as allocators use them.
 *
 * Every device has a default pool and a current one (cuDeviceSetMemPool);
 * cuMemPoolCreate makes others. A pool is only a name here: an allocation
 * from any pool is a cuMemAllocAsync (a plain device allocation, freed by
 * cuMemFreeAsync or cuMemFree), since what a test needs to tell apart is
 * which pool the app asked for, not the pool's reuse of memory.
 */
#include "fake_internal.h"

#include <stdlib.h>

struct CUmemPoolHandle_st {
        CUdevice device;
        bool is_default;
};

/* The defaults exist for the life of the process, as the driver's. */
static struct CUmemPoolHandle_st default_pools[FAKE_MAX_DEVICES];
static CUmemoryPool current[FAKE_MAX_DEVICES];

static bool valid_device(CUdevice dev) {
        return dev >= 0 && dev < FAKE_MAX_DEVICES && dev < fake.device_count;
}

FAKE_EXPORT CUresult cuDeviceGetDefaultMemPool(CUmemoryPool *pool, CUdevice dev) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT();
        if (!pool || !valid_device(dev))
                return CUDA_ERROR_INVALID_VALUE;
        default_pools[dev] = (struct CUmemPoolHandle_st){ .device = dev, .is_default = true };
        *pool = &default_pools[dev];
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDeviceGetMemPool(CUmemoryPool *pool, CUdevice dev) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT();
        if (!pool || !valid_device(dev))
                return CUDA_ERROR_INVALID_VALUE;
        fake_lock();
        *pool = current[dev];
        fake_unlock();
        return *pool ? CUDA_SUCCESS : cuDeviceGetDefaultMemPool(pool, dev);
}

FAKE_EXPORT CUresult cuDeviceSetMemPool(CUdevice dev, CUmemoryPool pool) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT();
        if (!pool || !valid_device(dev))
                return CUDA_ERROR_INVALID_VALUE;
        fake_lock();
        current[dev] = pool;
        fake_unlock();
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuMemPoolCreate(CUmemoryPool *pool, const CUmemPoolProps *props) {
        FAKE_GATE();
        FAKE_REQUIRE_INIT();
        if (!pool || !props || props->location.type != CU_MEM_LOCATION_TYPE_DEVICE || !valid_device(props->location.id))
                return CUDA_ERROR_INVALID_VALUE;
        if (!(*pool = calloc(1, sizeof(**pool))))
                return CUDA_ERROR_OUT_OF_MEMORY;
        (*pool)->device = props->location.id;
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuMemPoolDestroy(CUmemoryPool pool) {
        FAKE_GATE();
        if (!pool || pool->is_default)
                return CUDA_ERROR_INVALID_VALUE;
        fake_lock();
        for (int i = 0; i < FAKE_MAX_DEVICES; i++)
                if (current[i] == pool)
                        current[i] = NULL;
        fake_unlock();
        free(pool);
        return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuMemAllocFromPoolAsync(CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool, CUstream s) {
        FAKE_GATE();
        if (!pool)
                return CUDA_ERROR_INVALID_VALUE;
        return cuMemAllocAsync(dptr, bytesize, s);
}

FAKE_EXPORT CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool, CUstream s) {
        FAKE_GATE();
        return cuMemAllocFromPoolAsync(dptr, bytesize, pool, s);
}
