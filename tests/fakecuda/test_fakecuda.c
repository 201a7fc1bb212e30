/* test_fakecuda: the simulated driver against its contract, linked directly.
 *
 * One binary, several modes (argv[1]), because the driver reads its
 * environment once per process: "api" (the bulk: init, contexts, memory,
 * copies, kernels, graphs, entry points, errors), "init-delay",
 * "visible-devices", "no-device", "fail-init". meson.build sets each mode's
 * environment.
 */
#include <cuda.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fake_check.h"
#include "fakecuda.h"

#define PTR(d) ((void *)(uintptr_t)(d))

/* ------------------------------------------------------------ kernels */
static void fill_kernel(const FakeKernelLaunch *launch, void **params) {
        unsigned *dst = *(unsigned **)params[0];
        unsigned n = *(unsigned *)params[1], value = *(unsigned *)params[2];
        unsigned threads = launch->grid[0] * launch->block[0];
        for (unsigned t = 0; t < threads; t++)
                for (unsigned i = t; i < n; i += threads)
                        dst[i] = value + i;
}

static const size_t fill_params[] = { sizeof(void *), sizeof(unsigned), sizeof(unsigned), 0 };

/* "hold": says it started, then runs until test_drain_busy lets it go. */
static struct {
        pthread_mutex_t lock;
        pthread_cond_t changed;
        bool started, go, done;
} hold = { .lock = PTHREAD_MUTEX_INITIALIZER, .changed = PTHREAD_COND_INITIALIZER };

static void hold_kernel(const FakeKernelLaunch *launch, void **params) {
        (void)launch;
        (void)params;
        pthread_mutex_lock(&hold.lock);
        hold.started = true;
        pthread_cond_broadcast(&hold.changed);
        while (!hold.go)
                pthread_cond_wait(&hold.changed, &hold.lock);
        hold.done = true;
        pthread_mutex_unlock(&hold.lock);
}

static const size_t hold_params[] = { 0 };

static const FakeKernelEntry fill_entries[] = {
        { "fill", fill_kernel, fill_params },
        { "hold", hold_kernel, hold_params },
};

static const FakeModuleImage test_image = { FAKECUDA_IMAGE_MAGIC, 2, fill_entries };

/* The arguments of test_image's "fill" (dst[i] = value + i, i < n) over a
 * new device buffer of n words, d. */
typedef struct FillArgs {
        CUdeviceptr d;
        unsigned n, value;
        void *params[3];
} FillArgs;

static void fill_args(FillArgs *a, unsigned n, unsigned value) {
        a->n = n;
        a->value = value;
        a->params[0] = &a->d;
        a->params[1] = &a->n;
        a->params[2] = &a->value;
        OK(cuMemAlloc(&a->d, n * sizeof(unsigned)));
}

/* ------------------------------------------------------------ helpers */
static void *libcuda(void) {
        return dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
}

static void *proc(const char *name, int version, cuuint64_t flags) {
        void *p = NULL;
        CUdriverProcAddressQueryResult st;
        CUresult r = cuGetProcAddress_v2(name, &p, version, flags, &st);
        return r == CUDA_SUCCESS && st == CU_GET_PROC_ADDRESS_SUCCESS ? p : NULL;
}

static size_t free_mem(void) {
        size_t f = 0, t = 0;
        OK(cuMemGetInfo(&f, &t));
        return f;
}

/* ------------------------------------------------------------ api mode */
static void test_before_init(void) {
        int n, v;
        CUdeviceptr d;
        CUcontext ctx;
        CHECK_CU(cuDeviceGetCount(&n), CUDA_ERROR_NOT_INITIALIZED);
        CHECK_CU(cuMemAlloc(&d, 16), CUDA_ERROR_NOT_INITIALIZED);
        CHECK_CU(cuDevicePrimaryCtxRetain(&ctx, 0), CUDA_ERROR_NOT_INITIALIZED);
        OK(cuDriverGetVersion(&v));
        CHECK(v == 13000);
        CHECK(proc("cuInit", 12000, 0) != NULL); /* resolvable before cuInit */
}

static void test_devices(void) {
        int n = 0, v = -1;
        char name[64], bus[32];
        size_t total;
        CUuuid a, b;
        CHECK_CU(cuInit(1), CUDA_ERROR_INVALID_VALUE);
        OK(cuInit(0));
        OK(cuDeviceGetCount(&n));
        CHECK(n == 2);
        OK(cuDeviceGetName(name, sizeof name, 0));
        CHECK(strcmp(name, "SAGE simulated GPU") == 0);
        OK(cuDeviceGetAttribute(&v, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, 0));
        CHECK(v == 9);
        OK(cuDeviceGetAttribute(&v, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, 1));
        CHECK(v > 0);
        OK(cuDeviceGetAttribute(&v, (CUdevice_attribute)99999, 0));
        CHECK(v == 0);
        CHECK_CU(cuDeviceGetAttribute(&v, CU_DEVICE_ATTRIBUTE_WARP_SIZE, 2), CUDA_ERROR_INVALID_DEVICE);
        OK(cuDeviceTotalMem(&total, 0));
        CHECK(total == (size_t)64 << 20);
        OK(cuDeviceGetUuid(&a, 0));
        OK(cuDeviceGetUuid(&b, 1));
        CHECK(memcmp(&a, &b, sizeof a) != 0);
        OK(cuDeviceGetPCIBusId(bus, sizeof bus, 1));
        CHECK(strlen(bus) > 8);
}

