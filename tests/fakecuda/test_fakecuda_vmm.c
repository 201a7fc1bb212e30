/* test_fakecuda_vmm: the VMM and IPC simulation, across processes.
 *
 * The main run ("vmm") checks the single-process contract (granularity,
 * create/reserve/map/setAccess, read-only mappings that fault on a write and
 * make copies fail cleanly, whole-mapping unmap, release while mapped) and
 * then plays three two-process scenarios by fork+exec of this same binary
 * with a helper mode and a socket fd:
 *   "import <sock>":  receives a VMM fd over SCM_RIGHTS, maps it read-only,
 *                     checks the exporter's bytes;
 *   "export <sock>":  creates, fills and exports a VMM allocation, then
 *                     exits, so the parent can import memory whose exporter
 *                     is gone;
 *   "ipc <sock>":     opens a cuIpcGetMemHandle handle, checks the bytes and
 *                     writes back a marker the parent then sees;
 *   "fault -":        a kernel writes through a read-only mapping: the launch
 *                     succeeds, the next call fails ILLEGAL_ADDRESS and so
 *                     does every later one (sticky), the bytes stay, the
 *                     process lives; exits 0 when all of that held.
 * It also checks that only this driver's own exported VMM handles import.
 */
#include <cuda.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../gpu/fd_pass.h"
#include "fake_check.h"
#include "fakecuda.h"

#define PTR(d) ((unsigned char *)(uintptr_t)(d))

static const CUmemAllocationProp fd_prop = {
        .type = CU_MEM_ALLOCATION_TYPE_PINNED,
        .requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
        .location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = 0 },
};

static void set_access(CUdeviceptr p, size_t size, CUmemAccess_flags flags) {
        CUmemAccessDesc d = { .location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = 0 }, .flags = flags };
        OK(cuMemSetAccess(p, size, &d, 1));
}

static unsigned char pattern(size_t i) {
        return (unsigned char)(i * 31 + 7);
}

/* An exportable allocation of `size` bytes, mapped read-write at *va and
 * filled with pattern(); its POSIX fd. */
