/*
 * CUDA IPC across processes. The parent allocates and fills a buffer, gets
 * its cudaIpcMemHandle and spawns this same binary as a child (argument
 * "child HEX"), which opens the handle, modifies the buffer with a kernel
 * and reports a sum from a buffer of its own. The parent then verifies the
 * child's writes. Both processes inherit the environment (LD_PRELOAD and
 * SAGE_TRACE with %p), so under SAGE each writes its own trace.
 *
 * This matters to SAGE because cudaIpcGetMemHandle fails on VMM-backed
 * memory: if SAGE backs cudaMalloc with VMM it must keep IPC working.
 */
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gpu_check.h"

extern char **environ;

#define N (1 << 20)

__global__ void fill(int *x, int n) {
        int i = blockIdx.x * blockDim.x + threadIdx.x;
        if (i < n)
                x[i] = (i % 1000) - 500;
}

__global__ void modify(int *x, int n) {
        int i = blockIdx.x * blockDim.x + threadIdx.x;
        if (i < n)
                x[i] = x[i] * 3 + 1;
}

__global__ void sum(const int *x, int n, unsigned long long *out) {
        int i = blockIdx.x * blockDim.x + threadIdx.x;
        if (i < n)
                atomicAdd(out, (unsigned long long)(long long)x[i]);
}

static void to_hex(const void *data, size_t len, char *out) {
        const unsigned char *p = (const unsigned char *)data;
        for (size_t i = 0; i < len; i++)
                sprintf(out + 2 * i, "%02x", p[i]);
}

static int from_hex(const char *hex, void *data, size_t len) {
        unsigned char *p = (unsigned char *)data;
        if (strlen(hex) != 2 * len)
                return -1;
        for (size_t i = 0; i < len; i++) {
                unsigned v;
                if (sscanf(hex + 2 * i, "%2x", &v) != 1)
                        return -1;
                p[i] = (unsigned char)v;
        }
        return 0;
}

static long long expected_sum(int modified) {
        long long s = 0;
        for (int i = 0; i < N; i++) {
                int v = (i % 1000) - 500;
                s += modified ? v * 3 + 1 : v;
        }
        return s;
}

static int child_main(const char *hex) {
        cudaIpcMemHandle_t handle;
        FAIL_IF(from_hex(hex, &handle, sizeof(handle)) != 0, "bad handle argument");
        int *x = NULL;
        RT_CHECK(cudaIpcOpenMemHandle((void **)&x, handle, cudaIpcMemLazyEnablePeerAccess));

        unsigned long long *d_sum = NULL;
        RT_CHECK(cudaMalloc((void **)&d_sum, sizeof(*d_sum)));
        RT_CHECK(cudaMemset(d_sum, 0, sizeof(*d_sum)));
        modify<<<(N + 255) / 256, 256>>>(x, N);
        LAUNCH_CHECK();
        sum<<<(N + 255) / 256, 256>>>(x, N, d_sum);
        LAUNCH_CHECK();
        unsigned long long s = 0;
        RT_CHECK(cudaMemcpy(&s, d_sum, sizeof(s), cudaMemcpyDeviceToHost));
        FAIL_IF((long long)s != expected_sum(1), "child sum %lld, want %lld", (long long)s, expected_sum(1));
        printf("child: sum after modify=%lld\n", (long long)s);
        fflush(stdout);
        RT_CHECK(cudaFree(d_sum));
        RT_CHECK(cudaIpcCloseMemHandle(x));
        return 0;
}

int main(int argc, char **argv) {
        if (argc == 3 && strcmp(argv[1], "child") == 0)
                return child_main(argv[2]);
        FAIL_IF(argc != 1, "usage: %s (the child form is internal)", argv[0]);

        size_t bytes = (size_t)N * sizeof(int);
        int *x = NULL;
        RT_CHECK(cudaMalloc((void **)&x, bytes));
        fill<<<(N + 255) / 256, 256>>>(x, N);
        LAUNCH_CHECK();
        RT_CHECK(cudaDeviceSynchronize());

        cudaIpcMemHandle_t handle;
        RT_CHECK(cudaIpcGetMemHandle(&handle, x));
        char hex[2 * sizeof(handle) + 1];
        to_hex(&handle, sizeof(handle), hex);

        char self[4096];
        ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
        FAIL_IF(len <= 0, "readlink /proc/self/exe failed");
        self[len] = '\0';

        printf("parent: spawning child\n");
        fflush(stdout); /* the child shares stdout: keep the order deterministic */
        char arg_child[] = "child";
        char *child_argv[] = { self, arg_child, hex, NULL };
        pid_t pid;
        int err = posix_spawn(&pid, self, NULL, NULL, child_argv, environ);
        FAIL_IF(err != 0, "posix_spawn: %s", strerror(err));
        int status = 0;
        FAIL_IF(waitpid(pid, &status, 0) != pid, "waitpid failed");
        FAIL_IF(!WIFEXITED(status) || WEXITSTATUS(status) != 0, "child failed (status 0x%x)", status);

        int *host = (int *)malloc(bytes);
        FAIL_IF(!host, "out of host memory");
        RT_CHECK(cudaMemcpy(host, x, bytes, cudaMemcpyDeviceToHost));
        long long s = 0;
        for (int i = 0; i < N; i++) {
                int want = ((i % 1000) - 500) * 3 + 1;
                FAIL_IF(host[i] != want, "x[%d] = %d, want %d (child's write not seen)", i, host[i], want);
                s += host[i];
        }
        printf("parent: sees child's writes, sum=%lld checksum=%016llx\n", s,
               (unsigned long long)checksum_bytes(host, bytes));
        RT_CHECK(cudaFree(x));
        free(host);
        printf("ok\n");
        return 0;
}
