/* fake_nvml.c: a simulated libnvidia-ml.so.1, just what saged asks of NVML
 * (daemon/nvml.c): the device memory each process uses, from the simulated
 * driver's per-process accounting (fakecudaProcessMemUsed), so that a
 * checkpointed process uses 0 bytes as on the GPU.
 *
 * The processes "on the GPU" are those with a simulated driver initialized:
 * each listens on the abstract socket "sage-fakecuda-ckpt/<pid>"
 * (fake_checkpoint.c), which /proc/net/unix lists. Every well-formed "GPU-"
 * UUID names the one simulated device: a process's bytes are its total over
 * its devices (tests run with one). A test tool, never installed; saged
 * loads it only when told to (saged --nvml-library).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fakecuda.h"

#define FAKE_EXPORT __attribute__((visibility("default")))

typedef struct NvmlProcessInfo {
        unsigned int pid;
        unsigned long long usedGpuMemory;
        unsigned int gpuInstanceId;
        unsigned int computeInstanceId;
} NvmlProcessInfo;

enum {
        NVML_OK = 0,
        NVML_INVALID_ARGUMENT = 2,
        NVML_NOT_FOUND = 6,
        NVML_INSUFFICIENT_SIZE = 7,
        NVML_UNKNOWN = 999
};

static int device_token; /* the one device handle */

/* The entry points saged's nvml.c looks up (NVML's names and signatures). */
int nvmlInit_v2(void);
int nvmlShutdown(void);
int nvmlDeviceGetHandleByUUID(const char *uuid, void **device);
int nvmlDeviceGetComputeRunningProcesses_v3(void *device, unsigned int *count, NvmlProcessInfo *infos);

FAKE_EXPORT int nvmlInit_v2(void) {
        return NVML_OK;
}

FAKE_EXPORT int nvmlShutdown(void) {
        return NVML_OK;
}

FAKE_EXPORT int nvmlDeviceGetHandleByUUID(const char *uuid, void **device) {
        if (!uuid || !device)
                return NVML_INVALID_ARGUMENT;
        if (strncmp(uuid, "GPU-", 4) != 0 || strlen(uuid) != 40)
                return NVML_NOT_FOUND;
        *device = &device_token;
        return NVML_OK;
}

FAKE_EXPORT int nvmlDeviceGetComputeRunningProcesses_v3(void *device, unsigned int *count, NvmlProcessInfo *infos) {
        enum {
                MAX_PIDS = 1024
        };
        static int pids[MAX_PIDS]; /* saged asks from its event loop only */
        unsigned int n = 0, n_pids = 0;
        char line[512];
        FILE *f;
        int r = NVML_OK;

        if (device != &device_token || !count)
                return NVML_INVALID_ARGUMENT;
        f = fopen("/proc/net/unix", "re");
        if (!f)
                return NVML_UNKNOWN;
        /* The listening socket and every connection accepted on it carry the
         * name: one pid once. Read it all before asking anyone (asking opens
         * connections that would show up in the rest of the file). */
        while (fgets(line, sizeof(line), f)) {
                const char *name = strstr(line, " @sage-fakecuda-ckpt/");
                bool seen = false;
                int pid;

                if (!name || sscanf(name, " @sage-fakecuda-ckpt/%d", &pid) != 1)
                        continue;
                for (unsigned int i = 0; i < n_pids && !seen; i++)
                        seen = pids[i] == pid;
                if (!seen && n_pids < MAX_PIDS)
                        pids[n_pids++] = pid;
        }
        fclose(f);
        for (unsigned int i = 0; i < n_pids; i++) {
                size_t bytes = 0;
                if (fakecudaProcessMemUsed(pids[i], &bytes) != 0 || bytes == 0)
                        continue; /* NVML lists processes holding memory on the device */
                if (n < *count && infos)
                        infos[n] = (NvmlProcessInfo){ (unsigned int)pids[i], bytes, ~0u, ~0u };
                else
                        r = NVML_INSUFFICIENT_SIZE;
                n++;
        }
        *count = n;
        return r;
}
