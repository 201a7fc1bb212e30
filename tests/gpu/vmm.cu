/*
 * The VMM API itself, as SAGE's allocator and extent sharing use it:
 * cuMemCreate (exportable as a POSIX fd), cuMemAddressReserve, cuMemMap,
 * cuMemSetAccess; a kernel writes through one mapping, the same physical
 * memory is exported, re-imported and mapped at a second address, and the
 * data is read back through both; then everything is unmapped and released.
 */
#define SAGE_GPU_NEED_DRIVER 1
#include <unistd.h>

#include "gpu_check.h"

#define GRANULES 4

__global__ void fill_pattern(unsigned *p, size_t n, unsigned seed) {
        size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
        if (i < n)
                p[i] = (unsigned)i * 2654435761u ^ seed;
}

__global__ void sum_words(const unsigned *p, size_t n, unsigned long long *out) {
        size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
        if (i < n)
                atomicAdd(out, (unsigned long long)p[i]);
}

static void map_rw(CUdeviceptr va, size_t size, CUmemGenericAllocationHandle h, int dev) {
        CU_CHECK(cuMemMap(va, size, 0, h, 0));
        CUmemAccessDesc access;
        memset(&access, 0, sizeof(access));
        access.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        access.location.id = dev;
        access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
        CU_CHECK(cuMemSetAccess(va, size, &access, 1));
}

int main(void) {
        RT_CHECK(cudaFree(0)); /* the runtime's primary context becomes current */
        CUdevice dev;
        CU_CHECK(cuCtxGetDevice(&dev));

        CUmemAllocationProp prop;
        memset(&prop, 0, sizeof(prop));
        prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
        prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        prop.location.id = dev;
        prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;

        size_t gran = 0;
        CU_CHECK(cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
        FAIL_IF(gran == 0, "zero granularity");
        size_t size = GRANULES * gran;
        size_t words = size / sizeof(unsigned);

        CUmemGenericAllocationHandle handle;
        CU_CHECK(cuMemCreate(&handle, size, &prop, 0));
        CUdeviceptr va = 0;
        CU_CHECK(cuMemAddressReserve(&va, size, gran, 0, 0));
        map_rw(va, size, handle, dev);

        unsigned long long *d_sum = NULL;
        RT_CHECK(cudaMalloc((void **)&d_sum, sizeof(*d_sum)));
        RT_CHECK(cudaMemset(d_sum, 0, sizeof(*d_sum)));

        unsigned blocks = (unsigned)((words + 255) / 256);
        fill_pattern<<<blocks, 256>>>((unsigned *)va, words, 0x5a6e0001u);
        LAUNCH_CHECK();
        RT_CHECK(cudaDeviceSynchronize());

        /* Second view of the same physical memory, through an exported fd. */
        int fd = -1;
        CU_CHECK(cuMemExportToShareableHandle(&fd, handle, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0));
        CUmemGenericAllocationHandle imported;
        CU_CHECK(cuMemImportFromShareableHandle(&imported, (void *)(uintptr_t)fd,
                                                CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR));
        close(fd);
        CUdeviceptr alias = 0;
        CU_CHECK(cuMemAddressReserve(&alias, size, gran, 0, 0));
        map_rw(alias, size, imported, dev);

        sum_words<<<blocks, 256>>>((const unsigned *)alias, words, d_sum);
        LAUNCH_CHECK();
        RT_CHECK(cudaDeviceSynchronize());

        unsigned *host = (unsigned *)malloc(size);
        FAIL_IF(!host, "out of host memory");
        RT_CHECK(cudaMemcpy(host, (void *)va, size, cudaMemcpyDeviceToHost));
        unsigned long long gpu_sum = 0, cpu_sum = 0;
        RT_CHECK(cudaMemcpy(&gpu_sum, d_sum, sizeof(gpu_sum), cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < words; i++) {
                unsigned want = (unsigned)i * 2654435761u ^ 0x5a6e0001u;
                FAIL_IF(host[i] != want, "word %zu = %08x, want %08x", i, host[i], want);
                cpu_sum += want;
        }
        FAIL_IF(gpu_sum != cpu_sum, "alias sum %llu, want %llu", gpu_sum, cpu_sum);
        uint64_t direct = checksum_bytes(host, size);
        RT_CHECK(cudaMemcpy(host, (void *)alias, size, cudaMemcpyDeviceToHost));
        FAIL_IF(checksum_bytes(host, size) != direct, "alias mapping reads different data");

        /* Granularity is a property of the GPU, not of SAGE: print only the size
     * in granules so the output stays identical whatever the backing. */
        printf("vmm granules=%d checksum=%016llx alias_sum=%llu\n", GRANULES, (unsigned long long)direct, gpu_sum);
        fprintf(stderr, "info: granularity %zu bytes\n", gran);

        CU_CHECK(cuMemUnmap(alias, size));
        CU_CHECK(cuMemAddressFree(alias, size));
        CU_CHECK(cuMemRelease(imported));
        CU_CHECK(cuMemUnmap(va, size));
        CU_CHECK(cuMemAddressFree(va, size));
        CU_CHECK(cuMemRelease(handle));
        RT_CHECK(cudaFree(d_sum));
        free(host);
        printf("ok\n");
        return 0;
}
