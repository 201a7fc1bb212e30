/* The real driver: opened lazily, its hooked entry points and their identity map. */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "symbols.h"
#include "util.h"

/* Open the driver (SAGE_DRIVER, default libcuda.so.1) once. False if it cannot be opened. */
bool sage_driver_load(void);

/* The real entry point of `sym`, opening the driver on first use. */
static inline void *sage_real(SageSym sym);

/* The real entry point of a hooked symbol, typed: SAGE_REAL(cuMemFree_v2)(ptr). */
#define SAGE_REAL(name) SAGE_FN_CAST(sage_fn_##name##_t, sage_real(SAGE_SYM_##name))

/*
 * Driver entry points libsage calls for its own logic but does not hook,
 * resolved in the same pass as the hooked ones. NULL where the driver
 * lacks one (or is not open): check before use.
 * SAGE_DRIVER_EXTRA(field, symbol, type)
 */
#define SAGE_DRIVER_EXTRAS(X)                                                                                     \
        X(ctx_get_current, "cuCtxGetCurrent", CUresult (*)(CUcontext *))                                          \
        X(ctx_get_device, "cuCtxGetDevice", CUresult (*)(CUdevice *))                                             \
        X(ctx_push, "cuCtxPushCurrent_v2", CUresult (*)(CUcontext))                                               \
        X(ctx_pop, "cuCtxPopCurrent_v2", CUresult (*)(CUcontext *))                                               \
        X(ctx_synchronize, "cuCtxSynchronize", CUresult (*)(void))                                                \
        X(primary_get_state, "cuDevicePrimaryCtxGetState", CUresult (*)(CUdevice, unsigned *, int *))             \
        X(device_get, "cuDeviceGet", CUresult (*)(CUdevice *, int))                                               \
        X(device_get_count, "cuDeviceGetCount", CUresult (*)(int *))                                              \
        X(mem_granularity, "cuMemGetAllocationGranularity",                                                       \
          CUresult (*)(size_t *, const CUmemAllocationProp *, CUmemAllocationGranularity_flags))                  \
        X(pointer_get_attribute, "cuPointerGetAttribute", CUresult (*)(void *, CUpointer_attribute, CUdeviceptr)) \
        X(stream_is_capturing, "cuStreamIsCapturing", CUresult (*)(CUstream, CUstreamCaptureStatus *))            \
        X(stream_query, "cuStreamQuery", CUresult (*)(CUstream))                                                  \
        X(exchange_capture_mode, "cuThreadExchangeStreamCaptureMode", CUresult (*)(CUstreamCaptureMode *))        \
        X(func_get_param_info, "cuFuncGetParamInfo", CUresult (*)(CUfunction, size_t, size_t *, size_t *))        \
        X(func_get_name, "cuFuncGetName", CUresult (*)(const char **, CUfunction))                                \
        X(kernel_get_param_info, "cuKernelGetParamInfo", CUresult (*)(CUkernel, size_t, size_t *, size_t *))      \
        X(kernel_get_name, "cuKernelGetName", CUresult (*)(const char **, CUkernel))                              \
        X(device_get_uuid, "cuDeviceGetUuid_v2", CUresult (*)(CUuuid *, CUdevice))                                \
        X(device_get_default_mem_pool, "cuDeviceGetDefaultMemPool", CUresult (*)(CUmemoryPool *, CUdevice))       \
        X(device_get_mem_pool, "cuDeviceGetMemPool", CUresult (*)(CUmemoryPool *, CUdevice))                      \
        X(primary_retain, "cuDevicePrimaryCtxRetain", CUresult (*)(CUcontext *, CUdevice))                        \
        X(primary_release, "cuDevicePrimaryCtxRelease_v2", CUresult (*)(CUdevice))                                \
        X(ckpt_get_state, "cuCheckpointProcessGetState", CUresult (*)(int, CUprocessState *))                     \
        X(ckpt_restore, "cuCheckpointProcessRestore", CUresult (*)(int, CUcheckpointRestoreArgs *))               \
        X(ckpt_unlock, "cuCheckpointProcessUnlock", CUresult (*)(int, CUcheckpointUnlockArgs *))

typedef struct SageDriverExtras {
#define SAGE_DRIVER_EXTRA_FIELD(field, symbol, type) __typeof__(type) field;
        SAGE_DRIVER_EXTRAS(SAGE_DRIVER_EXTRA_FIELD)
#undef SAGE_DRIVER_EXTRA_FIELD
} SageDriverExtras;

/*
 * The driver as libsage found it: one object, owned by driver.c. It is
 * written once, by the first load to finish (driver.c), before `loaded` is
 * released; after that nobody writes it. It is visible here only so the
 * hooks read a real entry point with two loads (sage_real).
 */
typedef struct SageDriver {
        atomic_bool loaded;
        void *real[SAGE_SYM_COUNT]; /* hooked entry points; NULL where the driver lacks one */
        SageDriverExtras extras;
} SageDriver;

extern SageDriver sage_driver;

/* The name share*.c use for the extras. */
#define sage_driver_extras (sage_driver.extras)

static inline void *sage_real(SageSym sym) {
        if (__builtin_expect(!atomic_load_explicit(&sage_driver.loaded, memory_order_acquire), 0))
                sage_driver_load();
        return sage_driver.real[sym];
}

/*
 * Pointer identity: which hooked symbol is `fn` the real driver entry of?
 * -1 when it is none of them (or the driver is not open yet).
 */
int sage_driver_sym_of(const void *fn);

/* True on the thread that is inside sage_driver_load (dlopen may call back). */
bool sage_driver_loading(void);

/* glibc's dlopen, resolved before the dlopen trampolines jump to it. */
void sage_real_dlopen_ensure(void);

/* The real dlsym (glibc's, versioned), for libsage's own use. */
void *sage_real_dlsym(void *handle, const char *name);

/* glibc's dlsym, resolved before the dlsym trampolines jump to it. */
void sage_real_dlsym_ensure(void);

/* The handle of the real driver, NULL until loaded or if it could not be opened. */
void *sage_driver_handle(void);
