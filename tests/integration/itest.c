/*
 * Integration test support (itest.h). Tests are single-purpose processes:
 * a failed check exits instead of returning an error, so every caller stays
 * one line per step.
 */
#include "itest.h"

#include <cuda.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

void itest_check_failed(const char *file, int line, const char *cond) {
        fprintf(stderr, "%s[%d] %s:%d: check failed: %s\n", program_invocation_short_name, (int)getpid(), file, line,
                cond);
        exit(1);
}

ItestCu cu;

static void load(void *lib, void *field, const char *name) {
        void *p = dlsym(lib, name);
        if (!p) {
                fprintf(stderr, "libcuda.so.1 lacks %s\n", name);
                exit(1);
        }
        memcpy(field, &p, sizeof(p));
}

void itest_cu_load(void) {
        void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
        CUresult (*init)(unsigned), (*device_get)(CUdevice *, int);
        CUresult (*retain)(CUcontext *, CUdevice), (*set_current)(CUcontext);
        CUdevice dev;
        CUcontext ctx;

        CHECK(lib);
#define ITEST_CU_LOAD(name, symbol, params) load(lib, &cu.name, symbol);
        ITEST_CU_FUNCTIONS(ITEST_CU_LOAD)
#undef ITEST_CU_LOAD
        load(lib, &cu.vmm.create, "cuMemCreate");
        load(lib, &cu.vmm.release, "cuMemRelease");
        load(lib, &cu.vmm.address_reserve, "cuMemAddressReserve");
        load(lib, &cu.vmm.address_free, "cuMemAddressFree");
        load(lib, &cu.vmm.map, "cuMemMap");
        load(lib, &cu.vmm.unmap, "cuMemUnmap");
        load(lib, &cu.vmm.set_access, "cuMemSetAccess");
        load(lib, &cu.vmm.copy_dtod, "cuMemcpyDtoD_v2");
        load(lib, &cu.vmm.ctx_synchronize, "cuCtxSynchronize");
        load(lib, &init, "cuInit");
        load(lib, &device_get, "cuDeviceGet");
        load(lib, &retain, "cuDevicePrimaryCtxRetain");
        load(lib, &set_current, "cuCtxSetCurrent");
        CHECK(init(0) == CUDA_SUCCESS);
        CHECK(device_get(&dev, 0) == CUDA_SUCCESS);
        CHECK(retain(&ctx, dev) == CUDA_SUCCESS);
        CHECK(set_current(ctx) == CUDA_SUCCESS);
}

uint8_t *itest_pattern(uint64_t seed, size_t size) {
        uint8_t *p = malloc(size);
        CHECK(p);
        for (size_t i = 0; i < size; i++)
                p[i] = (uint8_t)((i * (seed | 1)) ^ (i >> 9) ^ seed);
        return p;
}

void itest_wait_saged(pid_t pid, const char *socket, int timeout_ms) {
        for (int i = 0; i < 1000; i++) {
                SageBroker *b;
                if (sage_broker_connect(&b, socket, timeout_ms) == 0) {
                        sage_broker_free(b);
                        return;
                }
                CHECK(waitpid(pid, NULL, WNOHANG) == 0);
                poll(NULL, 0, 10);
        }
        CHECK(!"saged did not come up");
}

pid_t itest_spawn_app(char *const argv[], const char *socket, const char *const *env, int *to_app, int *from_app) {
        const char *preload = getenv("SAGE_TEST_PRELOAD");
        int in[2], out[2];
        pid_t pid;

        CHECK(preload);
        CHECK(pipe2(in, O_CLOEXEC) == 0 && pipe2(out, O_CLOEXEC) == 0);
        pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
                dup2(in[0], STDIN_FILENO);
                dup2(out[1], STDOUT_FILENO);
                setenv("LD_PRELOAD", preload, 1);
                setenv("SAGE_SOCKET", socket, 1);
                setenv("SAGE_WARMUP", "off", 1);
                for (; *env; env++)
                        putenv((char *)*env);
                execv("/proc/self/exe", argv);
                _exit(127);
        }
        close(in[0]);
        close(out[1]);
        *to_app = in[1];
        *from_app = out[0];
        return pid;
}

void itest_reap(pid_t pid) {
        int status;
        CHECK(waitpid(pid, &status, 0) == pid);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

SageBroker *itest_broker(const char *socket, int timeout_ms) {
        SageBroker *b = NULL;
        CHECK(sage_broker_connect(&b, socket, timeout_ms) == 0);
        return b;
}

SageStats itest_stats(const char *socket, int timeout_ms) {
        SageBroker *b = itest_broker(socket, timeout_ms);
        SageStats s;
        CHECK(sage_broker_stats(b, &s) == 0);
        sage_broker_free(b);
        return s;
}
