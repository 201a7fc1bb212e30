/*
 * Parallel set-up and context redirect against the simulated driver.
 * Built twice: linked with libcuda (SAGE_WARMUP=auto treats it as a CUDA
 * program: eager) and with SETUP_TEST_DLOPEN (no trace of CUDA at load:
 * lazy). Scenarios (argv[1]):
 *   overlap MS     the app's own start-up takes MS ms, then it initialises
 *                  CUDA; prints how long it was blocked in CUDA set-up
 *   fork MS        start-up of MS ms, fork, the child initialises CUDA
 *   lookup-fork MS the parent resolves driver symbols (as `import torch`
 *                  does) but never calls them, waits MS ms, forks; the
 *                  child initialises CUDA
 *   framework-overlap MS LIB  as overlap, but first dlopen()s LIB (a
 *                  framework library that links the driver) and looks up
 *                  its entry point, as `import torch` does
 *   exit [MS]      return at once, or after MS ms (a warm-up may still be running)
 *   error          print what cuInit returned
 *   ctx-loop N     N warm-container invocations: create a context, allocate,
 *                  run a kernel, destroy; checks memory comes back each time
 *   ctx-nested     a second context while a first is alive; then flags the
 *                  primary context cannot honour
 *   ctx-reuse      an invocation frees a buffer, whose address the driver
 *                  then gives to a second, real context; destroying the
 *                  invocation's context must leave that buffer alone
 *   reset-loop N   N invocations on the primary context, each ending with a
 *                  device reset, 300 ms apart; prints how long each waited
 *                  for its context
 */
#include <cuda.h>

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cu_ok.h"
#include "fakecuda.h"
#include "util.h"

#define FUNCS(X)                                                                                               \
        X(cuInit, CUresult (*)(unsigned))                                                                      \
        X(cuDeviceGet, CUresult (*)(CUdevice *, int))                                                          \
        X(cuDevicePrimaryCtxRetain, CUresult (*)(CUcontext *, CUdevice))                                       \
        X(cuDevicePrimaryCtxRelease_v2, CUresult (*)(CUdevice))                                                \
        X(cuDevicePrimaryCtxReset_v2, CUresult (*)(CUdevice))                                                  \
        X(cuCtxSetCurrent, CUresult (*)(CUcontext))                                                            \
        X(cuCtxGetCurrent, CUresult (*)(CUcontext *))                                                          \
        X(cuCtxCreate_v4, CUresult (*)(CUcontext *, CUctxCreateParams *, unsigned, CUdevice))                  \
        X(cuCtxDestroy_v2, CUresult (*)(CUcontext))                                                            \
        X(cuMemAlloc_v2, CUresult (*)(CUdeviceptr *, size_t))                                                  \
        X(cuMemFree_v2, CUresult (*)(CUdeviceptr))                                                             \
        X(cuMemGetAddressRange_v2, CUresult (*)(CUdeviceptr *, size_t *, CUdeviceptr))                         \
        X(cuCtxPopCurrent_v2, CUresult (*)(CUcontext *))                                                       \
        X(cuMemGetInfo_v2, CUresult (*)(size_t *, size_t *))                                                   \
        X(cuMemcpyHtoD_v2, CUresult (*)(CUdeviceptr, const void *, size_t))                                    \
        X(cuMemcpyDtoH_v2, CUresult (*)(void *, CUdeviceptr, size_t))                                          \
        X(cuModuleLoadData, CUresult (*)(CUmodule *, const void *))                                            \
        X(cuModuleGetFunction, CUresult (*)(CUfunction *, CUmodule, const char *))                             \
        X(cuStreamCreate, CUresult (*)(CUstream *, unsigned))                                                  \
        X(cuLaunchKernel, CUresult (*)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, \
                                       unsigned, CUstream, void **, void **))

#define DECLARE(name, type) static __typeof__(type) f_##name;
FUNCS(DECLARE)

static void resolve(void) {
#ifdef SETUP_TEST_DLOPEN
        void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
        if (!h) {
                fprintf(stderr, "setup-test: %s\n", dlerror());
                exit(77);
        }
#define RESOLVE(name, type) f_##name = SAGE_FN_CAST(__typeof__(type), dlsym(h, #name));
#else
#define RESOLVE(name, type) f_##name = name;
#endif
        FUNCS(RESOLVE)
}

static double now_ms(void) {
        return (double)sage_now_ns() / 1e6;
}

