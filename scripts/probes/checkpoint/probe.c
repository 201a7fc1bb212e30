/*
 * Probes of the driver's checkpoint API for the design of instance suspend
 * (issue 12). Not project code: a measuring tool for the GPU machine, run by
 * run.sh next to it. Each probe is one process that forks the processes it
 * checkpoints (before its own cuInit, so they can use CUDA), drives them
 * through pipes with bounded waits, calls cuCheckpointProcess* on their pids
 * as saged will, prints ONE line of facts `NAME: key=value ...`, and kills
 * what it started. A SIGALRM bound ends a probe whose driver call hangs.
 *
 *   probe block            does a call made while LOCKED / CHECKPOINTED block,
 *                          and return after Restore + Unlock (not before)?
 *   probe self             can a checkpointed process restore itself from one
 *                          of its threads (while another is blocked in a call)?
 *   probe reservation      do empty cuMemAddressReserve ranges survive a
 *                          checkpoint/restore? can VMM memory be mapped at the
 *                          same addresses after restore?
 *   probe unmapped-import  a process that imported another's VMM export, then
 *                          unmapped and released it before the checkpoint:
 *                          does restore work? re-import at the same address?
 *   probe held-import      the control: the import still mapped (measured on
 *                          the H100: restore NOT_SUPPORTED, stuck for good)
 *   probe ctxmem           context footprint (nvidia-smi) with the default
 *                          stack limit, 16, 256, and under libsage with
 *                          SAGE_CTX_STACK_LIMIT=16 (PROBE_LIBSAGE=path)
 *
 * Build: gcc -O2 -I/usr/local/cuda/include probe.c -lcuda -lpthread -o probe
 */
#define _GNU_SOURCE
#include <cuda.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../../../tests/gpu/fd_pass.h"

#define MIB ((size_t)1 << 20)
#define PATTERN 0x5a5a1234u
#define IMPORT_PATTERN 0x0badf00du
#define MAX_CHILDREN 4

static const char *probe_name = "probe";
static char facts[4096]; /* the one line, built up as the probe goes */

static double now_ms(void) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static const char *ename(CUresult r) {
        const char *s = NULL;
        if (cuGetErrorName(r, &s) != CUDA_SUCCESS || !s)
                return "?";
        return s;
}

static void fact(const char *fmt, ...) {
        size_t len = strlen(facts);
        va_list ap;

        if (len && len < sizeof(facts) - 1)
                facts[len++] = ' ';
        va_start(ap, fmt);
        vsnprintf(facts + len, sizeof(facts) - len, fmt, ap);
        va_end(ap);
}

/* ------------------------------------------------------------------ children */

typedef struct Child {
        pid_t pid;
        int to, from; /* pipes: commands in, lines out */
        char buf[1024];
        size_t len;
} Child;

static Child children[MAX_CHILDREN];
static int nchildren;

static void kill_children(void) {
        for (int i = 0; i < nchildren; i++)
                if (children[i].pid > 0) {
                        kill(children[i].pid, SIGKILL);
                        waitpid(children[i].pid, NULL, 0);
                        children[i].pid = 0;
                }
}

static void finish(void) {
        kill_children();
        printf("%s: %s\n", probe_name, facts);
        fflush(stdout);
}

static void on_alarm(int sig) {
        (void)sig;
        /* A driver call of the probe itself hung: that is the fact. */
        fact("probe_timeout=yes");
        finish();
        _exit(3);
}

/* Start fn(in, out, arg) in a child process; it must not return. */
static Child *child_start(void (*fn)(FILE *in, int out, void *arg), void *arg) {
        int down[2], up[2];
        Child *c = &children[nchildren];

        if (nchildren == MAX_CHILDREN || pipe(down) < 0 || pipe(up) < 0)
                return NULL;
        c->pid = fork();
        if (c->pid < 0)
                return NULL;
        if (c->pid == 0) {
                close(down[1]);
                close(up[0]);
                alarm(0);
                fn(fdopen(down[0], "r"), up[1], arg);
                _exit(0);
        }
        close(down[0]);
        close(up[1]);
        c->to = down[1];
        c->from = up[0];
        c->len = 0;
        nchildren++;
        return c;
}