static void test_contexts(void) {
        CUcontext p1, p2, cur, c;
        CUdeviceptr d;
        unsigned flags;
        int active;
        CUdevice dev;

        CHECK_CU(cuMemAlloc(&d, 16), CUDA_ERROR_INVALID_CONTEXT);
        CHECK_CU(cuCtxSynchronize(), CUDA_ERROR_INVALID_CONTEXT);
        OK(cuDevicePrimaryCtxGetState(0, &flags, &active));
        CHECK(!active);
        OK(cuDevicePrimaryCtxRetain(&p1, 0));
        OK(cuDevicePrimaryCtxRetain(&p2, 0));
        CHECK(p1 == p2);
        OK(cuDevicePrimaryCtxGetState(0, &flags, &active));
        CHECK(active);
        OK(cuCtxSetCurrent(p1));
        OK(cuCtxGetCurrent(&cur));
        CHECK(cur == p1);
        OK(cuMemAlloc(&d, 1 << 20));
        CHECK(free_mem() < (size_t)64 << 20);
        OK(cuDevicePrimaryCtxRelease(0));
        OK(cuDevicePrimaryCtxGetState(0, &flags, &active));
        CHECK(active);
        OK(cuDevicePrimaryCtxRelease(0)); /* last reference: destroyed, memory freed */
        OK(cuDevicePrimaryCtxGetState(0, &flags, &active));
        CHECK(!active);
        CHECK_CU(cuDevicePrimaryCtxRelease(0), CUDA_ERROR_INVALID_CONTEXT);
        OK(cuCtxGetCurrent(&cur));
        CHECK(cur == NULL);
        CHECK_CU(cuMemAlloc(&d, 16), CUDA_ERROR_INVALID_CONTEXT);
        OK(cuCtxSetCurrent(NULL));

        OK(cuDevicePrimaryCtxRetain(&p1, 0));
        OK(cuCtxSetCurrent(p1));
        CHECK(free_mem() == (size_t)64 << 20);

        /* Explicit contexts: created current, on their device, own their memory. */
        OK(cuCtxCreate(&c, NULL, 0, 1));
        OK(cuCtxGetCurrent(&cur));
        CHECK(cur == c);
        OK(cuCtxGetDevice(&dev));
        CHECK(dev == 1);
        OK(cuMemAlloc(&d, 8 << 20));
        CHECK(free_mem() == (size_t)56 << 20);
        OK(cuCtxPushCurrent(p1));
        OK(cuCtxGetDevice(&dev));
        CHECK(dev == 0);
        CHECK(free_mem() == (size_t)64 << 20); /* per device */
        OK(cuCtxPopCurrent(&cur));
        CHECK(cur == p1);
        OK(cuCtxGetCurrent(&cur));
        CHECK(cur == c);
        CHECK_CU(cuCtxDestroy(p1), CUDA_ERROR_INVALID_CONTEXT); /* primary: release, not destroy */
        OK(cuCtxDestroy(c));
        CHECK_CU(cuMemFree(d), CUDA_ERROR_INVALID_VALUE); /* freed with its context */
        CHECK_CU(cuCtxDestroy(c), CUDA_ERROR_INVALID_CONTEXT);
        OK(cuCtxSetCurrent(p1));

        CUcontext c3;
        CUresult (*create_v2)(CUcontext *, unsigned, CUdevice);
        void *p = proc("cuCtxCreate", 11000, 0);
        memcpy(&create_v2, &p, sizeof p);
        CHECK(p != NULL);
        OK(create_v2(&c3, 0, 1));
        OK(cuCtxGetDevice(&dev));
        CHECK(dev == 1);
        OK(cuMemAlloc(&d, 2 << 20));
        OK(cuCtxDestroy(c3));
        OK(cuCtxSetCurrent(p1));
        OK(cuCtxCreate(&c3, NULL, 0, 1));
        CHECK(free_mem() == (size_t)64 << 20);
        OK(cuCtxDestroy(c3));
        OK(cuCtxSetCurrent(p1));
}

static void test_memory(void) {
        CUdeviceptr a, b, base;
        size_t size, f, t, pitch;
        OK(cuMemAlloc(&a, 60 << 20));
        CHECK_CU(cuMemAlloc(&b, 8 << 20), CUDA_ERROR_OUT_OF_MEMORY);
        OK(cuMemGetInfo(&f, &t));
        CHECK(t == (size_t)64 << 20 && f == (size_t)4 << 20);
        OK(cuMemGetAddressRange(&base, &size, a + 100));
        CHECK(base == a && size == (size_t)60 << 20);
        OK(cuMemFree(a));
        CHECK(free_mem() == (size_t)64 << 20);
        CHECK_CU(cuMemFree(a), CUDA_ERROR_INVALID_VALUE);
        CHECK_CU(cuMemAlloc(&a, 0), CUDA_ERROR_INVALID_VALUE);

        OK(cuMemAllocPitch(&a, &pitch, 100, 10, 4));
        CHECK(pitch >= 100);
        unsigned type = 0;
        CUcontext ctx = NULL, cur;
        OK(cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, a));
        CHECK(type == CU_MEMORYTYPE_DEVICE);
        OK(cuPointerGetAttribute(&ctx, CU_POINTER_ATTRIBUTE_CONTEXT, a + 8));
        OK(cuCtxGetCurrent(&cur));
        CHECK(ctx == cur);
        CUdeviceptr dp = 0;
        OK(cuPointerGetAttribute(&dp, CU_POINTER_ATTRIBUTE_DEVICE_POINTER, a + 8));
        CHECK(dp == a + 8);
        OK(cuMemFree(a));

        void *h;
        OK(cuMemAllocHost(&h, 4096));
        OK(cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, (CUdeviceptr)(uintptr_t)h));
        CHECK(type == CU_MEMORYTYPE_HOST);
        memset(h, 1, 4096);
        OK(cuMemFreeHost(h));
        CHECK_CU(cuMemFreeHost(h), CUDA_ERROR_INVALID_VALUE);
        OK(cuMemHostAlloc(&h, 100, CU_MEMHOSTALLOC_PORTABLE));
        OK(cuMemFreeHost(h));
        static char reg[8192];
        OK(cuMemHostRegister(reg, sizeof reg, 0));
        CHECK_CU(cuMemHostRegister(reg + 100, 10, 0), CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED);
        CHECK_CU(cuMemHostUnregister(reg + 4096), CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED); /* its base only */
        OK(cuMemHostUnregister(reg));
        CHECK_CU(cuMemHostUnregister(reg), CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED);
        CHECK_CU(cuMemHostRegister(reg, sizeof reg, 0x100), CUDA_ERROR_INVALID_VALUE); /* a flag it does not know */
        OK(cuMemHostAlloc(&h, 4096, 0));
        CHECK_CU(cuMemHostRegister(h, 4096, 0), CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED); /* pinned already */
        OK(cuMemFreeHost(h));
        void *gone = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        CHECK(gone != MAP_FAILED);
        munmap(gone, 8192);
        CHECK_CU(cuMemHostRegister(gone, 8192, 0), CUDA_ERROR_INVALID_VALUE); /* nothing there to pin */
        CHECK_CU(cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, (CUdeviceptr)(uintptr_t)reg),
                 CUDA_ERROR_INVALID_VALUE);

        OK(cuMemAllocManaged(&a, 4096, CU_MEM_ATTACH_GLOBAL));
        ((char *)PTR(a))[10] = 5;
        OK(cuMemFree(a));

        CUstream s;
        OK(cuStreamCreate(&s, 0));
        OK(cuMemAllocAsync(&a, 1000, s));
        OK(cuMemsetD32Async(a, 0xdeadbeef, 250, s));
        /* Asynchronous: queued until the program synchronizes, every time. */
        CHECK(((unsigned *)PTR(a))[249] != 0xdeadbeef);
        /* A query of work queued: not ready, as on the GPU, until it ran (a query lets it run). */
        CHECK_CU(cuStreamQuery(s), CUDA_ERROR_NOT_READY);
        for (int i = 0; i < 10000 && cuStreamQuery(s) == CUDA_ERROR_NOT_READY; i++)
                usleep(100);
        CHECK_CU(cuStreamQuery(s), CUDA_SUCCESS);
        CHECK(((unsigned *)PTR(a))[249] == 0xdeadbeef);
        OK(cuMemsetD16(a, 0x1234, 500));
        CHECK(((unsigned short *)PTR(a))[499] == 0x1234);
        OK(cuMemsetD8(a, 7, 1000));
        CHECK(((unsigned char *)PTR(a))[999] == 7);
        CHECK_CU(cuMemsetD32(a + 1, 0, 1), CUDA_ERROR_INVALID_VALUE);
        OK(cuMemFreeAsync(a, s));
        OK(cuStreamDestroy(s));
}

