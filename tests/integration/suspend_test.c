/*
 * Instance suspend through libsage's gate (docs/suspend.md, "Handshake"),
 * against saged and the simulated driver's checkpoint API:
 *
 *   suspend_test SCENARIO SAGED SAGECTL   (scenarios: suspend_scenarios.def)
 *
 * The app (this binary as "app", under libsage with SAGE_SUSPEND=1 and
 * SAGE_SHARE=1) maps a broker extent (an upload the broker holds) and
 * private memory, then serves commands on stdin: 'r' reads both back and
 * answers "r <CUresult> <1 if identical>", 'h' launches a kernel that holds
 * a call in flight until the next 'G' on stdin.
 *
 *   resume_on_call   suspended (0 device bytes, the extent pinned), its next
 *                    call resumes it and reads identical memory; twice
 *   busy             a call in flight during SUSPEND_PREPARE: BUSY, active
 *   restore_fails    the app's call returns CUDA_ERROR_DEVICE_UNAVAILABLE, no hang
 *   broker_dies      saged killed while it is suspended: the call returns that
 *                    error within the bound (extents mapped), or the process
 *                    restores itself (none mapped) and its memory is intact
 *   flags            managed memory learnt after registering: never suspended, and why
 *   unmapped_app_vmm an app's VMM handle holding an extent while unmapped: the
 *                    restore succeeds, the handle mapped again reads the same
 *   idle             SAGE_SUSPEND_IDLE: suspended by itself once idle, resumed by its next call
 *   hostile          SUSPEND_PREPARED / INSTANCE_REMAPPED unasked, from another
 *                    connection or with another id change nothing; a silent
 *                    instance is given up at the deadline, one that goes at once
 */
#include <cuda.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fakecuda.h"
#include "broker_client.h"
#include "hash.h"
#include "itest.h"
#include "util.h"

#define MiB (1ull << 20)
#define SIZE (4 * MiB)
#define TIMEOUT_MS 10000
#define SEED_SHARED 11
#define SEED_PRIVATE 12

static const char *saged_path, *sagectl_path;
static const char *saged_option; /* one more option for the next start_saged, or NULL */
static char dir[64], socket_path[96];
static pid_t saged_pid;

static uint8_t *pattern(uint64_t seed, size_t size) {
        return itest_pattern(seed, size);
}

/* ------------------------------------------------------------ the driver, as an app reaches it */

static void driver_init(void) {
        itest_cu_load();
}

/* ------------------------------------------------------------ the app */
static void hold(const FakeKernelLaunch *launch, void **params) {
        char byte;
        (void)launch;
        (void)params;
        printf("K\n");
        fflush(stdout);
        CHECK(read(STDIN_FILENO, &byte, 1) == 1 && byte == 'G');
}

/* A GPU kernel as long as the test wants: queued (its argument sizes are known), it runs when the
 * process synchronizes, until a byte comes on the fd it is given. */
static void wait_fd(const FakeKernelLaunch *launch, void **params) {
        char byte;
        (void)launch;
        CHECK(read(*(int *)params[0], &byte, 1) == 1);
}

static const size_t wait_fd_sizes[] = { sizeof(int), 0 };
static const FakeKernelEntry hold_kernels[] = { { "hold", hold, NULL }, { "wait_fd", wait_fd, wait_fd_sizes } };
static const FakeModuleImage hold_image = { FAKECUDA_IMAGE_MAGIC, 2, hold_kernels };

/*
 * Calls through the fake's export table, as cudart makes them (under
 * libsage: trampolines of unknown return type). 'x' starts a thread whose
 * call stays inside the driver (the table's hold) and answers "x" once it
 * is; 'g' lets it return ("g <its result>"); 'p' says whether the shared
 * memory is mapped and intact, read by the CPU without a driver call (the
 * simulated device memory is host memory); 'c' answers "c 1" if the
 * table's checksum comes back right.
 */
static struct {
        const FakecudaExportTable *table;
        int sv[2];
        pthread_t thread;
        int result;
} xc;

static void *hold_thread(void *unused) {
        (void)unused;
        xc.result = xc.table->hold(xc.sv[1]);
        return NULL;
}

static void app_export_call(char cmd, CUdeviceptr shared, const uint8_t *want) {
        char byte;

        if (cmd == 'x') {
                CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, xc.sv) == 0);
                CHECK(pthread_create(&xc.thread, NULL, hold_thread, NULL) == 0);
                CHECK(read(xc.sv[0], &byte, 1) == 1 && byte == 'H');
                printf("x\n");
        } else if (cmd == 'g') {
                CHECK(write(xc.sv[0], "g", 1) == 1);
                CHECK(pthread_join(xc.thread, NULL) == 0);
                close(xc.sv[0]), close(xc.sv[1]);
                printf("g %d\n", xc.result);
        } else if (cmd == 'p') {
                int probe[2], mapped;

                /* write() reads the bytes in the kernel: EFAULT, not a crash, where nothing is mapped. */
                CHECK(pipe(probe) == 0);
                mapped = write(probe[1], (const void *)shared, 1) == 1 && memcmp((const void *)shared, want, SIZE) == 0;
                close(probe[0]), close(probe[1]);
                printf("p %d\n", mapped);
        } else {
                double got = xc.table->checksum(1, -2, 3, 4, 5, 6, 0.5, 1.25, -2.5, 3.75, 1, -1, 7, 8.5, -9);
                double sum = 1 * 1 - 2 * 3 + 3 * 5 + 4 * 7 + 5 * 11 + 6 * 13 + 0.5 * 17 + 1.25 * 19 - 2.5 * 23 +
                             3.75 * 29 + 1 * 31 - 1 * 37 + 7 * 41 + 8.5 * 43 - 9 * 47;

                printf("c %d\n", got == sum);
        }
}

/* The app's memories and what they must hold; read_both reads both back into its own buffer. */
typedef struct Reader {
        CUresult (*set_current)(CUcontext);
        CUcontext ctx;
        CUdeviceptr shared, private;
        const uint8_t *want_shared, *want_private;
        uint8_t *got;
        CUresult r;
        int same;
} Reader;

static void *read_both(void *p) {
        Reader *rd = p;

        memset(rd->got, 0, SIZE);
        rd->r = rd->set_current(rd->ctx); /* a new thread: the first call that meets the gate */
        if (rd->r == CUDA_SUCCESS)
                rd->r = cu.cuMemcpyDtoH(rd->got, rd->shared, SIZE);
        rd->same = rd->r == CUDA_SUCCESS && memcmp(rd->got, rd->want_shared, SIZE) == 0;
        if (rd->r == CUDA_SUCCESS) {
                memset(rd->got, 0, SIZE);
                rd->r = cu.cuMemcpyDtoH(rd->got, rd->private, SIZE);
                rd->same = rd->same && rd->r == CUDA_SUCCESS && memcmp(rd->got, rd->want_private, SIZE) == 0;
        }
        return NULL;
}

/* 'd': two threads read both memories at once (both meet the gate); "d <r> <same> <r> <same>". */
static void app_two_reads(const Reader *model) {
        Reader rd[2] = { *model, *model };
        pthread_t t[2];

        for (int i = 0; i < 2; i++)
                CHECK((rd[i].got = malloc(SIZE)) && pthread_create(&t[i], NULL, read_both, &rd[i]) == 0);
        for (int i = 0; i < 2; i++) {
                CHECK(pthread_join(t[i], NULL) == 0);
                free(rd[i].got);
        }
        printf("d %d %d %d %d\n", (int)rd[0].r, rd[0].same, (int)rd[1].r, rd[1].same);
}

/*
 * An app's own VMM handle (share_vmm.c backs it): 'v' makes it, uploads the
 * shared pattern into it (a hit) and unmaps it, keeping the handle and its
 * content ("v <CUresult>"); 'V' maps it again, grants it and reads it back
 * ("V <CUresult> <1 if identical>"); 'u' releases it ("u <CUresult>").
 * 'w' makes a second one the same way and leaves it mapped ("w <CUresult>").
 */