static void child_send(Child *c, const char *line) {
        if (write(c->to, line, strlen(line)) < 0 || write(c->to, "\n", 1) < 0)
                fact("send_failed=yes");
}

/* The next line of c that starts with prefix, within timeout_ms; false: none (timeout or exit). */
static bool child_expect(Child *c, const char *prefix, char *line, size_t size, int timeout_ms) {
        double deadline = now_ms() + timeout_ms;

        for (;;) {
                char *nl;
                while ((nl = memchr(c->buf, '\n', c->len))) {
                        size_t n = (size_t)(nl - c->buf);
                        bool match = strncmp(c->buf, prefix, strlen(prefix)) == 0;
                        if (match && line) {
                                size_t k = n < size - 1 ? n : size - 1;
                                memcpy(line, c->buf, k);
                                line[k] = 0;
                        }
                        memmove(c->buf, nl + 1, c->len - n - 1);
                        c->len -= n + 1;
                        if (match)
                                return true;
                }
                int left = (int)(deadline - now_ms());
                if (left <= 0)
                        return false;
                struct pollfd p = { .fd = c->from, .events = POLLIN };
                if (poll(&p, 1, left) <= 0)
                        continue;
                ssize_t r = read(c->from, c->buf + c->len, sizeof(c->buf) - c->len - 1);
                if (r <= 0)
                        return false;
                c->len += (size_t)r;
        }
}

static void say(int out, const char *fmt, ...) {
        char line[512];
        va_list ap;
        size_t n;

        va_start(ap, fmt);
        vsnprintf(line, sizeof(line) - 1, fmt, ap);
        va_end(ap);
        n = strlen(line);
        line[n++] = '\n';
        /* One write: lines of two threads never interleave (a pipe write up to PIPE_BUF is atomic). */
        if (write(out, line, n) < 0)
                _exit(1);
}

static bool wait_command(FILE *in, const char *want) {
        char b[128];
        while (fgets(b, sizeof(b), in))
                if (strncmp(b, want, strlen(want)) == 0)
                        return true;
        return false;
}

