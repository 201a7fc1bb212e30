/*
 * GPU access for the broker: the CUDA driver through a small dlsym table.
 *
 * saged never links -lcuda: it dlopen()s "libcuda.so.1" (the simulated one in
 * CI, through LD_LIBRARY_PATH; the real one on GPU nodes) and resolves just
 * what it calls. At start it runs cuInit and retains the primary context of
 * every served device for its whole life, which keeps the GPUs initialised
 * for the function processes (measured: a new process's setup drops from
 * ~200 ms to ~125 ms while another process holds a context).
 *
 * The broker's only memory work is on handles: import a publisher's POSIX
 * fd (the broker's handle keeps the physical memory alive after the
 * publisher exits), export fresh fds for LOOKUP hits, and release. It maps
 * nothing readable or writable; the one mapping it makes is a probe, with no
 * access granted, that checks a published handle is the size it claims.
 */
#include "gpu.h"

#include <cuda.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "proto.h"
#include "util.h"

#define GPU_MAX_DEVICES 64

/* Symbol names are the versioned ones cuda.h's macros map to. */
#define GPU_DRIVER_FUNCTIONS(X)                                                                             \
        X(cuInit, "cuInit", CUresult, (unsigned int))                                                       \
        X(cuDeviceGetCount, "cuDeviceGetCount", CUresult, (int *))                                          \
        X(cuDeviceGet, "cuDeviceGet", CUresult, (CUdevice *, int))                                          \
        X(cuDeviceTotalMem, "cuDeviceTotalMem_v2", CUresult, (size_t *, CUdevice))                          \
        X(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain", CUresult, (CUcontext *, CUdevice))          \
        X(cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2", CUresult, (CUdevice))                  \
        X(cuCtxSetCurrent, "cuCtxSetCurrent", CUresult, (CUcontext))                                        \
        X(cuMemGetAllocationGranularity, "cuMemGetAllocationGranularity", CUresult,                         \
          (size_t *, const CUmemAllocationProp *, CUmemAllocationGranularity_flags))                        \
        X(cuMemImportFromShareableHandle, "cuMemImportFromShareableHandle", CUresult,                       \
          (CUmemGenericAllocationHandle *, void *, CUmemAllocationHandleType))                              \
        X(cuMemExportToShareableHandle, "cuMemExportToShareableHandle", CUresult,                           \
          (void *, CUmemGenericAllocationHandle, CUmemAllocationHandleType, unsigned long long))            \
        X(cuMemRelease, "cuMemRelease", CUresult, (CUmemGenericAllocationHandle))                           \
        X(cuMemAddressReserve, "cuMemAddressReserve", CUresult,                                             \
          (CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long))                                 \
        X(cuMemAddressFree, "cuMemAddressFree", CUresult, (CUdeviceptr, size_t))                            \
        X(cuMemMap, "cuMemMap", CUresult,                                                                   \
          (CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, unsigned long long))                  \
        X(cuMemUnmap, "cuMemUnmap", CUresult, (CUdeviceptr, size_t))

/* Optional: used when present. */
#define GPU_OPTIONAL_FUNCTIONS(X)                                                                           \
        X(cuGetErrorName, "cuGetErrorName", CUresult, (CUresult, const char **))                            \
        X(cuMemGetAllocationPropertiesFromHandle, "cuMemGetAllocationPropertiesFromHandle", CUresult,       \
          (CUmemAllocationProp *, CUmemGenericAllocationHandle))

typedef struct GpuDriver {
#define X(field, sym, ret, args) ret(*field) args;
        GPU_DRIVER_FUNCTIONS(X)
        GPU_OPTIONAL_FUNCTIONS(X)
#undef X
} GpuDriver;

struct Gpu {
        void *library;
        GpuDriver cu;
        uint32_t n_devices;
        uint32_t n_served;
        bool served[GPU_MAX_DEVICES];
        CUdevice device[GPU_MAX_DEVICES];
        CUcontext context[GPU_MAX_DEVICES];
        uint64_t total_memory[GPU_MAX_DEVICES];
        uint64_t granularity;
};

static const char *error_name(const Gpu *g, CUresult r) {
        const char *name = NULL;
        if (g->cu.cuGetErrorName && g->cu.cuGetErrorName(r, &name) == CUDA_SUCCESS && name)
                return name;
        return "CUDA error";
}

Gpu *gpu_close(Gpu *g) {
        if (!g)
                return NULL;
        for (uint32_t i = 0; i < g->n_devices; i++)
                if (g->context[i])
                        g->cu.cuDevicePrimaryCtxRelease(g->device[i]);
        /* The driver library stays loaded: unloading libcuda is not supported
         * while any of its threads may still run. */
        free(g);
        return NULL;
}