typedef CUresult (*HtoDFn)(CUdeviceptr, const void *, size_t);
typedef CUresult (*DtoHFn)(void *, CUdeviceptr, size_t);
typedef CUresult (*DtoHAsyncFn)(void *, CUdeviceptr, size_t, CUstream);

/* A pitched copy (`type`: CUDA_MEMCPY2D or 3D) between host memory and
 * device memory `dev`, `up` to the device or back down: `height` rows of
 * `width` bytes, `pitch` apart on both sides. */
#define PITCHED(type, up, host, dev, pitch, width, height)                                                          \
        (type) {                                                                                                    \
                .srcMemoryType = (up) ? CU_MEMORYTYPE_HOST : CU_MEMORYTYPE_DEVICE, .srcHost = (up) ? (host) : NULL, \
                .srcDevice = (up) ? 0 : (dev), .srcPitch = (pitch),                                                 \
                .dstMemoryType = (up) ? CU_MEMORYTYPE_DEVICE : CU_MEMORYTYPE_HOST, .dstHost = (up) ? NULL : (host), \
                .dstDevice = (up) ? (dev) : 0, .dstPitch = (pitch), .WidthInBytes = (width), .Height = (height)     \
        }

static void test_copies(void) {
        enum {
                N = 4096
        };
        static unsigned char src[N], dst[N];
        for (int i = 0; i < N; i++)
                src[i] = (unsigned char)(i * 7 + 3);
        CUdeviceptr a, b;
        CUstream s;
        CUcontext ctx;
        OK(cuCtxGetCurrent(&ctx));
        OK(cuMemAlloc(&a, N));
        OK(cuMemAlloc(&b, N));
        OK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));

#define ROUND_TRIP(upload, download)             \
        do {                                     \
                memset(dst, 0, N);               \
                OK(cuMemsetD8(a, 0, N));         \
                OK(cuMemsetD8(b, 0, N));         \
                OK(upload);                      \
                OK(download);                    \
                CHECK(memcmp(src, dst, N) == 0); \
        } while (0)

        ROUND_TRIP(cuMemcpyHtoD(a, src, N), cuMemcpyDtoH(dst, a, N));
        ROUND_TRIP(cuMemcpyHtoDAsync(a, src, N, s), cuMemcpyDtoHAsync(dst, a, N, s));
        ROUND_TRIP(cuMemcpyHtoD(a, src, N), (cuMemcpyDtoD(b, a, N), cuMemcpyDtoH(dst, b, N)));
        ROUND_TRIP(cuMemcpyHtoD(a, src, N), (cuMemcpyDtoDAsync(b, a, N, s), cuMemcpyDtoH(dst, b, N)));
        ROUND_TRIP(cuMemcpy(a, (CUdeviceptr)(uintptr_t)src, N), cuMemcpy((CUdeviceptr)(uintptr_t)dst, a, N));
        ROUND_TRIP(cuMemcpyAsync(a, (CUdeviceptr)(uintptr_t)src, N, s),
                   cuMemcpyAsync((CUdeviceptr)(uintptr_t)dst, a, N, NULL));
        ROUND_TRIP(cuMemcpyHtoD(a, src, N), (cuMemcpyPeer(b, ctx, a, ctx, N), cuMemcpyDtoH(dst, b, N)));
        ROUND_TRIP(cuMemcpyHtoD(a, src, N), (cuMemcpyPeerAsync(b, ctx, a, ctx, N, s), cuMemcpyDtoH(dst, b, N)));

        /* Per-thread variants, found the way cudart finds them. */
        HtoDFn htod_ptds;
        DtoHFn dtoh_ptds;
        DtoHAsyncFn dtoh_ptsz;
        void *p1 = proc("cuMemcpyHtoD", 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM);
        void *p2 = proc("cuMemcpyDtoH", 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM);
        void *p3 = proc("cuMemcpyDtoHAsync", 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM);
        CHECK(p1 && p2 && p3);
        memcpy(&htod_ptds, &p1, sizeof p1);
        memcpy(&dtoh_ptds, &p2, sizeof p2);
        memcpy(&dtoh_ptsz, &p3, sizeof p3);
        ROUND_TRIP(htod_ptds(a, src, N), dtoh_ptds(dst, a, N));
        ROUND_TRIP(htod_ptds(a, src, N), dtoh_ptsz(dst, a, N, CU_STREAM_PER_THREAD));

        /* 2D: a 64x64 tile of a 128-wide host image to a pitched device buffer. */
        CUDA_MEMCPY2D up = PITCHED(CUDA_MEMCPY2D, true, src, a, 64, 64, 64);
        CUDA_MEMCPY2D down = PITCHED(CUDA_MEMCPY2D, false, dst, a, 64, 64, 64);
        ROUND_TRIP(cuMemcpy2D(&up), cuMemcpy2D(&down));
        ROUND_TRIP(cuMemcpy2DUnaligned(&up), cuMemcpy2DUnaligned(&down));
        ROUND_TRIP(cuMemcpy2DAsync(&up, s), cuMemcpy2DAsync(&down, s));
        /* Strided: every other 32-byte half-row. */
        memset(dst, 0, N);
        CUDA_MEMCPY2D strided = down;
        strided.srcPitch = 64, strided.WidthInBytes = 32, strided.dstPitch = 64;
        OK(cuMemcpyHtoD(a, src, N));
        OK(cuMemcpy2D(&strided));
        CHECK(memcmp(dst, src, 32) == 0 && dst[32] == 0 && memcmp(dst + 64, src + 64, 32) == 0);

        CUDA_MEMCPY3D up3 = PITCHED(CUDA_MEMCPY3D, true, src, a, 32, 32, 16);
        CUDA_MEMCPY3D down3 = PITCHED(CUDA_MEMCPY3D, false, dst, a, 32, 32, 16);
        down3.srcMemoryType = CU_MEMORYTYPE_UNIFIED;
        up3.srcHeight = up3.dstHeight = down3.srcHeight = down3.dstHeight = 16;
        up3.Depth = down3.Depth = 8;
        ROUND_TRIP(cuMemcpy3D(&up3), cuMemcpy3D(&down3));
        ROUND_TRIP(cuMemcpy3DAsync(&up3, s), cuMemcpy3DAsync(&down3, s));
        CUDA_MEMCPY3D arr = up3;
        arr.dstMemoryType = CU_MEMORYTYPE_ARRAY;
        CHECK_CU(cuMemcpy3D(&arr), CUDA_ERROR_NOT_SUPPORTED);
        CHECK_CU(cuMemcpyHtoD(0, src, 16), CUDA_ERROR_INVALID_VALUE);

        OK(cuStreamSynchronize(s));
        OK(cuStreamQuery(s));
        OK(cuStreamDestroy(s));
        CHECK_CU(cuStreamSynchronize(s), CUDA_ERROR_INVALID_HANDLE);
        OK(cuMemFree(a));
        OK(cuMemFree(b));
}