static void app_vmm_call(char cmd, const uint8_t *want, uint8_t *got) {
        static CUmemGenericAllocationHandle h[2];
        static CUdeviceptr va[2];
        CUmemAllocationProp prop = { .type = CU_MEM_ALLOCATION_TYPE_PINNED,
                                     .location = { CU_MEM_LOCATION_TYPE_DEVICE, 0 } };
        CUmemAccessDesc rw = { .location = { CU_MEM_LOCATION_TYPE_DEVICE, 0 },
                               .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
        int k = cmd == 'w';
        CUresult r;

        if (cmd == 'v' || cmd == 'w') {
                CHECK(cu.cuMemCreate(&h[k], SIZE, &prop, 0) == CUDA_SUCCESS);
                CHECK(cu.cuMemAddressReserve(&va[k], SIZE, 0, 0, 0) == CUDA_SUCCESS);
                CHECK(cu.cuMemMap(va[k], SIZE, 0, h[k], 0) == CUDA_SUCCESS &&
                      cu.cuMemSetAccess(va[k], SIZE, &rw, 1) == 0);
                r = cu.cuMemcpyHtoD(va[k], want, SIZE);
                if (r == CUDA_SUCCESS && cmd == 'v')
                        r = cu.vmm.unmap(va[k], SIZE);
                printf("%c %d\n", cmd, (int)r);
                return;
        }
        if (cmd == 'u') {
                printf("u %d\n", (int)cu.vmm.release(h[0]));
                return;
        }
        r = cu.cuMemMap(va[0], SIZE, 0, h[0], 0);
        if (r == CUDA_SUCCESS)
                r = cu.cuMemSetAccess(va[0], SIZE, &rw, 1);
        memset(got, 0, SIZE);
        if (r == CUDA_SUCCESS)
                r = cu.cuMemcpyDtoH(got, va[0], SIZE);
        printf("V %d %d\n", (int)r, r == CUDA_SUCCESS && memcmp(got, want, SIZE) == 0);
}

static int run_app(void) {
        uint8_t *want_shared = pattern(SEED_SHARED, SIZE), *want_private = pattern(SEED_PRIVATE, SIZE);
        uint8_t *got = malloc(SIZE);
        CUresult (*get_current)(CUcontext *);
        Reader model = { .want_shared = want_shared, .want_private = want_private };
        CUdeviceptr shared, private, spare = 0;
        CUmodule mod;
        CUfunction f;
        void *lib;
        char cmd;

        CHECK(got);
        driver_init();
        CHECK((lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL)));
        CHECK((*(void **)&get_current = dlsym(lib, "cuCtxGetCurrent")) &&
              (*(void **)&model.set_current = dlsym(lib, "cuCtxSetCurrent")));
        CHECK(get_current(&model.ctx) == CUDA_SUCCESS);
        CHECK(cu.cuModuleLoadData(&mod, &hold_image) == CUDA_SUCCESS);
        CHECK(cu.cuModuleGetFunction(&f, mod, "hold") == CUDA_SUCCESS);
        CHECK(cu.cuMemAlloc(&shared, SIZE) == CUDA_SUCCESS && cu.cuMemAlloc(&private, SIZE) == CUDA_SUCCESS);
        CHECK(cu.cuMemcpyHtoD(shared, want_shared, SIZE) == CUDA_SUCCESS);
        CHECK(cu.cuMemcpyHtoD(private, want_private, SIZE) == CUDA_SUCCESS);
        CHECK(cu.cuGetExportTable((const void **)&xc.table, &(CUuuid){ FAKECUDA_EXPORT_TABLE_ID }) == CUDA_SUCCESS);
        printf("ready\n");
        fflush(stdout);
        while (read(STDIN_FILENO, &cmd, 1) == 1) {
                CUresult r;
                int same = 0;

                if (cmd == 'r') {
                        memset(got, 0, SIZE);
                        r = cu.cuMemcpyDtoH(got, shared, SIZE);
                        same = r == CUDA_SUCCESS && memcmp(got, want_shared, SIZE) == 0;
                        if (r == CUDA_SUCCESS) {
                                memset(got, 0, SIZE);
                                r = cu.cuMemcpyDtoH(got, private, SIZE);
                                same = same && r == CUDA_SUCCESS && memcmp(got, want_private, SIZE) == 0;
                        }
                        printf("r %d %d\n", (int)r, same);
                } else if (cmd == 'm') {
                        CUdeviceptr m;
                        printf("m %d\n", (int)cu.cuMemAllocManaged(&m, 4096, CU_MEM_ATTACH_GLOBAL));
                } else if (cmd == 'l') {
                        /* Launched, not waited for: the process makes no call while it runs. */
                        const char *fd_text = getenv("SUSPEND_TEST_KERNEL_FD");
                        int fd = fd_text ? atoi(fd_text) : -1;
                        void *params[] = { &fd };
                        CUfunction w;
                        r = cu.cuModuleGetFunction(&w, mod, "wait_fd");
                        if (r == CUDA_SUCCESS)
                                r = cu.cuLaunchKernel(w, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL);
                        printf("l %d\n", (int)r);
                } else if (cmd == 'd') {
                        model.shared = shared, model.private = private;
                        app_two_reads(&model);
                } else if (cmd == 'v' || cmd == 'V' || cmd == 'w' || cmd == 'u') {
                        app_vmm_call(cmd, want_shared, got);
                } else if (cmd == 'x' || cmd == 'g' || cmd == 'p' || cmd == 'c') {
                        app_export_call(cmd, shared, want_shared);
                } else if (cmd == 'k') {
                        size_t limit = 0;
                        r = cu.cuCtxGetLimit(&limit, CU_LIMIT_STACK_SIZE);
                        printf("k %d %zu\n", (int)r, limit);
                } else if (cmd == 'C') {
                        /* A context of its own (flags the primary context lacks: not redirected), left behind. */
                        CUresult (*create)(CUcontext *, unsigned, CUdevice), (*pop)(CUcontext *);
                        CUcontext own, popped;
                        CHECK((*(void **)&create = dlsym(lib, "cuCtxCreate_v2")) &&
                              (*(void **)&pop = dlsym(lib, "cuCtxPopCurrent_v2")));
                        r = create(&own, CU_CTX_SCHED_BLOCKING_SYNC, 0);
                        printf("C %d %d\n", (int)r, r == CUDA_SUCCESS && pop(&popped) == CUDA_SUCCESS && popped == own);
                } else if (cmd == 'K') {
                        printf("K %d\n", (int)cu.cuCtxSetLimit(CU_LIMIT_STACK_SIZE, 4096));
                } else if (cmd == 'a') {
                        printf("a %d\n", (int)cu.cuMemAlloc(&spare, SIZE)); /* memory to give back later ('f') */
                } else if (cmd == 'f') {
                        printf("f %d\n", (int)cu.cuMemFree(spare));
                } else if (cmd == 'F') {
                        /* A fork(); the child makes a call (which the driver fails: no CUDA in a fork()ed
                         * child) and exits through the exit handlers (sharing's publishes, at a gate). */
                        uint64_t t0 = sage_now_ns();
                        int status = -1;
                        pid_t child;

                        fflush(stdout);
                        if ((child = fork()) == 0)
                                exit((int)cu.cuCtxSynchronize()); /* its result, as the exit status */
                        if (child < 0 || waitpid(child, &status, 0) != child || !WIFEXITED(status))
                                status = -1;
                        printf("F %d %.0f\n", status < 0 ? -1 : WEXITSTATUS(status),
                               (double)(sage_now_ns() - t0) / 1e6);
                } else if (cmd == 'h') {
                        r = cu.cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL);
                        if (r == CUDA_SUCCESS)
                                r = cu.cuCtxSynchronize(); /* in flight until 'G' */
                        printf("h %d\n", (int)r);
                }
                fflush(stdout);
        }
        return 0;
}

static void empty(const FakeKernelLaunch *launch, void **params) {
        (void)launch;
        (void)params;
}

static const FakeKernelEntry empty_kernels[] = { { "empty", empty, NULL } };
static const FakeModuleImage empty_image = { FAKECUDA_IMAGE_MAGIC, 1, empty_kernels };

/* Not a test: ns per cuLaunchKernel of an empty kernel (run it with and without SAGE_SUSPEND). */
static int run_bench(void) {
        const int n = 200000;
        CUmodule mod;
        CUfunction f;
        uint64_t t0;

        driver_init();
        CHECK(cu.cuModuleLoadData(&mod, &empty_image) == CUDA_SUCCESS);
        CHECK(cu.cuModuleGetFunction(&f, mod, "empty") == CUDA_SUCCESS);
        for (int round = 0; round < 3; round++) {
                t0 = sage_now_ns();
                for (int i = 0; i < n; i++)
                        CHECK(cu.cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL) == CUDA_SUCCESS);
                CHECK(cu.cuCtxSynchronize() == CUDA_SUCCESS);
                printf("%.1f ns per launch\n", (double)(sage_now_ns() - t0) / n);
        }
        return 0;
}

typedef struct App {
        pid_t pid;
        int in, out;
} App;

/* A line from the app, within TIMEOUT_MS (into `line`). */
static void app_line(App *a, char *line, size_t size) {
        size_t n = 0;
        uint64_t deadline = sage_now_ns() + TIMEOUT_MS * 1000000ull;

        while (n + 1 < size) {
                struct pollfd p = { .fd = a->out, .events = POLLIN };
                uint64_t now = sage_now_ns();
                CHECK(now < deadline && poll(&p, 1, (int)((deadline - now) / 1000000) + 1) == 1);
                CHECK(read(a->out, &line[n], 1) == 1);
                if (line[n] == '\n')
                        break;
                n++;
        }
        line[n] = 0;
}

static App spawn_app(bool share, const char *extra_env) {
        const char *env[] = { "SAGE_SUSPEND=1", share ? "SAGE_SHARE=1" : "SAGE_SHARE=0", extra_env, NULL };
        char line[64];
        App a;

        a.pid = itest_spawn_app((char *[]){ "suspend-test", "app", (char *)saged_path, (char *)sagectl_path, NULL },
                                socket_path, env, &a.in, &a.out);
        app_line(&a, line, sizeof(line));
        CHECK(strcmp(line, "ready") == 0);
        return a;
}

static void app_say(App *a, char cmd) {
        CHECK(write(a->in, &cmd, 1) == 1);
}

/* 'r': the CUresult of the read-back; *same whether both memories are intact. */
static int app_read(App *a, int *same) {
        char line[64];
        int r = -1;

        app_say(a, 'r');
        app_line(a, line, sizeof(line));
        CHECK(sscanf(line, "r %d %d", &r, same) == 2);
        return r;
}

static void app_end(App *a) {
        close(a->in);
        close(a->out);
        itest_reap(a->pid);
}

