/*
 * Device memory per process, from NVML (libnvidia-ml.so.1, dlopen'd): the
 * driver's own accounting, the figure nvidia-smi shows. The broker uses it
 * for an instance's footprint (sagectl instances, the memory cap, what a
 * restore needs). No NVML, or NVML that cannot say: the bytes are unknown,
 * and shown as such; nothing else depends on NVML being there.
 */
#pragma once

#include <stdint.h>
#include <sys/types.h>

typedef struct Nvml Nvml;

/* nvml_process_bytes: NVML cannot say (no library, unknown device, no permission). */
#define NVML_UNKNOWN 1

/* dlopen `library` (NULL: libnvidia-ml.so.1) and nvmlInit. -ENOENT: no NVML (then *out is NULL). */
int nvml_open(Nvml **out, const char *library);
Nvml *nvml_close(Nvml *nvml);
/*
 * Bytes of device memory `pid` (saged's pid namespace) uses on the GPU
 * `uuid` (cuDeviceGetUuid's bytes): 0 and *bytes (0 for a process not on
 * that GPU: a checkpointed one leaves it), or NVML_UNKNOWN. `nvml` may be NULL.
 */
int nvml_process_bytes(Nvml *nvml, const uint8_t uuid[16], pid_t pid, uint64_t *bytes);
