/*
 * Parallel set-up (the paper's first mechanism). A background thread runs cuInit and retains the primary context of
 * the devices the process will use, while the application goes on with its own start-up (imports, file reads). The
 * application's own calls need no coordination with it: the driver serialises initialisation internally, so the
 * app's first cuInit or context retain simply waits for whatever the warm-up has not finished, and cudart's hidden
 * primary-context path finds the context already created.
 *
 * When: eager starts as soon as the process has a CUDA library: at load when one is among the load-time libraries
 * (or the executable carries a .nv_fatbin section), else when one is dlopen()ed (by name, or as a dependency: seen
 * at the next dlopen or dlsym, which is where Python looks up a module's init function), a driver symbol is looked
 * up, or at cuInit. A process that never loads one (a shell, `timeout`, XLA's ptxas child) never initialises CUDA
 * because of SAGE, eager or not: the warm-up thread would otherwise run the driver's start-up (and its exit-time
 * teardown) inside programs that never asked for it. Lazy starts at the first sign of CUDA use (a driver symbol
 * resolved through dlsym or cuGetProcAddress, or cuInit); auto (the default) is eager at load for a process that
 * carries CUDA code and, for everything else, starts at the application's own cuInit. Symbol lookups are no proof
 * of GPU use: `import torch` resolves driver symbols long before any CUDA call (measured on the H200: a lazy
 * warm-up started 190 ms into a 3.9 s import), and a pre-forking Python server must not find CUDA initialised in
 * its master. Under auto, SAGE never initialises CUDA before the application does, unless the program carries CUDA
 * code itself.
 *
 * Hazards: a fork() after the warm-up leaves a child that cannot use CUDA (as after any CUDA
 * initialisation); the child is detected and told so with SAGE_VERBOSE=1, and a fork() during the warm-up
 * waits for it, so no child inherits driver locks held by a thread it does not have. exit() while the
 * warm-up runs waits for it (bounded) so the driver's destructors never run under it. A failing warm-up is
 * silent: the app's own calls reach the real driver and get exactly its error.
 *
 * The loader lock: glibc's dlopen/dlsym hold it, and a thread inside a library constructor (cudart's, a
 * framework's) holds it while it calls dlsym("cu...") or a driver entry point. So no libsage path on such a
 * thread may wait for a thread that needs that lock. The driver is opened by whichever thread first needs
 * it, never waiting for another thread's open (driver.c), and the dlopen/lookup/cuInit triggers open it in
 * the triggering thread before the warm-up thread exists (warmup_start), so that thread never needs the
 * lock (unless the driver's own cuInit does). The waits that remain (fork, exit, cuCtxGetLimit, a
 * dlclose's deferred handlers) are bounded (10 s) and then go on as without the warm-up.
 */
#include <cuda.h>

#include "warmup.h"

#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "capture_mode.h"
#include "ctx_limit.h"
#include "driver.h"
#include "hooks.h"
#include "log.h"
#include "options.h"
#include "spawn.h"
#include "util.h"

#define WARMUP_MAX_DEVICES 16

enum {
        WARMUP_IDLE,
        WARMUP_RUNNING,
        WARMUP_DONE
};

static atomic_int warmup_state = WARMUP_IDLE;
static pthread_mutex_t warmup_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t warmup_done = PTHREAD_COND_INITIALIZER;
static atomic_ullong held_devices; /* bit per device ordinal SAGE holds a retain on */
static int rewarm_in_driver;       /* re-warm threads inside the driver (warmup_lock) */
static int rewarm_pending;         /* re-warm threads started, not finished (warmup_lock) */
static bool rewarm_cancelled;      /* exit: pending re-warms must not enter the driver */
static bool tail_running;          /* after WARMUP_DONE, the thread's `after` work (warmup_lock) */
static void (*_Atomic warmup_after)(CUcontext), (*_Atomic warmup_before)(void); /* sage_warmup_set_work */
#define REWARM_GRACE_MS 50
static const char *_Atomic warmup_trigger_name;

/* ---------------------------------------------------------------- is this a CUDA program? */

