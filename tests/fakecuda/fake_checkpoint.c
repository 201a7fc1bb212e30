/* fake_checkpoint.c: the driver's checkpoint API (cuCheckpointProcess*),
 * across processes, and the gate every entry point passes.
 *
 * The real driver is called from another process on the target's pid and
 * does the work inside the target, on a "restore thread" of its own. The
 * fake does the same: a successful cuInit starts a control thread that
 * listens on the abstract UNIX socket "sage-fakecuda-ckpt/<pid>" and serves
 * one request per connection, after checking the caller by SO_PEERCRED (root
 * or the target's uid, as the driver requires the caller's privileges over
 * the target). The cuCheckpointProcess* calls of the caller's own libcuda
 * connect there; they pass no gate (so a process can act on itself).
 *
 * States, as cuda.h documents them: RUNNING -> Lock -> LOCKED -> Checkpoint
 * -> CHECKPOINTED -> Restore -> LOCKED -> Unlock -> RUNNING; a Restore that
 * cannot bring imported memory back leaves FAILED (for good, as measured).
 *
 * The gate: every exported entry point but a few that never reach the GPU
 * (FAKE_GATE(), see fake_internal.h) counts itself in flight. RUNNING costs
 * two atomic operations; Lock closes the gate and waits (at most timeoutMs)
 * until no call is in flight; later calls wait for Unlock. A thread counts
 * once however deep its entry points call each other, so a kernel or an
 * entry point calling another never waits for itself.
 *
 * Checkpoint copies the bytes of every device allocation (cuMemAlloc and
 * managed memory, VMM physical memory the process created) into the
 * target's heap, releases the pages (memfd holes punched, mappings replaced
 * by PROT_NONE placeholders that keep the addresses) and sets the device
 * memory use to 0. Restore maps the same addresses again and copies the bytes
 * back. Nothing changes the allocation lists in between: the gate is closed.
 */
#include "fake_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

enum {
        OP_STATE = 1,
        OP_LOCK,
        OP_CHECKPOINT,
        OP_RESTORE,
        OP_UNLOCK,
        OP_TID,
        OP_MEM,
        OP_WAIT_BLOCKED,
        OP_CHECKPOINT_BYTES
};

typedef struct CkptRequest {
        uint32_t op;
        uint32_t timeout_ms;
        uint32_t count; /* OP_WAIT_BLOCKED */
} CkptRequest;

typedef struct CkptReply {
        int32_t result;
        int32_t state;
        uint64_t value;
} CkptReply;

/* The asynchronous stream queue's drain, where the fake has one (weak: the
 * streams of this tree's fake are synchronous). Never called with fake.lock held. */
void fake_queue_drain(void) __attribute__((weak));

/* ------------------------------------------------------------ the gate */
static struct {
        pthread_mutex_t lock;
        pthread_cond_t cond; /* CLOCK_MONOTONIC; set up by the control thread's start */
        unsigned inflight;   /* atomic */
        bool closed;         /* atomic; written under lock */
        int state;           /* CUprocessState; atomic, written under lock */
        unsigned waiting;    /* calls waiting at the closed gate; under lock */
        unsigned stuck_ms;
} gate = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER, .stuck_ms = 10000 };

static __thread unsigned gate_depth;

int fake_gate_enter(void) {
        if (gate_depth++ > 0)
                return 0;
        __atomic_add_fetch(&gate.inflight, 1, __ATOMIC_SEQ_CST);
        if (!__atomic_load_n(&gate.closed, __ATOMIC_SEQ_CST))
                return 1;
        /* Closed: step back out (waking a Lock that waits for us), wait for Unlock. */
        pthread_mutex_lock(&gate.lock);
        if (__atomic_sub_fetch(&gate.inflight, 1, __ATOMIC_SEQ_CST) == 0)
                pthread_cond_broadcast(&gate.cond);
        gate.waiting++;
        pthread_cond_broadcast(&gate.cond);
        while (__atomic_load_n(&gate.closed, __ATOMIC_SEQ_CST) && gate.state != CU_PROCESS_STATE_FAILED)
                pthread_cond_wait(&gate.cond, &gate.lock);
        gate.waiting--;
        if (gate.state == CU_PROCESS_STATE_FAILED) {
                /* The real driver never returns here; the fake gives up after a
         * long bound so that a test cannot hang (README: deviations). */
                unsigned ms = gate.stuck_ms;
                pthread_mutex_unlock(&gate.lock);
                fake_sleep_ms(ms);
                gate_depth--;
                return -1;
        }
        __atomic_add_fetch(&gate.inflight, 1, __ATOMIC_SEQ_CST);
        pthread_mutex_unlock(&gate.lock);
        return 1;
}