static void test_kernels(void) {
        enum {
                N = 1000
        };
        CUmodule mod;
        CUfunction fn;
        unsigned host[N];
        FillArgs fa;
        fill_args(&fa, N, 40);

        static const FakeModuleImage bad = { "NOTFAKE!", 0, NULL };
        CHECK_CU(cuModuleLoadData(&mod, &bad), CUDA_ERROR_INVALID_IMAGE);
        OK(cuModuleLoadData(&mod, &test_image));
        CHECK_CU(cuModuleGetFunction(&fn, mod, "nope"), CUDA_ERROR_NOT_FOUND);
        OK(cuModuleGetFunction(&fn, mod, "fill"));
        OK(cuLaunchKernel(fn, 4, 1, 1, 32, 1, 1, 0, NULL, fa.params, NULL));
        OK(cuMemcpyDtoH(host, fa.d, sizeof host));
        CHECK(host[0] == 40 && host[N - 1] == 40 + N - 1);
        CHECK_CU(cuLaunchKernel(fn, 0, 1, 1, 32, 1, 1, 0, NULL, fa.params, NULL), CUDA_ERROR_INVALID_VALUE);
        CUdeviceptr gptr;
        size_t gsize;
        CHECK_CU(cuModuleGetGlobal(&gptr, &gsize, mod, "g"), CUDA_ERROR_NOT_FOUND);
        OK(cuModuleUnload(mod));
        CHECK_CU(cuModuleUnload(mod), CUDA_ERROR_INVALID_HANDLE);

        fa.value = 7;
        CUlaunchConfig cfg = {
                .gridDimX = 2, .gridDimY = 1, .gridDimZ = 1, .blockDimX = 64, .blockDimY = 1, .blockDimZ = 1
        };
        OK(cuModuleLoadDataEx(&mod, &test_image, 0, NULL, NULL));
        OK(cuModuleGetFunction(&fn, mod, "fill"));
        OK(cuLaunchKernelEx(&cfg, fn, fa.params, NULL));
        OK(cuMemcpyDtoH(host, fa.d, sizeof host));
        CHECK(host[5] == 12);
        OK(cuModuleUnload(mod));

        /* Libraries: a CUkernel launches where a CUfunction is expected. */
        CUlibrary lib;
        CUkernel k;
        CUmodule lmod;
        CUfunction kf;
        fa.value = 100;
        OK(cuLibraryLoadData(&lib, &test_image, NULL, NULL, 0, NULL, NULL, 0));
        OK(cuLibraryGetKernel(&k, lib, "fill"));
        CHECK_CU(cuLibraryGetKernel(&k, lib, "missing"), CUDA_ERROR_NOT_FOUND);
        OK(cuLibraryGetKernel(&k, lib, "fill"));
        OK(cuLaunchKernel((CUfunction)(void *)k, 1, 1, 1, 1, 1, 1, 0, NULL, fa.params, NULL));
        OK(cuMemcpyDtoH(host, fa.d, sizeof host));
        CHECK(host[1] == 101);
        OK(cuKernelGetFunction(&kf, k));
        OK(cuLibraryGetModule(&lmod, lib));
        OK(cuModuleGetFunction(&fn, lmod, "fill"));
        CHECK(fn == kf);
        fa.value = 200;
        OK(cuLaunchCooperativeKernel(kf, 1, 1, 1, 8, 1, 1, 0, NULL, fa.params));
        OK(cuMemcpyDtoH(host, fa.d, sizeof host));
        CHECK(host[2] == 202);
        OK(cuLibraryUnload(lib));

        /* From a shared object: cuModuleLoad(path) and cuLibraryLoadFromFile. */
        const char *path = getenv("FAKECUDA_TEST_MODULE");
        CHECK(path != NULL);
        if (path) {
                float data[4] = { 1, 2, 3, 4 }, factor = 2.5f;
                unsigned count = 4;
                CUdeviceptr fd;
                void *sp[] = { &fd, &count, &factor };
                OK(cuMemAlloc(&fd, sizeof data));
                OK(cuMemcpyHtoD(fd, data, sizeof data));
                OK(cuModuleLoad(&mod, path));
                OK(cuModuleGetFunction(&fn, mod, "scale"));
                OK(cuLaunchKernel(fn, 1, 1, 1, 1, 1, 1, 0, NULL, sp, NULL));
                OK(cuModuleUnload(mod));
                OK(cuLibraryLoadFromFile(&lib, path, NULL, NULL, 0, NULL, NULL, 0));
                OK(cuLibraryGetKernel(&k, lib, "scale"));
                OK(cuLaunchKernel((CUfunction)(void *)k, 1, 1, 1, 1, 1, 1, 0, NULL, sp, NULL));
                OK(cuLibraryUnload(lib));
                OK(cuMemcpyDtoH(data, fd, sizeof data));
                CHECK(data[0] == 6.25f && data[3] == 25.0f);
                OK(cuMemFree(fd));
                CHECK_CU(cuModuleLoad(&mod, "/nonexistent/module.so"), CUDA_ERROR_FILE_NOT_FOUND);
        }
        OK(cuMemFree(fa.d));
}