#define CHILD_CK(out, call)                                                              \
        do {                                                                             \
                CUresult r_ = (call);                                                    \
                if (r_ != CUDA_SUCCESS) {                                                \
                        say(out, "error %s = %s (line %d)", #call, ename(r_), __LINE__); \
                        _exit(1);                                                        \
                }                                                                        \
        } while (0)

static CUcontext child_context(int out) {
        CUdevice dev;
        CUcontext ctx;
        CHILD_CK(out, cuInit(0));
        CHILD_CK(out, cuDeviceGet(&dev, 0));
        CHILD_CK(out, cuDevicePrimaryCtxRetain(&ctx, dev));
        CHILD_CK(out, cuCtxSetCurrent(ctx));
        return ctx;
}

static CUdeviceptr child_private(int out, size_t bytes, unsigned pattern) {
        CUdeviceptr p;
        CHILD_CK(out, cuMemAlloc(&p, bytes));
        CHILD_CK(out, cuMemsetD32(p, pattern, bytes / 4));
        CHILD_CK(out, cuCtxSynchronize());
        return p;
}

/* Every word of [p, p+bytes) equals pattern? */
static bool check_words(CUdeviceptr p, size_t bytes, unsigned pattern, CUresult *r) {
        unsigned *h = malloc(bytes);
        bool ok = false;
        if (!h)
                return false;
        *r = cuMemcpyDtoH(h, p, bytes);
        if (*r == CUDA_SUCCESS) {
                ok = true;
                for (size_t i = 0; i < bytes / 4; i++)
                        ok &= h[i] == pattern;
        }
        free(h);
        return ok;
}

/* ------------------------------------------------------------------ the controller's calls */

static CUresult ck_lock(pid_t pid, unsigned timeout_ms) {
        CUcheckpointLockArgs a;
        memset(&a, 0, sizeof(a));
        a.timeoutMs = timeout_ms;
        return cuCheckpointProcessLock(pid, &a);
}

static CUresult ck_checkpoint(pid_t pid) {
        CUcheckpointCheckpointArgs a;
        memset(&a, 0, sizeof(a));
        return cuCheckpointProcessCheckpoint(pid, &a);
}

static CUresult ck_restore(pid_t pid) {
        CUcheckpointRestoreArgs a;
        memset(&a, 0, sizeof(a));
        return cuCheckpointProcessRestore(pid, &a);
}

static CUresult ck_unlock(pid_t pid) {
        CUcheckpointUnlockArgs a;
        memset(&a, 0, sizeof(a));
        return cuCheckpointProcessUnlock(pid, &a);
}

static const char *state_name(pid_t pid) {
        CUprocessState s;
        CUresult r = cuCheckpointProcessGetState(pid, &s);
        if (r != CUDA_SUCCESS)
                return ename(r);
        switch (s) {
        case CU_PROCESS_STATE_RUNNING: return "RUNNING";
        case CU_PROCESS_STATE_LOCKED: return "LOCKED";
        case CU_PROCESS_STATE_CHECKPOINTED: return "CHECKPOINTED";
        case CU_PROCESS_STATE_FAILED: return "FAILED";
        }
        return "?";
}

/* The process's GPU memory as nvidia-smi lists it, in MiB; 0 when it is not listed. */
static long gpu_mib(pid_t pid) {
        char line[256];
        long mib = 0;
        FILE *p =
                popen("nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits 2>/dev/null", "r");
        if (!p)
                return -1;
        while (fgets(line, sizeof(line), p))
                if (atol(line) == (long)pid && strchr(line, ','))
                        mib = atol(strchr(line, ',') + 1);
        pclose(p);
        return mib;
}

static void controller_init(void) {
        CUresult r = cuInit(0);
        if (r != CUDA_SUCCESS) {
                fact("controller_cuInit=%s", ename(r));
                finish();
                exit(1);
        }
}

/* ------------------------------------------------------------------ block */

static void block_target(FILE *in, int out, void *arg) {
        (void)arg;
        child_context(out);
        CUdeviceptr p = child_private(out, 256 * MIB, PATTERN);
        say(out, "ready");
        while (wait_command(in, "call")) {
                unsigned v = 0;
                double t0 = now_ms();
                CUresult r = cuMemcpyDtoH(&v, p, 4);
                say(out, "returned r=%s value_ok=%s call_ms=%.1f", ename(r), v == PATTERN ? "yes" : "no",
                    now_ms() - t0);
        }
        _exit(0);
}

/* A target started and ready (its "ready" line into `line`), the controller
 * initialised; NULL, with the fact said, when the target did not come up. */
static Child *target_ready(void (*fn)(FILE *in, int out, void *arg), char *line, size_t size) {
        Child *t = child_start(fn, NULL);

        controller_init();
        if (!t || !child_expect(t, "ready", line, size, 60000)) {
                fact("target_ready=no");
                return NULL;
        }
        return t;
}

static void probe_block(void) {
        char line[256] = "";
        Child *t = target_ready(block_target, NULL, 0);

        if (!t)
                return;
        /* LOCKED: the call is made after the lock. */
        fact("lock=%s", ename(ck_lock(t->pid, 5000)));
        child_send(t, "call");
        fact("locked_call_blocks=%s", child_expect(t, "returned", line, sizeof(line), 2000) ? "no" : "yes");
        fact("unlock=%s", ename(ck_unlock(t->pid)));
        if (strncmp(line, "returned", 8) != 0 && child_expect(t, "returned", line, sizeof(line), 10000))
                fact("locked_after_unlock=[%s]", line + 9);
        else if (strncmp(line, "returned", 8) != 0)
                fact("locked_after_unlock=never");
        else
                fact("locked_returned_early=[%s]", line + 9);
        /* CHECKPOINTED: the call is made after the checkpoint. */
        line[0] = 0;
        fact("lock2=%s", ename(ck_lock(t->pid, 5000)));
        double t0 = now_ms();
        CUresult cr = ck_checkpoint(t->pid);
        fact("checkpoint=%s checkpoint_ms=%.0f", ename(cr), now_ms() - t0);
        fact("state=%s", state_name(t->pid));
        fact("gpu_mib_checkpointed=%ld", gpu_mib(t->pid));
        child_send(t, "call");
        bool early = child_expect(t, "returned", line, sizeof(line), 2000);
        fact("checkpointed_call_blocks=%s", early ? "no" : "yes");
        /* One call per statement: the order of a call's arguments is unspecified. */
        t0 = now_ms();
        CUresult rr = ck_restore(t->pid);
        double restore_ms = now_ms() - t0;
        fact("restore=%s restore_ms=%.0f", ename(rr), restore_ms);
        fact("state_after_restore=%s", state_name(t->pid));
        if (!early)
                fact("blocked_until_unlock=%s",
                     child_expect(t, "returned", line, sizeof(line), 1000) ? "no(returned while LOCKED)" : "yes");
        fact("unlock2=%s", ename(ck_unlock(t->pid)));
        if (early || strncmp(line, "returned", 8) == 0)
                fact("checkpointed_call=[%s]", line + 9);
        else if (child_expect(t, "returned", line, sizeof(line), 10000))
                fact("checkpointed_call_after_unlock=[%s]", line + 9);
        else
                fact("checkpointed_call_after_unlock=never");
}

/* ------------------------------------------------------------------ self */

typedef struct SelfCall {
        CUdeviceptr p;
        CUcontext ctx;
        int out;
        pthread_barrier_t ready, go;
} SelfCall;

/* Made current before the checkpoint: its call after "go" is the one that blocks. */
static void *self_blocked_call(void *arg) {
        SelfCall *c = arg;
        unsigned v = 0;
        cuCtxSetCurrent(c->ctx);
        pthread_barrier_wait(&c->ready);
        pthread_barrier_wait(&c->go);
        double t0 = now_ms();
        CUresult r = cuMemcpyDtoH(&v, c->p, 4);
        say(c->out, "thread returned r=%s value_ok=%s call_ms=%.1f", ename(r), v == PATTERN ? "yes" : "no",
            now_ms() - t0);
        return NULL;
}

static void self_target(FILE *in, int out, void *arg) {
        SelfCall call;
        pthread_t thread;
        int tid = -1;
        (void)arg;
        call.ctx = child_context(out);
        call.p = child_private(out, 256 * MIB, PATTERN);
        call.out = out;
        pthread_barrier_init(&call.ready, NULL, 2);
        pthread_barrier_init(&call.go, NULL, 2);
        pthread_create(&thread, NULL, self_blocked_call, &call);
        pthread_barrier_wait(&call.ready);
        say(out, "ready");
        if (!wait_command(in, "go"))
                _exit(0);
        /* One thread makes a call (it blocks, if `block` says calls block); this one restores. */
        pthread_barrier_wait(&call.go);
        usleep(200 * 1000); /* let it enter the driver: a probe, not a protocol */
        CUresult rt = cuCheckpointProcessGetRestoreThreadId(getpid(), &tid);
        CUprocessState st = (CUprocessState)-1;
        CUresult rs = cuCheckpointProcessGetState(getpid(), &st);
        double t0 = now_ms();
        CUresult r1 = ck_restore(getpid());
        double t1 = now_ms();
        CUresult r2 = ck_unlock(getpid());
        say(out,
            "self own_state_r=%s own_state=%d restore_thread_id_r=%s restore_tid=%d pid=%d self_restore=%s "
            "self_restore_ms=%.0f self_unlock=%s",
            ename(rs), (int)st, ename(rt), tid, (int)getpid(), ename(r1), t1 - t0, ename(r2));
        pthread_join(thread, NULL);
        CUresult rc = CUDA_SUCCESS;
        bool data_ok = check_words(call.p, 256 * MIB, PATTERN, &rc);
        say(out, "after data_ok=%s r=%s", data_ok ? "yes" : "no", ename(rc));
        wait_command(in, "exit");
        _exit(0);
}

static void probe_self(void) {
        char line[512];
        Child *t = target_ready(self_target, NULL, 0);

        if (!t)
                return;
        fact("lock=%s", ename(ck_lock(t->pid, 5000)));
        fact("checkpoint=%s", ename(ck_checkpoint(t->pid)));
        child_send(t, "go");
        if (child_expect(t, "self", line, sizeof(line), 20000)) {
                fact("%s", line + 5);
        } else {
                /* The self-restore hung: restore from outside so the thread's facts still come. */
                fact("self_restore=hung");
                fact("rescue_restore=%s", ename(ck_restore(t->pid)));
                fact("rescue_unlock=%s", ename(ck_unlock(t->pid)));
        }
        if (child_expect(t, "thread", line, sizeof(line), 10000))
                fact("blocked_thread=[%s]", line + 7);
        else
                fact("blocked_thread=never_returned");
        if (child_expect(t, "after", line, sizeof(line), 10000))
                fact("%s", line + 6);
        fact("final_state=%s", state_name(t->pid));
}

/* ------------------------------------------------------------------ reservation */

static CUmemAllocationProp vmm_prop(bool exportable) {
        CUmemAllocationProp pr;
        memset(&pr, 0, sizeof(pr));
        pr.type = CU_MEM_ALLOCATION_TYPE_PINNED;
        pr.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        pr.location.id = 0;
        pr.requestedHandleTypes = exportable ? CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR : CU_MEM_HANDLE_TYPE_NONE;
        return pr;
}

static CUresult map_at(CUdeviceptr va, size_t size, CUmemGenericAllocationHandle h, unsigned long long access) {
        CUmemAccessDesc a;
        CUresult r = cuMemMap(va, size, 0, h, 0);
        if (r != CUDA_SUCCESS)
                return r;
        memset(&a, 0, sizeof(a));
        a.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        a.location.id = 0;
        a.flags = (CUmemAccess_flags)access;
        return cuMemSetAccess(va, size, &a, 1);
}

/* Map fresh private memory at va, fill, read back; the outcome in why. */
static const char *map_fresh(CUdeviceptr va, size_t g, unsigned pattern, char *why, size_t size) {
        CUmemAllocationProp pr = vmm_prop(false);
        CUmemGenericAllocationHandle h;
        CUresult r = cuMemCreate(&h, g, &pr, 0);
        if (r == CUDA_SUCCESS)
                r = map_at(va, g, h, CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
        if (r == CUDA_SUCCESS)
                r = cuMemsetD32(va, pattern, g / 4);
        if (r == CUDA_SUCCESS)
                r = cuCtxSynchronize();
        if (r != CUDA_SUCCESS) {
                snprintf(why, size, "%s", ename(r));
                return why;
        }
        snprintf(why, size, "%s", check_words(va, g, pattern, &r) ? "ok" : "data_wrong");
        return why;
}

static void reservation_target(FILE *in, int out, void *arg) {
        CUmemAllocationProp pr = vmm_prop(false);
        CUdeviceptr empty, empty2, remap, kept, probe_va = 0;
        CUmemGenericAllocationHandle h;
        size_t g;
        (void)arg;
        child_context(out);
        CHILD_CK(out, cuMemGetAllocationGranularity(&g, &pr, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
        CHILD_CK(out, cuMemAddressReserve(&empty, 16 * g, 0, 0, 0));  /* never mapped */
        CHILD_CK(out, cuMemAddressReserve(&empty2, 16 * g, 0, 0, 0)); /* never mapped: asked for again after */
        CHILD_CK(out, cuMemAddressReserve(&remap, g, 0, 0, 0));       /* mapped, then unmapped before */
        CHILD_CK(out, cuMemCreate(&h, g, &pr, 0));
        CHILD_CK(out, map_at(remap, g, h, CU_MEM_ACCESS_FLAGS_PROT_READWRITE));
        CHILD_CK(out, cuMemsetD32(remap, PATTERN, g / 4));
        CHILD_CK(out, cuCtxSynchronize());
        CHILD_CK(out, cuMemUnmap(remap, g));
        CHILD_CK(out, cuMemRelease(h));
        CHILD_CK(out, cuMemAddressReserve(&kept, g, 0, 0, 0)); /* stays mapped */
        CHILD_CK(out, cuMemCreate(&h, g, &pr, 0));
        CHILD_CK(out, map_at(kept, g, h, CU_MEM_ACCESS_FLAGS_PROT_READWRITE));
        CHILD_CK(out, cuMemsetD32(kept, PATTERN, g / 4));
        CHILD_CK(out, cuCtxSynchronize());
        say(out, "ready");
        if (!wait_command(in, "check"))
                _exit(0);
        CUresult r = CUDA_SUCCESS;
        char empty_why[64], remap_why[64];
        bool kept_ok = check_words(kept, g, PATTERN, &r);
        /* Still reserved? Then a reservation asking for that address gets another one. */
        CUresult rr = cuMemAddressReserve(&probe_va, 16 * g, 0, empty2, 0);
        const char *still = rr != CUDA_SUCCESS ? ename(rr) : probe_va == empty2 ? "no(address_free_again)" : "yes";
        say(out,
            "check granularity=%zu kept_mapping_ok=%s(%s) empty_reservation_still_reserved=%s "
            "map_into_empty_reservation=%s remap_same_address=%s",
            g, kept_ok ? "yes" : "no", ename(r), still, map_fresh(empty, g, 0x1111u, empty_why, sizeof(empty_why)),
            map_fresh(remap, g, 0x2222u, remap_why, sizeof(remap_why)));
        wait_command(in, "exit");
        _exit(0);
}

static void checkpoint_cycle(pid_t pid) {
        double t0 = now_ms();
        CUresult lr = ck_lock(pid, 5000);
        CUresult cr = ck_checkpoint(pid);
        double t1 = now_ms();
        fact("lock=%s checkpoint=%s checkpoint_ms=%.0f", ename(lr), ename(cr), t1 - t0);
        fact("gpu_mib_checkpointed=%ld", gpu_mib(pid));
        t0 = now_ms();
        CUresult rr = ck_restore(pid);
        t1 = now_ms();
        fact("restore=%s restore_ms=%.0f", ename(rr), t1 - t0);
        fact("unlock=%s", ename(ck_unlock(pid)));
        fact("state=%s", state_name(pid));
}

static void probe_reservation(void) {
        char line[512];
        Child *t = target_ready(reservation_target, line, sizeof(line));

        if (!t)
                return;
        checkpoint_cycle(t->pid);
        child_send(t, "check");
        if (child_expect(t, "check", line, sizeof(line), 20000))
                fact("%s", line + 6);
        else
                fact("check=no_answer");
}

/* ------------------------------------------------------------------ imports */

#define IMPORT_BYTES (64 * MIB)

static int import_socks[2];

static void exporter(FILE *in, int out, void *arg) {
        CUmemAllocationProp pr = vmm_prop(true);
        CUmemGenericAllocationHandle h;
        CUdeviceptr va;
        (void)arg;
        close(import_socks[1]);
        child_context(out);
        CHILD_CK(out, cuMemCreate(&h, IMPORT_BYTES, &pr, 0));
        CHILD_CK(out, cuMemAddressReserve(&va, IMPORT_BYTES, 0, 0, 0));
        CHILD_CK(out, map_at(va, IMPORT_BYTES, h, CU_MEM_ACCESS_FLAGS_PROT_READWRITE));
        CHILD_CK(out, cuMemsetD32(va, IMPORT_PATTERN, IMPORT_BYTES / 4));
        CHILD_CK(out, cuCtxSynchronize());
        say(out, "ready");
        while (wait_command(in, "send")) {
                int fd;
                CHILD_CK(out, cuMemExportToShareableHandle(&fd, h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0));
                if (fd_send(import_socks[0], fd, "f", 1) < 0)
                        _exit(1);
                close(fd);
        }
        _exit(0);
}

/* Import the exporter's memory and map it read-only at va (reserved by the caller). */
static CUresult import_map(int sock, CUdeviceptr va, CUmemGenericAllocationHandle *h) {
        char c;
        int fd = fd_recv(sock, &c, 1, NULL);
        if (fd < 0)
                return CUDA_ERROR_INVALID_HANDLE;
        CUresult r = cuMemImportFromShareableHandle(h, (void *)(long)fd, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
        close(fd);
        if (r == CUDA_SUCCESS)
                r = map_at(va, IMPORT_BYTES, *h, CU_MEM_ACCESS_FLAGS_PROT_READ);
        return r;
}

static void importer(FILE *in, int out, void *arg) {
        bool release = arg != NULL; /* unmapped-import: release before the checkpoint */
        CUmemGenericAllocationHandle h;
        CUdeviceptr va, priv;
        CUresult r = CUDA_SUCCESS;
        close(import_socks[0]);
        child_context(out);
        priv = child_private(out, 64 * MIB, PATTERN);
        CHILD_CK(out, cuMemAddressReserve(&va, IMPORT_BYTES, 0, 0, 0));
        say(out, "want-fd");
        CHILD_CK(out, import_map(import_socks[1], va, &h));
        if (!check_words(va, IMPORT_BYTES, IMPORT_PATTERN, &r))
                say(out, "error imported data wrong before the checkpoint (%s)", ename(r));
        if (release) {
                CHILD_CK(out, cuMemUnmap(va, IMPORT_BYTES));
                CHILD_CK(out, cuMemRelease(h)); /* the reservation stays, as libsage keeps it */
        }
        say(out, "ready");
        if (!wait_command(in, "check"))
                _exit(0);
        bool priv_ok = check_words(priv, 64 * MIB, PATTERN, &r);
        const char *reimport = "not_tried", *reimport_data = "-";
        if (release) {
                say(out, "want-fd");
                CUresult ri = import_map(import_socks[1], va, &h);
                reimport = ename(ri);
                if (ri == CUDA_SUCCESS)
                        reimport_data = check_words(va, IMPORT_BYTES, IMPORT_PATTERN, &r) ? "ok" : "wrong";
        }
        say(out, "check private_data_ok=%s reimport_same_address=%s reimport_data=%s", priv_ok ? "yes" : "no", reimport,
            reimport_data);
        wait_command(in, "exit");
        _exit(0);
}

static void probe_import(bool release) {
        char line[512];
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, import_socks) < 0) {
                fact("socketpair=%s", strerror(errno));
                return;
        }
        Child *e = child_start(exporter, NULL);
        Child *t = child_start(importer, release ? (void *)1 : NULL);

        controller_init();
        if (!e || !t || !child_expect(e, "ready", NULL, 0, 60000) || !child_expect(t, "want-fd", NULL, 0, 60000)) {
                fact("children_ready=no");
                return;
        }
        child_send(e, "send");
        if (!child_expect(t, "ready", line, sizeof(line), 30000)) {
                fact("importer_ready=no");
                return;
        }
        checkpoint_cycle(t->pid);
        child_send(t, "check");
        if (release && child_expect(t, "want-fd", NULL, 0, 20000))
                child_send(e, "send");
        if (child_expect(t, "check", line, sizeof(line), 20000))
                fact("%s", line + 6);
        else
                fact("check=no_answer(stuck)");
}

/* ------------------------------------------------------------------ ctxmem */

/* exec'ed (not forked from the controller): it may run under LD_PRELOAD=libsage. */
static int ctxmem_child(size_t stack) {
        CUdevice dev;
        CUcontext ctx;
        size_t s = 0, heap = 0, fifo = 0;
        char b[64];
        if (cuInit(0) || cuDeviceGet(&dev, 0) || cuDevicePrimaryCtxRetain(&ctx, dev) || cuCtxSetCurrent(ctx))
                return 1;
        if (stack && cuCtxSetLimit(CU_LIMIT_STACK_SIZE, stack) != CUDA_SUCCESS)
                return 1;
        cuCtxGetLimit(&s, CU_LIMIT_STACK_SIZE);
        cuCtxGetLimit(&heap, CU_LIMIT_MALLOC_HEAP_SIZE);
        cuCtxGetLimit(&fifo, CU_LIMIT_PRINTF_FIFO_SIZE);
        printf("ready stack=%zu heap=%zu fifo=%zu\n", s, heap, fifo);
        fflush(stdout);
        while (fgets(b, sizeof(b), stdin) && strncmp(b, "exit", 4) != 0) {
        }
        return 0;
}

static const char *self_exe;

static void ctxmem_exec(FILE *in, int out, void *arg) {
        const char *spec = arg; /* "STACK" or "sage" */
        char stack[32];
        (void)in;
        /* The pipes become the child's stdin/stdout. */
        if (dup2(fileno(in), 0) < 0 || dup2(out, 1) < 0)
                _exit(1);
        snprintf(stack, sizeof(stack), "%s", strcmp(spec, "sage") == 0 ? "0" : spec);
        if (strcmp(spec, "sage") == 0) {
                const char *lib = getenv("PROBE_LIBSAGE");
                if (!lib)
                        _exit(1);
                setenv("LD_PRELOAD", lib, 1);
                setenv("SAGE_CTX_STACK_LIMIT", "16", 1);
        }
        execl(self_exe, self_exe, "ctxmem-child", stack, (char *)NULL);
        _exit(1);
}

static void probe_ctxmem(void) {
        static const char *const specs[] = { "0", "16", "256", "sage" };
        for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
                char line[256];
                const char *label = strcmp(specs[i], "0") == 0 ? "default" : specs[i];
                if (strcmp(specs[i], "sage") == 0 && !getenv("PROBE_LIBSAGE")) {
                        fact("sage_lean=skipped(PROBE_LIBSAGE unset)");
                        continue;
                }
                Child *c = child_start(ctxmem_exec, (void *)specs[i]);
                if (!c || !child_expect(c, "ready", line, sizeof(line), 60000)) {
                        fact("%s=failed", label);
                        continue;
                }
                char *stack = strstr(line, "stack=");
                fact("%s_mib=%ld %s_limit=%s", label, gpu_mib(c->pid), label, stack ? strtok(stack + 6, " ") : "?");
                child_send(c, "exit");
                kill_children();
                nchildren = 0;
        }
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv) {
        const char *what = argc > 1 ? argv[1] : "";

        if (strcmp(what, "ctxmem-child") == 0)
                return ctxmem_child(argc > 2 ? strtoull(argv[2], NULL, 0) : 0);
        self_exe = "/proc/self/exe";
        probe_name = what;
        signal(SIGALRM, on_alarm);
        signal(SIGPIPE, SIG_IGN);
        alarm(argc > 2 ? (unsigned)atoi(argv[2]) : 120);
        if (strcmp(what, "block") == 0)
                probe_block();
        else if (strcmp(what, "self") == 0)
                probe_self();
        else if (strcmp(what, "reservation") == 0)
                probe_reservation();
        else if (strcmp(what, "unmapped-import") == 0)
                probe_import(true);
        else if (strcmp(what, "held-import") == 0)
                probe_import(false);
        else if (strcmp(what, "ctxmem") == 0)
                probe_ctxmem();
        else {
                fprintf(stderr, "usage: probe block|self|reservation|unmapped-import|held-import|ctxmem [BOUND_S]\n");
                return 2;
        }
        finish();
        return 0;
}
