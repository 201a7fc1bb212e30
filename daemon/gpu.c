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
 * A published extent becomes the broker's own memory: the publisher's fd is
 * imported and mapped read-only, copied device-to-device into a fresh
 * allocation of the broker's (exportable as a POSIX fd), and released. A
 * publisher that kept its writable mapping can therefore change only its
 * own memory, never what LOOKUP hands out later (the copy costs device
 * bandwidth once per extent, ~3 ms/GiB on an H100). The copy stays mapped
 * read-only in the broker until it was hashed against its content key
 * (gpu_verify_step: chunk by chunk through a pinned staging buffer, so the
 * server can spread a large extent over many loop iterations); only then is
 * it served.
 */
#include "gpu.h"

#include <cuda.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gpu_driver.h"
#include "log.h"
#include "proto.h"
#include "util.h"
#include "vmm.h"

const char *gpu_error_name(const Gpu *g, CUresult r) {
        const char *name = NULL;
        if (g->cu.cuGetErrorName && g->cu.cuGetErrorName(r, &name) == CUDA_SUCCESS && name)
                return name;
        return "CUDA error";
}

Gpu *gpu_close(Gpu *g) {
        if (!g)
                return NULL;
        if (g->staging_pinned)
                g->cu.cuMemFreeHost(g->staging);
        else
                free(g->staging);
        for (uint32_t i = 0; i < g->n_devices; i++)
                if (g->context[i])
                        g->cu.cuDevicePrimaryCtxRelease(g->device[i]);
        /* The driver library stays loaded: unloading libcuda is not supported
         * while any of its threads may still run. */
        free(g);
        return NULL;
}

static CUmemAllocationProp extent_prop(uint32_t device) {
        return sage_vmm_prop((int)device);
}

/* A device without a UUID (a driver without cuDeviceGetUuid) is in the
 * table but no client can name it: it serves no one. */
static void read_uuid(Gpu *g, uint32_t d) {
        CUresult (*get)(CUuuid *, CUdevice) = g->cu.cuDeviceGetUuid ? g->cu.cuDeviceGetUuid : g->cu.cuDeviceGetUuidV1;
        CUresult r = get ? get(&g->uuid[d], g->device[d]) : CUDA_ERROR_NOT_SUPPORTED;

        g->has_uuid[d] = r == CUDA_SUCCESS;
        if (!g->has_uuid[d])
                sage_warn("device %u: no UUID (%s): clients cannot name it", d, gpu_error_name(g, r));
}