/*
 * Libraries whose presence says the process is a GPU program: the driver,
 * the runtime, the CUDA math/comm libraries and the frameworks' CUDA parts.
 * Compilers and monitoring (nvrtc, ptxas's own code, NVML) are left out on
 * purpose: loading them does not mean the process will use a GPU.
 */
static const char *const cuda_library_prefixes[] = {
        "libcuda.so",
        "libcudart.so",
        "libcublas",
        "libcudnn",
        "libcufft",
        "libcurand",
        "libcusparse",
        "libcusolver",
        "libnccl",
        "libtorch_cuda",
        "libc10_cuda",
        "xla_cuda_plugin",
        "cuda_plugin_extension",
};

bool sage_library_is_cuda(const char *path) {
        const char *base;

        if (!path || !*path)
                return false;
        base = strrchr(path, '/');
        base = base ? base + 1 : path;
        for (size_t i = 0; i < SAGE_ARRAY_SIZE(cuda_library_prefixes); i++)
                if (strncmp(base, cuda_library_prefixes[i], strlen(cuda_library_prefixes[i])) == 0)
                        return true;
        return false;
}

typedef struct LibraryScan {
        unsigned long long last_adds; /* dlpi_adds of the previous scan: skip when nothing was loaded since */
        unsigned long long adds;
        bool first, found;
} LibraryScan;

static int find_cuda_library(struct dl_phdr_info *info, size_t size, void *data) {
        LibraryScan *scan = data;

        if (scan->first) {
                scan->first = false;
                if (size >= offsetof(struct dl_phdr_info, dlpi_adds) + sizeof(info->dlpi_adds)) {
                        scan->adds = info->dlpi_adds;
                        if (scan->adds == scan->last_adds)
                                return 1;
                }
        }
        if (sage_library_is_cuda(info->dlpi_name)) {
                scan->found = true;
                return 1;
        }
        return 0;
}

/* Is a CUDA library among the loaded objects? Cheap when nothing was loaded since the last call. */
static bool cuda_library_loaded(void) {
        static atomic_ullong scanned_adds; /* a racing scan only repeats work */
        LibraryScan scan = { .last_adds = atomic_load_explicit(&scanned_adds, memory_order_relaxed), .first = true };

        dl_iterate_phdr(find_cuda_library, &scan);
        if (!scan.found && scan.adds)
                atomic_store_explicit(&scanned_adds, scan.adds, memory_order_relaxed);
        return scan.found;
}

/* A .nv_fatbin section is where nvcc puts device code (static or shared cudart alike). */
static bool executable_has_fatbin(void) {
        int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
        struct stat st;
        const unsigned char *map;
        bool found = false;

        if (fd < 0)
                return false;
        if (fstat(fd, &st) < 0 || st.st_size < (off_t)sizeof(Elf64_Ehdr)) {
                close(fd);
                return false;
        }
        map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        close(fd);
        if (map == MAP_FAILED)
                return false;
        {
                const Elf64_Ehdr *eh = (const Elf64_Ehdr *)map;
                size_t size = (size_t)st.st_size;

                if (memcmp(eh->e_ident, ELFMAG, SELFMAG) == 0 && eh->e_ident[EI_CLASS] == ELFCLASS64 && eh->e_shoff &&
                    eh->e_shentsize == sizeof(Elf64_Shdr) && eh->e_shstrndx < eh->e_shnum &&
                    eh->e_shoff + (size_t)eh->e_shnum * sizeof(Elf64_Shdr) <= size) {
                        const Elf64_Shdr *sh = (const Elf64_Shdr *)(map + eh->e_shoff);
                        const Elf64_Shdr *strtab = &sh[eh->e_shstrndx];

                        for (unsigned i = 0; i < eh->e_shnum && strtab->sh_offset + strtab->sh_size <= size; i++) {
                                if (sh[i].sh_name >= strtab->sh_size)
                                        continue;
                                const char *name = (const char *)map + strtab->sh_offset + sh[i].sh_name;
                                if (strncmp(name, ".nv_fatbin", strtab->sh_size - sh[i].sh_name) == 0 ||
                                    strncmp(name, "__nv_relfatbin", strtab->sh_size - sh[i].sh_name) == 0) {
                                        found = true;
                                        break;
                                }
                        }
                }
        }
        munmap((void *)map, (size_t)st.st_size);
        return found;
}

