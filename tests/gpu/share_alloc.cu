/*
 * Sharing for the allocators beyond cudaMalloc, on the GPU
 * (scripts/gpu-test.sh runs it natively and twice under SAGE_SHARE=1 with a
 * broker; docs/sharing.md, "Allocators"). Its weights:
 *   S  64 MiB from cudaMallocAsync (the device's default pool, cuMemAllocAsync),
 *      uploaded by cudaMemcpyAsync from pinned memory on a non-blocking
 *      stream, as XLA's cuda_async allocator and TensorFlow do;
 *   Q  32 MiB + 1000 bytes from cudaMallocFromPoolAsync on the default pool
 *      (its last granule filled in part: assembled);
 *   R  S's bytes again from cudaMallocAsync, then scaled in place by a kernel
 *      (the launch guard must give it a private copy first: no fault);
 *   T  4000-byte rows from cudaMallocPitch, uploaded by cudaMemcpy2D from a
 *      tight host array (SAGE lays the rows out with zeroed padding);
 *   V  32 MiB of app-managed VMM (cuMemCreate + cuMemMap + cuMemSetAccess, as
 *      XLA and PyTorch's expandable segments do): SAGE backs the handle;
 * then checksums each with a read-only kernel (padding never read). stdout:
 * the checksums. The second SAGE run must map S, Q, T and V (SHARE_HITS >= 4).
 */
#include <cuda.h>

#include "gpu_check.h"

#define CU_CHECK(call) STATUS_CHECK(CUresult, CUDA_SUCCESS, cu_name, call)
static const char *cu_name(CUresult r) {
        const char *n = "?";
        cuGetErrorName(r, &n);
        return n;
}

#define S_BYTES (64ull << 20)
#define Q_BYTES ((32ull << 20) + 1000)
#define ROW_WORDS 500ull
#define T_ROWS 8192ull
#define V_BYTES (32ull << 20)

__global__ void checksum_rows(const char *w, size_t pitch, size_t words, size_t rows, unsigned long long *out) {
        unsigned long long s = 0;
        for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < words * rows; i += (size_t)gridDim.x * blockDim.x)
                s += ((const unsigned long long *)(w + (i / words) * pitch))[i % words] * (2 * i + 1);
        atomicAdd(out, s);
}

__global__ void scale(unsigned long long *w, size_t n) {
        for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
                w[i] = w[i] * 3 + 1;
}

static unsigned long long sum_rows(const void *p, size_t pitch, size_t words, size_t rows, cudaStream_t s,
                                   unsigned long long *d_out) {
        unsigned long long h = 0;
        RT_CHECK(cudaMemsetAsync(d_out, 0, sizeof(h), s));
        checksum_rows<<<264, 256, 0, s>>>((const char *)p, pitch, words, rows, d_out);
        LAUNCH_CHECK();
        RT_CHECK(cudaMemcpyAsync(&h, d_out, sizeof(h), cudaMemcpyDeviceToHost, s));
        RT_CHECK(cudaStreamSynchronize(s));
        return h;
}

static unsigned long long sum_of(const void *p, size_t bytes, cudaStream_t s, unsigned long long *d_out) {
        return sum_rows(p, bytes / 8 * 8, bytes / 8, 1, s, d_out);
}

static void fill(unsigned long long *w, size_t bytes, unsigned long long seed) {
        for (size_t i = 0; i < bytes / 8; i++)
                w[i] = (i + seed) * 0x9e3779b97f4a7c15ull ^ (i >> 7);
}

int main(void) {
        cudaStream_t s;
        cudaMemPool_t pool;
        unsigned long long *host, *d_out;
        void *S, *Q, *R, *T;
        size_t t_pitch;
        CUdevice dev;
        CUdeviceptr V;
        CUmemGenericAllocationHandle vh;
        CUmemAllocationProp prop = {};
        CUmemAccessDesc access = {};
        size_t gran, v_size;

        RT_CHECK(cudaSetDevice(0));
        RT_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
        RT_CHECK(cudaMallocHost((void **)&host, S_BYTES));
        RT_CHECK(cudaMalloc((void **)&d_out, sizeof(*d_out)));
        fill(host, S_BYTES, 1);

        RT_CHECK(cudaMallocAsync(&S, S_BYTES, s));
        RT_CHECK(cudaMemcpyAsync(S, host, S_BYTES, cudaMemcpyHostToDevice, s));
        RT_CHECK(cudaDeviceGetDefaultMemPool(&pool, 0));
        RT_CHECK(cudaMallocFromPoolAsync(&Q, Q_BYTES, pool, s));
        RT_CHECK(cudaMemcpyAsync(Q, (char *)host + 4096, Q_BYTES, cudaMemcpyHostToDevice, s));
        RT_CHECK(cudaMallocAsync(&R, S_BYTES, s));
        RT_CHECK(cudaMemcpyAsync(R, host, S_BYTES, cudaMemcpyHostToDevice, s));
        RT_CHECK(cudaMallocPitch(&T, &t_pitch, ROW_WORDS * 8, T_ROWS));
        RT_CHECK(cudaMemcpy2D(T, t_pitch, host, ROW_WORDS * 8, ROW_WORDS * 8, T_ROWS, cudaMemcpyHostToDevice));

        CU_CHECK(cuCtxGetDevice(&dev));
        prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
        prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        prop.location.id = dev;
        CU_CHECK(cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
        v_size = (V_BYTES + gran - 1) / gran * gran;
        CU_CHECK(cuMemCreate(&vh, v_size, &prop, 0));
        CU_CHECK(cuMemAddressReserve(&V, v_size, 0, 0, 0));
        CU_CHECK(cuMemMap(V, v_size, 0, vh, 0));
        access.location = prop.location;
        access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
        CU_CHECK(cuMemSetAccess(V, v_size, &access, 1));
        RT_CHECK(cudaMemcpyAsync((void *)V, (char *)host + 8192, V_BYTES, cudaMemcpyHostToDevice, s));

        scale<<<264, 256, 0, s>>>((unsigned long long *)R, S_BYTES / 8);
        LAUNCH_CHECK();
        printf("S %016llx\n", sum_of(S, S_BYTES, s, d_out));
        printf("Q %016llx\n", sum_of(Q, Q_BYTES, s, d_out));
        printf("R %016llx\n", sum_of(R, S_BYTES, s, d_out));
        printf("T %016llx\n", sum_rows(T, t_pitch, ROW_WORDS, T_ROWS, s, d_out));
        printf("V %016llx\n", sum_of((void *)V, V_BYTES, s, d_out));

        RT_CHECK(cudaFreeAsync(S, s));
        RT_CHECK(cudaFreeAsync(Q, s));
        RT_CHECK(cudaFreeAsync(R, s));
        RT_CHECK(cudaStreamSynchronize(s));
        RT_CHECK(cudaFree(T));
        CU_CHECK(cuMemUnmap(V, v_size));
        CU_CHECK(cuMemAddressFree(V, v_size));
        CU_CHECK(cuMemRelease(vh));
        RT_CHECK(cudaFree(d_out));
        RT_CHECK(cudaFreeHost(host));
        RT_CHECK(cudaStreamDestroy(s));
        return 0;
}
