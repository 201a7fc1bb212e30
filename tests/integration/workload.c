/*
 * A small "GPU function" against the simulated driver, reached the way
 * cudart reaches a driver: dlopen("libcuda.so.1"), dlsym(cuGetProcAddress_v2),
 * then every entry point through it (some per-thread). It allocates,
 * uploads, runs a kernel, downloads, and prints a checksum: the output must
 * be identical with and without libsage.
 *
 *   workload [--threads N] [--crash] [--no-cuda] [--ctx-loop N]
 */
#include <cuda.h>

#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cu_ok.h"
#include "fakecuda.h"
#include "util.h"

#define N_ELEMS 4096

static void scale_kernel(const FakeKernelLaunch *launch, void **params) {
        uint32_t *data = *(uint32_t **)params[0];
        uint32_t factor = *(uint32_t *)params[1];
        unsigned n = *(unsigned *)params[2];

        (void)launch;
        for (unsigned i = 0; i < n; i++)
                data[i] = data[i] * factor + i;
}

static const FakeKernelEntry kernels[] = { { "scale", scale_kernel, NULL } };
static const FakeModuleImage image = { FAKECUDA_IMAGE_MAGIC, 1, kernels };

typedef CUresult (*get_proc_t)(const char *, void **, int, cuuint64_t, CUdriverProcAddressQueryResult *);
static get_proc_t get_proc;

#define ENTRY(type, var, name, flags)                                                 \
        __typeof__(type) var;                                                         \
        do {                                                                          \
                void *p_ = NULL;                                                      \
                if (get_proc(name, &p_, 13000, flags, NULL) != CUDA_SUCCESS || !p_) { \
                        fprintf(stderr, "workload: no entry point %s\n", name);       \
                        exit(2);                                                      \
                }                                                                     \
                var = SAGE_FN_CAST(type, p_);                                         \
        } while (0)

static CUcontext ctx;

static void *run_once(void *arg) {
        unsigned seed = (unsigned)(uintptr_t)arg;
        ENTRY(CUresult(*)(CUcontext), set_current, "cuCtxSetCurrent", 0);
        ENTRY(CUresult(*)(CUdeviceptr *, size_t), mem_alloc, "cuMemAlloc", 0);
        ENTRY(CUresult(*)(CUdeviceptr), mem_free, "cuMemFree", 0);
        ENTRY(CUresult(*)(CUdeviceptr, const void *, size_t), htod, "cuMemcpyHtoD",
              CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM);
        ENTRY(CUresult(*)(void *, CUdeviceptr, size_t, CUstream), dtoh_async, "cuMemcpyDtoHAsync",
              CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM);
        ENTRY(CUresult(*)(CUstream), stream_sync, "cuStreamSynchronize", CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM);
        ENTRY(CUresult(*)(CUmodule *, const void *), module_load, "cuModuleLoadData", 0);
        ENTRY(CUresult(*)(CUfunction *, CUmodule, const char *), get_function, "cuModuleGetFunction", 0);
        ENTRY(CUresult(*)(CUmodule), module_unload, "cuModuleUnload", 0);
        ENTRY(CUresult(*)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream,
                          void **, void **),
              launch, "cuLaunchKernel", CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM);
        uint32_t *host = malloc(N_ELEMS * sizeof(uint32_t));
        uint64_t sum = 0;
        CUdeviceptr dev;
        CUmodule module;
        CUfunction fn;
        uint32_t factor = 3 + seed;
        unsigned n = N_ELEMS;
        void *params[] = { &dev, &factor, &n };

        if (!host)
                exit(4);
        OK(set_current(ctx));
        for (unsigned i = 0; i < N_ELEMS; i++)
                host[i] = i * 2654435761u + seed;
        OK(mem_alloc(&dev, N_ELEMS * sizeof(uint32_t)));
        OK(htod(dev, host, N_ELEMS * sizeof(uint32_t)));
        OK(module_load(&module, &image));
        OK(get_function(&fn, module, "scale"));
        OK(launch(fn, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL));
        memset(host, 0, N_ELEMS * sizeof(uint32_t));
        OK(dtoh_async(host, dev, N_ELEMS * sizeof(uint32_t), NULL));
        OK(stream_sync(NULL));
        for (unsigned i = 0; i < N_ELEMS; i++)
                sum = sum * 31 + host[i];
        OK(module_unload(module));
        OK(mem_free(dev));
        free(host);
        return (void *)(uintptr_t)sum;
}

int main(int argc, char **argv) {
        int threads = 1, crash = 0, no_cuda = 0, ctx_loop = 0;
        void *cuda;

        for (int i = 1; i < argc; i++) {
                if (!strcmp(argv[i], "--threads") && i + 1 < argc)
                        threads = atoi(argv[++i]);
                else if (!strcmp(argv[i], "--crash"))
                        crash = 1;
                else if (!strcmp(argv[i], "--no-cuda"))
                        no_cuda = 1;
                else if (!strcmp(argv[i], "--ctx-loop") && i + 1 < argc)
                        ctx_loop = atoi(argv[++i]);
                else {
                        fprintf(stderr, "usage: workload [--threads N] [--crash] [--no-cuda] [--ctx-loop N]\n");
                        return 2;
                }
        }
        if (no_cuda) {
                /* A process that never touches the GPU: libsage must not load the driver for it. */
                FILE *maps = fopen("/proc/self/maps", "r");
                char line[512];
                int loaded = 0;

                while (maps && fgets(line, sizeof(line), maps))
                        loaded |= strstr(line, "libcuda") != NULL;
                if (maps)
                        fclose(maps);
                printf("no-cuda: driver %s\n", loaded ? "loaded" : "not loaded");
                return loaded;
        }
        cuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
        if (!cuda) {
                fprintf(stderr, "workload: %s\n", dlerror());
                return 77;
        }
        get_proc = SAGE_FN_CAST(get_proc_t, dlsym(cuda, "cuGetProcAddress_v2"));
        if (!get_proc)
                return 5;
        {
                ENTRY(CUresult(*)(unsigned), init, "cuInit", 0);
                ENTRY(CUresult(*)(CUdevice *, int), device_get, "cuDeviceGet", 0);
                ENTRY(CUresult(*)(CUcontext *, CUdevice), retain, "cuDevicePrimaryCtxRetain", 0);
                ENTRY(CUresult(*)(CUdevice), release, "cuDevicePrimaryCtxRelease", 0);
                ENTRY(CUresult(*)(CUcontext *, CUctxCreateParams *, unsigned, CUdevice), ctx_create, "cuCtxCreate", 0);
                ENTRY(CUresult(*)(CUcontext), ctx_destroy, "cuCtxDestroy", 0);
                CUdevice dev;
                pthread_t tids[64];

                OK(init(0));
                OK(device_get(&dev, 0));
                for (int i = 0; i < ctx_loop; i++) {
                        CUcontext c;
                        OK(ctx_create(&c, NULL, 0, dev));
                        OK(ctx_destroy(c));
                }
                OK(retain(&ctx, dev));
                if (threads < 1 || threads > 64)
                        threads = 1;
                for (int t = 0; t < threads; t++)
                        pthread_create(&tids[t], NULL, run_once, (void *)(uintptr_t)t);
                for (int t = 0; t < threads; t++) {
                        void *sum;
                        pthread_join(tids[t], &sum);
                        printf("thread %d checksum %016llx\n", t, (unsigned long long)(uintptr_t)sum);
                }
                OK(release(dev));
        }
        if (crash) {
                fflush(stdout);
                raise(SIGSEGV);
        }
        return 0;
}