static void test_graphs(void) {
        enum {
                N = 64
        };
        CUmodule mod;
        CUfunction fn;
        CUstream s;
        CUgraph g;
        CUgraphExec exec;
        CUstreamCaptureStatus status;
        unsigned host[N];
        FillArgs fa;
        fill_args(&fa, N, 1000);
        OK(cuMemsetD32(fa.d, 0, N));
        OK(cuModuleLoadData(&mod, &test_image));
        OK(cuModuleGetFunction(&fn, mod, "fill"));
        OK(cuStreamCreate(&s, 0));
        CHECK_CU(cuStreamBeginCapture(NULL, CU_STREAM_CAPTURE_MODE_GLOBAL), CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
        OK(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL));
        OK(cuStreamIsCapturing(s, &status));
        CHECK(status == CU_STREAM_CAPTURE_STATUS_ACTIVE);
        memset(host, 0xff, sizeof host);
        OK(cuMemsetD32Async(fa.d, 5, N, s));
        OK(cuLaunchKernel(fn, 1, 1, 1, 1, 1, 1, 0, s, fa.params, NULL));
        OK(cuMemcpyDtoHAsync(host, fa.d, sizeof host, s));
        CHECK(host[0] == 0xffffffffu); /* recorded, not run */
        CHECK(((unsigned *)PTR(fa.d))[0] == 0);
        OK(cuStreamEndCapture(s, &g));
        OK(cuStreamIsCapturing(s, &status));
        CHECK(status == CU_STREAM_CAPTURE_STATUS_NONE);
        fa.value = 5; /* the graph keeps the captured value */
        OK(cuGraphInstantiateWithFlags(&exec, g, 0));
        OK(cuGraphDestroy(g));
        OK(cuGraphLaunch(exec, s));
        CHECK(host[0] == 1000 && host[N - 1] == 1000 + N - 1);
        memset(host, 0, sizeof host);
        OK(cuGraphLaunch(exec, NULL));
        CHECK(host[3] == 1003);
        OK(cuGraphExecDestroy(exec));
        CHECK_CU(cuStreamEndCapture(s, &g), CUDA_ERROR_ILLEGAL_STATE);
        OK(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL)); /* a sync breaks a capture, as the driver */
        CHECK_CU(cuCtxSynchronize(), CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
        CHECK_CU(cuStreamEndCapture(s, &g), CUDA_ERROR_STREAM_CAPTURE_INVALIDATED);
        OK(cuCtxSynchronize());

        CUevent e1, e2;
        float ms = -1;
        OK(cuEventCreate(&e1, 0));
        OK(cuEventCreate(&e2, 0));
        OK(cuEventRecord(e1, s));
        OK(cuStreamWaitEvent(s, e1, 0));
        OK(cuEventRecord(e2, s));
        OK(cuEventSynchronize(e2));
        OK(cuEventQuery(e2));
        OK(cuEventElapsedTime(&ms, e1, e2));
        CHECK(ms >= 0);
        OK(cuEventDestroy(e1));
        OK(cuEventDestroy(e2));
        OK(cuStreamDestroy(s));
        OK(cuModuleUnload(mod));
        OK(cuMemFree(fa.d));
}

/*
 * Capture modes (scripts/probes/capture on the H100): an unsafe call (here
 * cuMemAlloc, cuMemHostRegister, cuStreamSynchronize of a stream nothing
 * captures) by a thread in the global mode while
 * another thread captures in the global mode fails with
 * STREAM_CAPTURE_UNSUPPORTED and invalidates that capture; in the relaxed
 * or thread-local mode it is allowed; a capture begun relaxed forbids
 * nothing; the capturing thread itself is forbidden unless it is relaxed.
 */
typedef struct ModeCall {
        CUcontext ctx;
        CUstreamCaptureMode mode;
        int op; /* UNSAFE_* */
        CUresult r;
} ModeCall;

enum {
        UNSAFE_ALLOC,
        UNSAFE_REGISTER,
        UNSAFE_STREAM_SYNC,
        UNSAFE_OPS
};

static CUstream unsafe_stream; /* never captured: what UNSAFE_STREAM_SYNC waits for */

static CUresult unsafe_op(int op) {
        static unsigned char page[8192] __attribute__((aligned(4096)));
        CUdeviceptr d;
        CUresult r;

        if (op == UNSAFE_STREAM_SYNC)
                return cuStreamSynchronize(unsafe_stream);
        if (op == UNSAFE_REGISTER)
                return (r = cuMemHostRegister(page, 4096, 0)) == CUDA_SUCCESS ? cuMemHostUnregister(page) : r;
        return (r = cuMemAlloc(&d, 4096)) == CUDA_SUCCESS ? cuMemFree(d) : r;
}

static void *mode_call_main(void *arg) {
        ModeCall *c = arg;
        CUstreamCaptureMode m = c->mode;

        if ((c->r = cuCtxSetCurrent(c->ctx)) == CUDA_SUCCESS && (c->r = cuThreadExchangeStreamCaptureMode(&m)) == 0)
                c->r = unsafe_op(c->op);
        return NULL;
}

/* A capture begun in `begun` on `s`, then the call from another thread in `mode`: the capture's end. */
static CUresult capture_beside(CUstream s, CUstreamCaptureMode begun, CUstreamCaptureMode mode, int op,
                               CUresult *call) {
        ModeCall c = { .mode = mode, .op = op };
        CUgraph g = NULL;
        pthread_t t;
        CUresult r;

        OK(cuCtxGetCurrent(&c.ctx));
        OK(cuStreamBeginCapture(s, begun));
        CHECK(pthread_create(&t, NULL, mode_call_main, &c) == 0);
        pthread_join(t, NULL);
        *call = c.r;
        if ((r = cuStreamEndCapture(s, &g)) == CUDA_SUCCESS)
                OK(cuGraphDestroy(g));
        return r;
}