/* ------------------------------------------------------------ saged, sagectl, the broker */
static void exec_saged(void) {
        saged_pid = fork();
        CHECK(saged_pid >= 0);
        if (saged_pid == 0) {
                execl(saged_path, saged_path, "--foreground", "--socket", socket_path, "-v", saged_option,
                      (char *)NULL);
                _exit(127);
        }
        itest_wait_saged(saged_pid, socket_path, TIMEOUT_MS);
}

static void start_saged(void) {
        snprintf(dir, sizeof(dir), "/tmp/sage-suspend-test-XXXXXX");
        CHECK(mkdtemp(dir));
        snprintf(socket_path, sizeof(socket_path), "%s/saged.sock", dir);
        exec_saged();
}

/* saged killed (-9) and a new one started on the same socket, with `option` (or none). */
static void restart_saged(const char *option) {
        CHECK(kill(saged_pid, SIGKILL) == 0 && waitpid(saged_pid, NULL, 0) == saged_pid);
        unlink(socket_path);
        saged_option = option;
        exec_saged();
}

static void stop_saged(int sig) {
        int status;
        CHECK(kill(saged_pid, sig) == 0);
        CHECK(waitpid(saged_pid, &status, 0) == saged_pid);
        CHECK(sig != SIGTERM || (WIFEXITED(status) && WEXITSTATUS(status) == 0));
        saged_pid = 0;
        unlink(socket_path);
        rmdir(dir);
}

static void cleanup(void) {
        if (saged_pid > 0)
                stop_saged(SIGKILL);
}

static SageBroker *broker(void) {
        return itest_broker(socket_path, TIMEOUT_MS);
}