void fake_gate_leave(int *entered) {
        if (*entered < 0)
                return;
        gate_depth--;
        if (*entered == 0)
                return;
        if (__atomic_sub_fetch(&gate.inflight, 1, __ATOMIC_SEQ_CST) == 0 &&
            __atomic_load_n(&gate.closed, __ATOMIC_SEQ_CST)) {
                pthread_mutex_lock(&gate.lock);
                pthread_cond_broadcast(&gate.cond);
                pthread_mutex_unlock(&gate.lock);
        }
}

static void set_state_locked(int state) {
        __atomic_store_n(&gate.state, state, __ATOMIC_SEQ_CST);
        pthread_cond_broadcast(&gate.cond);
}

static struct timespec deadline_after(unsigned ms) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        t.tv_sec += ms / 1000;
        t.tv_nsec += (long)(ms % 1000) * 1000000L;
        if (t.tv_nsec >= 1000000000L) {
                t.tv_sec++;
                t.tv_nsec -= 1000000000L;
        }
        return t;
}

static CUresult do_lock(unsigned timeout_ms) {
        pthread_mutex_lock(&gate.lock);
        if (gate.state != CU_PROCESS_STATE_RUNNING) {
                pthread_mutex_unlock(&gate.lock);
                return CUDA_ERROR_ILLEGAL_STATE;
        }
        __atomic_store_n(&gate.closed, true, __ATOMIC_SEQ_CST);
        struct timespec deadline = deadline_after(timeout_ms);
        while (__atomic_load_n(&gate.inflight, __ATOMIC_SEQ_CST) > 0) {
                if (timeout_ms == 0)
                        pthread_cond_wait(&gate.cond, &gate.lock);
                else if (pthread_cond_timedwait(&gate.cond, &gate.lock, &deadline) == ETIMEDOUT &&
                         __atomic_load_n(&gate.inflight, __ATOMIC_SEQ_CST) > 0) {
                        /* Timed out: the process stays RUNNING, its waiting calls go on. */
                        __atomic_store_n(&gate.closed, false, __ATOMIC_SEQ_CST);
                        pthread_cond_broadcast(&gate.cond);
                        pthread_mutex_unlock(&gate.lock);
                        return CUDA_ERROR_NOT_READY;
                }
        }
        set_state_locked(CU_PROCESS_STATE_LOCKED);
        pthread_mutex_unlock(&gate.lock);
        /* As the driver waits for the GPU to be idle: queued stream work runs
     * now, before any checkpoint copies the memory it writes. */
        if (fake_queue_drain)
                fake_queue_drain();
        return CUDA_SUCCESS;
}

/* RUNNING now, but the gate opens only after the caller has its answer
 * (open_gate()): a target released at once may exit before the reply is
 * sent, and its caller would see the channel close instead of CUDA_SUCCESS. */
static CUresult do_unlock(void) {
        pthread_mutex_lock(&gate.lock);
        CUresult r = CUDA_ERROR_ILLEGAL_STATE;
        if (gate.state == CU_PROCESS_STATE_LOCKED) {
                set_state_locked(CU_PROCESS_STATE_RUNNING);
                r = CUDA_SUCCESS;
        }
        pthread_mutex_unlock(&gate.lock);
        return r;
}

static void open_gate(void) {
        pthread_mutex_lock(&gate.lock);
        __atomic_store_n(&gate.closed, false, __ATOMIC_SEQ_CST);
        pthread_cond_broadcast(&gate.cond);
        pthread_mutex_unlock(&gate.lock);
}

/* For tests: wait (at most timeout_ms) until `count` calls wait at the closed
 * gate, so that "a call made while LOCKED returns only after Unlock" is
 * checked without sleeping. */