static void add_kernel(const FakeKernelLaunch *launch, void **params) {
        uint32_t *p = *(uint32_t **)params[0];
        (void)launch;
        for (unsigned i = 0; i < 1024; i++)
                p[i] += i;
}
static const FakeKernelEntry kernels[] = { { "add", add_kernel, NULL } };
static const FakeModuleImage image = { FAKECUDA_IMAGE_MAGIC, 1, kernels };

static CUdevice init_device(void) {
        return ok_primary_context(f_cuInit, f_cuDeviceGet, f_cuDevicePrimaryCtxRetain, f_cuCtxSetCurrent);
}

/* An invocation's work in the current context: allocate, upload, run the
 * kernel, download. Returns a checksum of the result. Frees nothing. */
static uint64_t run_work(size_t alloc_bytes, uint32_t seed, CUstream stream) {
        CUdeviceptr d;
        CUmodule module;
        CUfunction fn;
        uint32_t host[1024];
        uint64_t sum = 0;
        void *params[] = { &d };

        for (unsigned i = 0; i < 1024; i++)
                host[i] = i * 7 + seed;
        OK(f_cuMemAlloc_v2(&d, alloc_bytes));
        OK(f_cuMemcpyHtoD_v2(d, host, sizeof(host)));
        OK(f_cuModuleLoadData(&module, &image));
        OK(f_cuModuleGetFunction(&fn, module, "add"));
        OK(f_cuLaunchKernel(fn, 1, 1, 1, 1, 1, 1, 0, stream, params, NULL));
        OK(f_cuMemcpyDtoH_v2(host, d, sizeof(host)));
        for (unsigned i = 0; i < 1024; i++)
                sum = sum * 31 + host[i];
        return sum;
}

static uint64_t invocation(CUdevice dev, unsigned flags) {
        CUcontext ctx, current;
        CUstream stream;
        uint64_t sum;

        OK(f_cuCtxCreate_v4(&ctx, NULL, flags, dev));
        OK(f_cuCtxGetCurrent(&current));
        if (current != ctx) {
                fprintf(stderr, "setup-test: a created context must be current\n");
                exit(4);
        }
        OK(f_cuStreamCreate(&stream, 0));
        sum = run_work(64u << 20, 0, stream);
        /* Nothing freed by the app: destroying the context must free it all. */
        OK(f_cuCtxDestroy_v2(ctx));
        return sum;
}

