/*
 * What each driver VMM call costs when N processes make them at once
 * (docs/sharing.md, "Deferred backing"): the driver serializes them across
 * processes, so which calls a hit and an allocation make decides how SAGE
 * scales to 16 GPT-2 at once. Each of N processes (forked before cuInit,
 * released together through a pipe) makes ROUNDS rounds of what SAGE's
 * allocator does for a 20 MiB segment and its hits:
 *   reserve 20 MiB; create 20 MiB; map; access       (cuMemAlloc, eager)
 *   unmap; export an fd, import it; release both      (a hit's import; a hit's
 *                                                      old piece)
 *   create 2 MiB x 10; map each; access x 10          (pieces one by one)
 *   access once over the 10 mappings                  (re-granted: no change)
 *   unmap x 10; release x 10
 *   create 2 MiB x 10; map each; access once over all (a run's first grant)
 *   unmap x 10; release x 10; free the range
 * and prints, per call kind, the mean and the worst microseconds over every
 * process, and the round's wall time. PROBE_LOCK=1 makes every call under
 * an flock each process takes of one file (PROBE_LOCK_FILE, default
 * /tmp/vmm-contend.lock): whether the driver's own serialization costs
 * more than serializing the processes ourselves.
 * PROBE_BUSY=K with PROBE_BUSY_KIND=ctx|module|alloc adds K processes that,
 * while the N measure, loop on what other functions do in their GPU
 * set-up: create and destroy a context, load and unload a module (a small
 * PTX kernel: the driver's JIT, so CPU too), or cuMemAlloc and free 2 MiB
 * (docs/sharing.md: a hit's re-mapping grew from 30 to 799 ms with 0 to
 * 8-15 other processes setting up): which of them the VMM calls wait for.
 *   probe N [ROUNDS]
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "probe.h"

enum {
        RESERVE,
        CREATE20,
        CREATE2,
        MAP,
        ACCESS,
        ACCESS20,
        ACCESS_RUN,
        ACCESS_FIRST_RUN,
        EXPORT,
        IMPORT,
        UNMAP,
        RELEASE,
        FREE,
        KINDS
};
static const char *const kind_name[KINDS] = { "reserve",
                                              "create 20 MiB",
                                              "create 2 MiB",
                                              "map",
                                              "access 2 MiB",
                                              "access 20 MiB",
                                              "access run (again)",
                                              "access run (first)",
                                              "export fd",
                                              "import fd",
                                              "unmap",
                                              "release",
                                              "free" };

typedef struct Sum {
        double total[KINDS], worst[KINDS];
        unsigned long n[KINDS];
        double wall;
        int failed;
} Sum;

/* PROBE_LOCK=1: each call under an flock of a file every process opened itself (a node-wide lock). */
static int lock_fd = -1;

#define TIMED(sum, kind, call)                                                          \
        do {                                                                            \
                double t_ = now_ms();                                                   \
                if (lock_fd >= 0)                                                       \
                        flock(lock_fd, LOCK_EX);                                        \
                CUresult r_ = (call);                                                   \
                if (lock_fd >= 0)                                                       \
                        flock(lock_fd, LOCK_UN);                                        \
                t_ = (now_ms() - t_) * 1e3;                                             \
                (sum)->total[kind] += t_;                                               \
                (sum)->worst[kind] = t_ > (sum)->worst[kind] ? t_ : (sum)->worst[kind]; \
                (sum)->n[kind]++;                                                       \
                if (r_ != CUDA_SUCCESS && !(sum)->failed) {                             \
                        fprintf(stderr, "%s: %s\n", kind_name[kind], name(r_));         \
                        (sum)->failed = 1;                                              \
                }                                                                       \
        } while (0)

