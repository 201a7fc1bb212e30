/*
 * dlsym and cuGetProcAddress routing, run with and without libsage.
 * SAGE_TEST_EXPECT_SAGE=1: driver entry points must come back as libsage's
 * hooks; unset: they must come from the driver itself. Either way everything
 * else must behave exactly as glibc's dlsym does: RTLD_NEXT relative to the
 * caller, explicit handles, RTLD_DEFAULT, and both versions of dlsym.
 */
#include <cuda.h>

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dl_object.h"
#include "util.h"

int shim_value(void);
void *shim_lookup_next(const char *name);

/* The program's own shim_value, exported (-rdynamic) ahead of the library's. */
__attribute__((visibility("default"))) int shim_value(void) {
        return 2;
}

static int failures;

#define CHECK(cond, ...)                                                     \
        do {                                                                 \
                if (!(cond)) {                                               \
                        fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
                        fprintf(stderr, __VA_ARGS__);                        \
                        fputc('\n', stderr);                                 \
                        failures++;                                          \
                }                                                            \
        } while (0)

typedef CUresult (*get_proc_v2_t)(const char *, void **, int, cuuint64_t, CUdriverProcAddressQueryResult *);
typedef CUresult (*get_proc_t)(const char *, void **, int, cuuint64_t);

int main(void) {
        int sage = getenv("SAGE_TEST_EXPECT_SAGE") && atoi(getenv("SAGE_TEST_EXPECT_SAGE"));
        void *cuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
        void *(*dlsym_v225)(void *, const char *);
        void *fn, *via_default;
        get_proc_v2_t get_proc_v2;
        get_proc_t get_proc;
        CUdriverProcAddressQueryResult status;

        if (!cuda) {
                fprintf(stderr, "SKIP: no libcuda.so.1: %s\n", dlerror());
                return 77;
        }

        /* Non-driver names keep glibc's semantics, caller identity included. */
        CHECK(SAGE_FN_CAST(int (*)(void), dlsym(RTLD_DEFAULT, "shim_value"))() == 2, "RTLD_DEFAULT shim_value");
        fn = dlsym(RTLD_NEXT, "shim_value");
        CHECK(fn && SAGE_FN_CAST(int (*)(void), fn)() == 1,
              "RTLD_NEXT from the program must find the library's shim_value");
        CHECK(shim_lookup_next("shim_value") == NULL,
              "RTLD_NEXT from the library must find nothing after it (caller identity lost?)");
        CHECK(dlsym(RTLD_DEFAULT, "no_such_symbol_anywhere") == NULL && dlerror() != NULL,
              "missing symbol sets dlerror");
        CHECK(dlsym(RTLD_DEFAULT, "strlen") == SAGE_FN_CAST(void *, strlen), "strlen");

        /* Driver names through an explicit handle, RTLD_DEFAULT and RTLD_NEXT. */
        fn = dlsym(cuda, "cuMemAlloc_v2");
        CHECK(fn != NULL, "cuMemAlloc_v2 via handle");
        CHECK(from_sage(fn) == sage, "cuMemAlloc_v2 via handle comes from %s", object_of(fn));
        via_default = dlsym(RTLD_DEFAULT, "cuMemAlloc_v2");
        CHECK(via_default == NULL || from_sage(via_default) == sage, "RTLD_DEFAULT cuMemAlloc_v2 from %s",
              object_of(via_default));
        fn = dlsym(RTLD_NEXT, "cuMemcpyHtoD_v2_ptds");
        CHECK(fn == NULL || from_sage(fn) == sage, "RTLD_NEXT cuMemcpyHtoD_v2_ptds from %s", object_of(fn));
        CHECK(dlsym(cuda, "cuNoSuchEntryPoint") == NULL, "unknown cu name resolves to NULL");
        fn = dlsym(cuda, "cuDeviceGetName");
        CHECK(fn && !from_sage(fn), "an unhooked entry point must be the driver's own (%s)", object_of(fn));

        /* The old dlsym version behaves the same. */
        dlsym_v225 = SAGE_FN_CAST(void *(*)(void *, const char *), dlvsym(RTLD_DEFAULT, "dlsym", "GLIBC_2.2.5"));
        CHECK(dlsym_v225 != NULL, "dlsym@GLIBC_2.2.5 exists");
        if (dlsym_v225) {
                fn = dlsym_v225(cuda, "cuLaunchKernel");
                CHECK(fn && from_sage(fn) == sage, "cuLaunchKernel via dlsym@GLIBC_2.2.5 from %s", object_of(fn));
        }

        /* cuGetProcAddress, as cudart uses it: base names, versions, per-thread flags. */
        get_proc_v2 = SAGE_FN_CAST(get_proc_v2_t, dlsym(cuda, "cuGetProcAddress_v2"));
        CHECK(get_proc_v2 && from_sage(SAGE_FN_CAST(void *, get_proc_v2)) == sage, "cuGetProcAddress_v2 routed");
        if (get_proc_v2) {
                CHECK(get_proc_v2("cuMemAlloc", &fn, 12000, CU_GET_PROC_ADDRESS_DEFAULT, &status) == CUDA_SUCCESS &&
                              status == CU_GET_PROC_ADDRESS_SUCCESS,
                      "cuGetProcAddress_v2(cuMemAlloc)");
                CHECK(fn && from_sage(fn) == sage, "cuMemAlloc via cuGetProcAddress from %s", object_of(fn));
                CHECK(fn == dlsym(cuda, "cuMemAlloc_v2"), "cuMemAlloc resolves to the v2 entry point");

                CHECK(get_proc_v2("cuMemcpyHtoD", &fn, 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, &status) ==
                              CUDA_SUCCESS,
                      "cuGetProcAddress_v2(cuMemcpyHtoD, ptds)");
                CHECK(fn == dlsym(cuda, "cuMemcpyHtoD_v2_ptds"), "per-thread cuMemcpyHtoD is the _v2_ptds entry point");
                CHECK(fn && from_sage(fn) == sage, "cuMemcpyHtoD_v2_ptds from %s", object_of(fn));

                CHECK(get_proc_v2("cuLaunchKernel", &fn, 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM,
                                  &status) == CUDA_SUCCESS,
                      "cuGetProcAddress_v2(cuLaunchKernel, ptsz)");
                CHECK(fn == dlsym(cuda, "cuLaunchKernel_ptsz"), "per-thread cuLaunchKernel is the _ptsz entry point");

                CHECK(get_proc_v2("cuDeviceGetName", &fn, 12000, 0, &status) == CUDA_SUCCESS && fn && !from_sage(fn),
                      "unhooked entry points pass through (%s)", object_of(fn));

                fn = (void *)0x1;
                CHECK(get_proc_v2("cuNoSuchEntryPoint", &fn, 12000, 0, &status) != CUDA_SUCCESS && fn == NULL &&
                              status == CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND,
                      "unknown names pass through as NOT_FOUND");
                CHECK(get_proc_v2("cuMemAlloc", &fn, 1000, 0, &status) != CUDA_SUCCESS || fn == NULL ||
                              status != CU_GET_PROC_ADDRESS_SUCCESS,
                      "a too-old version is not answered with a hook");

                CHECK(get_proc_v2("cuGetProcAddress", &fn, 12000, 0, &status) == CUDA_SUCCESS && fn &&
                              from_sage(fn) == sage,
                      "cuGetProcAddress of itself is routed");
        }
        get_proc = SAGE_FN_CAST(get_proc_t, dlsym(cuda, "cuGetProcAddress"));
        if (get_proc) {
                CHECK(get_proc("cuCtxCreate", &fn, 12000, 0) == CUDA_SUCCESS && fn && from_sage(fn) == sage,
                      "old cuGetProcAddress(cuCtxCreate) from %s", object_of(fn));
        }
#ifndef __SANITIZE_ADDRESS__ /* ASan's own dlopen interceptor loses the caller */
        {
                /* dlopen by bare name, found only through the caller's RUNPATH
                 * ($ORIGIN/): glibc takes the caller from the return address, so
                 * libsage's dlopen must hand over the caller's frame. Both symbol
                 * versions, as for dlsym. */
                void *(*dlopen_v225)(const char *, int) =
                        SAGE_FN_CAST(void *(*)(const char *, int), dlvsym(RTLD_DEFAULT, "dlopen", "GLIBC_2.2.5"));
                void *lib = dlopen("libinterpose-runpath.so", RTLD_NOW | RTLD_LOCAL);

                CHECK(lib && dlsym(lib, "runpath_value"), "dlopen through the caller's RUNPATH: %s",
                      lib ? "no symbol" : dlerror());
                if (lib)
                        dlclose(lib);
                lib = dlopen_v225 ? dlopen_v225("libinterpose-runpath.so", RTLD_NOW | RTLD_LOCAL) : NULL;
                CHECK(lib, "dlopen@GLIBC_2.2.5 through the caller's RUNPATH: %s", dlerror());
                if (lib)
                        dlclose(lib);
                CHECK(!dlopen("libinterpose-no-such-library.so", RTLD_NOW) && dlerror(),
                      "a missing library fails as natively, with dlerror()");
                CHECK(from_sage(SAGE_FN_CAST(void *, dlsym(RTLD_DEFAULT, "dlopen"))) == sage, "dlopen is %s's",
                      sage ? "libsage" : "glibc");
        }
#endif
        printf("interpose: %s, %d failure(s)\n", sage ? "with libsage" : "native", failures);
        return failures ? 1 : 0;
}
