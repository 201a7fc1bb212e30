/*
 * two_gpus_probe: what the real driver answers where the simulated one
 * assumes (tests/fakecuda/fake_vmm.c, fake_ipc.c; issue 15 item 1). Run by
 * tests/gpu/two_gpus.sh on a machine with two GPUs, natively (no libsage).
 * Prints one "probe NAME RESULT" line each:
 *   peer            cuDeviceCanAccessPeer(0 -> 1)
 *   vmm_access      cuMemSetAccess for device 0 on VMM memory created on device 1
 *   vmm_import      cuMemImportFromShareableHandle of device 1's POSIX fd in a
 *                   process that sees only GPU 0 (CUDA_VISIBLE_DEVICES=0)
 *   ipc_open        cuIpcOpenMemHandle of device 1's cuMemAlloc in a process
 *                   that sees only GPU 0 (flag LAZY_ENABLE_PEER_ACCESS)
 * The fake models a node without peer access: INVALID_DEVICE, INVALID_VALUE,
 * PEER_ACCESS_UNSUPPORTED. A node with NVLink may well answer SUCCESS.
 */
#define SAGE_GPU_NEED_DRIVER
#define SAGE_GPU_DRIVER_ONLY
#include "gpu_check.h"
#include "fd_pass.h"

#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *name_of(CUresult r) {
        const char *n = NULL;
        cuGetErrorName(r, &n);
        return n ? n : "?";
}

/* The child: sees GPU 0 only; imports the fd and opens the IPC handle it is sent. */
static int child(int sock) {
        CUdevice dev;
        CUcontext ctx;
        CUipcMemHandle handle;
        CUmemGenericAllocationHandle h;
        CUdeviceptr p;
        size_t size = 0;
        CU_CHECK(cuInit(0));
        CU_CHECK(cuDeviceGet(&dev, 0));
        CU_CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
        CU_CHECK(cuCtxSetCurrent(ctx));
        int fd = fd_recv(sock, &size, sizeof size, NULL);
        CUresult r = cuMemImportFromShareableHandle(&h, (void *)(intptr_t)fd, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
        printf("probe vmm_import %s\n", name_of(r));
        if (read(sock, &handle, sizeof handle) != (ssize_t)sizeof handle)
                return 1;
        r = cuIpcOpenMemHandle(&p, handle, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS);
        printf("probe ipc_open %s\n", name_of(r));
        fflush(stdout);
        if (write(sock, "x", 1) != 1)
                return 1;
        return 0;
}

int main(int argc, char **argv) {
        if (argc == 3 && strcmp(argv[1], "child") == 0)
                return child(atoi(argv[2]));
        CUdevice d0, d1;
        CUcontext c1;
        int count = 0, peer = 0;
        CU_CHECK(cuInit(0));
        CU_CHECK(cuDeviceGetCount(&count));
        if (count < 2) {
                fprintf(stderr, "two_gpus_probe: %d GPU(s), need 2\n", count);
                return 77;
        }
        CU_CHECK(cuDeviceGet(&d0, 0));
        CU_CHECK(cuDeviceGet(&d1, 1));
        CU_CHECK(cuDeviceCanAccessPeer(&peer, d0, d1));
        printf("probe peer %d\n", peer);
        CU_CHECK(cuDevicePrimaryCtxRetain(&c1, d1));
        CU_CHECK(cuCtxSetCurrent(c1));

        CUmemAllocationProp prop = {};
        prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
        prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
        prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        prop.location.id = 1;
        size_t gran = 0, size;
        CU_CHECK(cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
        size = gran;
        CUmemGenericAllocationHandle h;
        CUdeviceptr va;
        CU_CHECK(cuMemCreate(&h, size, &prop, 0));
        CU_CHECK(cuMemAddressReserve(&va, size, 0, 0, 0));
        CU_CHECK(cuMemMap(va, size, 0, h, 0));
        CUmemAccessDesc access = {};
        access.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        access.location.id = 0;
        access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
        printf("probe vmm_access %s\n", name_of(cuMemSetAccess(va, size, &access, 1)));
        fflush(stdout);

        int fd = -1, sv[2];
        CU_CHECK(cuMemExportToShareableHandle(&fd, h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0));
        CUdeviceptr d;
        CUipcMemHandle handle;
        CU_CHECK(cuMemAlloc(&d, 1 << 20));
        CU_CHECK(cuIpcGetMemHandle(&handle, d));
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
                return 1;
        pid_t pid = fork();
        if (pid == 0) {
                char arg[16];
                snprintf(arg, sizeof arg, "%d", sv[1]);
                setenv("CUDA_VISIBLE_DEVICES", "0", 1);
                execl("/proc/self/exe", argv[0], "child", arg, (char *)NULL);
                _exit(127);
        }
        if (fd_send(sv[0], fd, &size, sizeof size) < 0)
                perror("sendmsg");
        char done;
        if (write(sv[0], &handle, sizeof handle) != (ssize_t)sizeof handle || read(sv[0], &done, 1) != 1)
                fprintf(stderr, "two_gpus_probe: the child did not answer\n");
        int status = 0;
        waitpid(pid, &status, 0);
        CU_CHECK(cuMemFree(d));
        return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
