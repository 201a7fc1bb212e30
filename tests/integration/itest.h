/*
 * What the integration test programs that start saged and reach the driver
 * themselves share (daemon_test.c, suspend_test.c): a failed check ends the
 * process saying where; the driver's entry points loaded by name, as an app
 * that dlopens libcuda.so.1 reaches them; saged waited for until it
 * answers; STATS over a fresh connection; a pattern that stands for a
 * weights file.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <cuda.h>

#include "broker_client.h"
#include "vmm.h"

/* On failure: "PROGRAM[PID] FILE:LINE: check failed: COND" on stderr, exit 1. */
#define CHECK(cond)                                                    \
        do {                                                           \
                if (!(cond))                                           \
                        itest_check_failed(__FILE__, __LINE__, #cond); \
        } while (0)

_Noreturn void itest_check_failed(const char *file, int line, const char *cond);

/* The driver entry points the tests call themselves: field, symbol, parameters. */
#define ITEST_CU_FUNCTIONS(X)                                                                                    \
        X(cuCtxSynchronize, "cuCtxSynchronize", (void))                                                          \
        X(cuCtxGetLimit, "cuCtxGetLimit", (size_t *, CUlimit))                                                   \
        X(cuCtxSetLimit, "cuCtxSetLimit", (CUlimit, size_t))                                                     \
        X(cuMemAlloc, "cuMemAlloc_v2", (CUdeviceptr *, size_t))                                                  \
        X(cuMemAllocManaged, "cuMemAllocManaged", (CUdeviceptr *, size_t, unsigned))                             \
        X(cuMemFree, "cuMemFree_v2", (CUdeviceptr))                                                              \
        X(cuMemCreate, "cuMemCreate",                                                                            \
          (CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *, unsigned long long))             \
        X(cuMemAddressReserve, "cuMemAddressReserve",                                                            \
          (CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long))                                      \
        X(cuMemMap, "cuMemMap", (CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, unsigned long long)) \
        X(cuMemSetAccess, "cuMemSetAccess", (CUdeviceptr, size_t, const CUmemAccessDesc *, size_t))              \
        X(cuMemExportToShareableHandle, "cuMemExportToShareableHandle",                                          \
          (void *, CUmemGenericAllocationHandle, CUmemAllocationHandleType, unsigned long long))                 \
        X(cuMemImportFromShareableHandle, "cuMemImportFromShareableHandle",                                      \
          (CUmemGenericAllocationHandle *, void *, CUmemAllocationHandleType))                                   \
        X(cuMemcpyHtoD, "cuMemcpyHtoD_v2", (CUdeviceptr, const void *, size_t))                                  \
        X(cuMemcpyDtoH, "cuMemcpyDtoH_v2", (void *, CUdeviceptr, size_t))                                        \
        X(cuMemsetD8, "cuMemsetD8_v2", (CUdeviceptr, unsigned char, size_t))                                     \
        X(cuModuleLoadData, "cuModuleLoadData", (CUmodule *, const void *))                                      \
        X(cuModuleGetFunction, "cuModuleGetFunction", (CUfunction *, CUmodule, const char *))                    \
        X(cuLaunchKernel, "cuLaunchKernel",                                                                      \
          (CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream, void **,  \
           void **))                                                                                             \
        X(cuGetExportTable, "cuGetExportTable", (const void **, const CUuuid *))

typedef struct ItestCu {
#define ITEST_CU_FIELD(name, symbol, params) CUresult(*name) params;
        ITEST_CU_FUNCTIONS(ITEST_CU_FIELD)
#undef ITEST_CU_FIELD
        SageVmmOps vmm; /* libsage's and saged's VMM steps (common/vmm.h) over the same driver */
} ItestCu;

/* The driver as an app that dlopens libcuda.so.1 reaches it (itest_cu_load fills it). */
extern ItestCu cu;

/* Fill `cu` (exit 1 naming a missing symbol), then cuInit and device 0's primary context current. */
void itest_cu_load(void);

/* `size` bytes of a pattern that `seed` picks (malloc'd; the caller frees). */
uint8_t *itest_pattern(uint64_t seed, size_t size);

/* Until saged (just forked as `pid`) answers on `socket`; a saged that exits first fails the check. */
void itest_wait_saged(pid_t pid, const char *socket, int timeout_ms);

/*
 * This program again (/proc/self/exe with `argv`) under libsage
 * (SAGE_TEST_PRELOAD), SAGE_SOCKET=`socket`, SAGE_WARMUP=off, then each
 * "NAME=value" of `env` (NULL-terminated). Its stdin and stdout are pipes:
 * *to_app writes to it, *from_app reads from it. Returns its pid.
 */
pid_t itest_spawn_app(char *const argv[], const char *socket, const char *const *env, int *to_app, int *from_app);

/* Waits for child `pid`, which must have exited with status 0. */
void itest_reap(pid_t pid);

SageBroker *itest_broker(const char *socket, int timeout_ms);
SageStats itest_stats(const char *socket, int timeout_ms);