bool sage_process_is_cuda_program(void) {
        return cuda_library_loaded() || executable_has_fatbin();
}

/* ---------------------------------------------------------------- the warm-up thread */

static int parse_devices(const char *spec, int *out, int max, int count) {
        int n = 0;

        if (!spec || !*spec)
                spec = "0";
        if (strcmp(spec, "all") == 0) {
                for (int i = 0; i < count && n < max; i++)
                        out[n++] = i;
                return n;
        }
        while (*spec && n < max) {
                char *end;
                long v = strtol(spec, &end, 10);

                if (end == spec) {
                        sage_warn("SAGE_WARMUP_DEVICES=\"%s\": expected ordinals or all",
                                  sage_options()->warmup_devices);
                        break;
                }
                if (v >= 0 && v < count)
                        out[n++] = (int)v;
                spec = *end == ',' ? end + 1 : end;
                if (*end && *end != ',')
                        break;
        }
        return n;
}

/* The warm-up's driver calls are the process's too: the trace shows them. */
static void traced(SageSym sym, uint64_t t0, CUresult r, uint64_t a0, uint64_t a1) {
        sage_hooks_report(sym, t0, r, a0, a1, 0);
}

static void *warmup_main(void *arg) {
        int devices[WARMUP_MAX_DEVICES], ndevices, count = 0;
        CUcontext first = NULL; /* the first context retained: sharing prepares there after WARMUP_DONE */
        uint64_t t0, start = sage_now_ns();
        CUresult r;
        void (*after)(CUcontext); /* what the thread goes on with after WARMUP_DONE (tail_running) */
        void (*before)(void) = atomic_load(&warmup_before); /* driverless work beside cuInit (staging pages) */

        (void)arg;
        sage_hooks_enter(); /* anything the driver calls back goes straight through */
        if (before)
                before();
        if (!sage_driver_load() || !SAGE_REAL(cuInit) || !SAGE_REAL(cuDevicePrimaryCtxRetain))
                goto done;
        t0 = sage_now_ns();
        r = SAGE_REAL(cuInit)(0);
        traced(SAGE_SYM_cuInit, t0, r, 0, 0);
        if (r != CUDA_SUCCESS) {
                sage_info("warm-up: cuInit failed (%d); the app will see the driver's own error", (int)r);
                goto done;
        }
        /* A thread of libsage's own: relaxed for good (capture_mode.h), its staging runs while the app may capture. */
        (void)sage_capture_relax(sage_driver_extras.exchange_capture_mode);
        if (!sage_driver_extras.device_get_count || !sage_driver_extras.device_get ||
            sage_driver_extras.device_get_count(&count) != CUDA_SUCCESS)
                goto done;
        ndevices = parse_devices(sage_options()->warmup_devices, devices, WARMUP_MAX_DEVICES, count);
        for (int i = 0; i < ndevices; i++) {
                CUdevice dev;
                CUcontext ctx = NULL;

                if (sage_driver_extras.device_get(&dev, devices[i]) != CUDA_SUCCESS)
                        continue;
                t0 = sage_now_ns();
                /* The retain is held for the life of the process: it is what keeps the context warm. */
                r = SAGE_REAL(cuDevicePrimaryCtxRetain)(&ctx, dev);
                traced(SAGE_SYM_cuDevicePrimaryCtxRetain, t0, r, (uint64_t)dev, (uint64_t)(uintptr_t)ctx);
                if (r == CUDA_SUCCESS) {
                        sage_warmup_note_held(devices[i]);
                        sage_ctx_limit_apply(dev, ctx);
                        first = first ? first : ctx;
                }
        }
        sage_info("warm-up done in %.1f ms (%d device(s))", (double)(sage_now_ns() - start) / 1e6, count);
done:
        sage_hooks_leave();
        pthread_mutex_lock(&warmup_lock);
        atomic_store(&warmup_state, WARMUP_DONE);
        after = !rewarm_cancelled ? atomic_load(&warmup_after) : NULL; /* first NULL: `before`'s work let go */
        tail_running = after != NULL;
        pthread_cond_broadcast(&warmup_done);
        pthread_mutex_unlock(&warmup_lock);
        if (!after)
                return NULL;
        sage_hooks_enter(); /* sharing's pinned staging (ms of page-locking); wait_tail waits for it */
        after(first);
        sage_hooks_leave();
        pthread_mutex_lock(&warmup_lock);
        tail_running = false;
        pthread_cond_broadcast(&warmup_done);
        pthread_mutex_unlock(&warmup_lock);
        return NULL;
}