int main(int argc, char **argv) {
        const char *what = argc > 1 ? argv[1] : "";
        long arg = argc > 2 ? atol(argv[2]) : 0;

        if (!strcmp(what, "framework-overlap")) {
                /* A Python function: the framework's CUDA library is imported
                 * first, the rest of the start-up follows, CUDA comes last. */
                void *lib = dlopen(argc > 3 ? argv[3] : "", RTLD_NOW | RTLD_LOCAL);
                if (!lib || !dlsym(lib, "framework_entry")) {
                        fprintf(stderr, "setup-test: %s\n", dlerror());
                        return 2;
                }
                what = "overlap";
        }
        /* The app's own start-up (imports, file reads) comes first, before it
         * looks at the driver: a lazy warm-up may not start earlier. */
        if (!strcmp(what, "overlap") || !strcmp(what, "fork"))
                usleep((useconds_t)arg * 1000);
        if (strcmp(what, "fork") != 0)
                resolve();
        if (!strcmp(what, "lookup-fork")) {
                usleep((useconds_t)arg * 1000);
                what = "fork";
        }
        if (!strcmp(what, "overlap")) {
                double t = now_ms();

                init_device();
                printf("setup_ms=%.0f\n", now_ms() - t);
        } else if (!strcmp(what, "fork")) {
                pid_t child;
                int status = 0;
                const char *after = getenv("SETUP_TEST_FORK_AFTER");
                /* With SETUP_TEST_FORK_AFTER=PATH, fork only once PATH exists (the
                 * simulated driver's SAGE_FAKE_INIT_MARK: a cuInit is inside it). */
                for (int i = 0; after && access(after, F_OK) != 0; i++) {
                        if (i == 10000) {
                                fprintf(stderr, "setup-test: %s did not appear in 10 s\n", after);
                                return 4;
                        }
                        usleep(1000);
                }
                /* A pre-forking server: the parent never touches CUDA, children do. */
                child = fork();
                if (child == 0) {
                        CUresult r;
                        resolve();
                        r = f_cuInit(0);
                        printf("child cuInit=%d\n", (int)r);
                        fflush(stdout);
                        _exit(r == CUDA_SUCCESS ? 0 : 1);
                }
                waitpid(child, &status, 0);
                printf("child exit=%d\n", WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        } else if (!strcmp(what, "exit")) {
                usleep((useconds_t)arg * 1000); /* a short-lived program's own work */
                return 0;
        } else if (!strcmp(what, "error")) {
                printf("cuInit=%d\n", (int)f_cuInit(0));
        } else if (!strcmp(what, "ctx-loop")) {
                CUdevice dev = init_device();
                size_t free0, free1, total;
                double slowest = 0;

                OK(f_cuMemGetInfo_v2(&free0, &total));
                for (long i = 0; i < arg; i++) {
                        double t = now_ms();
                        uint64_t sum = invocation(dev, 0);
                        t = now_ms() - t;
                        slowest = t > slowest ? t : slowest;
                        OK(f_cuMemGetInfo_v2(&free1, &total));
                        printf("invocation %ld: checksum %016llx, device memory %s\n", i, (unsigned long long)sum,
                               free1 == free0 ? "all returned" : "LEAKED");
                        fprintf(stderr, "invocation %ld: %.1f ms\n", i, t);
                }
                fprintf(stderr, "per_invocation_max_ms=%.1f\n", slowest);
        } else if (!strcmp(what, "reset-loop")) {
                CUdevice dev = init_device();
                double slowest = 0;

                for (long i = 0; i < arg; i++) {
                        CUcontext ctx;
                        uint64_t sum;
                        double t = now_ms();

                        OK(f_cuDevicePrimaryCtxRetain(&ctx, dev));
                        OK(f_cuCtxSetCurrent(ctx));
                        t = now_ms() - t;
                        slowest = i > 0 && t > slowest ? t : slowest;
                        sum = run_work(4096, (uint32_t)i, NULL);
                        printf("invocation %ld: checksum %016llx\n", i, (unsigned long long)sum);
                        fprintf(stderr, "invocation %ld waited %.1f ms for its context\n", i, t);
                        OK(f_cuDevicePrimaryCtxReset_v2(dev)); /* end of the invocation: frees everything */
                        OK(f_cuDevicePrimaryCtxRelease_v2(dev));
                        usleep(300 * 1000); /* idle until the next request */
                }
                fprintf(stderr, "reset_wait_max_ms=%.1f\n", slowest);
        } else if (!strcmp(what, "ctx-nested")) {
                CUdevice dev = init_device();
                CUcontext a, b, c, current;
                OK(f_cuCtxCreate_v4(&a, NULL, 0, dev));
                OK(f_cuCtxCreate_v4(&b, NULL, 0, dev)); /* a second live context: a real one */
                printf("distinct contexts: %s\n", a != b ? "yes" : "no");
                OK(f_cuCtxDestroy_v2(b));
                OK(f_cuCtxGetCurrent(&current));
                printf("after destroying the inner one, the outer is current: %s\n", current == a ? "yes" : "no");
                OK(f_cuCtxDestroy_v2(a));
                OK(f_cuCtxCreate_v4(&c, NULL, CU_CTX_SCHED_BLOCKING_SYNC, dev)); /* flags the primary lacks */
                OK(f_cuCtxDestroy_v2(c));
                printf("nested: ok\n");
        } else if (!strcmp(what, "ctx-reuse")) {
                CUdevice dev = init_device();
                CUcontext a, b, popped;
                CUdeviceptr x, y, base = 0;
                size_t size = 0;
                OK(f_cuCtxCreate_v4(&a, NULL, 0, dev));
                OK(f_cuMemAlloc_v2(&x, 1 << 20));
                OK(f_cuMemFree_v2(x));                  /* the app's own free, inside the invocation */
                OK(f_cuCtxCreate_v4(&b, NULL, 0, dev)); /* a second live context: a real one, current */
                OK(f_cuMemAlloc_v2(&y, 1 << 20));
                printf("address reused: %s\n", x == y ? "yes" : "no");
                OK(f_cuCtxPopCurrent_v2(&popped));
                OK(f_cuCtxDestroy_v2(a));
                OK(f_cuCtxSetCurrent(b));
                printf("the other context's buffer: %s\n",
                       f_cuMemGetAddressRange_v2(&base, &size, y) == CUDA_SUCCESS && base == y ? "alive" : "FREED");
                OK(f_cuMemFree_v2(y));
                OK(f_cuCtxDestroy_v2(b));
        } else {
                fprintf(stderr, "usage: setup-test overlap MS | framework-overlap MS LIB | fork MS | lookup-fork MS | "
                                "exit [MS] | error | ctx-loop N | ctx-nested | ctx-reuse | reset-loop N\n");
                return 2;
        }
        return 0;
}