static void rounds(Sum *s, int n) {
        CUmemAllocationProp prop = { .type = CU_MEM_ALLOCATION_TYPE_PINNED,
                                     .requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
                                     .location = { CU_MEM_LOCATION_TYPE_DEVICE, 0 } };
        CUmemAccessDesc rw = { .location = { CU_MEM_LOCATION_TYPE_DEVICE, 0 },
                               .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
        const size_t big = (size_t)20 << 20, g = (size_t)2 << 20;
        CUmemGenericAllocationHandle h, imp, p[10];
        CUdeviceptr va;
        int fd = -1;
        double t0 = now_ms();

        for (int r = 0; r < n && !s->failed; r++) {
                TIMED(s, RESERVE, cuMemAddressReserve(&va, big, 0, 0, 0));
                TIMED(s, CREATE20, cuMemCreate(&h, big, &prop, 0));
                TIMED(s, MAP, cuMemMap(va, big, 0, h, 0));
                TIMED(s, ACCESS20, cuMemSetAccess(va, big, &rw, 1));
                TIMED(s, UNMAP, cuMemUnmap(va, big));
                /* A hit's import: the handle exported (once, by the broker), imported here. */
                TIMED(s, EXPORT, cuMemExportToShareableHandle(&fd, h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0));
                TIMED(s, IMPORT,
                      cuMemImportFromShareableHandle(&imp, (void *)(intptr_t)fd,
                                                     CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR));
                close(fd);
                TIMED(s, RELEASE, cuMemRelease(imp));
                TIMED(s, RELEASE, cuMemRelease(h));
                for (int k = 0; k < 10; k++) {
                        TIMED(s, CREATE2, cuMemCreate(&p[k], g, &prop, 0));
                        TIMED(s, MAP, cuMemMap(va + k * g, g, 0, p[k], 0));
                        TIMED(s, ACCESS, cuMemSetAccess(va + k * g, g, &rw, 1));
                }
                TIMED(s, ACCESS_RUN, cuMemSetAccess(va, 10 * g, &rw, 1));
                for (int k = 0; k < 10; k++) {
                        TIMED(s, UNMAP, cuMemUnmap(va + k * g, g));
                        TIMED(s, RELEASE, cuMemRelease(p[k]));
                }
                /* What granting a run of hits in one call would cost: ten fresh mappings, one first grant. */
                for (int k = 0; k < 10; k++) {
                        TIMED(s, CREATE2, cuMemCreate(&p[k], g, &prop, 0));
                        TIMED(s, MAP, cuMemMap(va + k * g, g, 0, p[k], 0));
                }
                TIMED(s, ACCESS_FIRST_RUN, cuMemSetAccess(va, 10 * g, &rw, 1));
                for (int k = 0; k < 10; k++) {
                        TIMED(s, UNMAP, cuMemUnmap(va + k * g, g));
                        TIMED(s, RELEASE, cuMemRelease(p[k]));
                }
                TIMED(s, FREE, cuMemAddressFree(va, big));
        }
        s->wall = now_ms() - t0;
}

static const char ptx[] = ".version 8.0\n.target sm_90\n.address_size 64\n"
                          ".visible .entry busy_k(.param .u64 p)\n{\n\tret;\n}\n";

/* One busy process: KIND's set-up work in a loop until *stop; returns the iterations (or -1 on a failure). */
static long busy(const char *kind, volatile long *stop) {
        CUdevice dev;
        CUcontext ctx;
        CUmodule mod;
        CUdeviceptr p;
        long it = 0;

        if (cuInit(0) != CUDA_SUCCESS || cuDeviceGet(&dev, 0) != CUDA_SUCCESS)
                return -1;
        if (strcmp(kind, "ctx") != 0 &&
            (cuDevicePrimaryCtxRetain(&ctx, dev) != CUDA_SUCCESS || cuCtxSetCurrent(ctx) != CUDA_SUCCESS))
                return -1;
        for (; !*stop; it++) {
                if (!strcmp(kind, "ctx")) {
                        if (cuCtxCreate(&ctx, NULL, 0, dev) != CUDA_SUCCESS || cuCtxDestroy(ctx) != CUDA_SUCCESS)
                                return -1;
                } else if (!strcmp(kind, "module")) {
                        if (cuModuleLoadData(&mod, ptx) != CUDA_SUCCESS || cuModuleUnload(mod) != CUDA_SUCCESS)
                                return -1;
                } else if (cuMemAlloc(&p, (size_t)2 << 20) != CUDA_SUCCESS || cuMemFree(p) != CUDA_SUCCESS) {
                        return -1;
                }
        }
        return it;
}

int main(int argc, char **argv) {
        int procs = argc > 1 ? atoi(argv[1]) : 1, n = argc > 2 ? atoi(argv[2]) : 20, go[2];
        Sum *sums = mmap(NULL, sizeof(Sum) * (size_t)procs, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        Sum all = { 0 };
        double wall = 0;
        char c;
        /* iters[0..64): each busy process's loops; iters[64]: the stop flag */
        volatile long *iters = mmap(NULL, 65 * sizeof(long), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        pid_t pid[256], busy_pid[64];
        long busy_iters = 0;
        int nbusy;
        const char *kind;

        if (procs < 1 || procs > 256 || sums == MAP_FAILED || iters == MAP_FAILED || pipe(go) != 0)
                return 2;
        memset(sums, 0, sizeof(Sum) * (size_t)procs);
        for (int i = 0; i < procs; i++)
                if ((pid[i] = fork()) == 0) {
                        CUdevice dev;
                        CUcontext ctx;
                        close(go[1]);
                        if (getenv("PROBE_LOCK") && *getenv("PROBE_LOCK") == '1' &&
                            (lock_fd = open(getenv("PROBE_LOCK_FILE") ? getenv("PROBE_LOCK_FILE")
                                                                      : "/tmp/vmm-contend.lock",
                                            O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0)
                                _exit(5);
                        if (cuInit(0) != CUDA_SUCCESS || cuDeviceGet(&dev, 0) != CUDA_SUCCESS ||
                            cuDevicePrimaryCtxRetain(&ctx, dev) != CUDA_SUCCESS || cuCtxSetCurrent(ctx) != CUDA_SUCCESS)
                                _exit(3);
                        if (read(go[0], &c, 1) != 0) /* released when the parent closes its end */
                                _exit(4);
                        rounds(&sums[i], n);
                        _exit(sums[i].failed ? 1 : 0);
                }
        nbusy = getenv("PROBE_BUSY") ? atoi(getenv("PROBE_BUSY")) : 0;
        kind = getenv("PROBE_BUSY_KIND") ? getenv("PROBE_BUSY_KIND") : "ctx";
        if (nbusy < 0 || nbusy > 64 || (strcmp(kind, "ctx") && strcmp(kind, "module") && strcmp(kind, "alloc")))
                return 2;
        for (int i = 0; i < nbusy; i++)
                if ((busy_pid[i] = fork()) == 0) {
                        close(go[1]);
                        iters[i] = busy(kind, &iters[64]);
                        _exit(iters[i] < 0 ? 1 : 0);
                }
        close(go[0]);
        sleep(procs > 1 || nbusy ? 3 : 1); /* every context made, the busy ones at it */
        close(go[1]);
        for (int i = 0, st; i < procs; i++)
                if (waitpid(pid[i], &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
                        all.failed = 1;
        iters[64] = 1; /* the busy ones stop */
        for (int i = 0, st; i < nbusy; i++) {
                if (waitpid(busy_pid[i], &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
                        all.failed = 1;
                busy_iters += iters[i] > 0 ? iters[i] : 0;
        }
        for (int i = 0; i < procs; i++) {
                for (int k = 0; k < KINDS; k++) {
                        all.total[k] += sums[i].total[k];
                        all.n[k] += sums[i].n[k];
                        all.worst[k] = sums[i].worst[k] > all.worst[k] ? sums[i].worst[k] : all.worst[k];
                }
                wall = sums[i].wall > wall ? sums[i].wall : wall;
        }
        printf("%d at once%s, %d rounds:%s slowest process %.1f ms\n", procs,
               getenv("PROBE_LOCK") && *getenv("PROBE_LOCK") == '1' ? " (each call under one node-wide flock)" : "", n,
               all.failed ? " FAILED," : "", wall);
        if (nbusy)
                printf("  beside %d processes busy with %s: %ld loops in all\n", nbusy, kind, busy_iters);
        for (int k = 0; k < KINDS; k++)
                printf("  %-21s mean %8.1f us, worst %8.1f us (%lu calls)\n", kind_name[k],
                       all.n[k] ? all.total[k] / all.n[k] : 0.0, all.worst[k], all.n[k]);
        return all.failed;
}