static CUresult wait_blocked(unsigned count, unsigned timeout_ms) {
        struct timespec deadline = deadline_after(timeout_ms);
        CUresult r = CUDA_SUCCESS;
        pthread_mutex_lock(&gate.lock);
        while (gate.waiting < count && r == CUDA_SUCCESS)
                if (pthread_cond_timedwait(&gate.cond, &gate.lock, &deadline) == ETIMEDOUT && gate.waiting < count)
                        r = CUDA_ERROR_NOT_READY;
        pthread_mutex_unlock(&gate.lock);
        return r;
}

/* ------------------------------------------------------------ checkpoint and restore */
/* One saved range: an allocation's or a physical allocation's bytes. */
typedef struct Saved {
        struct Saved *next;
        const void *owner; /* FakeAlloc * or FakePhys * */
        char *bytes;
        size_t size;
} Saved;

static Saved *saved;
static size_t saved_mem_used[FAKE_MAX_DEVICES];
/* What the last checkpoint took into host memory: the device bytes in use then (contexts' local memory included). */
static uint64_t checkpoint_bytes;

static void placeholder(void *base, size_t size) {
        mmap(base, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
}

static const Saved *saved_find(const void *owner) {
        for (const Saved *s = saved; s; s = s->next)
                if (s->owner == owner)
                        return s;
        return NULL;
}

static void saved_free_all(void) {
        while (saved) {
                Saved *s = saved;
                saved = s->next;
                free(s->bytes);
                free(s);
        }
}

static bool save(const void *owner, const void *src, int fd, size_t size) {
        Saved *s = calloc(1, sizeof *s);
        char *bytes = malloc(size ? size : 1);
        if (!s || !bytes) {
                free(s);
                free(bytes);
                return false;
        }
        if (src)
                memcpy(bytes, src, size);
        else if (pread(fd, bytes, size, 0) != (ssize_t)size)
                memset(bytes, 0, size);
        *s = (Saved){ .next = saved, .owner = owner, .bytes = bytes, .size = size };
        saved = s;
        return true;
}

static bool is_device_alloc(const FakeAlloc *a) {
        return (a->kind == FAKE_ALLOC_DEVICE || a->kind == FAKE_ALLOC_MANAGED) && a->map_size;
}

static CUresult checkpoint_locked(void) {
        for (FakeAlloc *a = fake.allocs; a; a = a->next)
                if (is_device_alloc(a) && !save(a, a->base, -1, a->map_size))
                        goto nomem;
        for (FakePhys *ph = fake.phys; ph; ph = ph->next)
                if (ph->counted && !save(ph, NULL, ph->fd, ph->size))
                        goto nomem;
        /* Everything is saved: now release. Holes in a memfd read as zeros for
     * anyone else who maps it, the pages go back to the kernel. */
        for (FakeAlloc *a = fake.allocs; a; a = a->next) {
                if (is_device_alloc(a) || (a->kind == FAKE_ALLOC_IPC && a->map_size))
                        placeholder(a->base, a->map_size);
                if (is_device_alloc(a) && a->fd >= 0)
                        fallocate(a->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)a->map_size);
        }
        for (FakeMapping *m = fake.mappings; m; m = m->next)
                placeholder((void *)m->base, m->size);
        for (FakePhys *ph = fake.phys; ph; ph = ph->next)
                if (ph->counted)
                        fallocate(ph->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)ph->size);
        memcpy(saved_mem_used, fake.mem_used, sizeof saved_mem_used);
        uint64_t copied = 0;
        for (int i = 0; i < FAKE_MAX_DEVICES; i++)
                copied += saved_mem_used[i];
        __atomic_store_n(&checkpoint_bytes, copied, __ATOMIC_SEQ_CST);
        memset(fake.mem_used, 0, sizeof fake.mem_used);
        return CUDA_SUCCESS;
nomem:
        saved_free_all();
        return CUDA_ERROR_OUT_OF_MEMORY;
}

/* Imported memory (another process's VMM export, a CUDA IPC handle) is what
 * the real driver cannot restore (measured on the H100). */
static bool holds_imported_locked(void) {
        for (const FakePhys *ph = fake.phys; ph; ph = ph->next)
                if (!ph->counted)
                        return true;
        for (const FakeAlloc *a = fake.allocs; a; a = a->next)
                if (a->kind == FAKE_ALLOC_IPC)
                        return true;
        return false;
}

