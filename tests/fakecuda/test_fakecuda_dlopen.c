/* test_fakecuda_dlopen: reach the simulated driver the way cudart does.
 *
 * Not linked against libcuda: dlopen("libcuda.so.1"), dlsym only
 * "cuGetProcAddress_v2", then resolve every entry point by base name with
 * the CUDA version and the per-thread flag, as a cudart built with
 * --default-stream per-thread would, and run a small program through them.
 */
#include <cuda.h>
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "fake_check.h"
#include "fakecuda.h"

typedef CUresult (*GetProcFn)(const char *, void **, int, cuuint64_t, CUdriverProcAddressQueryResult *);

static void *lib;
static GetProcFn get_proc;

/* Resolve `name` and check that it is the exported `symbol`. */
static void *resolve(const char *name, cuuint64_t flags, const char *symbol) {
        void *p = NULL;
        CUdriverProcAddressQueryResult st = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
        CUresult r = get_proc(name, &p, CUDA_VERSION, flags, &st);
        void *want = dlsym(lib, symbol);
        if (r != CUDA_SUCCESS || st != CU_GET_PROC_ADDRESS_SUCCESS || !p || p != want) {
                fprintf(stderr, "%s (flags %llu): got %p (r=%d st=%d), %s is %p\n", name, (unsigned long long)flags, p,
                        (int)r, (int)st, symbol, want);
                failures++;
        }
        return p;
}

#define PT CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM
#define RESOLVE(var, name, flags, symbol)                \
        do {                                             \
                void *p_ = resolve(name, flags, symbol); \
                memcpy(&(var), &p_, sizeof p_);          \
        } while (0)

static void double_kernel(const FakeKernelLaunch *launch, void **params) {
        int *d = *(int **)params[0];
        int n = *(int *)params[1];
        for (int i = 0; i < n; i++)
                d[i] *= 2;
}

static const FakeKernelEntry kernels[] = { { "twice", double_kernel, NULL } };
static const FakeModuleImage image = { FAKECUDA_IMAGE_MAGIC, 1, kernels };

int main(int argc, char **argv) {
        lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
        if (!lib) {
                fprintf(stderr, "dlopen(libcuda.so.1): %s\n", dlerror());
                return 1;
        }
        void *gp = dlsym(lib, "cuGetProcAddress_v2");
        CHECK(gp != NULL);
        if (!gp)
                return 1;
        memcpy(&get_proc, &gp, sizeof gp);

        CUresult (*init)(unsigned);
        CUresult (*retain)(CUcontext *, CUdevice);
        CUresult (*release)(CUdevice);
        CUresult (*set_current)(CUcontext);
        CUresult (*mem_alloc)(CUdeviceptr *, size_t);
        CUresult (*mem_free)(CUdeviceptr);
        CUresult (*htod)(CUdeviceptr, const void *, size_t);
        CUresult (*dtoh_async)(void *, CUdeviceptr, size_t, CUstream);
        CUresult (*sync)(CUstream);
        CUresult (*load)(CUmodule *, const void *);
        CUresult (*get_function)(CUfunction *, CUmodule, const char *);
        CUresult (*unload)(CUmodule);
        CUresult (*launch)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream,
                           void **, void **);
        CUresult (*get_proc_again)(const char *, void **, int, cuuint64_t, CUdriverProcAddressQueryResult *);

        RESOLVE(init, "cuInit", 0, "cuInit");
        RESOLVE(retain, "cuDevicePrimaryCtxRetain", 0, "cuDevicePrimaryCtxRetain");
        RESOLVE(release, "cuDevicePrimaryCtxRelease", 0, "cuDevicePrimaryCtxRelease_v2");
        RESOLVE(set_current, "cuCtxSetCurrent", 0, "cuCtxSetCurrent");
        RESOLVE(mem_alloc, "cuMemAlloc", 0, "cuMemAlloc_v2");
        RESOLVE(mem_free, "cuMemFree", 0, "cuMemFree_v2");
        RESOLVE(htod, "cuMemcpyHtoD", PT, "cuMemcpyHtoD_v2_ptds");
        RESOLVE(dtoh_async, "cuMemcpyDtoHAsync", PT, "cuMemcpyDtoHAsync_v2_ptsz");
        RESOLVE(sync, "cuStreamSynchronize", PT, "cuStreamSynchronize_ptsz");
        RESOLVE(load, "cuModuleLoadData", 0, "cuModuleLoadData");
        RESOLVE(get_function, "cuModuleGetFunction", 0, "cuModuleGetFunction");
        RESOLVE(unload, "cuModuleUnload", 0, "cuModuleUnload");
        RESOLVE(launch, "cuLaunchKernel", PT, "cuLaunchKernel_ptsz");
        RESOLVE(get_proc_again, "cuGetProcAddress", 0, "cuGetProcAddress_v2");
        if (failures)
                return 1;

        CUcontext ctx;
        CUdeviceptr d;
        CUmodule mod;
        CUfunction fn;
        int host[8] = { 1, 2, 3, 4, 5, 6, 7, 8 }, out[8] = { 0 }, n = 8;
        void *params[] = { &d, &n };
        CHECK(init(0) == CUDA_SUCCESS);
        CHECK(retain(&ctx, 0) == CUDA_SUCCESS);
        CHECK(set_current(ctx) == CUDA_SUCCESS);
        CHECK(mem_alloc(&d, sizeof host) == CUDA_SUCCESS);
        CHECK(htod(d, host, sizeof host) == CUDA_SUCCESS);
        CHECK(load(&mod, &image) == CUDA_SUCCESS);
        CHECK(get_function(&fn, mod, "twice") == CUDA_SUCCESS);
        CHECK(launch(fn, 1, 1, 1, 1, 1, 1, 0, CU_STREAM_PER_THREAD, params, NULL) == CUDA_SUCCESS);
        CHECK(dtoh_async(out, d, sizeof out, CU_STREAM_PER_THREAD) == CUDA_SUCCESS);
        CHECK(sync(CU_STREAM_PER_THREAD) == CUDA_SUCCESS);
        CHECK(out[0] == 2 && out[7] == 16);
        CHECK(unload(mod) == CUDA_SUCCESS);
        CHECK(mem_free(d) == CUDA_SUCCESS);
        CHECK(release(0) == CUDA_SUCCESS);
        dlclose(lib);
        if (failures)
                fprintf(stderr, "%d check(s) failed\n", failures);
        return failures ? 1 : 0;
}