static CUmemAllocationProp extent_prop(uint32_t device) {
        CUmemAllocationProp prop;
        memset(&prop, 0, sizeof(prop));
        prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
        prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
        prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        prop.location.id = (int)device;
        return prop;
}

int gpu_open(Gpu **out, const char *driver_path, const uint32_t *devices, size_t n_devices) {
        Gpu *g;
        CUresult r;
        int count = 0;
        void *sym_ptr;

        g = calloc(1, sizeof(*g));
        if (!g)
                return -ENOMEM;
        g->library = dlopen(driver_path, RTLD_NOW | RTLD_LOCAL);
        if (!g->library) {
                sage_warn("cannot load the CUDA driver %s: %s", driver_path, dlerror());
                free(g);
                return -ENOENT;
        }
#define X(field, sym, ret, args)                                                             \
        sym_ptr = dlsym(g->library, sym);                                                    \
        memcpy(&g->cu.field, &sym_ptr, sizeof(sym_ptr));                                     \
        if (!sym_ptr) {                                                                  \
                sage_warn("the CUDA driver %s lacks %s", driver_path, sym);                  \
                free(g);                                                                     \
                return -ENOENT;                                                              \
        }
        GPU_DRIVER_FUNCTIONS(X)
#undef X
#define X(field, sym, ret, args)                                                              \
        sym_ptr = dlsym(g->library, sym);                                                    \
        memcpy(&g->cu.field, &sym_ptr, sizeof(sym_ptr));
        GPU_OPTIONAL_FUNCTIONS(X)
#undef X

        r = g->cu.cuInit(0);
        if (r == CUDA_SUCCESS)
                r = g->cu.cuDeviceGetCount(&count);
        if (r != CUDA_SUCCESS) {
                sage_warn("cuInit: %s (%d)", error_name(g, r), (int)r);
                free(g);
                return r == CUDA_ERROR_NO_DEVICE ? -ENODEV : -EIO;
        }
        g->n_devices = count > GPU_MAX_DEVICES ? GPU_MAX_DEVICES : (uint32_t)count;
        for (size_t i = 0; i < n_devices; i++) {
                if (devices[i] >= g->n_devices) {
                        sage_warn("device %u does not exist (the driver reports %u)", devices[i], g->n_devices);
                        free(g);
                        return -ENODEV;
                }
                g->served[devices[i]] = true;
        }
        for (uint32_t d = 0; d < g->n_devices; d++) {
                size_t total = 0;
                if (n_devices == 0)
                        g->served[d] = true;
                if (!g->served[d])
                        continue;
                r = g->cu.cuDeviceGet(&g->device[d], (int)d);
                if (r == CUDA_SUCCESS)
                        r = g->cu.cuDevicePrimaryCtxRetain(&g->context[d], g->device[d]);
                if (r == CUDA_SUCCESS)
                        r = g->cu.cuDeviceTotalMem(&total, g->device[d]);
                if (r != CUDA_SUCCESS) {
                        sage_warn("device %u: %s (%d)", d, error_name(g, r), (int)r);
                        gpu_close(g);
                        return -EIO;
                }
                g->total_memory[d] = total;
                g->n_served++;
                if (!g->granularity) {
                        CUmemAllocationProp prop = extent_prop(d);
                        size_t gran = 0;
                        if (g->cu.cuMemGetAllocationGranularity(&gran, &prop,
                                                                CU_MEM_ALLOC_GRANULARITY_MINIMUM) == CUDA_SUCCESS)
                                g->granularity = gran;
                }
        }
        if (g->n_served == 0) {
                gpu_close(g);
                return -ENODEV;
        }
        if (!g->granularity)
                g->granularity = 2u << 20;
        *out = g;
        return 0;
}

uint32_t gpu_device_count(const Gpu *g) {
        return g ? g->n_devices : 0;
}

uint32_t gpu_served_count(const Gpu *g) {
        return g ? g->n_served : 0;
}

bool gpu_serves(const Gpu *g, uint32_t device) {
        return g && device < g->n_devices && g->served[device];
}

uint64_t gpu_total_memory(const Gpu *g, uint32_t device) {
        return gpu_serves(g, device) ? g->total_memory[device] : 0;
}

uint64_t gpu_granularity(const Gpu *g) {
        return g ? g->granularity : 2u << 20;
}