static void test_capture_modes(void) {
        CUstreamCaptureMode m = CU_STREAM_CAPTURE_MODE_RELAXED, bad = (CUstreamCaptureMode)7;
        CUresult call;
        CUstream s;
        CUgraph g;

        OK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
        OK(cuStreamCreate(&unsafe_stream, CU_STREAM_NON_BLOCKING));
        for (int op = 0; op < UNSAFE_OPS; op++) {
                CHECK_CU(capture_beside(s, CU_STREAM_CAPTURE_MODE_GLOBAL, CU_STREAM_CAPTURE_MODE_GLOBAL, op, &call),
                         CUDA_ERROR_STREAM_CAPTURE_INVALIDATED);
                CHECK(call == CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
                OK(capture_beside(s, CU_STREAM_CAPTURE_MODE_GLOBAL, CU_STREAM_CAPTURE_MODE_RELAXED, op, &call));
                OK(call);
                OK(capture_beside(s, CU_STREAM_CAPTURE_MODE_GLOBAL, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL, op, &call));
                OK(call);
                OK(capture_beside(s, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL, CU_STREAM_CAPTURE_MODE_GLOBAL, op, &call));
                OK(call);
                OK(capture_beside(s, CU_STREAM_CAPTURE_MODE_RELAXED, CU_STREAM_CAPTURE_MODE_GLOBAL, op, &call));
                OK(call);
        }
        /* The capturing thread itself: forbidden in its global mode, allowed once relaxed (the mode is per thread). */
        OK(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL));
        OK(cuThreadExchangeStreamCaptureMode(&m));
        CHECK(m == CU_STREAM_CAPTURE_MODE_GLOBAL);
        OK(unsafe_op(UNSAFE_ALLOC));
        OK(unsafe_op(UNSAFE_STREAM_SYNC));
        OK(cuThreadExchangeStreamCaptureMode(&m));
        CHECK(m == CU_STREAM_CAPTURE_MODE_RELAXED);
        CHECK_CU(unsafe_op(UNSAFE_REGISTER), CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
        CHECK_CU(cuStreamEndCapture(s, &g), CUDA_ERROR_STREAM_CAPTURE_INVALIDATED);
        OK(unsafe_op(UNSAFE_REGISTER)); /* no capture: allowed */
        CHECK_CU(cuThreadExchangeStreamCaptureMode(&bad), CUDA_ERROR_INVALID_VALUE);
        CHECK_CU(cuStreamBeginCapture(s, bad), CUDA_ERROR_INVALID_VALUE);
        OK(cuStreamDestroy(unsafe_stream));
        OK(cuStreamDestroy(s));
}

static void test_proc_address(void) {
        void *lib = libcuda();
        CHECK(lib != NULL);
        if (!lib)
                return;
        static const struct {
                const char *name;
                int version;
                cuuint64_t flags;
                const char *symbol;
        } cases[] = {
                { "cuMemAlloc", 12000, 0, "cuMemAlloc_v2" },
                { "cuMemAlloc", 3020, 0, "cuMemAlloc_v2" },
                { "cuCtxCreate", 3020, 0, "cuCtxCreate_v2" },
                { "cuCtxCreate", 12000, 0, "cuCtxCreate_v3" },
                { "cuCtxCreate", 13000, 0, "cuCtxCreate_v4" },
                { "cuMemcpyHtoD", 12000, 0, "cuMemcpyHtoD_v2" },
                { "cuMemcpyHtoD", 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, "cuMemcpyHtoD_v2_ptds" },
                { "cuMemcpyHtoDAsync", 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM,
                  "cuMemcpyHtoDAsync_v2_ptsz" },
                { "cuLaunchKernel", 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, "cuLaunchKernel_ptsz" },
                { "cuLaunchKernel", 12000, CU_GET_PROC_ADDRESS_LEGACY_STREAM, "cuLaunchKernel" },
                { "cuStreamBeginCapture", 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM,
                  "cuStreamBeginCapture_v2_ptsz" },
                { "cuGetProcAddress", 12000, 0, "cuGetProcAddress_v2" },
                { "cuGetProcAddress", 11030, 0, "cuGetProcAddress" },
                { "cuEventElapsedTime", 12000, 0, "cuEventElapsedTime" },
                { "cuEventElapsedTime", 12080, 0, "cuEventElapsedTime_v2" },
                { "cuInit", 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, "cuInit" },
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
                void *p = proc(cases[i].name, cases[i].version, cases[i].flags);
                void *want = dlsym(lib, cases[i].symbol);
                if (!p || p != want) {
                        fprintf(stderr, "cuGetProcAddress_v2(%s, %d, %llu) = %p, dlsym(%s) = %p\n", cases[i].name,
                                cases[i].version, (unsigned long long)cases[i].flags, p, cases[i].symbol, want);
                        failures++;
                }
        }
        void *p = (void *)1;
        CUdriverProcAddressQueryResult st;
        CHECK_CU(cuGetProcAddress("cuMemAlloc", &p, 3000, 0, &st), CUDA_ERROR_NOT_FOUND);
        CHECK(p == NULL && st == CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT);
        CHECK_CU(cuGetProcAddress("cuNoSuchThing", &p, 13000, 0, &st), CUDA_ERROR_NOT_FOUND);
        CHECK(p == NULL && st == CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND);

        /* The old 4-argument entry point, through its own symbol. */
        CUresult (*old)(const char *, void **, int, cuuint64_t);
        void *o = dlsym(lib, "cuGetProcAddress");
        memcpy(&old, &o, sizeof o);
        CHECK(o != NULL);
        if (o) {
                OK(old("cuMemFree", &p, 12000, 0));
                CHECK(p == dlsym(lib, "cuMemFree_v2"));
        }
        const void *table = (const void *)1;
        CUuuid id = { { 0 } };
        CHECK_CU(cuGetExportTable(&table, &id), CUDA_ERROR_NOT_SUPPORTED);
        /* The one table it has: shaped as the driver's, size first, its functions gated. */
        CUuuid fake_id = { FAKECUDA_EXPORT_TABLE_ID };
        const FakecudaExportTable *fake_table = NULL;
        int devices = 0;
        OK(cuGetExportTable((const void **)&fake_table, &fake_id));
        CHECK(fake_table == fakecudaExportTable() && fake_table->size == sizeof(*fake_table));
        CHECK(fake_table->checksum(1, 2, 3, 4, 5, 6, 1, 1, 1, 1, 1, 1, 1, 1, 1) == 183 + 240 + 47);
        CHECK(fake_table->device_count(&devices) == CUDA_SUCCESS && devices >= 1);
        CHECK(*fake_table->data == 0x5a6e);
        dlclose(lib);
}

static void test_errors(void) {
        const char *s = NULL;
        OK(cuGetErrorName(CUDA_ERROR_OUT_OF_MEMORY, &s));
        CHECK(s && strcmp(s, "CUDA_ERROR_OUT_OF_MEMORY") == 0);
        OK(cuGetErrorString(CUDA_ERROR_INVALID_VALUE, &s));
        CHECK(s && strcmp(s, "invalid argument") == 0);
        OK(cuGetErrorName(CUDA_ERROR_NO_DEVICE, &s));
        OK(cuGetErrorName(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, &s));
        OK(cuGetErrorName(CUDA_SUCCESS, &s));
        CHECK(s && strcmp(s, "CUDA_SUCCESS") == 0);
        CHECK_CU(cuGetErrorName((CUresult)12345, &s), CUDA_ERROR_INVALID_VALUE);
        CHECK(s == NULL);
        s = "x";
        CHECK_CU(cuGetErrorString((CUresult)12345, &s), CUDA_ERROR_INVALID_VALUE);
        CHECK(s == NULL);
}

/* Several threads, each with its own current context, at once. */
static void *thread_body(void *arg) {
        CUcontext ctx;
        CUdevice dev = (CUdevice)(uintptr_t)arg % 2;
        int bad = 0;
        bad |= cuDevicePrimaryCtxRetain(&ctx, dev) != CUDA_SUCCESS;
        bad |= cuCtxSetCurrent(ctx) != CUDA_SUCCESS;
        for (unsigned i = 0; i < 200 && !bad; i++) {
                CUdeviceptr d;
                unsigned v = i, out = 0;
                bad |= cuMemAlloc(&d, 4096) != CUDA_SUCCESS;
                if (bad)
                        break;
                bad |= cuMemcpyHtoD(d, &v, sizeof v) != CUDA_SUCCESS;
                bad |= cuMemcpyDtoH(&out, d, sizeof out) != CUDA_SUCCESS || out != i;
                bad |= cuMemFree(d) != CUDA_SUCCESS;
        }
        bad |= cuDevicePrimaryCtxRelease(dev) != CUDA_SUCCESS;
        return (void *)(uintptr_t)bad;
}

static void test_threads(void) {
        pthread_t t[8];
        for (uintptr_t i = 0; i < 8; i++)
                CHECK(pthread_create(&t[i], NULL, thread_body, (void *)i) == 0);
        for (int i = 0; i < 8; i++) {
                void *bad = NULL;
                pthread_join(t[i], &bad);
                CHECK(bad == NULL);
        }
}

/*
 * A synchronize must wait for work another thread's synchronize released
 * and the worker is still running: the queue is empty then, and
 * fake_queue_drain returned at once, so a synchronous download read a
 * kernel's result before the kernel wrote it (libsage's warm-up thread
 * destroying a stream beside the app's launches: share's `packed` check
 * failed once in CI with a wrong checksum).
 */
typedef struct Drainer {
        CUcontext ctx;
        pid_t main_tid;
} Drainer;

static void *drain_in_thread(void *arg) {
        Drainer *d = arg;
        return (void *)(uintptr_t)(cuCtxSetCurrent(d->ctx) != CUDA_SUCCESS || cuCtxSynchronize() != CUDA_SUCCESS);
}

/* Is thread `tid` of this process asleep (blocked in the synchronize)? */
static bool sleeping(pid_t tid) {
        char path[64], buf[256], *state;
        FILE *f;
        size_t n;

        snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)tid);
        if (!(f = fopen(path, "r")))
                return false;
        n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        state = strrchr(buf, ')');
        return state && state[1] == ' ' && state[2] == 'S';
}