static CUresult restore_locked(void) {
        /* SAGE_FAKE_FAIL_RESTORE (tests): fail as imported memory does, FAILED for good. */
        if (holds_imported_locked() || getenv("SAGE_FAKE_FAIL_RESTORE"))
                return CUDA_ERROR_NOT_SUPPORTED;
        for (FakePhys *ph = fake.phys; ph; ph = ph->next) {
                const Saved *s = saved_find(ph);
                if (s && pwrite(ph->fd, s->bytes, s->size, 0) != (ssize_t)s->size)
                        return CUDA_ERROR_OUT_OF_MEMORY;
        }
        for (FakeMapping *m = fake.mappings; m; m = m->next)
                if (mmap((void *)m->base, m->size, m->prot, MAP_SHARED | MAP_FIXED, m->phys->fd, (off_t)m->offset) ==
                    MAP_FAILED)
                        return CUDA_ERROR_OUT_OF_MEMORY;
        for (FakeAlloc *a = fake.allocs; a; a = a->next) {
                if (!is_device_alloc(a))
                        continue;
                void *p = a->fd >= 0
                                  ? mmap(a->base, a->map_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, a->fd, 0)
                                  : mmap(a->base, a->map_size, PROT_READ | PROT_WRITE,
                                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
                const Saved *s = saved_find(a);
                if (p == MAP_FAILED || !s)
                        return CUDA_ERROR_OUT_OF_MEMORY;
                memcpy(a->base, s->bytes, s->size);
        }
        memcpy(fake.mem_used, saved_mem_used, sizeof saved_mem_used);
        /* Others took the memory this process gave back (tests): the restore fits, what grows later may not. */
        if (fake.restore_squeeze) {
                size_t most = 0;
                for (int i = 0; i < FAKE_MAX_DEVICES; i++)
                        most = fake.mem_used[i] > most ? fake.mem_used[i] : most;
                if (fake.mem_total > most + fake.restore_free)
                        fake.mem_total = most + fake.restore_free;
                fake.restore_squeeze = false;
        }
        saved_free_all();
        return CUDA_SUCCESS;
}

/* The steps below run on the control thread only, one request at a time:
 * gate.state changes only here (under gate.lock, for the waiters). */
static CUresult do_step(uint32_t op) {
        int from = op == OP_CHECKPOINT ? CU_PROCESS_STATE_LOCKED : CU_PROCESS_STATE_CHECKPOINTED;
        if (__atomic_load_n(&gate.state, __ATOMIC_SEQ_CST) != from)
                return CUDA_ERROR_ILLEGAL_STATE;
        fake_lock();
        CUresult r = op == OP_CHECKPOINT ? checkpoint_locked() : restore_locked();
        fake_unlock();
        int to = op == OP_CHECKPOINT ? CU_PROCESS_STATE_CHECKPOINTED : CU_PROCESS_STATE_LOCKED;
        if (r != CUDA_SUCCESS)
                to = op == OP_CHECKPOINT ? CU_PROCESS_STATE_LOCKED : CU_PROCESS_STATE_FAILED;
        pthread_mutex_lock(&gate.lock);
        set_state_locked(to);
        pthread_mutex_unlock(&gate.lock);
        return r;
}

static uint64_t mem_used_total(void) {
        uint64_t sum = 0;
        fake_lock();
        for (int i = 0; i < FAKE_MAX_DEVICES; i++)
                sum += fake.mem_used[i];
        fake_unlock();
        return sum;
}

/* ------------------------------------------------------------ the control thread */
static pid_t control_tid;

static socklen_t control_address(struct sockaddr_un *sa, int pid) {
        memset(sa, 0, sizeof *sa);
        sa->sun_family = AF_UNIX;
        int n = snprintf(sa->sun_path + 1, sizeof sa->sun_path - 1, "sage-fakecuda-ckpt/%d", pid);
        return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

static void serve(int conn) {
        struct ucred cred;
        socklen_t len = sizeof cred;
        CkptRequest req;
        CkptReply rep = { .result = CUDA_SUCCESS };
        /* Anyone can connect to an abstract socket: one who says nothing must
     * not hold the control thread (and the target's owner) for long. */
        struct timeval tv = { .tv_sec = 0, .tv_usec = 500000 };
        setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        if (recv(conn, &req, sizeof req, 0) != (ssize_t)sizeof req)
                return;
        if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || (cred.uid != 0 && cred.uid != geteuid())) {
                rep.result = CUDA_ERROR_OPERATING_SYSTEM; /* the H100's driver 580 answers so (driver_facts) */
        } else if (__atomic_load_n(&gate.state, __ATOMIC_SEQ_CST) == CU_PROCESS_STATE_FAILED && req.op != OP_STATE &&
                   req.op != OP_TID && req.op != OP_MEM && req.op != OP_WAIT_BLOCKED && req.op != OP_CHECKPOINT_BYTES) {
                rep.result = CUDA_ERROR_ILLEGAL_STATE;
        } else {
                switch (req.op) {
                case OP_STATE: break;
                case OP_LOCK: rep.result = do_lock(req.timeout_ms); break;
                case OP_CHECKPOINT:
                case OP_RESTORE: rep.result = do_step(req.op); break;
                case OP_UNLOCK: rep.result = do_unlock(); break;
                case OP_TID: rep.value = (uint64_t)control_tid; break;
                case OP_MEM: rep.value = mem_used_total(); break;
                case OP_CHECKPOINT_BYTES: rep.value = __atomic_load_n(&checkpoint_bytes, __ATOMIC_SEQ_CST); break;
                case OP_WAIT_BLOCKED: rep.result = wait_blocked(req.count, req.timeout_ms); break;
                default: rep.result = CUDA_ERROR_INVALID_VALUE; break;
                }
        }
        rep.state = __atomic_load_n(&gate.state, __ATOMIC_SEQ_CST);
        send(conn, &rep, sizeof rep, MSG_NOSIGNAL);
        if (req.op == OP_UNLOCK && rep.result == CUDA_SUCCESS)
                open_gate();
}

static void *control_main(void *arg) {
        int fd = (int)(intptr_t)arg;
        control_tid = gettid();
        for (;;) {
                int conn = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
                if (conn < 0) {
                        if (errno == EINTR || errno == ECONNABORTED)
                                continue;
                        return NULL;
                }
                serve(conn);
                close(conn);
        }
}

/* A fork()ed child has no control thread (nor CUDA): it must not keep the
 * parent's socket open, or callers would queue on it forever once the parent
 * is gone, and a new process given the parent's pid could not bind. */
static int control_fd = -1;

static void close_in_child(void) {
        if (control_fd >= 0)
                close(control_fd);
        control_fd = -1;
        /* Nor the parent's checkpoint state: its calls fail at once (no CUDA), locked parent or not. */
        pthread_mutex_init(&gate.lock, NULL);
        pthread_cond_init(&gate.cond, NULL);
        gate.inflight = gate.waiting = 0;
        gate.closed = false;
        gate.state = CU_PROCESS_STATE_RUNNING;
        gate_depth = 0;
}

/* Called once, by the first successful cuInit. Without a control channel
 * (an address taken, no threads) the process is one the API cannot reach,
 * as a process without CUDA: INVALID_VALUE for its callers. */
void fake_checkpoint_start(void) {
        const char *stuck = getenv("SAGE_FAKE_STUCK_MS");
        if (stuck && *stuck)
                gate.stuck_ms = (unsigned)strtoul(stuck, NULL, 10);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_destroy(&gate.cond);
        pthread_cond_init(&gate.cond, &ca);
        pthread_condattr_destroy(&ca);

        struct sockaddr_un sa;
        socklen_t len = control_address(&sa, getpid());
        int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return;
        if (bind(fd, (struct sockaddr *)&sa, len) != 0 || listen(fd, 16) != 0) {
                close(fd);
                return;
        }
        /* The application's signals are not the control thread's business. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        pthread_t t;
        if (pthread_create(&t, NULL, control_main, (void *)(intptr_t)fd) == 0) {
                pthread_detach(t);
                control_fd = fd;
                pthread_atfork(NULL, NULL, close_in_child);
        } else {
                close(fd);
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* ------------------------------------------------------------ the caller's side */
static CUresult call_n(int pid, uint32_t op, uint32_t timeout_ms, uint32_t count, CkptReply *rep) {
        if (pid <= 0)
                return CUDA_ERROR_INVALID_VALUE;
        struct sockaddr_un sa;
        socklen_t len = control_address(&sa, pid);
        int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return CUDA_ERROR_OPERATING_SYSTEM;
        CkptRequest req = { .op = op, .timeout_ms = timeout_ms, .count = count };
        CUresult r = CUDA_ERROR_INVALID_VALUE; /* no such pid, or no CUDA in it */
        if (connect(fd, (struct sockaddr *)&sa, len) == 0 && send(fd, &req, sizeof req, MSG_NOSIGNAL) == sizeof req) {
                ssize_t n;
                do
                        n = recv(fd, rep, sizeof *rep, 0);
                while (n < 0 && errno == EINTR);
                r = n == (ssize_t)sizeof *rep ? (CUresult)rep->result : CUDA_ERROR_INVALID_VALUE;
        }
        close(fd);
        return r;
}

/* A step that answers only its result. */
static CUresult call(int pid, uint32_t op, uint32_t timeout_ms) {
        CkptReply rep;
        return call_n(pid, op, timeout_ms, 0, &rep);
}

/* A query of the target (its state, restore thread, memory in use):
 * INVALID_VALUE without somewhere to put the answer, else the answer
 * stored in `out`, an int-sized or a 64-bit one (`size`). */
static CUresult query(int pid, uint32_t op, void *out, size_t size) {
        CkptReply rep;
        if (!out)
                return CUDA_ERROR_INVALID_VALUE;
        CUresult r = call_n(pid, op, 0, 0, &rep);
        if (r != CUDA_SUCCESS)
                return r;
        uint64_t v = op == OP_STATE ? (uint64_t)rep.state : rep.value;
        uint32_t v32 = (uint32_t)v;
        memcpy(out, size == sizeof v32 ? (const void *)&v32 : (const void *)&v, size);
        return CUDA_SUCCESS;
}

_Static_assert(sizeof(CUprocessState) == sizeof(uint32_t) && sizeof(int) == sizeof(uint32_t) &&
                       sizeof(size_t) == sizeof(uint64_t),
               "query() stores 4- or 8-byte answers");

FAKE_EXPORT CUresult cuCheckpointProcessGetState(int pid, CUprocessState *state) {
        return query(pid, OP_STATE, state, sizeof *state);
}

FAKE_EXPORT CUresult cuCheckpointProcessGetRestoreThreadId(int pid, int *tid) {
        return query(pid, OP_TID, tid, sizeof *tid);
}

FAKE_EXPORT CUresult cuCheckpointProcessLock(int pid, CUcheckpointLockArgs *args) {
        return call(pid, OP_LOCK, args ? args->timeoutMs : 0);
}

FAKE_EXPORT CUresult cuCheckpointProcessCheckpoint(int pid, CUcheckpointCheckpointArgs *args) {
        return call(pid, OP_CHECKPOINT, 0);
}

FAKE_EXPORT CUresult cuCheckpointProcessRestore(int pid, CUcheckpointRestoreArgs *args) {
        if (args && args->gpuPairsCount)
                return CUDA_ERROR_NOT_SUPPORTED; /* one simulated chip type; no remapping */
        return call(pid, OP_RESTORE, 0);
}

FAKE_EXPORT CUresult cuCheckpointProcessUnlock(int pid, CUcheckpointUnlockArgs *args) {
        return call(pid, OP_UNLOCK, 0);
}

FAKE_EXPORT int fakecudaProcessMemUsed(int pid, size_t *bytes) {
        return (int)query(pid, OP_MEM, bytes, sizeof *bytes);
}

FAKE_EXPORT int fakecudaProcessCheckpointBytes(int pid, size_t *bytes) {
        return (int)query(pid, OP_CHECKPOINT_BYTES, bytes, sizeof *bytes);
}

FAKE_EXPORT int fakecudaProcessWaitBlocked(int pid, unsigned count, unsigned timeout_ms) {
        CkptReply rep;
        return (int)call_n(pid, OP_WAIT_BLOCKED, timeout_ms, count, &rep);
}
