/* The broker's view of the GPUs: driver table, warm primary contexts, VMM handles. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sys/types.h>

#include "hash.h"

typedef struct Gpu Gpu;

/*
 * One extent: the broker's own physical allocation holding a copy of what
 * was published. Nobody else ever had a writable mapping of it.
 */
typedef struct GpuExtent {
        unsigned long long handle; /* CUmemGenericAllocationHandle, created by the broker */
        uint32_t device;
        uint64_t size;
        int fd; /* exported once: LOOKUP hands out duplicates */
        /* Verification against the content key (gpu_verify_step), while pending: */
        unsigned long long va; /* the broker's read-only mapping; 0 once verified */
        SageHash want;
        SageHash *chunks; /* per SAGE_CONTENT_KEY_CHUNK, filled in order, a block at a time */
        uint64_t hashed;  /* bytes hashed so far */
} GpuExtent;

/* gpu_verify_step results. */
enum {
        GPU_VERIFY_PENDING = 0,
        GPU_VERIFY_MATCH = 1,
        GPU_VERIFY_MISMATCH = 2, /* also: the driver failed to read it back (not verifiable) */
};

/*
 * dlopen the driver, cuInit, retain (and keep) the primary context of every
 * served device. `devices`/`n_devices` select ordinals, `uuids`/`n_uuids`
 * GPUs by UUID (both 0: all).
 * Returns 0, -ENOENT if the driver cannot be loaded, -ENODEV if it has no
 * (selected) device, -EIO on driver errors; the message says which.
 */
int gpu_open(Gpu **out, const char *driver_path, const uint32_t *devices, size_t n_devices, const uint8_t (*uuids)[16],
             size_t n_uuids);
Gpu *gpu_close(Gpu *gpu);

uint32_t gpu_device_count(const Gpu *gpu); /* ordinals 0..count-1 exist */
uint32_t gpu_served_count(const Gpu *gpu);
bool gpu_serves(const Gpu *gpu, uint32_t device);
uint64_t gpu_total_memory(const Gpu *gpu, uint32_t device);
uint64_t gpu_granularity(const Gpu *gpu);
/* The UUID of ordinal `device` (served or not), as cuDeviceGetUuid gives it; false if unknown. */
bool gpu_device_uuid(const Gpu *gpu, uint32_t device, uint8_t uuid[16]);
/* Device memory free now (cuMemGetInfo) on the served GPU whose cuDeviceGetUuid is `uuid`;
 * GPU_BYTES_UNKNOWN if none is, or the driver would not say. Event loop only. */
#define GPU_BYTES_UNKNOWN UINT64_MAX
uint64_t gpu_free_memory(Gpu *gpu, const uint8_t uuid[16]);

/*
 * Take a published POSIX fd (not consumed): check it is exactly `size`
 * bytes on `device`, copy it device-to-device into a new allocation of the
 * broker's, and let go of the publisher's memory. The copy is then to be
 * verified against `want` (the content key, common/hash.h) with
 * gpu_verify_step before anyone maps it. Returns 0 or a positive
 * SageProtoError (SAGE_ERR_BUDGET when the device has no memory for the copy).
 */
int gpu_adopt(Gpu *gpu, uint32_t device, int fd, uint64_t size, SageHash want, GpuExtent **out);
/*
 * Is `fd` a CUDA shareable handle of exactly `size` bytes on `device`?
 * Imports it (the checks gpu_adopt makes) and releases it again; nothing
 * is copied or kept (IPC_EXPORT). Returns 0 or a positive SageProtoError.
 */
int gpu_check_handle(Gpu *gpu, uint32_t device, int fd, uint64_t size);
/*
 * Hash up to *budget bytes more of a pending extent (read back through a
 * pinned staging buffer), whole blocks (SAGE_CONTENT_KEY_BLOCK) at a time, and take them off *budget.
 * Returns GPU_VERIFY_PENDING (more to do), _MATCH or _MISMATCH; the last two
 * free the verification state (a verified extent is unmapped in the broker).
 */
int gpu_verify_step(Gpu *gpu, GpuExtent *extent, uint64_t *budget);
/* A fresh O_CLOEXEC fd for a client. Returns 0 or a positive SageProtoError. */
int gpu_export(Gpu *gpu, const GpuExtent *extent, int *fd_out);
void gpu_release(Gpu *gpu, GpuExtent *extent);

/*
 * The driver's checkpoint API (cuCheckpointProcess*), called from saged's
 * own process on an instance's pid; thread-safe (handle_instance.c calls
 * these from worker threads). gpu_can_checkpoint: the driver has it.
 * gpu_checkpoint_process: Lock (waiting at most timeout_ms for the
 * process's CUDA calls in flight) and Checkpoint; a failed Checkpoint
 * unlocks again. Returns 0, SAGE_ERR_BUSY (the lock timed out; the process
 * runs on), SAGE_ERR_DRIVER, SAGE_ERR_NO_DRIVER; `why` says it in words.
 * gpu_restore_process: Restore and Unlock; SAGE_ERR_DRIVER means the
 * process is left stuck (the driver's FAILED state).
 */
bool gpu_can_checkpoint(const Gpu *gpu);
int gpu_checkpoint_process(Gpu *gpu, pid_t pid, unsigned timeout_ms, char *why, size_t size);
int gpu_restore_process(Gpu *gpu, pid_t pid, char *why, size_t size);
/* Does the driver say `pid` is checkpointed (cuCheckpointProcessGetState)? An instance a previous broker suspended. */
bool gpu_process_checkpointed(Gpu *gpu, pid_t pid);
