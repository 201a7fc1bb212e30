/*
 * The real driver. libsage never links libcuda: it opens it on the first
 * driver call (dlopen, RTLD_LOCAL) and resolves every hooked symbol into
 * sage_driver.real. The same pass builds the identity map from each real
 * entry point to our hook, which is how dlsym and cuGetProcAddress results
 * are routed: whatever name or version a caller asked for, if the driver
 * answered with the address of an entry point we hook, the caller gets our
 * hook for exactly that entry point. Nothing is guessed from names.
 *
 * dlopen runs the driver's constructors, which may call dlsym; the thread
 * doing the load is marked so that those calls pass through untouched
 * instead of waiting on the load they are part of. No thread ever waits
 * for another thread's load (see driver_load_race): any thread may hold
 * glibc's loader lock (a library constructor) when it first needs the driver.
 */
#include <cuda.h>

#include "driver.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "log.h"
#include "options.h"
#include "ptr_map.h"
#include "util.h"

SageDriver sage_driver;

static void *driver_handle;
static _Thread_local bool driver_loading_here;

/* Entry point -> symbol (ptr_map.h). */
#define IDENTITY_SLOTS 512
_Static_assert(IDENTITY_SLOTS >= 2 * SAGE_SYM_COUNT, "identity map too small");
static SagePtrMapSlot identity[IDENTITY_SLOTS];

int sage_driver_sym_of(const void *fn) {
        if (!fn || !atomic_load_explicit(&sage_driver.loaded, memory_order_acquire))
                return -1;
        return (int)sage_ptr_map_find(identity, IDENTITY_SLOTS, fn);
}

bool sage_driver_loading(void) {
        return driver_loading_here;
}

void *sage_driver_handle(void) {
        return atomic_load_explicit(&sage_driver.loaded, memory_order_acquire) ? driver_handle : NULL;
}

/* ---------------------------------------------------------------- dlsym */

/* The jump slots of the dlsym and dlopen trampolines (dlsym_trampoline.S
 * reads them by name): glibc's function of each version. No pthread_once
 * (see the load below): dlvsym takes the loader lock, so a thread inside a
 * library constructor must never wait for another thread's dlvsym. Racing
 * threads store the same values; the v234 slot is stored last (release) and
 * is the one checked. */
void *sage_real_dlsym_v234, *sage_real_dlsym_v225;
void *sage_real_dlopen_v234, *sage_real_dlopen_v225;

SAGE_NO_SANITIZE static void resolve_versions(const char *name, void **v234_slot, void **v225_slot) {
        void *v234, *v225;

        if (__atomic_load_n(v234_slot, __ATOMIC_ACQUIRE))
                return;
        v234 = dlvsym(RTLD_NEXT, name, "GLIBC_2.34");
        v225 = dlvsym(RTLD_NEXT, name, "GLIBC_2.2.5");
        /* Before glibc 2.34 only the old version exists; use it for both. */
        __atomic_store_n(v225_slot, v225 ? v225 : v234, __ATOMIC_RELAXED);
        __atomic_store_n(v234_slot, v234 ? v234 : v225, __ATOMIC_RELEASE);
}

SAGE_NO_SANITIZE void sage_real_dlsym_ensure(void) {
        resolve_versions("dlsym", &sage_real_dlsym_v234, &sage_real_dlsym_v225);
}

SAGE_NO_SANITIZE void sage_real_dlopen_ensure(void) {
        resolve_versions("dlopen", &sage_real_dlopen_v234, &sage_real_dlopen_v225);
}

void *sage_real_dlsym(void *handle, const char *name) {
        void *(*real)(void *, const char *);

        sage_real_dlsym_ensure();
        real = SAGE_FN_CAST(void *(*)(void *, const char *), sage_real_dlsym_v234);
        return real ? real(handle, name) : NULL;
}

/* ---------------------------------------------------------------- loading */

/*
 * No pthread_once and no lock held across the loader: dlopen and dlsym take
 * glibc's loader lock, and a thread inside a library constructor (inside
 * someone's dlopen) already holds it. Had such a thread to wait for another
 * thread's load (the eager warm-up's, blocked on that very lock), the
 * process would deadlock: torch under SAGE_WARMUP=eager did. So each thread
 * that finds the driver not loaded opens and resolves it itself, into its
 * own copy; the first to finish publishes it (publish_lock guards only the
 * copy, never a loader call), a later one drops its handle. Racing loads
 * repeat work (dlopen of an open library only counts a reference); nobody
 * waits on another thread's load.
 */
static pthread_mutex_t publish_lock = PTHREAD_MUTEX_INITIALIZER;

static void driver_load_race(void) {
        const char *path = sage_options()->driver;
        uint64_t t0 = sage_now_ns();
        void *real[SAGE_SYM_COUNT] = { 0 };
        SageDriverExtras extras = { 0 };
        size_t found = 0;
        void *handle, *surplus = NULL;

        driver_loading_here = true;
        handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (handle) {
                for (int i = 0; i < SAGE_SYM_COUNT; i++)
                        found += (real[i] = sage_real_dlsym(handle, sage_sym_info[i].name)) != NULL;
#define RESOLVE_EXTRA(field, symbol, type) \
        extras.field = SAGE_FN_CAST(__typeof__(type), sage_real_dlsym(handle, symbol));
                SAGE_DRIVER_EXTRAS(RESOLVE_EXTRA)
#undef RESOLVE_EXTRA
        }
        driver_loading_here = false;

        pthread_mutex_lock(&publish_lock);
        if (atomic_load_explicit(&sage_driver.loaded, memory_order_relaxed)) {
                surplus = handle; /* another thread published first */
        } else {
                if (handle) {
                        memcpy(sage_driver.real, real, sizeof(real));
                        sage_driver.extras = extras;
                        for (int i = 0; i < SAGE_SYM_COUNT; i++)
                                if (real[i])
                                        sage_ptr_map_insert(identity, IDENTITY_SLOTS, real[i], (uint32_t)i);
                        driver_handle = handle;
                        sage_info("opened %s: %zu of %d hooked entry points present (%.2f ms)", path, found,
                                  (int)SAGE_SYM_COUNT, (double)(sage_now_ns() - t0) / 1e6);
                } else {
                        sage_warn("cannot open the CUDA driver %s: %s; driver calls will fail as without a driver",
                                  path, dlerror());
                }
                atomic_store_explicit(&sage_driver.loaded, true, memory_order_release);
        }
        pthread_mutex_unlock(&publish_lock);
        if (surplus)
                dlclose(surplus); /* only drops this thread's reference */
}

bool sage_driver_load(void) {
        if (atomic_load_explicit(&sage_driver.loaded, memory_order_acquire))
                return driver_handle != NULL;
        if (driver_loading_here)
                return false;
        driver_load_race();
        return driver_handle != NULL;
}
