/* test_fakecuda_checkpoint: the checkpoint API across processes.
 *
 * The parent never initialises CUDA: it plays saged, calling
 * cuCheckpointProcess* on the pids of forked children that do. Pipes carry
 * "ready" / "go" bytes; fakecudaProcessWaitBlocked() tells the parent that a
 * child's call waits at the closed gate, so nothing here sleeps to wait.
 *   roundtrip: cuMemAlloc + VMM memory survive Lock/Checkpoint/Restore/Unlock
 *              at the same addresses; device memory 0 while checkpointed; a
 *              call made while LOCKED returns only after Unlock; calls in
 *              the wrong state are ILLEGAL_STATE;
 *   timeout:   Lock while a kernel runs -> NOT_READY, process left RUNNING;
 *   unknown:   no such pid, a process without CUDA, a process gone whose
 *              forked child lives -> INVALID_VALUE;
 *   imported:  memory imported from another process: Checkpoint succeeds,
 *              Restore NOT_SUPPORTED, FAILED for good, blocked calls give up;
 *   uid:       a caller of another uid (65534) cannot act (needs root); a
 *              caller that connects and says nothing holds nobody for long;
 *   local:     a context's stack limit holds local memory (limit x
 *              SAGE_FAKE_LOCAL_THREADS) on the device: counted, given back
 *              and taken by cuCtxSetLimit (a growth without room is
 *              OUT_OF_MEMORY), in the checkpoint's bytes; memory others took
 *              while checkpointed (SAGE_FAKE_RESTORE_FREE) stops a growth.
 */
#include <cuda.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../gpu/fd_pass.h"
#include "fake_check.h"
#include "fakecuda.h"

#define PTR(d) ((unsigned char *)(uintptr_t)(d))
#define BOUND_MS 10000u

static const CUmemAllocationProp vmm_prop = {
        .type = CU_MEM_ALLOCATION_TYPE_PINNED,
        .requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
        .location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = 0 },
};

/* A pipe pair between parent and child: to_child, to_parent. */
typedef struct Link {
        int down[2], up[2];
} Link;

static void link_open(Link *l) {
        if (pipe(l->down) || pipe(l->up)) {
                perror("pipe");
                exit(1);
        }
}

/* Forks a child that runs `child` over a fresh link and exits with its result. */
static pid_t fork_linked(Link *l, int (*child)(Link *)) {
        link_open(l);
        pid_t pid = fork();
        if (pid == 0)
                _exit(child(l));
        return pid;
}

static void put(int fd, char c) {
        if (write(fd, &c, 1) != 1)
                failures++;
}

static char get(int fd) {
        char c = 0;
        ssize_t n;
        do
                n = read(fd, &c, 1);
        while (n < 0 && errno == EINTR);
        return n == 1 ? c : 0;
}