/* The time `ms` from now on the clock of warmup_done's waits. */
static struct timespec deadline_in(unsigned ms) {
        return sage_timespec_of_ns(sage_clock_ns(CLOCK_REALTIME) + (uint64_t)ms * 1000000ull);
}

/* One wait for warmup_done (warmup_lock held): false once the deadline passed. */
static bool wait_done(const struct timespec *deadline) {
        return pthread_cond_timedwait(&warmup_done, &warmup_lock, deadline) != ETIMEDOUT;
}

/* The warm-up and the work it does after WARMUP_DONE (fork, exit: nothing may be inside the driver). */
static void wait_tail(unsigned max_ms) {
        struct timespec deadline = deadline_in(max_ms);

        pthread_mutex_lock(&warmup_lock);
        while ((atomic_load(&warmup_state) == WARMUP_RUNNING || tail_running) && wait_done(&deadline))
                ;
        pthread_mutex_unlock(&warmup_lock);
}

static void at_exit_wait(void) {
        struct timespec deadline;

        wait_tail(10000);
        /* Pending re-warms give up; one already inside the driver is waited for. */
        deadline = deadline_in(10000);
        pthread_mutex_lock(&warmup_lock);
        rewarm_cancelled = true;
        pthread_cond_broadcast(&warmup_done);
        while (rewarm_in_driver > 0 && wait_done(&deadline))
                ;
        pthread_mutex_unlock(&warmup_lock);
}

/*
 * Exit order. exit() runs the handlers registered with atexit/__cxa_atexit
 * in reverse order, so a handler registered while the warm-up runs runs
 * before at_exit_wait: the driver's own exit-time teardown (static
 * destructors registered by its constructors, when the warm-up thread or
 * the app loads it during the warm-up) would tear the driver down under the
 * warm-up's cuInit. A short-lived program that exits during the warm-up
 * (ptxas under eager) then crashed in the driver's locks. So libsage's
 * __cxa_atexit, which every atexit() reaches, hands a handler registered
 * while the warm-up runs to glibc wrapped: at exit the wrapper waits for
 * the warm-up (bounded, as at_exit_wait) before calling it. Handlers
 * registered at any other time are passed through untouched.
 */
typedef int (*CxaAtexitFn)(void (*)(void *), void *, void *);

static CxaAtexitFn _Atomic real_cxa_atexit;

typedef struct DeferredExitHandler {
        void (*fn)(void *);
        void *arg;
} DeferredExitHandler;

static void run_after_warmup(void *data) {
        DeferredExitHandler h = *(DeferredExitHandler *)data;

        free(data);
        wait_tail(10000);
        h.fn(h.arg);
}

/* No pthread_once: a first call may come from a library constructor inside
 * dlopen (the loader's lock held) while another thread resolves; dlvsym
 * racing itself only repeats work. */
SAGE_NO_SANITIZE static CxaAtexitFn resolve_cxa_atexit(void) {
        CxaAtexitFn fn = atomic_load_explicit(&real_cxa_atexit, memory_order_acquire);

        if (!fn) {
                fn = SAGE_FN_CAST(CxaAtexitFn, dlvsym(RTLD_NEXT, "__cxa_atexit", "GLIBC_2.2.5"));
                atomic_store_explicit(&real_cxa_atexit, fn, memory_order_release);
        }
        return fn;
}

SAGE_EXPORT int __cxa_atexit(void (*fn)(void *), void *arg, void *dso_handle);

