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
 * instead of waiting on the load they are part of.
 */
#include <cuda.h>

#include "driver.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "log.h"
#include "options.h"
#include "util.h"

SageDriver sage_driver;

static void *driver_handle;
static pthread_once_t driver_once = PTHREAD_ONCE_INIT;
static _Thread_local bool driver_loading_here;

/* Open addressing, power of two, at most half full: pointer -> symbol + 1. */
#define IDENTITY_SLOTS 512
_Static_assert(IDENTITY_SLOTS >= 2 * SAGE_SYM_COUNT, "identity map too small");
static struct {
        const void *fn;
        int sym;
} identity[IDENTITY_SLOTS];

static size_t identity_slot(const void *fn) {
        uintptr_t h = (uintptr_t)fn;
        h ^= h >> 17;
        h *= 0x9e3779b97f4a7c15ull;
        return (size_t)(h >> 40) & (IDENTITY_SLOTS - 1);
}

static void identity_insert(const void *fn, int sym) {
        for (size_t i = identity_slot(fn);; i = (i + 1) & (IDENTITY_SLOTS - 1)) {
                if (!identity[i].fn) {
                        identity[i].fn = fn;
                        identity[i].sym = sym;
                        return;
                }
                if (identity[i].fn == fn)
                        return; /* an alias of an entry point already mapped: keep the first */
        }
}

int sage_driver_sym_of(const void *fn) {
        if (!fn || !atomic_load_explicit(&sage_driver.loaded, memory_order_acquire))
                return -1;
        for (size_t i = identity_slot(fn);; i = (i + 1) & (IDENTITY_SLOTS - 1)) {
                if (!identity[i].fn)
                        return -1;
                if (identity[i].fn == fn)
                        return identity[i].sym;
        }
}

bool sage_driver_loading(void) {
        return driver_loading_here;
}

void *sage_driver_handle(void) {
        return atomic_load_explicit(&sage_driver.loaded, memory_order_acquire) ? driver_handle : NULL;
}

/* ---------------------------------------------------------------- dlsym */

/* The jump slots of the dlsym trampolines (dlsym_trampoline.S reads them by
 * name): glibc's dlsym of each version, written once under dlsym_once. */
void *(*sage_real_dlsym_v234)(void *, const char *);
void *(*sage_real_dlsym_v225)(void *, const char *);
static pthread_once_t dlsym_once = PTHREAD_ONCE_INIT;

SAGE_NO_SANITIZE static void real_dlsym_init(void) {
        void *v234 = dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.34");
        void *v225 = dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.2.5");

        /* Before glibc 2.34 only the old version exists; use it for both. */
        sage_real_dlsym_v234 = SAGE_FN_CAST(void *(*)(void *, const char *), v234 ? v234 : v225);
        sage_real_dlsym_v225 = SAGE_FN_CAST(void *(*)(void *, const char *), v225 ? v225 : v234);
}

SAGE_NO_SANITIZE void sage_real_dlsym_ensure(void) {
        pthread_once(&dlsym_once, real_dlsym_init);
}

/* The dlopen trampolines' jump slots, likewise (dlopen_once). */
void *(*sage_real_dlopen_v234)(const char *, int);
void *(*sage_real_dlopen_v225)(const char *, int);
static pthread_once_t dlopen_once = PTHREAD_ONCE_INIT;

SAGE_NO_SANITIZE static void real_dlopen_init(void) {
        void *v234 = dlvsym(RTLD_NEXT, "dlopen", "GLIBC_2.34");
        void *v225 = dlvsym(RTLD_NEXT, "dlopen", "GLIBC_2.2.5");

        sage_real_dlopen_v234 = SAGE_FN_CAST(void *(*)(const char *, int), v234 ? v234 : v225);
        sage_real_dlopen_v225 = SAGE_FN_CAST(void *(*)(const char *, int), v225 ? v225 : v234);
}

SAGE_NO_SANITIZE void sage_real_dlopen_ensure(void) {
        pthread_once(&dlopen_once, real_dlopen_init);
}

void *sage_real_dlsym(void *handle, const char *name) {
        sage_real_dlsym_ensure();
        return sage_real_dlsym_v234 ? sage_real_dlsym_v234(handle, name) : NULL;
}

/* ---------------------------------------------------------------- loading */

static void driver_load_once(void) {
        const char *path = sage_options()->driver;
        uint64_t t0 = sage_now_ns();
        size_t found = 0;

        driver_loading_here = true;
        driver_handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (!driver_handle) {
                sage_warn("cannot open the CUDA driver %s: %s; driver calls will fail as without a driver", path,
                          dlerror());
                driver_loading_here = false;
                atomic_store_explicit(&sage_driver.loaded, true, memory_order_release);
                return;
        }
        for (int i = 0; i < SAGE_SYM_COUNT; i++) {
                void *fn = sage_real_dlsym(driver_handle, sage_sym_info[i].name);

                sage_driver.real[i] = fn;
                if (fn) {
                        identity_insert(fn, i);
                        found++;
                }
        }
#define RESOLVE_EXTRA(field, symbol, type) \
        sage_driver_extras.field = SAGE_FN_CAST(__typeof__(type), sage_real_dlsym(driver_handle, symbol));
        SAGE_DRIVER_EXTRAS(RESOLVE_EXTRA)
#undef RESOLVE_EXTRA
        driver_loading_here = false;
        atomic_store_explicit(&sage_driver.loaded, true, memory_order_release);
        sage_info("opened %s: %zu of %d hooked entry points present (%.2f ms)", path, found, (int)SAGE_SYM_COUNT,
                  (double)(sage_now_ns() - t0) / 1e6);
}

bool sage_driver_load(void) {
        if (driver_loading_here)
                return false;
        pthread_once(&driver_once, driver_load_once);
        return driver_handle != NULL;
}
