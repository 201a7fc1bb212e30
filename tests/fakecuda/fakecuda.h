/* fakecuda.h: what test programs need to drive the simulated libcuda.so.1.
 *
 * The fake driver has no GPU: a "kernel" is a host function, and a "module
 * image" is a table of such functions. cuModuleLoadData / cuModuleLoadDataEx /
 * cuModuleLoadFatBinary / cuLibraryLoadData take a `const FakeModuleImage *`
 * in place of a cubin or fatbin; cuModuleLoad / cuLibraryLoadFromFile take
 * the path of a shared object that exports `fakecuda_module_image`.
 *
 * A kernel receives the launch dimensions and the kernelParams array exactly
 * as given to cuLaunchKernel (params[i] points to the i-th argument). Device
 * pointers are host addresses, so a kernel reads and writes them directly.
 */
#ifndef SAGE_FAKECUDA_H
#define SAGE_FAKECUDA_H

#include <stddef.h>

#define FAKECUDA_IMAGE_MAGIC "SAGEFAKE" /* 8 bytes, no NUL needed */

/* Name of the symbol cuModuleLoad(path) looks up in the dlopen()ed file. */
#define FAKECUDA_MODULE_SYMBOL "fakecuda_module_image"

typedef struct FakeKernelLaunch {
        unsigned grid[3], block[3];
        unsigned shared_bytes;
        void *stream;
} FakeKernelLaunch;

typedef void (*FakeKernelFn)(const FakeKernelLaunch *launch, void **params);

typedef struct FakeKernelEntry {
        const char *name;
        FakeKernelFn fn;
        /* Optional, may be left out of initializers: the byte size of each
     * argument, terminated by 0. Graph capture copies argument values with
     * it (as the real driver does from kernel metadata); without it a
     * captured launch keeps the caller's kernelParams pointers, which must
     * then stay valid until the graph is last launched. */
        const size_t *param_sizes;
} FakeKernelEntry;

typedef struct FakeModuleImage {
        char magic[8];
        unsigned count;
        const FakeKernelEntry *kernels;
} FakeModuleImage;

/* Not a driver function: the device memory (bytes) the process `pid` uses now,
 * asked over the checkpoint control channel, so that a test can see it drop
 * to 0 while the process is checkpointed (its own calls block then).
 * Same errors as cuCheckpointProcessGetState. */
int fakecudaProcessMemUsed(int pid, size_t *bytes);
/* Not a driver function: wait at most timeout_ms until `count` calls of the
 * process `pid` wait at its closed gate (LOCKED or CHECKPOINTED).
 * CUDA_SUCCESS, or CUDA_ERROR_NOT_READY (600) when the time ran out. */
int fakecudaProcessWaitBlocked(int pid, unsigned count, unsigned timeout_ms);

#endif