SAGE_EXPORT int __cxa_atexit(void (*fn)(void *), void *arg, void *dso_handle) {
        CxaAtexitFn real = resolve_cxa_atexit();
        DeferredExitHandler *h;

        if (!real)
                return -1;
        if (fn && atomic_load_explicit(&warmup_state, memory_order_acquire) == WARMUP_RUNNING &&
            (h = malloc(sizeof(*h)))) {
                h->fn = fn;
                h->arg = arg;
                /* Same dso_handle: a dlclose() still runs (and drops) it through __cxa_finalize. */
                if (real(run_after_warmup, h, dso_handle) == 0)
                        return 0;
                free(h);
        }
        return real(fn, arg, dso_handle);
}

/* A fork() while the warm-up thread is inside the driver would hand the child
 * a driver whose locks are held by a thread it does not have: wait first. */
static void at_fork_prepare(void) {
        wait_tail(10000);
}

static void at_fork_child(void) {
        if (atomic_load(&warmup_state) != WARMUP_IDLE) {
                /* The thread did not survive the fork; its work, if any, belongs to the parent. */
                atomic_store(&warmup_state, WARMUP_DONE);
                tail_running = false;
                pthread_mutex_init(&warmup_lock, NULL);
                pthread_cond_init(&warmup_done, NULL);
                sage_warn("fork() after the CUDA warm-up: this child cannot use CUDA (set SAGE_WARMUP=lazy or off "
                          "for servers that fork before they use the GPU)");
        }
}

/*
 * open_here: open the driver in this thread before the warm-up thread
 * exists (the dlopen and lookup triggers), so that thread never needs
 * glibc's loader lock for it. This thread may be inside a constructor with
 * that lock held (a lookup from a library's constructor, a nested dlopen):
 * glibc lets it re-enter; a warm-up thread would block on it until the
 * outer dlopen returns, with every bounded wait on the warm-up (fork, exit,
 * cuCtxGetLimit) stalling meanwhile. It is done before the state changes, so
 * nobody waits on the warm-up during the open. The load trigger runs in
 * libsage's constructor at start-up, where no other thread holds the lock:
 * its thread opens the driver itself, overlapped with the app's start-up.
 */
static void warmup_start(const char *why, bool open_here) {
        int expected = WARMUP_IDLE;

        if (open_here)
                sage_driver_load();
        if (!atomic_compare_exchange_strong(&warmup_state, &expected, WARMUP_RUNNING))
                return;
        atomic_store(&warmup_trigger_name, why);
        sage_info("warm-up started at %s", why);
        pthread_atfork(at_fork_prepare, NULL, at_fork_child);
        atexit(at_exit_wait);
        if (sage_spawn_thread(warmup_main, NULL, "sage-warmup") != 0) {
                atomic_store(&warmup_state, WARMUP_DONE);
                sage_warn("warm-up thread not started: %s", strerror(errno));
        }
}

void sage_warmup_trigger(SageWarmupTrigger trigger) {
        const char *mode;
        bool eager, lazy, automatic;

        if (SAGE_LIKELY(atomic_load_explicit(&warmup_state, memory_order_relaxed) != WARMUP_IDLE))
                return;
        mode = sage_options()->warmup;
        eager = strcmp(mode, "eager") == 0;
        lazy = strcmp(mode, "lazy") == 0;
        automatic = strcmp(mode, "auto") == 0;
        switch (trigger) {
        case SAGE_WARMUP_AT_LOAD:
                /* Never in a process without CUDA (a shell, ptxas, a wrapper), eager or not. */
                if ((eager || automatic) && sage_process_is_cuda_program())
                        warmup_start("load", false);
                break;
        case SAGE_WARMUP_AT_LOOKUP:
                if (lazy || eager)
                        warmup_start("lookup", true);
                break;
        case SAGE_WARMUP_AT_INIT:
                if (lazy || automatic || eager)
                        warmup_start("cuInit", true);
                break;
        }
}

void sage_warmup_note_library(const char *requested) {
        if (SAGE_LIKELY(atomic_load_explicit(&warmup_state, memory_order_relaxed) != WARMUP_IDLE))
                return;
        if (strcmp(sage_options()->warmup, "eager") != 0)
                return;
        if (sage_library_is_cuda(requested) || cuda_library_loaded())
                warmup_start("dlopen", true);
}