/* Lets the kernel go once the main thread sleeps in its synchronize (or the test let it go itself). */
static void *release_when_blocked(void *arg) {
        Drainer *d = arg;

        for (;;) {
                bool blocked = sleeping(d->main_tid);
                pthread_mutex_lock(&hold.lock);
                if (blocked)
                        hold.go = true;
                pthread_cond_broadcast(&hold.changed);
                bool go = hold.go;
                pthread_mutex_unlock(&hold.lock);
                if (go)
                        return NULL;
                sched_yield();
        }
}

static void test_drain_busy(void) {
        CUmodule mod;
        CUfunction fn;
        Drainer d = { .main_tid = gettid() };
        pthread_t other, releaser;
        void *bad = NULL, *noargs[1] = { NULL };
        bool done;

        OK(cuCtxGetCurrent(&d.ctx));
        OK(cuModuleLoadData(&mod, &test_image));
        OK(cuModuleGetFunction(&fn, mod, "hold"));
        OK(cuLaunchKernel(fn, 1, 1, 1, 1, 1, 1, 0, NULL, noargs, NULL)); /* queued: its (no) arguments copied */
        CHECK(pthread_create(&other, NULL, drain_in_thread, &d) == 0);
        pthread_mutex_lock(&hold.lock);
        while (!hold.started) /* the worker took it: the queue is empty, the kernel runs */
                pthread_cond_wait(&hold.changed, &hold.lock);
        pthread_mutex_unlock(&hold.lock);
        CHECK(pthread_create(&releaser, NULL, release_when_blocked, &d) == 0);
        OK(cuCtxSynchronize());
        pthread_mutex_lock(&hold.lock);
        done = hold.done;
        hold.go = true; /* the fault's case: returned while the kernel still ran */
        pthread_cond_broadcast(&hold.changed);
        pthread_mutex_unlock(&hold.lock);
        CHECK(done);
        pthread_join(releaser, NULL);
        pthread_join(other, &bad);
        CHECK(bad == NULL);
        OK(cuModuleUnload(mod));
}

static void mode_api(void) {
        test_before_init();
        test_errors();
        test_devices();
        test_contexts();
        test_memory();
        test_copies();
        test_kernels();
        test_graphs();
        test_capture_modes();
        test_proc_address();
        test_threads();
        test_drain_busy();
        OK(cuDevicePrimaryCtxRelease(0));
}

/* ------------------------------------------------------------ other modes */
static double now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void mode_init_delay(void) {
        double t0 = now_ms();
        OK(cuInit(0));
        double init = now_ms() - t0;
        CHECK(init >= 300 && init < 3000);
        t0 = now_ms();
        OK(cuInit(0)); /* only the first */
        CHECK(now_ms() - t0 < 100);

        CUcontext c;
        t0 = now_ms();
        OK(cuDevicePrimaryCtxRetain(&c, 0));
        double ctx = now_ms() - t0;
        CHECK(ctx >= 100 && ctx < 2000);
        t0 = now_ms();
        OK(cuDevicePrimaryCtxRetain(&c, 0)); /* already created */
        CHECK(now_ms() - t0 < 50);
        OK(cuDevicePrimaryCtxRelease(0));
        OK(cuDevicePrimaryCtxRelease(0));
        fprintf(stderr, "cuInit took %.1f ms, primary context %.1f ms\n", init, ctx);
}

