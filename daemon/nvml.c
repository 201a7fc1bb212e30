/*
 * NVML's per-process accounting (nvml.h). NVML's own header is not needed:
 * the few types used are declared here as nvml.h (CUDA 12/13) has them.
 * nvmlDeviceGetComputeRunningProcesses_v3 is preferred, _v2 otherwise (the
 * same 24-byte entry); a driver without either is "unknown". The table of
 * processes is read whole for each question: a listing asks once per
 * instance, and NVML answers from the driver's tables in microseconds.
 */
#include "nvml.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "log.h"

typedef void *NvmlDevice;

typedef struct NvmlProcessInfo {
        unsigned int pid;
        unsigned long long usedGpuMemory; /* NVML_VALUE_NOT_AVAILABLE (~0) when NVML may not say */
        unsigned int gpuInstanceId;
        unsigned int computeInstanceId;
} NvmlProcessInfo;

#define NVML_SUCCESS_ 0
#define NVML_ERROR_INSUFFICIENT_SIZE_ 7
#define NVML_VALUE_NOT_AVAILABLE_ (~0ull)
/* Processes read per question: more than any GPU runs (MPS allows 48 clients per device). */
#define NVML_MAX_PROCESSES 1024

struct Nvml {
        void *library;
        int (*init)(void);
        int (*shutdown)(void);
        int (*by_uuid)(const char *uuid, NvmlDevice *device);
        int (*processes)(NvmlDevice device, unsigned int *count, NvmlProcessInfo *infos);
        NvmlProcessInfo *infos;
};

int nvml_open(Nvml **out, const char *library) {
        Nvml *n;

        *out = NULL;
        n = calloc(1, sizeof(*n));
        if (!n)
                return -ENOMEM;
        n->infos = calloc(NVML_MAX_PROCESSES, sizeof(*n->infos));
        n->library = dlopen(library ? library : "libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
        if (!n->infos || !n->library) {
                sage_info("no NVML (%s): GPU bytes per instance are unknown", n->library ? "out of memory" : dlerror());
                nvml_close(n);
                return -ENOENT;
        }
        *(void **)&n->init = dlsym(n->library, "nvmlInit_v2");
        *(void **)&n->shutdown = dlsym(n->library, "nvmlShutdown");
        *(void **)&n->by_uuid = dlsym(n->library, "nvmlDeviceGetHandleByUUID");
        *(void **)&n->processes = dlsym(n->library, "nvmlDeviceGetComputeRunningProcesses_v3");
        if (!n->processes)
                *(void **)&n->processes = dlsym(n->library, "nvmlDeviceGetComputeRunningProcesses_v2");
        if (!n->init || !n->by_uuid || !n->processes || n->init() != NVML_SUCCESS_) {
                sage_warn("NVML is there but unusable: GPU bytes per instance are unknown");
                n->init = NULL; /* no shutdown owed */
                nvml_close(n);
                return -ENOENT;
        }
        *out = n;
        return 0;
}

Nvml *nvml_close(Nvml *n) {
        if (!n)
                return NULL;
        if (n->init && n->shutdown)
                n->shutdown();
        /* The library stays loaded, as the driver does: NVML may keep threads. */
        free(n->infos);
        free(n);
        return NULL;
}

int nvml_process_bytes(Nvml *n, const uint8_t u[16], pid_t pid, uint64_t *bytes) {
        char uuid[48];
        NvmlDevice device;
        unsigned int count = NVML_MAX_PROCESSES;

        if (!n)
                return NVML_UNKNOWN;
        snprintf(uuid, sizeof(uuid), "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0],
                 u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
        if (n->by_uuid(uuid, &device) != NVML_SUCCESS_ || n->processes(device, &count, n->infos) != NVML_SUCCESS_ ||
            count > NVML_MAX_PROCESSES)
                return NVML_UNKNOWN;
        *bytes = 0;
        for (unsigned int i = 0; i < count; i++) {
                if ((pid_t)n->infos[i].pid != pid)
                        continue;
                if (n->infos[i].usedGpuMemory == NVML_VALUE_NOT_AVAILABLE_)
                        return NVML_UNKNOWN;
                *bytes += n->infos[i].usedGpuMemory; /* MIG: one entry per instance it uses */
        }
        return 0;
}