/* sagectl's exit status; its output in `out`. */
static int sagectl(char *out, size_t size, const char *format, ...) {
        char args[512], cmd[1024];
        va_list ap;
        FILE *p;
        size_t got;
        int status;

        va_start(ap, format);
        vsnprintf(args, sizeof(args), format, ap);
        va_end(ap);
        snprintf(cmd, sizeof(cmd), "%s --socket %s %s 2>&1", sagectl_path, socket_path, args);
        CHECK((p = popen(cmd, "r")));
        got = fread(out, 1, size - 1, p);
        out[got] = 0;
        status = pclose(p);
        printf("$ sagectl %s\n%s", args, out);
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The instance's state word in `sagectl instances --json` ("" if not listed). */
static const char *state_of(pid_t pid) {
        static char out[16384], state[32];
        char key[32];
        const char *line, *s;

        snprintf(key, sizeof(key), "\"pid\": %d,", (int)pid);
        CHECK(sagectl(out, sizeof(out), "instances --json") == 0);
        state[0] = 0;
        if ((line = strstr(out, key)) && (s = strstr(line, "\"state\": \"")))
                sscanf(s + 10, "%31[a-z]", state);
        return state;
}

/* A publisher of pattern(seed) under its content key, as the upload of the app keys it. */
static void publish(uint64_t seed, size_t size) {
        pid_t pid = fork();
        int status;

        CHECK(pid >= 0);
        if (pid == 0) {
                CUmemAllocationProp prop = { .type = CU_MEM_ALLOCATION_TYPE_PINNED,
                                             .requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
                                             .location = { CU_MEM_LOCATION_TYPE_DEVICE, 0 } };
                CUmemAccessDesc rw = { .location = { CU_MEM_LOCATION_TYPE_DEVICE, 0 },
                                       .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
                CUmemGenericAllocationHandle h;
                uint8_t *data = pattern(seed, size);
                CUdeviceptr va;
                uint64_t id;
                int fd = -1, existed;
                SageBroker *b;

                driver_init();
                CHECK(cu.cuMemCreate(&h, size, &prop, 0) == CUDA_SUCCESS);
                CHECK(cu.cuMemAddressReserve(&va, size, 0, 0, 0) == CUDA_SUCCESS);
                CHECK(cu.cuMemMap(va, size, 0, h, 0) == CUDA_SUCCESS && cu.cuMemSetAccess(va, size, &rw, 1) == 0);
                CHECK(cu.cuMemcpyHtoD(va, data, size) == CUDA_SUCCESS);
                CHECK(cu.cuMemExportToShareableHandle(&fd, h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0) == 0);
                b = broker();
                CHECK(sage_broker_publish(b, sage_content_key(data, size), size, 0, SAGE_PUBLISH_SEALED, fd, &id,
                                          &existed) == 0);
                sage_broker_free(b);
                _exit(0);
        }
        CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static SageStats stats(void) {
        return itest_stats(socket_path, TIMEOUT_MS);
}

/* One of the simulated driver's byte counts of process `pid` (fakecuda.h: fakecudaProcess*). */
static size_t fake_bytes(const char *symbol, pid_t pid) {
        int (*fn)(int, size_t *);
        void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
        size_t bytes = 0;

        CHECK(lib && (*(void **)&fn = dlsym(lib, symbol)));
        CHECK(fn(pid, &bytes) == CUDA_SUCCESS);
        dlclose(lib);
        return bytes;
}

static size_t mem_used(pid_t pid) {
        return fake_bytes("fakecudaProcessMemUsed", pid);
}

/* The app with the broker's extent mapped (a hit) and its private memory. */
static App shared_app(const char *extra_env) {
        App a;

        publish(SEED_SHARED, SIZE);
        a = spawn_app(true, extra_env);
        CHECK(stats().hits >= 1);
        CHECK(strcmp(state_of(a.pid), "active") == 0);
        return a;
}

/* ------------------------------------------------------------ scenarios */
static int scenario_resume_on_call(void) {
        char out[4096];
        int same = 0;
        App a;

        start_saged();
        a = shared_app(NULL);
        for (int round = 0; round < 2; round++) {
                CHECK(sagectl(out, sizeof(out), "suspend %d", (int)a.pid) == 0 && strstr(out, "suspended"));
                CHECK(strcmp(state_of(a.pid), "suspended") == 0);
                CHECK(mem_used(a.pid) == 0);
                /* The extent it will map again is pinned: evicting the unreferenced keeps it. */
                CHECK(sagectl(out, sizeof(out), "evict --unreferenced") == 0);
                CHECK(stats().extents == 1);
                CHECK(app_read(&a, &same) == CUDA_SUCCESS && same == 1);
                CHECK(strcmp(state_of(a.pid), "active") == 0);
                CHECK(mem_used(a.pid) >= SIZE);
        }
        /* It exits while suspended: its exit handlers (sharing publishes its candidates) resume it first. */
        CHECK(sagectl(out, sizeof(out), "suspend %d", (int)a.pid) == 0);
        app_end(&a);
        CHECK(stats().publishes == 2); /* the publisher's, and the app's private upload at its exit */
        stop_saged(SIGTERM);
        return 0;
}

static int scenario_busy(void) {
        char out[4096], line[64];
        int same = 0;
        App a;

        start_saged();
        a = shared_app(NULL);
        app_say(&a, 'h');
        app_line(&a, line, sizeof(line));
        CHECK(strcmp(line, "K") == 0); /* the kernel runs: cuCtxSynchronize is in flight */
        CHECK(sagectl(out, sizeof(out), "suspend %d", (int)a.pid) != 0 && strstr(out, "in flight"));
        CHECK(strcmp(state_of(a.pid), "active") == 0);
        app_say(&a, 'G');
        app_line(&a, line, sizeof(line));
        CHECK(strcmp(line, "h 0") == 0);
        CHECK(app_read(&a, &same) == CUDA_SUCCESS && same == 1);
        app_end(&a);
        stop_saged(SIGTERM);
        return 0;
}

/* A new saged, the shared app (shared_app) under it, suspended by `sagectl suspend`. */
static App suspended_shared_app(const char *extra_env) {
        char out[4096];
        App a;

        start_saged();
        a = shared_app(extra_env);
        CHECK(sagectl(out, sizeof(out), "suspend %d", (int)a.pid) == 0);
        return a;
}

/* The files in directory `path` (-1 if it cannot be read); remove_files_in removes them: true if all went. */
static int files_in(const char *path) {
        DIR *d = opendir(path);
        struct dirent *e;
        int n = 0;

        if (!d)
                return -1;
        while ((e = readdir(d)))
                n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
        closedir(d);
        return n;
}

static bool remove_files_in(const char *path) {
        DIR *d = opendir(path);
        struct dirent *e;
        bool ok = d != NULL;

        while (d && (e = readdir(d)))
                if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
                        ok = unlinkat(dirfd(d), e->d_name, 0) == 0 && ok;
        if (d)
                closedir(d);
        return ok;
}

/*
 * An app thread forks while the process is suspended, and the child exits:
 * its call and its exit handlers run with the parent's state. The child is
 * no instance: it neither waits for a resume nor asks one (on the parent's
 * connection), and publishes nothing; the parent stays suspended, whole.
 */
static int scenario_fork_suspended(void) {
        char line[64], out[4096], hints[PATH_MAX], env[PATH_MAX + 32];
        int status = -1, same = 0;
        double ms = -1;
        App a;

        start_saged();
        /* Hints (assembly at idleness learns them): written at exit, by the process that shares only. */
        snprintf(hints, sizeof(hints), "%s/hints", dir);
        CHECK(mkdir(hints, 0700) == 0);
        snprintf(env, sizeof(env), "SAGE_SHARE_PLACE=%s", hints);
        a = shared_app(env);
        CHECK(sagectl(out, sizeof(out), "suspend %d", (int)a.pid) == 0);
        CHECK(strcmp(state_of(a.pid), "suspended") == 0);
        app_say(&a, 'F');
        app_line(&a, line, sizeof(line));
        CHECK(sscanf(line, "F %d %lf", &status, &ms) == 2);
        printf("the child's call returned %d; it exited after %.0f ms\n", status, ms);
        CHECK(status == CUDA_ERROR_NOT_INITIALIZED && ms < 2000); /* as the driver answers a fork()ed child */
        CHECK(strcmp(state_of(a.pid), "suspended") == 0);
        CHECK(stats().publishes == 1); /* the publisher's */
        CHECK(files_in(hints) == 0);   /* the child's exit handler did not run as its parent's */
        CHECK(app_read(&a, &same) == CUDA_SUCCESS && same == 1);
        CHECK(strcmp(state_of(a.pid), "active") == 0);
        app_end(&a);
        CHECK(stats().publishes == 2); /* and the parent's private upload at its exit */
        CHECK(files_in(hints) == 1);   /* the parent's hints */
        CHECK(remove_files_in(hints) && rmdir(hints) == 0);
        stop_saged(SIGTERM);
        return 0;
}

/* An app that cannot end by itself (stuck in the driver, or its broker gone). */
static void app_kill(App *a) {
        kill(a->pid, SIGKILL);
        waitpid(a->pid, NULL, 0);
        close(a->in);
        close(a->out);
}

static int scenario_restore_fails(void) {
        App a = suspended_shared_app("SAGE_FAKE_FAIL_RESTORE=1");
        int same = 1;
        uint64_t t;

        t = sage_now_ns();
        CHECK(app_read(&a, &same) == CUDA_ERROR_DEVICE_UNAVAILABLE && same == 0);
        CHECK(sage_now_ns() - t < TIMEOUT_MS * 1000000ull);
        CHECK(strcmp(state_of(a.pid), "failed") == 0);
        /* Every later call too, at once. */
        CHECK(app_read(&a, &same) == CUDA_ERROR_DEVICE_UNAVAILABLE);
        app_kill(&a); /* stuck in the driver for good, as the real one is */
        stop_saged(SIGTERM);
        return 0;
}

static int scenario_broker_dies(void) {
        char out[4096];
        int same = 1;
        uint64_t t;
        App a;

        /* Extents mapped: their bytes went with the broker, and none comes back within
         * SAGE_SUSPEND_RECONNECT: the call fails within that bound. */
        a = suspended_shared_app("SAGE_SUSPEND_RECONNECT=1s");
        stop_saged(SIGKILL);
        t = sage_now_ns();
        CHECK(app_read(&a, &same) == CUDA_ERROR_DEVICE_UNAVAILABLE && same == 0);
        CHECK(sage_now_ns() - t < 5000000000ull);
        app_kill(&a);

        /* Private memory only: the process restores itself, its memory intact. */
        start_saged();
        a = spawn_app(false, NULL);
        CHECK(sagectl(out, sizeof(out), "suspend %d", (int)a.pid) == 0);
        CHECK(mem_used(a.pid) == 0);
        stop_saged(SIGKILL);
        CHECK(app_read(&a, &same) == CUDA_SUCCESS && same == 1);
        CHECK(mem_used(a.pid) >= 2 * SIZE);
        app_end(&a);
        return 0;
}

/* Wait until the restarted broker lists `pid` (its libsage registers again by itself: watched from outside). */
static void await_listed(pid_t pid) {
        for (int i = 0; i < 250 && !state_of(pid)[0]; i++)
                poll(NULL, 0, 20);
        CHECK(state_of(pid)[0]);
}

/* Suspended by the operator (0 bytes on the device), then its next call resumes it: memory identical, active. */
static void suspend_resume(App *a) {
        char out[4096];
        int same = 0;

        CHECK(sagectl(out, sizeof(out), "suspend %d", (int)a->pid) == 0 && mem_used(a->pid) == 0);
        CHECK(app_read(a, &same) == CUDA_SUCCESS && same == 1);
        CHECK(strcmp(state_of(a->pid), "active") == 0);
}

/*
 * An app's VMM handle unmapped after a hit keeps the broker's extent while
 * no mapping shows it: suspended so, the process must still restore (the
 * driver cannot restore imported memory) and the handle keep its content.
 * Before, only mapped allocations were parked: the restore failed for good.
 */
static int scenario_unmapped_app_vmm(void) {
        char line[64];

        start_saged();
        App a = shared_app(NULL);
        app_say(&a, 'v');
        app_line(&a, line, sizeof(line));
        CHECK(strcmp(line, "v 0") == 0 && stats().hits >= 2);
        suspend_resume(&a); /* restored: the read after it sees both memories intact */
        app_say(&a, 'V');
        app_line(&a, line, sizeof(line));
        CHECK(strcmp(line, "V 0 1") == 0);
        app_end(&a);
        stop_saged(SIGTERM);
        return 0;
}

/* ---- the stack shrink (intercept/suspend_shrink.c) */
static size_t checkpoint_bytes(pid_t pid) {
        return fake_bytes("fakecudaProcessCheckpointBytes", pid);
}

/* The instance's host_bytes in `sagectl instances --json`: its footprint while suspended. */
static long long host_bytes_of(pid_t pid) {
        static char out[16384];
        char key[32];
        const char *line, *s;
        long long v = -1;

        snprintf(key, sizeof(key), "\"pid\": %d,", (int)pid);
        CHECK(sagectl(out, sizeof(out), "instances --json") == 0);
        if ((line = strstr(out, key)) && (s = strstr(line, "\"host_bytes\": ")))
                sscanf(s + 14, "%lld", &v);
        return v;
}

/* The app's stack limit, as its cuCtxGetLimit says. */
static size_t app_stack_limit(App *a) {
        char line[64];
        size_t limit = 0;
        int r = -1;

        app_say(a, 'k');
        app_line(a, line, sizeof(line));
        CHECK(sscanf(line, "k %d %zu", &r, &limit) == 2 && r == CUDA_SUCCESS);
        return limit;
}

/* The fake's local memory of a context: stack limit x SAGE_FAKE_LOCAL_THREADS (main sets it). */
#define LOCAL_THREADS "1056" /* 132 SMs x 8: a stand-in 256 times smaller than the H100's 132 x 2048 */
#define LOCAL_BYTES(stack) ((size_t)(stack)*1056)

/* Suspended and resumed with a stack limit of `stack`: what the checkpoint held, shrunk or not. */
static void shrink_round(App *a, size_t stack, bool shrink) {
        size_t before = mem_used(a->pid), held;
        char out[4096];
        int same = 0;

        CHECK(app_stack_limit(a) == stack);
        CHECK(sagectl(out, sizeof(out), "suspend %d", (int)a->pid) == 0 && mem_used(a->pid) == 0);
        held = checkpoint_bytes(a->pid);
        CHECK(held == (shrink ? before - LOCAL_BYTES(stack) + LOCAL_BYTES(16) : before));
        /* The footprint a restore must make room for (NVML's, taken before SUSPEND_PREPARE) counts the stack
         * that comes back: more than the checkpoint held. */
        CHECK(!saged_option || host_bytes_of(a->pid) == (long long)before);
        CHECK(app_read(a, &same) == CUDA_SUCCESS && same == 1);
        /* Back before the call proceeded: the limit the app set, its footprint too. */
        CHECK(app_stack_limit(a) == stack && mem_used(a->pid) == before);
}

/*
 * Before the checkpoint every context's stack limit goes to the smallest
 * (its local memory is scratch while no kernel runs), so the checkpoint
 * holds less; the resume gives back exactly what was read, the driver's
 * default, the app's own value, a lean context's. Off with
 * SAGE_SUSPEND_SHRINK=0. Before, the checkpoint copied the whole stack.
 */
static int scenario_stack_shrink(void) {
        char line[64], out[4096], nvml[PATH_MAX + 32];
        size_t before;
        int same = 0;
        App a, lean, off;

        snprintf(nvml, sizeof(nvml), "--nvml-library=%s", getenv("SAGE_TEST_FAKE_NVML"));
        saged_option = nvml; /* GPU bytes per instance */
        start_saged();
        a = shared_app(NULL);
        shrink_round(&a, 1024, true);
        app_say(&a, 'K'); /* the app's own 4096 */
        app_line(&a, line, sizeof(line));
        CHECK(strcmp(line, "K 0") == 0);
        shrink_round(&a, 4096, true);
        /* A context the app created is shrunk too, and grows back. */
        app_say(&a, 'C');
        app_line(&a, line, sizeof(line));
        CHECK(strcmp(line, "C 0 1") == 0);
        before = mem_used(a.pid);
        CHECK(sagectl(out, sizeof(out), "suspend %d", (int)a.pid) == 0);
        CHECK(checkpoint_bytes(a.pid) == before - LOCAL_BYTES(4096) - LOCAL_BYTES(1024) + 2 * LOCAL_BYTES(16));
        CHECK(app_read(&a, &same) == CUDA_SUCCESS && same == 1 && mem_used(a.pid) == before);
        app_end(&a);
        setenv("SAGE_CTX_STACK_LIMIT", "64", 1); /* on the context the warm-up retains */
        lean = spawn_app(false, "SAGE_WARMUP=on");
        unsetenv("SAGE_CTX_STACK_LIMIT");
        shrink_round(&lean, 64, true);
        app_end(&lean);
        off = spawn_app(false, "SAGE_SUSPEND_SHRINK=0");
        shrink_round(&off, 1024, false);
        app_end(&off);
        stop_saged(SIGTERM);
        return 0;
}

/*
 * Others took the memory meanwhile: the limit cannot grow back. The resume
 * is still correct (the memory intact, the call served) with the small
 * limit, and says so (SUSPEND_STACK_NOT_RESTORED in the trace's stats).
 * The next resume tries again: once the app gave memory back, the limit
 * it had comes back (the suspend in between, finding the small limit,
 * must not take it for the one to give back).
 */
static int scenario_stack_not_restored(void) {
        static char buf[4 << 20];
        char env[160], line[64];
        int same = 0, fd;
        size_t got = 0;
        ssize_t n;
        App a;

        start_saged(); /* makes dir */
        snprintf(env, sizeof(env), "SAGE_TRACE=%s/trace.json", dir);
        setenv("SAGE_FAKE_RESTORE_FREE", "0", 1); /* the app's driver: nothing free after its restore */
        a = spawn_app(false, env);
        unsetenv("SAGE_FAKE_RESTORE_FREE");
        app_say(&a, 'a');
        app_line(&a, line, sizeof(line));
        CHECK(strcmp(line, "a 0") == 0);
        CHECK(app_stack_limit(&a) == 1024);
        suspend_resume(&a);
        CHECK(app_read(&a, &same) == CUDA_SUCCESS && same == 1);
        CHECK(app_stack_limit(&a) == 16);
        /* Room again (SIZE bytes, more than the stack needs): the next resume gives the limit back. */
        app_say(&a, 'f');
        app_line(&a, line, sizeof(line));
        CHECK(strcmp(line, "f 0") == 0);
        CHECK(app_stack_limit(&a) == 16); /* until then the small limit stays */
        suspend_resume(&a);
        CHECK(app_stack_limit(&a) == 1024);
        app_end(&a);
        snprintf(env, sizeof(env), "%s/trace.json", dir);
        CHECK((fd = open(env, O_RDONLY)) >= 0);
        while (got + 1 < sizeof(buf) && (n = read(fd, buf + got, sizeof(buf) - 1 - got)) > 0)
                got += (size_t)n;
        close(fd);
        buf[got] = 0;
        CHECK(strstr(buf, "\"SUSPEND_STACK_NOT_RESTORED\":1"));
        stop_saged(SIGTERM);
        return 0;
}

/* A spool folder's path (not created: saged makes it 0700), and saged's option naming it. */
static void spool_option(char *spool, size_t spool_size, char *option, size_t option_size) {
        snprintf(spool, spool_size, "/tmp/sage-suspend-spool-XXXXXX");
        CHECK(mkdtemp(spool));
        snprintf(spool + strlen(spool), spool_size - strlen(spool), "/spool");
        snprintf(option, option_size, "--spool=%s", spool);
}

static void spool_remove(char *spool) {
        CHECK(rmdir(spool) == 0); /* empty: its files went once the instance ran again */
        *strrchr(spool, '/') = 0;
        CHECK(rmdir(spool) == 0);
}

/*
 * saged killed (-9) while the app is suspended with its extent parked, and
 * started again with --spool: libsage registers again (CHECKPOINTED), the
 * new broker adopts it with the spooled extent, and the app's next call
 * resumes it with identical memory; it can be suspended again.
 */
static int scenario_restart_spool(void) {
        char spool[96], option[128], line[64];
        App a;

        spool_option(spool, sizeof(spool), option, sizeof(option));
        saged_option = option;
        a = suspended_shared_app(NULL);
        CHECK(mem_used(a.pid) == 0);
        restart_saged(option);
        /* Two threads meet the gate at once: one asks the new broker, both see identical memory. */
        app_say(&a, 'd');
        app_line(&a, line, sizeof(line));
        printf("app: %s\n", line);
        CHECK(strcmp(line, "d 0 1 0 1") == 0);
        CHECK(strcmp(state_of(a.pid), "active") == 0 && mem_used(a.pid) >= SIZE);
        suspend_resume(&a);
        app_end(&a);
        stop_saged(SIGTERM);
        saged_option = NULL;
        spool_remove(spool);
        return 0;
}

/* The same without --spool: the extent's bytes are gone; the call fails within the bound, never a hang. */
static int scenario_restart_no_spool(void) {
        int same = 1;
        uint64_t t;
        App a = suspended_shared_app(NULL);

        restart_saged(NULL);
        t = sage_now_ns();
        CHECK(app_read(&a, &same) == CUDA_ERROR_DEVICE_UNAVAILABLE && same == 0);
        CHECK(sage_now_ns() - t < TIMEOUT_MS * 1000000ull);
        /* The new broker took it (restored it; the re-map missed): failed, not lost. */
        CHECK(strcmp(state_of(a.pid), "failed") == 0);
        CHECK(app_read(&a, &same) == CUDA_ERROR_DEVICE_UNAVAILABLE);
        app_kill(&a);
        stop_saged(SIGTERM);
        return 0;
}

/*
 * saged killed while the apps are active: they run on, and register again
 * with the new broker. One without broker extents can be suspended and
 * resumed again; one mapping the dead broker's extent reads them intact and
 * is refused a suspend (nobody could map them back).
 */
static int scenario_restart_active(void) {
        char out[4096];
        int same = 0;
        App shared, plain;

        start_saged();
        shared = shared_app(NULL);
        plain = spawn_app(false, NULL);
        restart_saged(NULL);
        CHECK(app_read(&shared, &same) == CUDA_SUCCESS && same == 1);
        await_listed(shared.pid);
        await_listed(plain.pid);
        suspend_resume(&plain);
        CHECK(sagectl(out, sizeof(out), "suspend %d", (int)shared.pid) != 0 && strstr(out, "broker extents"));
        CHECK(strcmp(state_of(shared.pid), "active") == 0);
        CHECK(app_read(&shared, &same) == CUDA_SUCCESS && same == 1);
        app_end(&shared);
        app_end(&plain);
        stop_saged(SIGTERM);
        return 0;
}

/*
 * saged killed while an app's VMM handle, unmapped, holds the dead broker's
 * extent: nothing of it is mapped, so sharing connects to the new broker.
 * That one numbers its extents from 1 again: the app maps the same bytes
 * from it (its extent 1, referenced), then releases the old handle, whose
 * reference was the old broker's and must never reach the new one. Before,
 * that RELEASE dropped the app's reference of the new extent 1: evictable
 * while mapped.
 */
static int scenario_restart_stale_reference(void) {
        char line[64], out[4096];
        SageStats st;
        App a;

        start_saged();
        a = spawn_app(true, NULL); /* its uploads miss: nothing of the broker mapped */
        publish(SEED_SHARED, SIZE);
        app_say(&a, 'v');
        app_line(&a, line, sizeof(line));
        CHECK(strcmp(line, "v 0") == 0 && stats().hits == 1);
        restart_saged(NULL);
        await_listed(a.pid);
        /* Its sharing connection comes after the registration: the app's two, and the one asking. */
        for (int i = 0; i < 250 && stats().clients < 3; i++)
                poll(NULL, 0, 20);
        publish(SEED_SHARED, SIZE);
        app_say(&a, 'w');
        app_line(&a, line, sizeof(line));
        st = stats();
        CHECK(strcmp(line, "w 0") == 0 && st.hits == 1 && st.refs == 1);
        app_say(&a, 'u');
        app_line(&a, line, sizeof(line));
        CHECK(strcmp(line, "u 0") == 0);
        CHECK(stats().refs == 1);
        CHECK(sagectl(out, sizeof(out), "evict --unreferenced") == 0 && stats().extents == 1);
        app_end(&a);
        stop_saged(SIGTERM);
        return 0;
}

/*
 * saged dies after SUSPEND_PREPARED, before a checkpoint happened (as the
 * process's driver sees it): saged runs the checkpoint stand-in
 * (ckpt_stub.c: it only stops the process), is killed (-9), and the
 * process goes on. Its extents are parked and it runs: libsage registers
 * with the new broker (not CHECKPOINTED) and maps them from it at once,
 * here because another process published the same bytes again.
 */
static int scenario_restart_prepared(void) {
        char option[512];
        const char *stub = getenv("SAGE_TEST_CKPT_STUB");
        int same = 0;
        App a;

        CHECK(stub);
        snprintf(option, sizeof(option), "--driver=%s", stub);
        saged_option = option;
        a = suspended_shared_app(NULL); /* stopped by the stand-in (SIGSTOP), its extent parked */
        restart_saged(NULL);
        publish(SEED_SHARED, SIZE);
        CHECK(kill(a.pid, SIGCONT) == 0);
        await_listed(a.pid);
        CHECK(app_read(&a, &same) == CUDA_SUCCESS && same == 1);
        suspend_resume(&a);
        app_end(&a);
        stop_saged(SIGTERM);
        return 0;
}

/*
 * The app sees the node's second GPU as its device 0 (CUDA_VISIBLE_DEVICES=1):
 * its extents are the broker's device 1, and the re-map after a resume
 * must ask for them there, not under the app's ordinal.
 */
static int scenario_remap_visible_devices(void) {
        App a;

        setenv("SAGE_FAKE_DEVICES", "2", 1); /* saged and the apps see two GPUs */
        start_saged();
        a = spawn_app(true, "CUDA_VISIBLE_DEVICES=1");
        app_end(&a); /* publishes its uploads at exit, on the broker's device 1 */
        CHECK(stats().publishes >= 1);
        a = spawn_app(true, "CUDA_VISIBLE_DEVICES=1");
        CHECK(stats().hits >= 1);
        suspend_resume(&a);
        app_end(&a);
        stop_saged(SIGTERM);
        unsetenv("SAGE_FAKE_DEVICES");
        return 0;
}

static int scenario_idle(void) {
        int same = 0;
        App a;

        start_saged();
        a = shared_app("SAGE_SUSPEND_IDLE=200ms");
        for (int i = 0; i < 500 && strcmp(state_of(a.pid), "suspended") != 0; i++)
                poll(NULL, 0, 20); /* the broker's decision, watched from outside: nothing to wait on */
        CHECK(strcmp(state_of(a.pid), "suspended") == 0 && mem_used(a.pid) == 0);
        CHECK(app_read(&a, &same) == CUDA_SUCCESS && same == 1);
        CHECK(strcmp(state_of(a.pid), "active") == 0);
        app_end(&a);
        stop_saged(SIGTERM);
        return 0;
}

static int scenario_flags(void) {
        char out[4096], line[64];
        const char *json = NULL;
        App a;

        start_saged();
        a = spawn_app(false, NULL);
        app_say(&a, 'm');
        app_line(&a, line, sizeof(line));
        CHECK(strcmp(line, "m 0") == 0);
        /* The listener tells the broker on its next turn (at most 250 ms): watched from outside. */
        for (int i = 0; i < 200; i++) {
                CHECK(sagectl(out, sizeof(out), "instances --json") == 0);
                if ((json = strstr(out, "holds managed memory")))
                        break;
                poll(NULL, 0, 20);
        }
        CHECK(json);
        CHECK(sagectl(out, sizeof(out), "suspend %d", (int)a.pid) != 0 && strstr(out, "managed memory"));
        CHECK(strcmp(state_of(a.pid), "active") == 0);
        app_end(&a);
        stop_saged(SIGTERM);
        return 0;
}

static void on_prepare(void *userdata, const SageMessage *m) {
        if (m->header.type == SAGE_MSG_SUSPEND_PREPARE)
                *(uint32_t *)userdata = m->header.request_id;
}

static void on_resumed(void *userdata, const SageMessage *m) {
        if (m->header.type == SAGE_MSG_INSTANCE_RESUMED)
                *(uint32_t *)userdata = m->header.request_id;
}

static void notice(SageBroker *b, unsigned type, uint32_t id, uint32_t status) {
        SageMessage m;
        sage_proto_init(&m, type, id);
        if (type == SAGE_MSG_SUSPEND_PREPARED)
                m.suspend_prepared.status = status;
        else
                m.instance_remapped.status = status;
        CHECK(sage_broker_notify(b, &m) == 0);
}

/*
 * An operator's `sagectl suspend` of this process, from a child; the child
 * closes `owner`'s connection unless NULL (the instance's connection is then
 * its parent's alone). Returns its pid: its exit status is sagectl's.
 */
static pid_t operator_suspend(SageBroker *owner) {
        pid_t op = fork();

        CHECK(op >= 0);
        if (op == 0) {
                char o[4096];
                if (owner)
                        close(sage_broker_fd(owner));
                _exit(sagectl(o, sizeof(o), "suspend %d", (int)getppid()));
        }
        return op;
}

/* Pumps `owner` until the broker's SUSPEND_PREPARE set *prepare_id (on_prepare), within 5 s. */
static void await_prepare(SageBroker *owner, const uint32_t *prepare_id) {
        for (int i = 0; i < 500 && !*prepare_id; i++) {
                struct pollfd p = { .fd = sage_broker_fd(owner), .events = POLLIN };
                poll(&p, 1, 10);
                CHECK(sage_broker_pump(owner) == 0);
        }
        CHECK(*prepare_id != 0);
}

/* Notices from anyone but the instance's connection, or with another id, change nothing. */
static int scenario_hostile(void) {
        const uint8_t uuid[16] = { 7 };
        char out[4096];
        uint32_t prepare_id = 0, resumed_id = 0;
        SageBroker *owner, *other;
        bool gate = false;
        SageHash key;
        uint64_t t;
        pid_t op;
        int status;

        start_saged();
        publish(SEED_SHARED, SIZE);
        key = sage_content_key(pattern(SEED_SHARED, SIZE), SIZE);
        owner = broker();
        sage_broker_on_notice(owner, on_prepare, &prepare_id);
        CHECK(sage_broker_instance_register_gate(owner, uuid, 0, 0, &gate) == 0 && gate);
        other = broker();
        /* Unasked, from the owner and from another connection. */
        for (uint32_t id = 0; id < 8; id++) {
                notice(owner, SAGE_MSG_SUSPEND_PREPARED, id, SAGE_GATE_OK);
                notice(owner, SAGE_MSG_INSTANCE_REMAPPED, id, SAGE_GATE_OK);
                notice(other, SAGE_MSG_SUSPEND_PREPARED, id, SAGE_GATE_OK);
                notice(other, SAGE_MSG_INSTANCE_REMAPPED, id, SAGE_GATE_FAILED);
        }
        CHECK(strcmp(state_of(getpid()), "active") == 0);
        /* An operator's suspend: the owner is asked; another connection answers for it with the right id. */
        op = operator_suspend(NULL);
        await_prepare(owner, &prepare_id);
        /* Its process releasing while preparing pins the extent, once however often it does. */
        for (int i = 0; i < 5; i++) {
                uint64_t id;
                int fd;
                CHECK(sage_broker_lookup(other, key, SIZE, 0, &id, &fd) == 0);
                close(fd);
                CHECK(sage_broker_release(other, id) == 0);
        }
        CHECK(stats().refs == 1);
        notice(other, SAGE_MSG_SUSPEND_PREPARED, prepare_id, SAGE_GATE_OK);
        notice(owner, SAGE_MSG_SUSPEND_PREPARED, prepare_id + 1, SAGE_GATE_OK);
        CHECK(strcmp(state_of(getpid()), "suspending") == 0);
        /* The owner's own answer with its id ends it. */
        notice(owner, SAGE_MSG_SUSPEND_PREPARED, prepare_id, SAGE_GATE_BUSY);
        CHECK(waitpid(op, &status, 0) == op && WIFEXITED(status) && WEXITSTATUS(status) == 1);
        CHECK(strcmp(state_of(getpid()), "active") == 0);
        CHECK(stats().refs == 0); /* the pin went with the handshake */

        /* A silent instance: the broker gives up at its deadline (8 s), the instance stays active. */
        prepare_id = 0;
        op = operator_suspend(owner);
        CHECK(waitpid(op, &status, 0) == op && WIFEXITED(status) && WEXITSTATUS(status) == 1);
        CHECK(sage_broker_pump(owner) == 0 && prepare_id != 0);
        CHECK(strcmp(state_of(getpid()), "active") == 0);
        /* Too late: not suspended; told to map again at once, and not asked again until it did. */
        sage_broker_on_notice(owner, on_resumed, &resumed_id);
        notice(owner, SAGE_MSG_SUSPEND_PREPARED, prepare_id, SAGE_GATE_OK);
        CHECK(strcmp(state_of(getpid()), "active") == 0);
        CHECK(sage_broker_pump(owner) == 0 && resumed_id != 0);
        CHECK(sagectl(out, sizeof(out), "suspend %d", (int)getpid()) == 1 && strstr(out, "not yet answered"));
        notice(owner, SAGE_MSG_INSTANCE_REMAPPED, resumed_id, SAGE_GATE_OK);
        sage_broker_on_notice(owner, on_prepare, &prepare_id);

        /* The instance goes while asked to prepare: the operator is answered at once, not at the deadline. */
        prepare_id = 0;
        op = operator_suspend(owner);
        await_prepare(owner, &prepare_id);
        t = sage_now_ns();
        sage_broker_free(owner);
        CHECK(waitpid(op, &status, 0) == op && WIFEXITED(status) && WEXITSTATUS(status) == 1);
        CHECK(sage_now_ns() - t < 4000000000ull); /* the prepare's deadline is 8 s */
        CHECK(strcmp(state_of(getpid()), "") == 0);
        sage_broker_free(other);
        stop_saged(SIGTERM);
        return 0;
}

/*
 * A connection outlives the process that opened it (a child inherited it):
 * the broker must never checkpoint the pid SO_PEERCRED named, which may
 * belong to another tenant's process by now. The registrant exits and is
 * reaped; its child registers on the connection, or reports idle on a
 * registration made before, and must never be asked to prepare.
 */
static void exited_peer_child(int go, int result, bool register_first) {
        const uint8_t uuid[16] = { 9 };
        uint32_t prepare_id = 0;
        SageBroker *b = broker();
        SageStats st;
        SageMessage m;
        bool gate = false;
        char c, verdict = 'r'; /* refused at registration */
        pid_t child;
        int r = 0;

        sage_broker_on_notice(b, on_prepare, &prepare_id);
        if (register_first)
                CHECK(sage_broker_instance_register_gate(b, uuid, 0, 1, &gate) == 0 && gate);
        child = fork();
        CHECK(child >= 0);
        if (child > 0)
                _exit(0);            /* the registrant goes; its parent reaps it */
        CHECK(read(go, &c, 1) == 1); /* reaped */
        if (!register_first)
                r = sage_broker_instance_register_gate(b, uuid, 0, 1, &gate);
        if (r == 0) {
                /* Idle for its 1 ms: due at once. A PREPARE comes before the reply to the next request. */
                sage_proto_init(&m, SAGE_MSG_INSTANCE_IDLE, 0);
                CHECK(sage_broker_notify(b, &m) == 0);
                CHECK(sage_broker_stats(b, &st) == 0);
                verdict = prepare_id ? 'p' : 'n';
        }
        CHECK(write(result, &verdict, 1) == 1);
        _exit(0);
}

static int scenario_exited_peer(void) {
        for (int round = 0; round < 2; round++) {
                int go[2], result[2], status;
                char verdict = 0;
                pid_t a;

                CHECK(pipe(go) == 0 && pipe(result) == 0);
                start_saged();
                a = fork();
                CHECK(a >= 0);
                if (a == 0)
                        exited_peer_child(go[0], result[1], round == 1);
                close(go[0]), close(result[1]); /* a child that dies ends the read below */
                CHECK(waitpid(a, &status, 0) == a && WIFEXITED(status) && WEXITSTATUS(status) == 0);
                CHECK(write(go[1], "g", 1) == 1);
                CHECK(read(result[0], &verdict, 1) == 1);
                printf("round %d (%s): %s\n", round, round ? "registered, then exited" : "exited, then registered",
                       verdict == 'r'   ? "registration refused"
                       : verdict == 'n' ? "not suspended"
                                        : "ASKED TO PREPARE");
                CHECK(verdict == 'r' || verdict == 'n');
                if (round == 0)
                        CHECK(verdict == 'r'); /* an instance whose process is gone is no instance */
                close(go[1]), close(result[0]);
                stop_saged(SIGTERM);
        }
        return 0;
}

static void count_prepare(void *userdata, const SageMessage *m) {
        uint32_t *seen = userdata;

        if (m->header.type == SAGE_MSG_SUSPEND_PREPARE) {
                seen[0]++;
                seen[1] = m->header.request_id;
        }
}

/*
 * An idle suspend that fails (the instance answers BUSY, or is refused) is
 * tried again after the busy back-off (1 s), not every idle period: with
 * SAGE_SUSPEND_IDLE=1ms the broker sent SUSPEND_PREPARE a thousand times a
 * second to an instance that keeps answering BUSY (and spun its loop at that
 * rate for one it refused), which any tenant can ask for.
 */
static int scenario_idle_retry(void) {
        const uint8_t uuid[16] = { 10 };
        uint32_t seen[2] = { 0, 0 }; /* how many PREPAREs, the last one's id */
        SageBroker *b;
        SageMessage m;
        bool gate = false;
        uint64_t end;

        start_saged();
        b = broker();
        sage_broker_on_notice(b, count_prepare, seen);
        CHECK(sage_broker_instance_register_gate(b, uuid, 0, 1, &gate) == 0 && gate);
        sage_proto_init(&m, SAGE_MSG_INSTANCE_IDLE, 0);
        CHECK(sage_broker_notify(b, &m) == 0);
        for (int i = 0; i < 500 && !seen[0]; i++) {
                struct pollfd p = { .fd = sage_broker_fd(b), .events = POLLIN };
                poll(&p, 1, 10);
                CHECK(sage_broker_pump(b) == 0);
        }
        CHECK(seen[0] == 1);
        notice(b, SAGE_MSG_SUSPEND_PREPARED, seen[1], SAGE_GATE_BUSY);
        /* A rate, not a wait: 300 ms hold 300 idle periods and under a third of the back-off. */
        end = sage_now_ns() + 300000000ull;
        while (sage_now_ns() < end) {
                struct pollfd p = { .fd = sage_broker_fd(b), .events = POLLIN };
                poll(&p, 1, 10);
                CHECK(sage_broker_pump(b) == 0);
                if (seen[0] > 1)
                        notice(b, SAGE_MSG_SUSPEND_PREPARED, seen[1], SAGE_GATE_BUSY);
        }
        printf("SUSPEND_PREPAREs in 300 ms after a BUSY answer: %u\n", seen[0] - 1);
        CHECK(seen[0] == 1);
        CHECK(strcmp(state_of(getpid()), "idle") == 0);
        sage_broker_free(b);
        stop_saged(SIGTERM);
        return 0;
}

/* The broker's extent hits so far (a LOOKUP that found the key). */
static uint64_t hits_now(void) {
        return stats().hits;
}

/*
 * A kernel longer than the broker's wait for SUSPEND_PREPARED (known defect
 * 4): libsage's synchronize outlasts the broker, which gives up; libsage
 * then parks anyway. It must not stay parked waiting for a checkpoint that
 * never comes, nor find its extent evicted: the broker answers the late
 * SUSPEND_PREPARED with INSTANCE_RESUMED, the instance maps its extent again
 * by itself, and what it released stays pinned until then.
 */
static int scenario_long_kernel(void) {
        char out[4096], env[64], line[64];
        int go[2], same = 0, r = 1;
        uint64_t hits;
        App a;

        CHECK(pipe(go) == 0); /* the read end without O_CLOEXEC: the app's kernel waits on it */
        snprintf(env, sizeof(env), "SUSPEND_TEST_KERNEL_FD=%d", go[0]);
        saged_option = "--suspend-prepare-timeout=300ms";
        start_saged();
        saged_option = NULL;
        a = shared_app(env);
        close(go[0]);
        app_say(&a, 'l');
        app_line(&a, line, sizeof(line));
        CHECK(strcmp(line, "l 0") == 0);
        /* libsage drains (nothing in flight) and synchronizes: the kernel runs past the broker's 300 ms. */
        CHECK(sagectl(out, sizeof(out), "suspend %d", (int)a.pid) != 0 && strstr(out, "in time"));
        CHECK(strcmp(state_of(a.pid), "active") == 0);
        hits = hits_now();
        CHECK(write(go[1], "g", 1) == 1); /* the kernel ends: libsage releases its extent, answers late */
        /* It maps the extent again with no call of the app's (a LOOKUP hit): watched from outside. */
        for (int i = 0; i < 500 && hits_now() == hits; i++)
                poll(NULL, 0, 20);
        CHECK(hits_now() > hits);
        CHECK(sagectl(out, sizeof(out), "evict --unreferenced") == 0);
        CHECK(stats().extents == 1);
        CHECK(app_read(&a, &same) == CUDA_SUCCESS && same == 1);
        /* Its late handshake ended (INSTANCE_REMAPPED): it is suspended again as any other. */
        for (int i = 0; i < 100 && r != 0; i++) {
                r = sagectl(out, sizeof(out), "suspend %d", (int)a.pid);
                CHECK(r == 0 || strstr(out, "not yet answered"));
                if (r)
                        poll(NULL, 0, 20);
        }
        CHECK(r == 0 && strcmp(state_of(a.pid), "suspended") == 0);
        CHECK(app_read(&a, &same) == CUDA_SUCCESS && same == 1);
        close(go[1]);
        app_end(&a);
        stop_saged(SIGTERM);
        return 0;
}

/* The simulated driver's checkpoint API, as saged calls it, on the app's pid: Lock then Checkpoint, or Restore then Unlock. */
static void checkpoint_by_hand(pid_t pid, bool restore) {
        void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
        CUresult (*lock)(int, CUcheckpointLockArgs *), (*step)(int, void *), (*finish)(int, void *);
        CUcheckpointLockArgs args = { .timeoutMs = TIMEOUT_MS };

        CHECK(lib);
        if (!restore) {
                CHECK((*(void **)&lock = dlsym(lib, "cuCheckpointProcessLock")));
                CHECK((*(void **)&step = dlsym(lib, "cuCheckpointProcessCheckpoint")));
                CHECK(lock(pid, &args) == CUDA_SUCCESS && step(pid, NULL) == CUDA_SUCCESS);
                return;
        }
        CHECK((*(void **)&step = dlsym(lib, "cuCheckpointProcessRestore")));
        CHECK((*(void **)&finish = dlsym(lib, "cuCheckpointProcessUnlock")));
        CHECK(step(pid, NULL) == CUDA_SUCCESS && finish(pid, NULL) == CUDA_SUCCESS);
}

/*
 * A call through an export-table slot (a trampoline) that stays inside the
 * driver is in flight until it returns: the drain before a suspend waits
 * for it, and the broker extents stay mapped under it. Before, the
 * trampoline counted the call out before the driver ran it, so the
 * extents were released under it and the broker's lock waited instead.
 */
static int scenario_tramp_in_flight(void) {
        char out[4096], line[64];
        uint64_t hits;
        int status, same = 0;
        pid_t op;
        App a;

        start_saged();
        a = shared_app("SAGE_GATE_EXPORT_TABLES=1");
        app_say(&a, 'x');
        app_line(&a, line, sizeof(line));
        CHECK(strcmp(line, "x") == 0); /* inside the driver, through a trampoline */
        hits = stats().hits;
        /* Still inside when the drain's 2 s are over: BUSY, the extents never released (nor looked up again). */
        CHECK(sagectl(out, sizeof(out), "suspend %d", (int)a.pid) != 0 && strstr(out, "in flight"));
        CHECK(strcmp(state_of(a.pid), "active") == 0);
        CHECK(stats().hits == hits);
        app_say(&a, 'p');
        app_line(&a, line, sizeof(line));
        CHECK(strcmp(line, "p 1") == 0);
        /* The call returns while the drain waits: PREPARED only after it; mapped until then. */
        op = fork();
        CHECK(op >= 0);
        if (op == 0) {
                char o[4096];
                _exit(sagectl(o, sizeof(o), "suspend %d", (int)a.pid));
        }
        for (int i = 0; i < 500 && strcmp(state_of(a.pid), "suspending") != 0; i++)
                poll(NULL, 0, 5); /* the broker's state, watched from outside: nothing to wait on */
        app_say(&a, 'p');
        app_line(&a, line, sizeof(line));
        CHECK(strcmp(line, "p 1") == 0);
        app_say(&a, 'g');
        app_line(&a, line, sizeof(line));
        CHECK(strcmp(line, "g 103") == 0); /* 'g' */
        CHECK(waitpid(op, &status, 0) == op && WIFEXITED(status) && WEXITSTATUS(status) == 0);
        CHECK(strcmp(state_of(a.pid), "suspended") == 0 && mem_used(a.pid) == 0);
        CHECK(app_read(&a, &same) == CUDA_SUCCESS && same == 1);
        app_end(&a);
        stop_saged(SIGTERM);
        return 0;
}

/*
 * The gate broke for good (the broker died with extents parked) and the app
 * calls an export-table slot, whose return type libsage does not know: the
 * call goes on into the driver, which holds it while the process is
 * checkpointed and returns it, right, once someone restores the process.
 * Before, the trampoline returned 46 in %eax to a caller expecting a double.
 */
static int scenario_export_broken(void) {
        int (*wait_blocked)(int, unsigned, unsigned);
        char out[4096], line[64];
        int same = 1;
        App a;

        start_saged();
        setenv("SAGE_SUSPEND_RECONNECT", "1s", 1); /* no broker comes back: the gate breaks after 1 s */
        a = shared_app("SAGE_GATE_EXPORT_TABLES=1");
        unsetenv("SAGE_SUSPEND_RECONNECT");
        CHECK(sagectl(out, sizeof(out), "suspend %d", (int)a.pid) == 0);
        stop_saged(SIGKILL);
        CHECK(app_read(&a, &same) == CUDA_ERROR_DEVICE_UNAVAILABLE); /* a CUresult entry point: the gate's error */
        app_say(&a, 'c');
        CHECK(mem_used(a.pid) == 0);
        CHECK((*(void **)&wait_blocked =
                       dlsym(dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL), "fakecudaProcessWaitBlocked")));
        CHECK(wait_blocked(a.pid, 1, TIMEOUT_MS) == CUDA_SUCCESS); /* inside the driver, held there */
        checkpoint_by_hand(a.pid, true);
        app_line(&a, line, sizeof(line));
        CHECK(strcmp(line, "c 1") == 0);
        kill(a.pid, SIGKILL);
        waitpid(a.pid, NULL, 0);
        close(a.in);
        close(a.out);
        return 0;
}

/*
 * A broker of the test's own for resume_conn_closed: it answers HELLO and
 * INSTANCE_REGISTER, hands the instance's connection to the test, and
 * records SUSPEND_PREPARED and INSTANCE_RESUME.
 */
static struct {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        int instance_fd, prepared, resume_asked;
} fb = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, -1, -1, 0 };

static void fb_answer(int fd, const SageMessage *req) {
        SageMessage m;

        switch (req->header.type) {
        case SAGE_MSG_HELLO:
                sage_proto_init(&m, SAGE_MSG_HELLO_REPLY, req->header.request_id);
                m.hello_reply = (SageHelloReply){ SAGE_PROTO_VERSION, 1, 0, 2u << 20,
                                                  SAGE_FEATURE_INSTANCES | SAGE_FEATURE_SUSPEND_GATE };
                break;
        case SAGE_MSG_INSTANCE_REGISTER:
                sage_proto_init(&m, SAGE_MSG_INSTANCE_REGISTER_REPLY, req->header.request_id);
                break;
        case SAGE_MSG_INSTANCE_RESUME: fb.resume_asked++; return; /* never answered: the connection failed first */
        case SAGE_MSG_SUSPEND_PREPARED: fb.prepared = (int)req->suspend_prepared.status; return;
        default:
                if (sage_proto_notice_to_broker(req->header.type))
                        return;
                sage_proto_error(&m, req->header.request_id, SAGE_ERR_UNKNOWN_TYPE, "not here");
        }
        CHECK(sage_proto_send_message(fd, &m, NULL, 0) == 0);
        if (req->header.type == SAGE_MSG_INSTANCE_REGISTER)
                fb.instance_fd = fd;
}

/* One message from a connection, answered: false once the connection is gone. */
static bool fb_serve(int fd) {
        static uint8_t buf[SAGE_PROTO_MAX_MESSAGE];
        int fds[SAGE_PROTO_MAX_FDS];
        size_t n_fds = 0;
        ssize_t len = sage_proto_recv(fd, buf, sizeof(buf), fds, SAGE_PROTO_MAX_FDS, &n_fds);
        SageMessage m;

        if (len <= 0)
                return false;
        CHECK(n_fds == 0 && sage_proto_decode(buf, (size_t)len, &m, NULL) == 0);
        pthread_mutex_lock(&fb.lock);
        fb_answer(fd, &m);
        pthread_cond_broadcast(&fb.cond);
        pthread_mutex_unlock(&fb.lock);
        return true;
}

static void *fake_broker(void *listen_fd) {
        struct pollfd p[8] = { { .fd = *(int *)listen_fd, .events = POLLIN } };
        size_t n = 1;

        for (;;) {
                CHECK(poll(p, n, -1) > 0);
                if ((p[0].revents & POLLIN) && n < SAGE_ARRAY_SIZE(p))
                        p[n++] = (struct pollfd){ .fd = accept4(p[0].fd, NULL, NULL, SOCK_CLOEXEC), .events = POLLIN };
                for (size_t i = 1; i < n; i++)
                        if (p[i].revents && !fb_serve(p[i].fd))
                                p[i].fd = -1; /* gone; its slot stays (a few connections at most) */
        }
        return NULL;
}

/* Wait (bounded) until *field differs from `unset`. */
static int fb_wait(const int *field, int unset) {
        struct timespec ts;
        int v;

        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += TIMEOUT_MS / 1000;
        pthread_mutex_lock(&fb.lock);
        while ((v = *field) == unset)
                if (pthread_cond_timedwait(&fb.cond, &fb.lock, &ts) != 0)
                        break;
        pthread_mutex_unlock(&fb.lock);
        CHECK(v != unset);
        return v;
}

/*
 * An app thread's INSTANCE_RESUME fails on the connection (here: the
 * broker stops reading, so the send fails with EPIPE) and closes it; the
 * listener, which polls it, must take that as the broker gone: nothing
 * parked, so the process restores itself and the call goes on. Before,
 * poll() skipped the closed fd (-1): no self-restore, and every call
 * waited its 30 s and failed.
 */
static int scenario_resume_conn_closed(void) {
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
        int listen_fd, same = 0;
        SageMessage m;
        pthread_t t;
        uint64_t start;
        App a;

        snprintf(dir, sizeof(dir), "/tmp/sage-suspend-test-XXXXXX");
        CHECK(mkdtemp(dir));
        snprintf(socket_path, sizeof(socket_path), "%s/saged.sock", dir);
        snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", socket_path);
        listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        CHECK(listen_fd >= 0 && bind(listen_fd, (struct sockaddr *)&addr, sizeof(addr)) == 0 &&
              listen(listen_fd, 8) == 0);
        CHECK(pthread_create(&t, NULL, fake_broker, &listen_fd) == 0);
        a = spawn_app(false, NULL); /* registered while it took its context */
        fb_wait(&fb.instance_fd, -1);
        sage_proto_init(&m, SAGE_MSG_SUSPEND_PREPARE, 7);
        CHECK(sage_proto_send_message(fb.instance_fd, &m, NULL, 0) == 0);
        CHECK(fb_wait(&fb.prepared, -1) == SAGE_GATE_OK);
        checkpoint_by_hand(a.pid, false);
        CHECK(mem_used(a.pid) == 0);
        CHECK(shutdown(fb.instance_fd, SHUT_RD) == 0);
        start = sage_now_ns();
        CHECK(app_read(&a, &same) == CUDA_SUCCESS && same == 1);
        printf("the call returned after %.0f ms\n", (double)(sage_now_ns() - start) / 1e6);
        CHECK(sage_now_ns() - start < 5000000000ull);
        CHECK(fb.resume_asked == 0); /* its send failed */
        CHECK(mem_used(a.pid) >= SIZE);
        start = sage_now_ns();
        CHECK(app_read(&a, &same) == CUDA_SUCCESS && same == 1);
        CHECK(sage_now_ns() - start < 1000000000ull);
        app_end(&a);
        unlink(socket_path);
        rmdir(dir);
        return 0;
}

int main(int argc, char **argv) {
        static const struct {
                const char *name;
                int (*run)(void);
        } scenarios[] = {
#define SCENARIO(name) { #name, scenario_##name },
#define HELPER(name) { #name, run_##name },
#include "suspend_scenarios.def"
#undef SCENARIO
#undef HELPER
        };

        if (argc != 4) {
                fprintf(stderr, "usage: suspend-test SCENARIO SAGED SAGECTL\n");
                return 2;
        }
        saged_path = argv[2];
        sagectl_path = argv[3];
        signal(SIGPIPE, SIG_IGN);
        setenv("SAGE_FAKE_LOCAL_THREADS", LOCAL_THREADS, 0); /* every app's contexts hold local memory */
        if (strcmp(argv[1], "app") != 0 && strcmp(argv[1], "bench") != 0) {
                setvbuf(stdout, NULL, _IONBF, 0);
                atexit(cleanup);
        }
        for (size_t i = 0; i < SAGE_ARRAY_SIZE(scenarios); i++)
                if (strcmp(argv[1], scenarios[i].name) == 0)
                        return scenarios[i].run();
        fprintf(stderr, "suspend-test: no scenario %s\n", argv[1]);
        return 2;
}