static void mode_visible_devices(void) {
        int n = 0, bus = 0;
        OK(cuInit(0));
        OK(cuDeviceGetCount(&n));
        CHECK(n == 2); /* "2,0,7,1" with 4 GPUs: stops at the invalid 7 */
        OK(cuDeviceGetAttribute(&bus, CU_DEVICE_ATTRIBUTE_PCI_BUS_ID, 0));
        CHECK(bus == 0x12);
        OK(cuDeviceGetAttribute(&bus, CU_DEVICE_ATTRIBUTE_PCI_BUS_ID, 1));
        CHECK(bus == 0x10);
}

/*
 * What a process with CUDA_VISIBLE_DEVICES=`visible` (NULL: unset) sees, of
 * SAGE_FAKE_DEVICES=3: the simulated GPU behind each of its ordinals (from
 * the PCI bus id) and their UUIDs; the count, or minus cuInit's error.
 */
static int visible_as(const char *visible, int gpus[4], CUuuid uuids[4]) {
        int sv[2], n = 0;
        CHECK(pipe(sv) == 0);
        pid_t pid = fork();
        if (pid == 0) {
                int count = 0, bus = 0;
                CUuuid u[4];
                int g[4] = { 0 };
                CUresult r;
                if (visible)
                        setenv("CUDA_VISIBLE_DEVICES", visible, 1);
                else
                        unsetenv("CUDA_VISIBLE_DEVICES");
                r = cuInit(0);
                if (r == CUDA_SUCCESS)
                        r = cuDeviceGetCount(&count);
                for (int i = 0; r == CUDA_SUCCESS && i < count && i < 4; i++) {
                        r = cuDeviceGetAttribute(&bus, CU_DEVICE_ATTRIBUTE_PCI_BUS_ID, i);
                        g[i] = bus - 0x10;
                        if (r == CUDA_SUCCESS)
                                r = cuDeviceGetUuid(&u[i], i);
                }
                count = r == CUDA_SUCCESS ? count : -(int)r;
                if (write(sv[1], &count, sizeof count) < 0 || write(sv[1], g, sizeof g) < 0 ||
                    write(sv[1], u, sizeof u) < 0)
                        _exit(1);
                _exit(0);
        }
        close(sv[1]);
        CHECK(read(sv[0], &n, sizeof n) == (ssize_t)sizeof n);
        CHECK(read(sv[0], gpus, 4 * sizeof(int)) == (ssize_t)(4 * sizeof(int)));
        CHECK(read(sv[0], uuids, 4 * sizeof(CUuuid)) == (ssize_t)(4 * sizeof(CUuuid)));
        close(sv[0]);
        waitpid(pid, NULL, 0);
        return n;
}

static void uuid_text(const CUuuid *u, char *out) {
        const unsigned char *b = (const unsigned char *)u->bytes;
        sprintf(out, "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3],
                b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

/* Several GPUs, each with a UUID of its own; CUDA_VISIBLE_DEVICES by index or UUID, as the real driver reads it. */
static void mode_uuid_devices(void) {
        CUuuid all[4], u[4], again[4];
        int g[4];
        char text[64], list[160];

        CHECK(visible_as(NULL, g, all) == 3 && g[0] == 0 && g[1] == 1 && g[2] == 2);
        CHECK(memcmp(&all[0], &all[1], sizeof(CUuuid)) && memcmp(&all[1], &all[2], sizeof(CUuuid)) &&
              memcmp(&all[0], &all[2], sizeof(CUuuid)));
        CHECK(visible_as(NULL, g, again) == 3 && !memcmp(all, again, 3 * sizeof(CUuuid))); /* stable */
        /* Renumbered from 0 in the listed order; the UUID is the GPU's, not the ordinal's. */
        CHECK(visible_as("2,0", g, u) == 2 && g[0] == 2 && g[1] == 0);
        CHECK(!memcmp(&u[0], &all[2], sizeof(CUuuid)) && !memcmp(&u[1], &all[0], sizeof(CUuuid)));
        /* By UUID, mixed with an index, and by a prefix that names one GPU. */
        uuid_text(&all[2], text);
        snprintf(list, sizeof list, "%s,0", text);
        CHECK(visible_as(list, g, u) == 2 && g[0] == 2 && g[1] == 0);
        uuid_text(&all[1], text);
        text[12] = 0;
        CHECK(visible_as(text, g, u) == 1 && g[0] == 1 && !memcmp(&u[0], &all[1], sizeof(CUuuid)));
        /* "GPU-" alone names no GPU: the list ends there. */
        CHECK(visible_as("1,GPU-", g, u) == 1 && g[0] == 1);
        /* An invalid entry ends the list; so does a GPU listed twice. */
        CHECK(visible_as("1,x,2", g, u) == 1 && g[0] == 1);
        CHECK(visible_as("1,7,2", g, u) == 1 && g[0] == 1);
        CHECK(visible_as("1,1,2", g, u) == 1 && g[0] == 1);
        /* Nothing visible: cuInit reports no device, as the real driver. */
        CHECK(visible_as("", g, u) == -(int)CUDA_ERROR_NO_DEVICE);
        CHECK(visible_as("GPU-00000000-dead", g, u) == -(int)CUDA_ERROR_NO_DEVICE);
        CHECK(visible_as("3", g, u) == -(int)CUDA_ERROR_NO_DEVICE);
}

static void mode_init_error(CUresult want) {
        int n;
        CHECK_CU(cuInit(0), want);
        CHECK_CU(cuInit(0), want);
        CHECK_CU(cuDeviceGetCount(&n), CUDA_ERROR_NOT_INITIALIZED);
}

static void mode_no_device(void) {
        mode_init_error(CUDA_ERROR_NO_DEVICE);
}

/* The modes, as meson.build's fakecuda_cases name them (fail-init: SAGE_FAKE_FAIL_INIT=100, NO_DEVICE). */
static const struct {
        const char *name;
        void (*run)(void);
} modes[] = {
        { "api", mode_api },
        { "init-delay", mode_init_delay },
        { "visible-devices", mode_visible_devices },
        { "uuid-devices", mode_uuid_devices },
        { "no-device", mode_no_device },
        { "fail-init", mode_no_device },
};

int main(int argc, char **argv) {
        const char *mode = argc > 1 ? argv[1] : "api";
        size_t i = 0;
        while (i < sizeof modes / sizeof modes[0] && strcmp(modes[i].name, mode) != 0)
                i++;
        if (i == sizeof modes / sizeof modes[0]) {
                fprintf(stderr, "unknown mode %s\n", mode);
                return 2;
        }
        modes[i].run();
        if (failures)
                fprintf(stderr, "%s: %d check(s) failed\n", mode, failures);
        return failures ? 1 : 0;
}
