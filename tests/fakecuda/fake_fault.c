/* fake_fault.c: a kernel that faults, as the GPU answers it.
 *
 * Kernels are host functions, so a kernel writing through a read-only
 * mapping (cuMemSetAccess PROT_READ: mprotect) would kill the process with
 * SIGSEGV. The GPU does not: the launch itself succeeds, the fault is
 * reported as CUDA_ERROR_ILLEGAL_ADDRESS by the next call that synchronizes,
 * and it is sticky: every later call in that context fails the same way
 * (measured on the H200, DESIGN.md). The owner of the memory keeps its
 * bytes, the process stays alive. So a kernel runs with a SIGSEGV/SIGBUS
 * handler that jumps back out of it and marks the context faulted;
 * fake_require_context() then answers CUDA_ERROR_ILLEGAL_ADDRESS for it.
 *
 * The handler is installed while some thread runs a kernel and the previous
 * one restored after the last; a fault outside a kernel is handed to the
 * previous handler (or the default action), so an application's own crash
 * still crashes.
 */
#include "fake_internal.h"

#include <setjmp.h>
#include <signal.h>
#include <string.h>

static pthread_mutex_t handler_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned running; /* threads inside a kernel, under handler_lock */
static struct sigaction previous_segv, previous_bus;
static __thread sigjmp_buf *kernel_jump; /* set while this thread runs a kernel */

static void on_fault(int sig, siginfo_t *info, void *uctx) {
        (void)info;
        (void)uctx;
        if (kernel_jump)
                siglongjmp(*kernel_jump, 1);
        /* Not a kernel's fault: the previous disposition takes the re-executed access. */
        sigaction(sig, sig == SIGSEGV ? &previous_segv : &previous_bus, NULL);
}

static void enter(void) {
        pthread_mutex_lock(&handler_lock);
        if (running++ == 0) {
                struct sigaction sa;
                memset(&sa, 0, sizeof sa);
                sa.sa_sigaction = on_fault;
                sa.sa_flags = SA_SIGINFO | SA_NODEFER;
                sigemptyset(&sa.sa_mask);
                sigaction(SIGSEGV, &sa, &previous_segv);
                sigaction(SIGBUS, &sa, &previous_bus);
        }
        pthread_mutex_unlock(&handler_lock);
}

static void leave(void) {
        pthread_mutex_lock(&handler_lock);
        if (--running == 0) {
                sigaction(SIGSEGV, &previous_segv, NULL);
                sigaction(SIGBUS, &previous_bus, NULL);
        }
        pthread_mutex_unlock(&handler_lock);
}

CUresult fake_kernel_run(CUcontext ctx, const FakeKernelEntry *entry, const FakeKernelLaunch *launch, void **params) {
        sigjmp_buf jump;
        volatile bool faulted = false;

        enter();
        if (sigsetjmp(jump, 1) == 0) {
                kernel_jump = &jump;
                entry->fn(launch, params);
        } else {
                faulted = true;
        }
        kernel_jump = NULL;
        leave();
        if (faulted && ctx) {
                fake_lock();
                if (fake_context_alive_locked(ctx))
                        __atomic_store_n(&ctx->faulted, true, __ATOMIC_RELAXED);
                fake_unlock();
        }
        /* As on the GPU, the launch itself succeeded; the next call reports the fault. */
        return CUDA_SUCCESS;
}
