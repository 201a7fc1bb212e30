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
/* Not a driver function: the device bytes the last checkpoint of `pid` copied
 * into its host memory (0 before any). */
int fakecudaProcessCheckpointBytes(int pid, size_t *bytes);
/* Not a driver function: wait at most timeout_ms until `count` calls of the
 * process `pid` wait at its closed gate (LOCKED or CHECKPOINTED).
 * CUDA_SUCCESS, or CUDA_ERROR_NOT_READY (600) when the time ran out. */
int fakecudaProcessWaitBlocked(int pid, unsigned count, unsigned timeout_ms);

/*
 * The one private table cuGetExportTable answers (fake_export.c), shaped as
 * the driver's are: the table's size in bytes first, then driver functions
 * (both pass the checkpoint gate) and a data word. Its UUID is made up.
 * checksum(): every integer and vector argument register and a stack
 * argument, folded into one value; device_count(): as cuDeviceGetCount.
 */
#define FAKECUDA_EXPORT_TABLE_ID \
        { 0x53, 0x41, 0x47, 0x45, 0x2d, 0x66, 0x61, 0x6b, 0x65, 0x2d, 0x74, 0x61, 0x62, 0x6c, 0x65, 0x01 }
typedef struct FakecudaExportTable {
        size_t size;
        double (*checksum)(long a, long b, long c, long d, long e, long f, double x0, double x1, double x2, double x3,
                           double x4, double x5, double x6, double x7, long s0);
        int (*device_count)(int *count);
        const unsigned *data;
        /* A test hook: a driver call that stays inside (in flight) as long as a test wants: writes one
         * byte to `fd` (a socket) once inside, then returns the first byte it reads from it. */
        int (*hold)(int fd);
} FakecudaExportTable;
/* Not a driver function: the table itself, as the driver holds it (a test
 * compares it with what an interposer hands out). */
const FakecudaExportTable *fakecudaExportTable(void);

#endif