static int filled_export(size_t size, CUmemGenericAllocationHandle *h, CUdeviceptr *va) {
        int fd = -1;

        OK(cuMemCreate(h, size, &fd_prop, 0));
        OK(cuMemAddressReserve(va, size, 0, 0, 0));
        OK(cuMemMap(*va, size, 0, *h, 0));
        set_access(*va, size, CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
        for (size_t i = 0; i < size; i++)
                PTR(*va)[i] = pattern(i);
        OK(cuMemExportToShareableHandle(&fd, *h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0));
        return fd;
}

static pid_t spawn(const char *mode, int sock) {
        pid_t pid = fork();
        if (pid == 0) {
                char arg[16];
                snprintf(arg, sizeof arg, "%d", sock);
                execl("/proc/self/exe", "test_fakecuda_vmm", mode, arg, (char *)NULL);
                _exit(127);
        }
        return pid;
}

static int wait_exit(pid_t pid) {
        int status = 0;
        waitpid(pid, &status, 0);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Import `fd` (size bytes), map it read-only, check the pattern. */
static void import_and_check(int fd, size_t size) {
        CUmemGenericAllocationHandle h;
        CUdeviceptr va;
        OK(cuMemImportFromShareableHandle(&h, (void *)(intptr_t)fd, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR));
        close(fd);
        CUmemAllocationProp prop;
        OK(cuMemGetAllocationPropertiesFromHandle(&prop, h));
        CHECK(prop.requestedHandleTypes == CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
        OK(cuMemAddressReserve(&va, size, 0, 0, 0));
        OK(cuMemMap(va, size, 0, h, 0));
        OK(cuMemRelease(h)); /* the mapping keeps it alive */
        set_access(va, size, CU_MEM_ACCESS_FLAGS_PROT_READ);
        size_t bad = 0;
        for (size_t i = 0; i < size; i++)
                bad += PTR(va)[i] != pattern(i);
        CHECK(bad == 0);
        unsigned char one = 1;
        CHECK_CU(cuMemcpyHtoD(va + 10, &one, 1), CUDA_ERROR_INVALID_VALUE);
        OK(cuMemUnmap(va, size));
        OK(cuMemAddressFree(va, size));
}

/* ------------------------------------------------------------ helper modes */
static int mode_import(int sock) {
        fake_setup_context();
        size_t size = 0;
        ssize_t got;
        int fd = fd_recv(sock, &size, sizeof size, &got);
        CHECK(got == (ssize_t)sizeof size);
        CHECK(fd >= 0);
        if (fd >= 0)
                import_and_check(fd, size);
        return failures ? 1 : 0;
}

static int mode_export(int sock) {
        fake_setup_context();
        size_t size = 4 * MiB;
        CUmemGenericAllocationHandle h;
        CUdeviceptr va;
        int fd = filled_export(size, &h, &va);
        CHECK(fd_send(sock, fd, &size, sizeof size) == (ssize_t)sizeof size);
        return failures ? 1 : 0; /* exits with everything still mapped */
}

static int mode_ipc(int sock) {
        fake_setup_context();
        CUipcMemHandle handle;
        CHECK(read(sock, &handle, sizeof handle) == (ssize_t)sizeof handle);
        CUdeviceptr d;
        OK(cuIpcOpenMemHandle(&d, handle, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS));
        if (failures)
                return 1;
        unsigned char buf[4096];
        OK(cuMemcpyDtoH(buf, d, sizeof buf));
        size_t bad = 0;
        for (size_t i = 0; i < sizeof buf; i++)
                bad += buf[i] != pattern(i);
        CHECK(bad == 0);
        OK(cuMemsetD8(d, 0x5a, 16)); /* visible to the exporter */
        OK(cuIpcCloseMemHandle(d));
        return failures ? 1 : 0;
}

/* ------------------------------------------------------------ two GPUs (SAGE_FAKE_DEVICES=2) */
/* Child of test_two_gpus: open the handle on its sock, send back what the driver said. */
static int mode_ipc_result(int sock) {
        CUipcMemHandle handle;
        CUdeviceptr d;
        CUresult r;
        fake_setup_context();
        CHECK(read(sock, &handle, sizeof handle) == (ssize_t)sizeof handle);
        r = cuIpcOpenMemHandle(&d, handle, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS);
        if (r == CUDA_SUCCESS) {
                unsigned char b = 0;
                OK(cuMemcpyDtoH(&b, d, 1));
                CHECK(b == pattern(0));
                OK(cuIpcCloseMemHandle(d));
        }
        CHECK(write(sock, &r, sizeof r) == (ssize_t)sizeof r);
        return failures ? 1 : 0;
}

/* What an importer whose CUDA_VISIBLE_DEVICES is `visible` gets for a handle of GPU 1's memory. */
static CUresult ipc_open_as(const CUipcMemHandle *handle, const char *visible) {
        CUresult r = CUDA_ERROR_UNKNOWN;
        int sv[2];
        CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
        setenv("CUDA_VISIBLE_DEVICES", visible, 1);
        pid_t pid = spawn("ipc-result", sv[1]);
        unsetenv("CUDA_VISIBLE_DEVICES");
        close(sv[1]);
        CHECK(write(sv[0], handle, sizeof *handle) == (ssize_t)sizeof *handle);
        CHECK(read(sv[0], &r, sizeof r) == (ssize_t)sizeof r);
        CHECK(wait_exit(pid) == 0);
        close(sv[0]);
        return r;
}

/*
 * Memory of one GPU is not another's: access for a GPU other than the one
 * the physical memory lies on is refused (no peer access between the
 * simulated GPUs), and a CUDA IPC handle opens only on its own GPU, whatever
 * ordinal the importer knows it by.
 */
static int mode_two_gpus(void) {
        CUmemAllocationProp on1 = fd_prop;
        CUmemGenericAllocationHandle h;
        CUcontext ctx1;
        CUdeviceptr va, d;
        CUipcMemHandle handle;
        size_t size = 2 * MiB;

        int peer = -1;
        fake_setup_context();
        OK(cuDeviceCanAccessPeer(&peer, 0, 1));
        CHECK(peer == 0);
        on1.location.id = 1;
        OK(cuMemCreate(&h, size, &on1, 0));
        OK(cuMemAddressReserve(&va, size, 0, 0, 0));
        OK(cuMemMap(va, size, 0, h, 0));
        CUmemAccessDesc access = { .location = { CU_MEM_LOCATION_TYPE_DEVICE, 0 },
                                   .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
        CHECK_CU(cuMemSetAccess(va, size, &access, 1), CUDA_ERROR_INVALID_DEVICE);
        access.location.id = 1;
        OK(cuMemSetAccess(va, size, &access, 1));
        PTR(va)[0] = 1;
        OK(cuMemUnmap(va, size));
        OK(cuMemRelease(h));
        OK(cuMemAddressFree(va, size));

        OK(cuDevicePrimaryCtxRetain(&ctx1, 1));
        OK(cuCtxSetCurrent(ctx1));
        OK(cuMemAlloc(&d, MiB));
        PTR(d)[0] = pattern(0);
        OK(cuIpcGetMemHandle(&handle, d));
        CHECK_CU(ipc_open_as(&handle, "1"), CUDA_SUCCESS);
        CHECK_CU(ipc_open_as(&handle, "1,0"), CUDA_SUCCESS); /* GPU 1 as device 0 */
        CHECK_CU(ipc_open_as(&handle, "0"), CUDA_ERROR_PEER_ACCESS_UNSUPPORTED);
        CHECK_CU(ipc_open_as(&handle, "0,1"), CUDA_ERROR_PEER_ACCESS_UNSUPPORTED); /* current device 0 is GPU 0 */
        OK(cuMemFree(d));
        OK(cuDevicePrimaryCtxRelease(1));
        OK(cuDevicePrimaryCtxRelease(0));
        if (failures)
                fprintf(stderr, "two-gpus: %d check(s) failed\n", failures);
        return failures ? 1 : 0;
}

/* ------------------------------------------------------------ main run */
static void test_single_process(void) {
        size_t gran = 0;
        OK(cuMemGetAllocationGranularity(&gran, &fd_prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
        CHECK(gran == 2 * MiB);

        CUmemGenericAllocationHandle h, h2;
        CHECK_CU(cuMemCreate(&h, 3 * MiB, &fd_prop, 0), CUDA_ERROR_INVALID_VALUE);
        CUmemAllocationProp win = fd_prop;
        win.requestedHandleTypes = CU_MEM_HANDLE_TYPE_WIN32;
        CHECK_CU(cuMemCreate(&h, 2 * MiB, &win, 0), CUDA_ERROR_INVALID_VALUE);
        OK(cuMemCreate(&h, 4 * MiB, &fd_prop, 0));

        CUdeviceptr va, want = 0;
        OK(cuMemAddressReserve(&va, 16 * MiB, 0, 0, 0));
        CHECK(va % gran == 0);
        /* The address is a hint: a free one is honoured. */
        OK(cuMemAddressFree(va, 16 * MiB));
        want = va;
        OK(cuMemAddressReserve(&va, 16 * MiB, 0, want, 0));
        CHECK(va == want);

        CHECK_CU(cuMemMap(va + 14 * MiB, 4 * MiB, 0, h, 0), CUDA_ERROR_INVALID_VALUE); /* outside */
        OK(cuMemMap(va, 4 * MiB, 0, h, 0));
        CHECK_CU(cuMemMap(va + 2 * MiB, 2 * MiB, 0, h, 0), CUDA_ERROR_INVALID_VALUE); /* overlap */
        unsigned char byte = 1;
        CHECK_CU(cuMemcpyHtoD(va, &byte, 1), CUDA_ERROR_INVALID_VALUE); /* no access yet */
        set_access(va, 4 * MiB, CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
        for (size_t i = 0; i < 4 * MiB; i++)
                PTR(va)[i] = pattern(i);
        OK(cuMemsetD8(va, pattern(0), 1));
        unsigned long long flags = 0;
        CUmemLocation loc = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = 0 };
        OK(cuMemGetAccess(&flags, &loc, va + 5));
        CHECK(flags == CU_MEM_ACCESS_FLAGS_PROT_READWRITE);

        CUdeviceptr base;
        size_t size;
        OK(cuMemGetAddressRange(&base, &size, va + 12345));
        CHECK(base == va && size == 4 * MiB);
        unsigned type = 0;
        OK(cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, va));
        CHECK(type == CU_MEMORYTYPE_DEVICE);
        CUipcMemHandle ipc;
        CHECK_CU(cuIpcGetMemHandle(&ipc, va), CUDA_ERROR_INVALID_VALUE);
        OK(cuMemRetainAllocationHandle(&h2, (void *)(uintptr_t)(va + 100)));
        CHECK(h2 == h);
        OK(cuMemRelease(h2));

        /* A second, read-only view of the same memory. */
        CUdeviceptr ro = va + 8 * MiB;
        OK(cuMemMap(ro, 4 * MiB, 0, h, 0));
        set_access(ro, 4 * MiB, CU_MEM_ACCESS_FLAGS_PROT_READ);
        CHECK(PTR(ro)[4 * MiB - 1] == pattern(4 * MiB - 1));
        OK(cuMemGetAccess(&flags, &loc, ro));
        CHECK(flags == CU_MEM_ACCESS_FLAGS_PROT_READ);
        CHECK_CU(cuMemcpyHtoD(ro + 64, &byte, 1), CUDA_ERROR_INVALID_VALUE);
        CHECK_CU(cuMemsetD8(ro, 0, 4096), CUDA_ERROR_INVALID_VALUE);
        CHECK_CU(cuMemcpyDtoD(ro, va, 4096), CUDA_ERROR_INVALID_VALUE);
        OK(cuMemcpyDtoH(&byte, ro + 3, 1));
        CHECK(byte == pattern(3));
        CHECK(PTR(ro)[64] == pattern(64)); /* unchanged */

        /* A write through the read-only view faults, as a GPU kernel would. */
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
                signal(SIGSEGV, SIG_DFL);
                signal(SIGBUS, SIG_DFL);
                ((volatile unsigned char *)PTR(ro))[0] = 0;
                _exit(0);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV);

        /* Part of a read-only range made writable splits it; unmap still needs
     * the whole cuMemMap range. */
        set_access(ro + 2 * MiB, 2 * MiB, CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
        OK(cuMemcpyHtoD(ro + 2 * MiB, &byte, 1));
        CHECK_CU(cuMemcpyHtoD(ro, &byte, 1), CUDA_ERROR_INVALID_VALUE);
        CHECK_CU(cuMemUnmap(ro, 2 * MiB), CUDA_ERROR_INVALID_VALUE);
        CHECK_CU(cuMemUnmap(va, 2 * MiB), CUDA_ERROR_INVALID_VALUE);
        CHECK_CU(cuMemAddressFree(va, 16 * MiB), CUDA_ERROR_INVALID_VALUE); /* still mapped */

        /* Physical memory outlives its handle while mapped. */
        OK(cuMemRelease(h));
        CHECK_CU(cuMemRelease(h), CUDA_ERROR_INVALID_VALUE);
        CHECK(PTR(va)[100] == pattern(100));
        OK(cuMemUnmap(ro, 4 * MiB));
        CHECK(PTR(va)[101] == pattern(101));
        OK(cuMemUnmap(va, 4 * MiB));
        CHECK_CU(cuMemcpyHtoD(va, &byte, 1), CUDA_ERROR_INVALID_VALUE); /* unmapped: refused, no fault */
        OK(cuMemAddressFree(va, 16 * MiB));

        int fd = -1;
        CUmemAllocationProp noexport = fd_prop;
        noexport.requestedHandleTypes = CU_MEM_HANDLE_TYPE_NONE;
        OK(cuMemCreate(&h, 2 * MiB, &noexport, 0));
        CHECK_CU(cuMemExportToShareableHandle(&fd, h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0),
                 CUDA_ERROR_INVALID_VALUE);
        CHECK_CU(cuMemExportToShareableHandle(&fd, h, CU_MEM_HANDLE_TYPE_FABRIC, 0), CUDA_ERROR_NOT_SUPPORTED);
        OK(cuMemRelease(h));
}

static void test_export_to_child(void) {
        size_t size = 6 * MiB;
        CUmemGenericAllocationHandle h;
        CUdeviceptr va;
        int sv[2], fd = filled_export(size, &h, &va);
        CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
        pid_t pid = spawn("import", sv[1]);
        close(sv[1]);
        CHECK(fd_send(sv[0], fd, &size, sizeof size) == (ssize_t)sizeof size);
        close(fd);
        CHECK(wait_exit(pid) == 0);
        close(sv[0]);
        OK(cuMemUnmap(va, size));
        OK(cuMemRelease(h));
        OK(cuMemAddressFree(va, size));
}

static void test_import_after_exporter_exit(void) {
        int sv[2];
        CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
        pid_t pid = spawn("export", sv[1]);
        close(sv[1]);
        size_t size = 0;
        ssize_t got;
        int fd = fd_recv(sv[0], &size, sizeof size, &got);
        CHECK(got == (ssize_t)sizeof size);
        close(sv[0]);
        CHECK(wait_exit(pid) == 0); /* the exporter is gone */
        CHECK(fd >= 0 && size == 4 * MiB);
        if (fd >= 0)
                import_and_check(fd, size);
}

static void test_ipc(void) {
        CUdeviceptr d;
        CUipcMemHandle handle;
        unsigned char buf[4096];
        for (size_t i = 0; i < sizeof buf; i++)
                buf[i] = pattern(i);
        OK(cuMemAlloc(&d, 1 * MiB));
        OK(cuMemcpyHtoD(d, buf, sizeof buf));
        OK(cuIpcGetMemHandle(&handle, d));
        CUdeviceptr same;
        CHECK_CU(cuIpcOpenMemHandle(&same, handle, 0), CUDA_ERROR_INVALID_CONTEXT); /* own handle */
        int sv[2];
        CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
        pid_t pid = spawn("ipc", sv[1]);
        close(sv[1]);
        CHECK(write(sv[0], &handle, sizeof handle) == (ssize_t)sizeof handle);
        CHECK(wait_exit(pid) == 0);
        close(sv[0]);
        CHECK(PTR(d)[0] == 0x5a && PTR(d)[15] == 0x5a && PTR(d)[16] == pattern(16));
        OK(cuMemFree(d));
}

/* ------------------------------------------------------------ strict import, sticky faults */
static void test_strict_import(void) {
        CUmemGenericAllocationHandle h;
        /* Any file of a valid size is not a handle of this driver: CUDA_ERROR_UNKNOWN, as the H100's driver 580 answers. */
        int fd = memfd_create("not-a-vmm-handle", MFD_CLOEXEC);
        CHECK(fd >= 0 && ftruncate(fd, 2 * MiB) == 0);
        CHECK_CU(cuMemImportFromShareableHandle(&h, (void *)(intptr_t)fd, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR),
                 CUDA_ERROR_UNKNOWN);
        close(fd);
        fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
        CHECK_CU(cuMemImportFromShareableHandle(&h, (void *)(intptr_t)fd, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR),
                 CUDA_ERROR_UNKNOWN);
        close(fd);
        /* Its own export imports, on the device it was created on. */
        CUmemGenericAllocationHandle mine;
        OK(cuMemCreate(&mine, 2 * MiB, &fd_prop, 0));
        OK(cuMemExportToShareableHandle(&fd, mine, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0));
        OK(cuMemImportFromShareableHandle(&h, (void *)(intptr_t)fd, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR));
        CUmemAllocationProp prop;
        OK(cuMemGetAllocationPropertiesFromHandle(&prop, h));
        CHECK(prop.location.type == CU_MEM_LOCATION_TYPE_DEVICE && prop.location.id == 0);
        close(fd);
        OK(cuMemRelease(h));
        OK(cuMemRelease(mine));
}

static void write_kernel(const FakeKernelLaunch *launch, void **params) {
        (void)launch;
        **(volatile unsigned char **)params[0] = 0x77;
}
static const size_t write_sizes[] = { sizeof(void *), 0 };
static const FakeKernelEntry fault_kernels[] = { { "write", write_kernel, write_sizes } };
static const FakeModuleImage fault_image = { FAKECUDA_IMAGE_MAGIC, 1, fault_kernels };

static int mode_fault(void) {
        CUmemGenericAllocationHandle h;
        CUdeviceptr va, d;
        CUmodule mod;
        CUfunction f;
        fake_setup_context();
        OK(cuModuleLoadData(&mod, &fault_image));
        OK(cuModuleGetFunction(&f, mod, "write"));
        OK(cuMemCreate(&h, 2 * MiB, &fd_prop, 0));
        OK(cuMemAddressReserve(&va, 2 * MiB, 0, 0, 0));
        OK(cuMemMap(va, 2 * MiB, 0, h, 0));
        set_access(va, 2 * MiB, CU_MEM_ACCESS_FLAGS_PROT_READ);
        /* An API write: an error, the context survives. */
        CHECK_CU(cuMemsetD8(va, 1, 16), CUDA_ERROR_INVALID_VALUE);
        OK(cuCtxSynchronize());
        /* A kernel write: the launch succeeds; the fault is sticky. */
        void *params[] = { &va };
        OK(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL));
        CHECK_CU(cuCtxSynchronize(), CUDA_ERROR_ILLEGAL_ADDRESS);
        CHECK_CU(cuMemAlloc(&d, 4096), CUDA_ERROR_ILLEGAL_ADDRESS);
        CHECK_CU(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL), CUDA_ERROR_ILLEGAL_ADDRESS);
        CHECK(PTR(va)[0] == 0); /* the memory kept its bytes */
        /* A fault outside any kernel still kills, as it would without the driver. */
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
                signal(SIGSEGV, SIG_DFL); /* (AddressSanitizer's handler would exit 1) */
                ((volatile unsigned char *)PTR(va))[0] = 1;
                _exit(0);
        }
        CHECK(wait_exit(pid) == 128 + SIGSEGV);
        return failures ? 1 : 0;
}

static void test_kernel_fault(void) {
        CHECK(wait_exit(spawn("fault", -1)) == 0);
}

int main(int argc, char **argv) {
        const char *mode = argc > 1 ? argv[1] : "vmm";
        int sock = argc > 2 ? atoi(argv[2]) : -1;
        if (strcmp(mode, "import") == 0)
                return mode_import(sock);
        if (strcmp(mode, "export") == 0)
                return mode_export(sock);
        if (strcmp(mode, "ipc") == 0)
                return mode_ipc(sock);
        if (strcmp(mode, "fault") == 0)
                return mode_fault();
        if (strcmp(mode, "ipc-result") == 0)
                return mode_ipc_result(sock);
        if (strcmp(mode, "two-gpus") == 0)
                return mode_two_gpus();
        fake_setup_context();
        test_single_process();
        test_export_to_child();
        test_import_after_exporter_exit();
        test_ipc();
        test_strict_import();
        test_kernel_fault();
        OK(cuDevicePrimaryCtxRelease(0));
        if (failures)
                fprintf(stderr, "%d check(s) failed\n", failures);
        return failures ? 1 : 0;
}