/* Map [offset, offset+length) of the handle with no access granted. */
static CUresult probe_map(Gpu *g, CUmemGenericAllocationHandle h, uint64_t offset, uint64_t length) {
        CUdeviceptr va = 0;
        CUresult r = g->cu.cuMemAddressReserve(&va, length, 0, 0, 0);
        if (r != CUDA_SUCCESS)
                return r;
        r = g->cu.cuMemMap(va, length, offset, h, 0);
        if (r == CUDA_SUCCESS)
                g->cu.cuMemUnmap(va, length);
        g->cu.cuMemAddressFree(va, length);
        return r;
}

/*
 * Is the handle exactly `size` bytes? A memfd-backed handle (the simulated
 * driver) answers through fstat. For the real driver's opaque fds: the
 * whole [0, size) must map, and a granule past it must not.
 */
static int verify_size(Gpu *g, CUmemGenericAllocationHandle h, int fd, uint64_t size) {
        struct stat st;
        CUresult r;

        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0)
                return (uint64_t)st.st_size == size ? 0 : SAGE_ERR_SIZE_MISMATCH;
        r = probe_map(g, h, 0, size);
        if (r != CUDA_SUCCESS) {
                sage_info("publish: mapping %llu bytes of the handle failed: %s",
                          (unsigned long long)size, error_name(g, r));
                return SAGE_ERR_SIZE_MISMATCH;
        }
        if (probe_map(g, h, size, g->granularity) == CUDA_SUCCESS)
                return SAGE_ERR_SIZE_MISMATCH;
        return 0;
}

int gpu_import(Gpu *g, uint32_t device, int fd, uint64_t size, GpuExtent **out) {
        CUmemGenericAllocationHandle h = 0;
        GpuExtent *x;
        CUresult r;
        int e;

        if (!gpu_serves(g, device))
                return SAGE_ERR_BAD_DEVICE;
        r = g->cu.cuCtxSetCurrent(g->context[device]);
        if (r == CUDA_SUCCESS)
                r = g->cu.cuMemImportFromShareableHandle(&h, (void *)(uintptr_t)fd,
                                                         CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
        if (r != CUDA_SUCCESS) {
                sage_info("publish: import failed: %s (%d)", error_name(g, r), (int)r);
                return SAGE_ERR_DRIVER;
        }
        if (g->cu.cuMemGetAllocationPropertiesFromHandle) {
                CUmemAllocationProp prop;
                memset(&prop, 0, sizeof(prop));
                r = g->cu.cuMemGetAllocationPropertiesFromHandle(&prop, h);
                if (r == CUDA_SUCCESS && (prop.location.type != CU_MEM_LOCATION_TYPE_DEVICE ||
                                          prop.location.id != (int)device)) {
                        g->cu.cuMemRelease(h);
                        return SAGE_ERR_BAD_DEVICE;
                }
        }
        e = verify_size(g, h, fd, size);
        if (e) {
                g->cu.cuMemRelease(h);
                return e;
        }
        x = calloc(1, sizeof(*x));
        if (!x) {
                g->cu.cuMemRelease(h);
                return SAGE_ERR_INTERNAL;
        }
        x->handle = h;
        x->device = device;
        /* The real driver does not re-export an imported handle (seen on the
         * H200: LOOKUP hits failed); the publisher's fd can be imported again
         * by any number of processes, so keep a duplicate of it. */
        x->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        *out = x;
        return 0;
}

int gpu_export(Gpu *g, const GpuExtent *x, int *fd_out) {
        int fd = -1;
        CUresult r;

        if (x->fd >= 0 && (fd = fcntl(x->fd, F_DUPFD_CLOEXEC, 0)) >= 0) {
                *fd_out = fd;
                return 0;
        }
        r = g->cu.cuCtxSetCurrent(g->context[x->device]);

        if (r == CUDA_SUCCESS)
                r = g->cu.cuMemExportToShareableHandle(&fd, x->handle, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
                                                       0);
        if (r != CUDA_SUCCESS || fd < 0) {
                sage_warn("export of an extent failed: %s (%d)", error_name(g, r), (int)r);
                return SAGE_ERR_DRIVER;
        }
        /* The driver's fd may lack FD_CLOEXEC; saged never execs, but be tidy. */
        (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
        *fd_out = fd;
        return 0;
}

void gpu_release(Gpu *g, GpuExtent *x) {
        if (!x)
                return;
        if (x->fd >= 0)
                close(x->fd);
        if (g) {
                g->cu.cuCtxSetCurrent(g->context[x->device]);
                g->cu.cuMemRelease(x->handle);
        }
        free(x);
}