static int wait_exit(pid_t pid) {
        int st;
        while (waitpid(pid, &st, 0) < 0)
                if (errno != EINTR)
                        return -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void setup_context(void) {
        failures = 0; /* a forked child counts its own */
        fake_setup_context();
}

static unsigned char pattern(size_t i, unsigned salt) {
        return (unsigned char)(i * 31 + salt);
}

static CUdeviceptr vmm_map(CUmemGenericAllocationHandle h, size_t size) {
        CUdeviceptr va = 0;
        OK(cuMemAddressReserve(&va, size, 0, 0, 0));
        OK(cuMemMap(va, size, 0, h, 0));
        CUmemAccessDesc d = { .location = vmm_prop.location, .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
        OK(cuMemSetAccess(va, size, &d, 1));
        return va;
}

static CUprocessState state_of(pid_t pid) {
        CUprocessState st = (CUprocessState)-1;
        OK(cuCheckpointProcessGetState(pid, &st));
        return st;
}

static size_t mem_of(pid_t pid) {
        size_t bytes = (size_t)-1;
        OK(fakecudaProcessMemUsed(pid, &bytes));
        return bytes;
}

/* ------------------------------------------------------------ roundtrip */
static int roundtrip_child(Link *l) {
        setup_context();
        CUdeviceptr a = 0;
        CUmemGenericAllocationHandle h;
        size_t n = 3 * MiB + 123, vsize = 2 * MiB;
        OK(cuMemAlloc(&a, n));
        OK(cuMemCreate(&h, vsize, &vmm_prop, 0));
        CUdeviceptr v = vmm_map(h, vsize);
        for (size_t i = 0; i < n; i++)
                PTR(a)[i] = pattern(i, 1);
        for (size_t i = 0; i < vsize; i++)
                PTR(v)[i] = pattern(i, 2);
        size_t free_before, free_after, total;
        OK(cuMemGetInfo(&free_before, &total));
        put(l->up[1], 'R');

        CHECK(get(l->down[0]) == 'L');
        /* Made while LOCKED: must wait for Unlock, and read the restored bytes. */
        unsigned char *back = malloc(n);
        OK(cuMemcpyDtoH(back, a, n));
        int fl = fcntl(l->down[0], F_GETFL);
        fcntl(l->down[0], F_SETFL, fl | O_NONBLOCK);
        CHECK(get(l->down[0]) == 'U'); /* written by the parent just before Unlock */
        for (size_t i = 0; i < n; i++)
                if (back[i] != pattern(i, 1) || PTR(a)[i] != pattern(i, 1)) {
                        CHECK(!"cuMemAlloc bytes restored");
                        break;
                }
        for (size_t i = 0; i < vsize; i++)
                if (PTR(v)[i] != pattern(i, 2)) {
                        CHECK(!"VMM bytes restored");
                        break;
                }
        OK(cuMemGetInfo(&free_after, &total));
        CHECK(free_after == free_before);
        free(back);
        OK(cuMemUnmap(v, vsize));
        OK(cuMemRelease(h));
        OK(cuMemFree(a));
        return failures != 0;
}

static void test_roundtrip(void) {
        Link l;
        pid_t pid = fork_linked(&l, roundtrip_child);
        CHECK(get(l.up[0]) == 'R');
        CHECK(state_of(pid) == CU_PROCESS_STATE_RUNNING);
        size_t used = mem_of(pid);
        CHECK(used >= 5 * MiB);
        int tid = 0;
        OK(cuCheckpointProcessGetRestoreThreadId(pid, &tid));
        char task[64];
        snprintf(task, sizeof task, "/proc/%d/task/%d", (int)pid, tid);
        CHECK(tid > 0 && tid != pid && access(task, F_OK) == 0);

        /* Wrong state for everything but Lock. */
        CHECK_CU(cuCheckpointProcessCheckpoint(pid, NULL), CUDA_ERROR_ILLEGAL_STATE);
        CHECK_CU(cuCheckpointProcessRestore(pid, NULL), CUDA_ERROR_ILLEGAL_STATE);
        CHECK_CU(cuCheckpointProcessUnlock(pid, NULL), CUDA_ERROR_ILLEGAL_STATE);

        CUcheckpointLockArgs la = { .timeoutMs = BOUND_MS };
        OK(cuCheckpointProcessLock(pid, &la));
        CHECK(state_of(pid) == CU_PROCESS_STATE_LOCKED);
        CHECK_CU(cuCheckpointProcessLock(pid, &la), CUDA_ERROR_ILLEGAL_STATE);
        CHECK_CU(cuCheckpointProcessRestore(pid, NULL), CUDA_ERROR_ILLEGAL_STATE);
        put(l.down[1], 'L');
        OK(fakecudaProcessWaitBlocked(pid, 1, BOUND_MS)); /* the child's cuMemcpyDtoH waits */

        OK(cuCheckpointProcessCheckpoint(pid, NULL));
        CHECK(state_of(pid) == CU_PROCESS_STATE_CHECKPOINTED);
        CHECK(mem_of(pid) == 0);
        CHECK_CU(cuCheckpointProcessLock(pid, &la), CUDA_ERROR_ILLEGAL_STATE);
        CHECK_CU(cuCheckpointProcessCheckpoint(pid, NULL), CUDA_ERROR_ILLEGAL_STATE);
        CHECK_CU(cuCheckpointProcessUnlock(pid, NULL), CUDA_ERROR_ILLEGAL_STATE);

        OK(cuCheckpointProcessRestore(pid, NULL));
        CHECK(state_of(pid) == CU_PROCESS_STATE_LOCKED);
        CHECK(mem_of(pid) == used);
        OK(fakecudaProcessWaitBlocked(pid, 1, BOUND_MS)); /* still waiting */
        put(l.down[1], 'U');
        OK(cuCheckpointProcessUnlock(pid, NULL));
        CHECK(wait_exit(pid) == 0);
}

/* ------------------------------------------------------------ lock timeout */
static int hold_fd = -1, held_fd = -1;

static void hold(const FakeKernelLaunch *launch, void **params) {
        (void)launch;
        (void)params;
        put(held_fd, 'K');
        CHECK(get(hold_fd) == 'G');
}

static const FakeKernelEntry hold_kernels[] = { { "hold", hold, NULL } };
static const FakeModuleImage hold_image = { FAKECUDA_IMAGE_MAGIC, 1, hold_kernels };

static int timeout_child(Link *l) {
        setup_context();
        CUmodule mod;
        CUfunction f;
        OK(cuModuleLoadData(&mod, &hold_image));
        OK(cuModuleGetFunction(&f, mod, "hold"));
        hold_fd = l->down[0];
        held_fd = l->up[1];
        OK(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL)); /* in flight until 'G' */
        OK(cuCtxSynchronize());                                       /* the gate is open again */
        CHECK(get(l->down[0]) == 'E');
        return failures != 0;
}

/* A target that only waits: ready ('R'), then exits at 'E'. */
static int idle_child(Link *l) {
        setup_context();
        put(l->up[1], 'R');
        CHECK(get(l->down[0]) == 'E');
        return failures != 0;
}

static void test_lock_timeout(void) {
        Link l;
        pid_t pid = fork_linked(&l, timeout_child);
        CHECK(get(l.up[0]) == 'K');
        CUcheckpointLockArgs la = { .timeoutMs = 100 };
        CHECK_CU(cuCheckpointProcessLock(pid, &la), CUDA_ERROR_NOT_READY);
        CHECK(state_of(pid) == CU_PROCESS_STATE_RUNNING);
        put(l.down[1], 'G');
        /* Once the kernel has returned the process can be locked (no timeout). */
        OK(cuCheckpointProcessLock(pid, NULL));
        OK(cuCheckpointProcessUnlock(pid, NULL));
        put(l.down[1], 'E');
        CHECK(wait_exit(pid) == 0);
}

/* ------------------------------------------------------------ unknown pids */
static void test_unknown(void) {
        CUprocessState st;
        CHECK_CU(cuCheckpointProcessGetState(getpid(), &st), CUDA_ERROR_INVALID_VALUE); /* no CUDA here */
        CHECK_CU(cuCheckpointProcessLock(0, NULL), CUDA_ERROR_INVALID_VALUE);
        CHECK_CU(cuCheckpointProcessGetState(-1, &st), CUDA_ERROR_INVALID_VALUE);
        pid_t pid = fork();
        if (pid == 0)
                _exit(0);
        CHECK(wait_exit(pid) == 0);
        CHECK_CU(cuCheckpointProcessGetState(pid, &st), CUDA_ERROR_INVALID_VALUE); /* gone */
        CHECK_CU(cuCheckpointProcessLock(pid, NULL), CUDA_ERROR_INVALID_VALUE);

        /* A process that initialised CUDA, forked and exited: its child (alive,
     * without CUDA) does not answer for it, nor make callers wait. */
        Link l;
        link_open(&l);
        pid = fork();
        if (pid == 0) {
                setup_context();
                pid_t grandchild = fork();
                if (grandchild == 0) {
                        close(l.down[1]);
                        get(l.down[0]); /* until the parent is done (EOF if it dies) */
                        _exit(0);
                }
                _exit(failures != 0);
        }
        close(l.down[0]);
        close(l.up[1]);
        CHECK(wait_exit(pid) == 0);
        CHECK_CU(cuCheckpointProcessGetState(pid, &st), CUDA_ERROR_INVALID_VALUE);
        close(l.down[1]);
        CHECK(get(l.up[0]) == 0); /* the grandchild has gone */
}

/* ------------------------------------------------------------ imported memory */
static int exporter_child(int sock, Link *l) {
        setup_context();
        CUmemGenericAllocationHandle h;
        int fd = -1;
        OK(cuMemCreate(&h, 2 * MiB, &vmm_prop, 0));
        OK(cuMemExportToShareableHandle(&fd, h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0));
        CHECK(fd_send(sock, fd, "F", 1) == 1);
        CHECK(get(l->down[0]) == 'E');
        return failures != 0;
}

static int importer_child(int sock, Link *l) {
        setenv("SAGE_FAKE_STUCK_MS", "100", 1); /* read by cuInit */
        setup_context();
        char byte;
        int fd = fd_recv(sock, &byte, 1, NULL);
        CUmemGenericAllocationHandle h;
        OK(cuMemImportFromShareableHandle(&h, (void *)(intptr_t)fd, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR));
        vmm_map(h, 2 * MiB);
        put(l->up[1], 'R');
        CHECK(get(l->down[0]) == 'L');
        /* Stuck for good in the real driver; the fake gives up (README). */
        CHECK_CU(cuCtxSynchronize(), CUDA_ERROR_ILLEGAL_STATE);
        return failures != 0;
}

static void test_imported(void) {
        int sv[2];
        Link le, li;
        CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
        link_open(&le);
        link_open(&li);
        pid_t exporter = fork();
        if (exporter == 0)
                _exit(exporter_child(sv[0], &le));
        pid_t importer = fork();
        if (importer == 0)
                _exit(importer_child(sv[1], &li));
        CHECK(get(li.up[0]) == 'R');
        OK(cuCheckpointProcessLock(importer, NULL));
        put(li.down[1], 'L');
        OK(fakecudaProcessWaitBlocked(importer, 1, BOUND_MS));
        OK(cuCheckpointProcessCheckpoint(importer, NULL));
        CHECK_CU(cuCheckpointProcessRestore(importer, NULL), CUDA_ERROR_NOT_SUPPORTED);
        CHECK(state_of(importer) == CU_PROCESS_STATE_FAILED);
        CHECK_CU(cuCheckpointProcessRestore(importer, NULL), CUDA_ERROR_ILLEGAL_STATE);
        CHECK_CU(cuCheckpointProcessUnlock(importer, NULL), CUDA_ERROR_ILLEGAL_STATE);
        CHECK_CU(cuCheckpointProcessLock(importer, NULL), CUDA_ERROR_ILLEGAL_STATE);
        CHECK(wait_exit(importer) == 0);
        put(le.down[1], 'E');
        CHECK(wait_exit(exporter) == 0);
}

/* ------------------------------------------------------------ another uid */
static void test_other_uid(void) {
        if (geteuid() != 0) {
                fprintf(stderr, "uid: not root, the other-uid check is not run here (CI runs it as root)\n");
                return;
        }
        Link l;
        pid_t target = fork_linked(&l, idle_child);
        CHECK(get(l.up[0]) == 'R');
        /* A connection that never speaks does not block the channel for good. */
        int mute = socket(AF_UNIX, SOCK_SEQPACKET, 0);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int n = snprintf(sa.sun_path + 1, sizeof sa.sun_path - 1, "sage-fakecuda-ckpt/%d", (int)target);
        CHECK(connect(mute, (struct sockaddr *)&sa,
                      (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n)) == 0);
        CHECK(state_of(target) == CU_PROCESS_STATE_RUNNING);
        close(mute);
        pid_t caller = fork();
        if (caller == 0) {
                failures = 0;
                if (setresgid(65534, 65534, 65534) || setresuid(65534, 65534, 65534))
                        _exit(2);
                CUprocessState st;
                CHECK_CU(cuCheckpointProcessGetState(target, &st), CUDA_ERROR_OPERATING_SYSTEM);
                CHECK_CU(cuCheckpointProcessLock(target, NULL), CUDA_ERROR_OPERATING_SYSTEM);
                _exit(failures != 0);
        }
        CHECK(wait_exit(caller) == 0);
        CHECK(state_of(target) == CU_PROCESS_STATE_RUNNING); /* root may */
        put(l.down[1], 'E');
        CHECK(wait_exit(target) == 0);
}

/* ------------------------------------------------------------ local memory */
#define LOCAL_THREADS 1000

static int local_child(Link *l) {
        size_t free_bytes = 0, total = 0, limit = 0;

        setenv("SAGE_FAKE_LOCAL_THREADS", "1000", 1);
        setenv("SAGE_FAKE_MEM", "64M", 1);
        setenv("SAGE_FAKE_RESTORE_FREE", "0", 1);
        setup_context();
        OK(cuMemGetInfo(&free_bytes, &total));
        CHECK(total - free_bytes == 1024 * LOCAL_THREADS); /* the driver's default limit */
        OK(cuCtxSetLimit(CU_LIMIT_STACK_SIZE, 16));
        OK(cuMemGetInfo(&free_bytes, &total));
        CHECK(total - free_bytes == 16 * LOCAL_THREADS);
        CHECK_CU(cuCtxSetLimit(CU_LIMIT_STACK_SIZE, total), CUDA_ERROR_OUT_OF_MEMORY);
        OK(cuCtxGetLimit(&limit, CU_LIMIT_STACK_SIZE));
        CHECK(limit == 16);
        put(l->up[1], 'R');
        CHECK(get(l->down[0]) == 'G'); /* checkpointed and restored: nothing left free */
        CHECK_CU(cuCtxSetLimit(CU_LIMIT_STACK_SIZE, 1024), CUDA_ERROR_OUT_OF_MEMORY);
        OK(cuCtxGetLimit(&limit, CU_LIMIT_STACK_SIZE));
        CHECK(limit == 16);
        OK(cuCtxSetLimit(CU_LIMIT_STACK_SIZE, 8)); /* giving back always works */
        return failures != 0;
}

static void test_local_memory(void) {
        CUcheckpointLockArgs la = { .timeoutMs = BOUND_MS };
        size_t copied = 0;
        Link l;
        pid_t pid = fork_linked(&l, local_child);

        CHECK(get(l.up[0]) == 'R');
        CHECK(mem_of(pid) == 16 * LOCAL_THREADS);
        OK(cuCheckpointProcessLock(pid, &la));
        OK(cuCheckpointProcessCheckpoint(pid, NULL));
        OK(fakecudaProcessCheckpointBytes(pid, &copied));
        CHECK(copied == 16 * LOCAL_THREADS && mem_of(pid) == 0);
        OK(cuCheckpointProcessRestore(pid, NULL));
        OK(cuCheckpointProcessUnlock(pid, NULL));
        CHECK(mem_of(pid) == 16 * LOCAL_THREADS);
        put(l.down[1], 'G');
        CHECK(wait_exit(pid) == 0);
}

int main(void) {
        test_unknown();
        test_local_memory();
        test_roundtrip();
        test_lock_timeout();
        test_imported();
        test_other_uid();
        if (failures)
                fprintf(stderr, "test_fakecuda_checkpoint: %d failure(s)\n", failures);
        return failures != 0;
}