const char *sage_warmup_trigger_name(void) {
        return atomic_load(&warmup_trigger_name);
}

void sage_warmup_wait(unsigned max_ms) {
        struct timespec deadline;

        if (atomic_load(&warmup_state) != WARMUP_RUNNING)
                return;
        deadline = deadline_in(max_ms);
        pthread_mutex_lock(&warmup_lock);
        while (atomic_load(&warmup_state) == WARMUP_RUNNING && wait_done(&deadline))
                ;
        pthread_mutex_unlock(&warmup_lock);
}

void sage_warmup_set_work(void (*before)(void), void (*after)(CUcontext ctx)) {
        atomic_store(&warmup_before, before);
        atomic_store(&warmup_after, after);
}

void sage_warmup_note_held(int dev) {
        if (dev >= 0 && dev < 64)
                atomic_fetch_or(&held_devices, 1ull << dev);
}

static void *rewarm_main(void *arg) {
        int dev = (int)(intptr_t)arg;
        struct timespec deadline;
        bool go;

        deadline = deadline_in(REWARM_GRACE_MS);
        pthread_mutex_lock(&warmup_lock);
        while (!rewarm_cancelled && wait_done(&deadline))
                ;
        go = !rewarm_cancelled;
        if (go)
                rewarm_in_driver++;
        pthread_mutex_unlock(&warmup_lock);
        if (go) {
                CUcontext ctx;
                uint64_t t0 = sage_now_ns();
                CUresult r;

                sage_hooks_enter();
                (void)sage_capture_relax(sage_driver_extras.exchange_capture_mode);
                /* A retain re-creates the reset context; the release leaves SAGE's
                 * standing retain (which a reset does not drop) as it was. */
                r = SAGE_REAL(cuDevicePrimaryCtxRetain)(&ctx, dev);
                traced(SAGE_SYM_cuDevicePrimaryCtxRetain, t0, r, (uint64_t)dev, (uint64_t)(uintptr_t)ctx);
                if (r == CUDA_SUCCESS) {
                        sage_ctx_limit_apply(dev, ctx); /* the reset context came back with the defaults */
                        SAGE_REAL(cuDevicePrimaryCtxRelease_v2)(dev);
                }
                sage_hooks_leave();
                sage_info("re-warm of device %d after a reset: %.1f ms", dev, (double)(sage_now_ns() - t0) / 1e6);
        }
        pthread_mutex_lock(&warmup_lock);
        if (go)
                rewarm_in_driver--;
        rewarm_pending--;
        pthread_cond_broadcast(&warmup_done);
        pthread_mutex_unlock(&warmup_lock);
        return NULL;
}

void sage_warmup_rewarm(int dev) {
        /* A reset may come while the warm-up is still retaining this device
         * (the app's own retain raced it to the same context): let it finish,
         * so the device counts as held. */
        sage_warmup_wait(10000);
        if (dev < 0 || dev >= 64 || !(atomic_load(&held_devices) & (1ull << dev)) ||
            strcmp(sage_options()->warmup, "off") == 0)
                return;
        pthread_mutex_lock(&warmup_lock);
        if (rewarm_cancelled || rewarm_pending > 0) {
                pthread_mutex_unlock(&warmup_lock);
                return;
        }
        rewarm_pending++;
        pthread_mutex_unlock(&warmup_lock);
        if (sage_spawn_thread(rewarm_main, (void *)(intptr_t)dev, "sage-rewarm") != 0) {
                pthread_mutex_lock(&warmup_lock);
                rewarm_pending--;
                pthread_mutex_unlock(&warmup_lock);
        }
}

/* Lean contexts (ctx_limit.c): the warm-up sets the stack limit; an app that
 * reads it while the warm-up runs sees the value it will have. */
CUresult sage_impl_cuCtxGetLimit(sage_fn_cuCtxGetLimit_t real, size_t *pvalue, CUlimit limit) {
        if (limit == CU_LIMIT_STACK_SIZE && sage_options()->ctx_stack_limit)
                sage_warmup_wait(10000);
        return real(pvalue, limit);
}