int gpu_open(Gpu **out, const char *driver_path, const uint32_t *devices, size_t n_devices, const uint8_t (*uuids)[16],
             size_t n_uuids) {
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
#define X(field, sym, ret, args)                                            \
        sym_ptr = dlsym(g->library, sym);                                   \
        memcpy(&g->cu.field, &sym_ptr, sizeof(sym_ptr));                    \
        if (!sym_ptr) {                                                     \
                sage_warn("the CUDA driver %s lacks %s", driver_path, sym); \
                free(g);                                                    \
                return -ENOENT;                                             \
        }
        GPU_DRIVER_FUNCTIONS(X)
#undef X
#define X(field, sym, ret, args)          \
        sym_ptr = dlsym(g->library, sym); \
        memcpy(&g->cu.field, &sym_ptr, sizeof(sym_ptr));
        GPU_OPTIONAL_FUNCTIONS(X)
#undef X
        g->vmm = (SageVmmOps){ .create = g->cu.cuMemCreate,
                               .release = g->cu.cuMemRelease,
                               .address_reserve = g->cu.cuMemAddressReserve,
                               .address_free = g->cu.cuMemAddressFree,
                               .map = g->cu.cuMemMap,
                               .unmap = g->cu.cuMemUnmap,
                               .set_access = g->cu.cuMemSetAccess,
                               .copy_dtod = g->cu.cuMemcpyDtoD,
                               .ctx_synchronize = g->cu.cuCtxSynchronize };

        r = g->cu.cuInit(0);
        if (r == CUDA_SUCCESS)
                r = g->cu.cuDeviceGetCount(&count);
        if (r != CUDA_SUCCESS) {
                sage_warn("cuInit: %s (%d)", gpu_error_name(g, r), (int)r);
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
        for (uint32_t d = 0; d < g->n_devices; d++)
                if (g->cu.cuDeviceGet(&g->device[d], (int)d) == CUDA_SUCCESS)
                        read_uuid(g, d);
        /* --devices GPU-…: the operator's inventory names GPUs by UUID, whatever their ordinal here. */
        for (size_t i = 0; i < n_uuids; i++) {
                char name[SAGE_UUID_STRING_SIZE];
                uint32_t d = 0;
                while (d < g->n_devices && !(g->has_uuid[d] && !memcmp(g->uuid[d].bytes, uuids[i], 16)))
                        d++;
                if (d == g->n_devices) {
                        sage_warn("device %s does not exist (the driver reports %u devices)",
                                  sage_uuid_format(uuids[i], name, sizeof(name)), g->n_devices);
                        free(g);
                        return -ENODEV;
                }
                g->served[d] = true;
        }
        for (uint32_t d = 0; d < g->n_devices; d++) {
                size_t total = 0;
                if (n_devices == 0 && n_uuids == 0)
                        g->served[d] = true;
                if (!g->served[d])
                        continue;
                r = g->cu.cuDeviceGet(&g->device[d], (int)d);
                if (r == CUDA_SUCCESS)
                        r = g->cu.cuDevicePrimaryCtxRetain(&g->context[d], g->device[d]);
                if (r == CUDA_SUCCESS)
                        r = g->cu.cuDeviceTotalMem(&total, g->device[d]);
                if (r != CUDA_SUCCESS) {
                        sage_warn("device %u: %s (%d)", d, gpu_error_name(g, r), (int)r);
                        gpu_close(g);
                        return -EIO;
                }
                g->total_memory[d] = total;
                g->n_served++;
                if (!g->granularity) {
                        CUmemAllocationProp prop = extent_prop(d);
                        size_t gran = 0;
                        if (g->cu.cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM) ==
                            CUDA_SUCCESS)
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

uint64_t gpu_free_memory(Gpu *g, const uint8_t uuid[16]) {
        size_t free_bytes = 0, total = 0;

        for (uint32_t d = 0; g && g->cu.cuMemGetInfo && d < g->n_devices; d++) {
                if (!g->served[d] || !g->has_uuid[d] || memcmp(g->uuid[d].bytes, uuid, 16) != 0)
                        continue;
                if (g->cu.cuCtxSetCurrent(g->context[d]) != CUDA_SUCCESS ||
                    g->cu.cuMemGetInfo(&free_bytes, &total) != CUDA_SUCCESS)
                        break;
                return free_bytes;
        }
        return GPU_BYTES_UNKNOWN;
}

bool gpu_device_uuid(const Gpu *g, uint32_t device, uint8_t uuid[16]) {
        if (!g || device >= g->n_devices || !g->has_uuid[device])
                return false;
        memcpy(uuid, g->uuid[device].bytes, 16);
        return true;
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
                sage_info("publish: mapping %llu bytes of the handle failed: %s", (unsigned long long)size,
                          gpu_error_name(g, r));
                return SAGE_ERR_SIZE_MISMATCH;
        }
        if (probe_map(g, h, size, g->granularity) == CUDA_SUCCESS)
                return SAGE_ERR_SIZE_MISMATCH;
        return 0;
}

/* Import the publisher's fd on a device this broker serves (its context
 * made current) and check it is what it claims (device, size). */
static int import_published(Gpu *g, uint32_t device, int fd, uint64_t size, CUmemGenericAllocationHandle *out) {
        CUmemGenericAllocationHandle h = 0;
        CUresult r;
        int e;

        if (!gpu_serves(g, device))
                return SAGE_ERR_BAD_DEVICE;
        if (g->cu.cuCtxSetCurrent(g->context[device]) != CUDA_SUCCESS)
                return SAGE_ERR_DRIVER;
        r = g->cu.cuMemImportFromShareableHandle(&h, (void *)(uintptr_t)fd, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
        if (r != CUDA_SUCCESS) {
                sage_info("publish: import failed: %s (%d)", gpu_error_name(g, r), (int)r);
                return SAGE_ERR_DRIVER;
        }
        if (g->cu.cuMemGetAllocationPropertiesFromHandle) {
                CUmemAllocationProp prop;
                memset(&prop, 0, sizeof(prop));
                r = g->cu.cuMemGetAllocationPropertiesFromHandle(&prop, h);
                if (r == CUDA_SUCCESS &&
                    (prop.location.type != CU_MEM_LOCATION_TYPE_DEVICE || prop.location.id != (int)device)) {
                        g->cu.cuMemRelease(h);
                        return SAGE_ERR_BAD_DEVICE;
                }
        }
        e = verify_size(g, h, fd, size);
        if (e) {
                g->cu.cuMemRelease(h);
                return e;
        }
        *out = h;
        return 0;
}

/* Reserve and map all of `h` at a new address with `flags` for `device`. */
static CUresult map_whole(Gpu *g, uint32_t device, CUmemGenericAllocationHandle h, uint64_t size,
                          CUmemAccess_flags flags, CUdeviceptr *va) {
        return sage_vmm_map_new(&g->vmm, size, (int)device, h, flags, va);
}

static void unmap_whole(Gpu *g, CUdeviceptr va, uint64_t size) {
        sage_vmm_unmap_free(&g->vmm, va, size);
}

/* Copy all of the published handle into `own` (mapped read-write at `dst`). */
static CUresult copy_published(Gpu *g, uint32_t device, CUmemGenericAllocationHandle published, CUdeviceptr dst,
                               uint64_t size) {
        CUdeviceptr src = 0;
        CUresult r = map_whole(g, device, published, size, CU_MEM_ACCESS_FLAGS_PROT_READ, &src);

        if (r != CUDA_SUCCESS)
                return r;
        r = g->cu.cuMemcpyDtoD(dst, src, size);
        /* The publisher's memory is let go only once the copy has finished. */
        if (r == CUDA_SUCCESS)
                r = g->cu.cuCtxSynchronize();
        unmap_whole(g, src, size);
        return r;
}

int gpu_adopt(Gpu *g, uint32_t device, int fd, uint64_t size, SageHash want, GpuExtent **out) {
        CUmemAllocationProp prop = extent_prop(device);
        CUmemAccessDesc read_only = { .location = { CU_MEM_LOCATION_TYPE_DEVICE, (int)device },
                                      .flags = CU_MEM_ACCESS_FLAGS_PROT_READ };
        CUmemGenericAllocationHandle published = 0;
        CUdeviceptr va = 0;
        GpuExtent *x;
        CUresult r;
        int e;

        e = import_published(g, device, fd, size, &published);
        if (e)
                return e;
        x = calloc(1, sizeof(*x));
        if (x)
                x->chunks = calloc(sage_content_key_nchunks(size), sizeof(SageHash));
        if (!x || !x->chunks) {
                g->cu.cuMemRelease(published);
                if (x)
                        free(x);
                return SAGE_ERR_INTERNAL;
        }
        *x = (GpuExtent){ .device = device, .size = size, .fd = -1, .want = want, .chunks = x->chunks };
        r = g->cu.cuMemCreate(&x->handle, size, &prop, 0);
        if (r != CUDA_SUCCESS) {
                sage_info("publish: no device memory for the broker's copy: %s", gpu_error_name(g, r));
                g->cu.cuMemRelease(published);
                free(x->chunks);
                free(x);
                return r == CUDA_ERROR_OUT_OF_MEMORY ? SAGE_ERR_BUDGET : SAGE_ERR_DRIVER;
        }
        r = map_whole(g, device, x->handle, size, CU_MEM_ACCESS_FLAGS_PROT_READWRITE, &va);
        if (r == CUDA_SUCCESS) {
                x->va = va;
                r = copy_published(g, device, published, va, size);
        }
        g->cu.cuMemRelease(published);
        /* From here the broker only reads its copy (verification). */
        if (r == CUDA_SUCCESS)
                r = g->cu.cuMemSetAccess(va, size, &read_only, 1);
        if (r == CUDA_SUCCESS)
                r = g->cu.cuMemExportToShareableHandle(&x->fd, x->handle, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0);
        if (r != CUDA_SUCCESS || x->fd < 0) {
                sage_info("publish: copying the extent failed: %s (%d)", gpu_error_name(g, r), (int)r);
                x->fd = -1;
                gpu_release(g, x);
                return SAGE_ERR_DRIVER;
        }
        /* The driver's fd may lack FD_CLOEXEC; saged never execs, but be tidy. */
        (void)fcntl(x->fd, F_SETFD, FD_CLOEXEC);
        *out = x;
        return 0;
}

int gpu_check_handle(Gpu *g, uint32_t device, int fd, uint64_t size) {
        CUmemGenericAllocationHandle h = 0;
        int e = import_published(g, device, fd, size, &h);

        if (e == 0)
                g->cu.cuMemRelease(h);
        return e;
}

static void *staging(Gpu *g) {
        if (!g->staging && g->cu.cuMemHostAlloc &&
            g->cu.cuMemHostAlloc(&g->staging, SAGE_CONTENT_KEY_BLOCK, CU_MEMHOSTALLOC_PORTABLE) == CUDA_SUCCESS)
                g->staging_pinned = true;
        if (!g->staging) {
                g->staging = malloc(SAGE_CONTENT_KEY_BLOCK);
                g->staging_pinned = false;
        }
        return g->staging;
}

static void verify_done(Gpu *g, GpuExtent *x) {
        if (x->va) {
                unmap_whole(g, x->va, x->size);
                x->va = 0;
        }
        free(x->chunks);
        x->chunks = NULL;
}

int gpu_verify_step(Gpu *g, GpuExtent *x, uint64_t *budget) {
        void *buf;

        if (!x->chunks)
                return GPU_VERIFY_MATCH;
        if (g->cu.cuCtxSetCurrent(g->context[x->device]) != CUDA_SUCCESS || !(buf = staging(g))) {
                verify_done(g, x);
                return GPU_VERIFY_MISMATCH;
        }
        while (x->hashed<x->size && * budget> 0) {
                uint64_t n =
                        x->size - x->hashed < SAGE_CONTENT_KEY_BLOCK ? x->size - x->hashed : SAGE_CONTENT_KEY_BLOCK;
                CUresult r = g->cu.cuMemcpyDtoH(buf, x->va + x->hashed, n);
                if (r != CUDA_SUCCESS) {
                        sage_warn("verification: reading an extent back failed: %s (%d)", gpu_error_name(g, r), (int)r);
                        verify_done(g, x);
                        return GPU_VERIFY_MISMATCH;
                }
                /* x->hashed is a whole number of blocks, so of chunks */
                sage_content_key_chunks(buf, n, &x->chunks[x->hashed / SAGE_CONTENT_KEY_CHUNK]);
                x->hashed += n;
                *budget = *budget > n ? *budget - n : 0;
        }
        if (x->hashed < x->size)
                return GPU_VERIFY_PENDING;
        SageHash got = sage_content_key_combine(x->chunks, sage_content_key_nchunks(x->size));
        verify_done(g, x);
        return sage_hash_equal(got, x->want) ? GPU_VERIFY_MATCH : GPU_VERIFY_MISMATCH;
}

int gpu_export(Gpu *g, const GpuExtent *x, int *fd_out) {
        int fd = -1;
        CUresult r;

        /* The broker's fd of its own allocation, duplicated: exporting the
         * handle again would give the same memory through a new fd. */
        if (x->fd >= 0 && (fd = fcntl(x->fd, F_DUPFD_CLOEXEC, 0)) >= 0) {
                *fd_out = fd;
                return 0;
        }
        r = g->cu.cuCtxSetCurrent(g->context[x->device]);

        if (r == CUDA_SUCCESS)
                r = g->cu.cuMemExportToShareableHandle(&fd, x->handle, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0);
        if (r != CUDA_SUCCESS || fd < 0) {
                sage_warn("export of an extent failed: %s (%d)", gpu_error_name(g, r), (int)r);
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
                verify_done(g, x);
                if (x->handle)
                        g->cu.cuMemRelease(x->handle);
        }
        free(x->chunks);
        free(x);
}
