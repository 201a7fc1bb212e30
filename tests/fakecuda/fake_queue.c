/* fake_queue.c: asynchronous work, as a GPU runs it.
 *
 * Kernel launches, memsets and copies on a stream return at once; a worker
 * thread runs them later, in submission order (one queue for every stream:
 * a valid order for any program that orders its streams). "Later" is made
 * deterministic: queued work runs only when the program synchronizes
 * (stream, event or context synchronize or query, a synchronous copy or
 * memset, cuMemFree & co., destroying a context or stream), and returns
 * only once all work submitted before it ran, whichever thread's
 * synchronize released it: on the GPU a stream's order holds whoever
 * waits (libsage's warm-up thread synchronizes beside the app's launches).
 * So a missing synchronize is not a race that shows once in a while: it
 * shows every time (an async download read before a synchronize holds
 * stale bytes, a buffer freed or unmapped under queued work faults).
 *
 * As on the GPU, unmapping memory that queued work still uses is a fault of
 * that work: cuMemUnmap drops the queued copies, memsets and kernels whose
 * ranges (for a kernel: an argument word pointing into the range) touch it,
 * and their context fails with a sticky CUDA_ERROR_ILLEGAL_ADDRESS.
 *
 * Copies from or to pageable host memory are synchronous in the real driver
 * (staged through its own buffers), so fake_copy.c runs those at once, after
 * draining the queue; so are kernels whose argument sizes are unknown (their
 * arguments could not be copied) and graph launches.
 */
#include "fake_internal.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct Pending {
        FakeOp op;
        CUcontext ctx;
} Pending;

static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work_released = PTHREAD_COND_INITIALIZER;
static pthread_cond_t work_done = PTHREAD_COND_INITIALIZER;
/* Under queue_lock. The worker is a daemon thread of the process: it lives
 * as long as the process and blocks on work_released when there is none. */
static Pending *items;
static size_t count, capacity, released;
static bool busy;
static pid_t worker_pid;        /* a fork()ed child has no worker: it cannot use CUDA anyway */
static __thread bool in_worker; /* work that calls the driver must not wait for itself */

static void fault(CUcontext ctx) {
        if (!ctx)
                return;
        fake_lock();
        if (fake_context_alive_locked(ctx))
                __atomic_store_n(&ctx->faulted, true, __ATOMIC_RELAXED);
        fake_unlock();
}

static void *worker(void *arg) {
        (void)arg;
        in_worker = true;
        pthread_mutex_lock(&queue_lock);
        for (;;) {
                while (released == 0)
                        pthread_cond_wait(&work_released, &queue_lock);
                Pending p = items[0];
                memmove(&items[0], &items[1], (count - 1) * sizeof *items);
                count--;
                released--;
                busy = true;
                pthread_mutex_unlock(&queue_lock);
                /* A copy whose memory went away under it faults, as on the GPU. */
                if (fake_op_run_in(&p.op, p.ctx) != CUDA_SUCCESS)
                        fault(p.ctx);
                fake_op_release(&p.op);
                pthread_mutex_lock(&queue_lock);
                busy = false;
                if (released == 0)
                        pthread_cond_broadcast(&work_done);
        }
        return NULL;
}

bool fake_queue_submit(const FakeOp *op, CUcontext ctx) {
        pthread_mutex_lock(&queue_lock);
        if (worker_pid != getpid()) {
                pthread_t t;
                pthread_attr_t attr;
                bool started = pthread_attr_init(&attr) == 0 &&
                               pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) == 0 &&
                               pthread_create(&t, &attr, worker, NULL) == 0;
                if (!started) {
                        pthread_mutex_unlock(&queue_lock);
                        return false; /* the caller runs it at once */
                }
                worker_pid = getpid();
                count = released = 0;
                busy = false;
        }
        if (count == capacity) {
                size_t cap = capacity ? 2 * capacity : 64;
                Pending *grown = realloc(items, cap * sizeof *grown);
                if (!grown) {
                        pthread_mutex_unlock(&queue_lock);
                        return false;
                }
                items = grown;
                capacity = cap;
        }
        items[count++] = (Pending){ *op, ctx };
        pthread_mutex_unlock(&queue_lock);
        return true;
}

/*
 * A query's look at the work: false when everything submitted so far has
 * run; else the work is let run (the GPU runs it whether anyone waits or
 * not) and true (not ready yet). So a program polling a query sees "not
 * ready" at least once for work it queued, then done, as on the GPU.
 */
bool fake_queue_pending(void) {
        bool pending = false;

        pthread_mutex_lock(&queue_lock);
        if (worker_pid == getpid() && !in_worker && (count > 0 || busy)) {
                pending = true;
                if (count > released) {
                        released = count;
                        pthread_cond_signal(&work_released);
                }
        }
        pthread_mutex_unlock(&queue_lock);
        return pending;
}

/*
 * Runs everything submitted so far and waits for it, the item the worker
 * is running included: another thread's drain may have released it, so
 * an empty queue is not finished work (a download right after a launch
 * read the kernel's result before the kernel wrote it).
 */
void fake_queue_drain(void) {
        pthread_mutex_lock(&queue_lock);
        if (worker_pid == getpid() && !in_worker) {
                if (count > 0) {
                        released = count;
                        pthread_cond_signal(&work_released);
                }
                while (released > 0 || busy)
                        pthread_cond_wait(&work_done, &queue_lock);
        }
        pthread_mutex_unlock(&queue_lock);
}

static bool overlaps(uintptr_t a, size_t n, uintptr_t base, size_t size) {
        return n && a < base + size && base < a + n;
}

static bool touches(const FakeOp *op, uintptr_t base, size_t size) {
        switch (op->kind) {
        case FAKE_OP_COPY:
                return overlaps((uintptr_t)op->u.copy.dst, op->u.copy.bytes, base, size) ||
                       overlaps((uintptr_t)op->u.copy.src, op->u.copy.bytes, base, size);
        case FAKE_OP_MEMSET:
                return overlaps((uintptr_t)op->u.memset.dst, op->u.memset.count * op->u.memset.elem_size, base, size);
        case FAKE_OP_KERNEL:
                for (size_t w = 0; op->u.kernel.arg_store && w + 8 <= op->u.kernel.arg_bytes; w += 8) {
                        uint64_t v;
                        memcpy(&v, op->u.kernel.arg_store + w, sizeof v);
                        if (v >= base && v < base + size)
                                return true;
                }
                return false;
        case FAKE_OP_COPY3D: return false; /* 3D copies run at submission */
        }
        return false;
}

void fake_queue_unmapping(uintptr_t base, size_t size) {
        CUcontext faulted[16];
        size_t nfaulted = 0;

        pthread_mutex_lock(&queue_lock);
        for (size_t i = released; i < count;) {
                if (!touches(&items[i].op, base, size)) {
                        i++;
                        continue;
                }
                if (nfaulted < sizeof faulted / sizeof faulted[0])
                        faulted[nfaulted++] = items[i].ctx;
                fake_op_release(&items[i].op);
                memmove(&items[i], &items[i + 1], (count - i - 1) * sizeof *items);
                count--;
        }
        pthread_mutex_unlock(&queue_lock);
        for (size_t i = 0; i < nfaulted; i++)
                fault(faulted[i]);
}
