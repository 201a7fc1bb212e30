/* The broker's view of the GPUs: driver table, warm primary contexts, VMM handles. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct Gpu Gpu;

/* One imported extent: the broker's own handle on the publisher's memory. */
typedef struct GpuExtent {
        unsigned long long handle; /* CUmemGenericAllocationHandle */
        uint32_t device;
        int fd; /* a duplicate of the publisher's fd: what LOOKUP hands out (-1: export the handle) */
} GpuExtent;

/*
 * dlopen the driver, cuInit, retain (and keep) the primary context of every
 * served device. `devices`/`n_devices` select ordinals (n_devices 0: all).
 * Returns 0, -ENOENT if the driver cannot be loaded, -ENODEV if it has no
 * (selected) device, -EIO on driver errors; the message says which.
 */
int gpu_open(Gpu **out, const char *driver_path, const uint32_t *devices, size_t n_devices);
Gpu *gpu_close(Gpu *gpu);

uint32_t gpu_device_count(const Gpu *gpu);      /* ordinals 0..count-1 exist */
uint32_t gpu_served_count(const Gpu *gpu);
bool gpu_serves(const Gpu *gpu, uint32_t device);
uint64_t gpu_total_memory(const Gpu *gpu, uint32_t device);
uint64_t gpu_granularity(const Gpu *gpu);

/*
 * Import a published POSIX fd (not consumed) and check it is exactly `size`
 * bytes on `device`. Returns 0 or a positive SageProtoError.
 */
int gpu_import(Gpu *gpu, uint32_t device, int fd, uint64_t size, GpuExtent **out);
/* A fresh O_CLOEXEC fd for a client. Returns 0 or a positive SageProtoError. */
int gpu_export(Gpu *gpu, const GpuExtent *extent, int *fd_out);
void gpu_release(Gpu *gpu, GpuExtent *extent);
