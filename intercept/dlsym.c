/*
 * Which dlsym lookups SAGE substitutes (and what a dlopen tells the warm-up). Only names of the driver API's form
 * (cu followed by an upper-case letter) are candidates; for those the real
 * lookup is made with the caller's handle and the answer replaced by our
 * hook only when it is the address of a driver entry point we hook (pointer
 * identity, see driver.c). Every other lookup returns NULL here, telling
 * the trampoline to hand the call to glibc's dlsym with the caller's frame.
 */
#include <cuda.h>

#include <dlfcn.h>
#include <stdatomic.h>
#include <stddef.h>

#include "driver.h"
#include "hooks.h"
#include "stats.h"
#include "tramp_route.h"
#include "util.h"
#include "warmup.h"

void *sage_dlsym_route(void *handle, const char *name);
void sage_dlopen_note(const char *file, int mode);

/*
 * Before every dlopen (the trampoline then hands the call to glibc with the
 * caller's frame): an eager warm-up starts once the process loads a CUDA
 * library. Only the name is looked at; a CUDA library that comes as a
 * dependency is seen at the next dlopen or dlsym.
 */
/* Set at the first dlopen: before it, a dlsym (a sanitizer's runtime
 * resolving its interceptors before it is initialised) must not get here. */
static atomic_bool dlopen_seen;

SAGE_NO_SANITIZE void sage_dlopen_note(const char *file, int mode) {
        (void)mode;
        sage_real_dlopen_ensure();
        if (!sage_driver_loading())
                sage_warmup_note_library(file);
        atomic_store_explicit(&dlopen_seen, true, memory_order_relaxed);
}

SAGE_NO_SANITIZE void *sage_dlsym_route(void *handle, const char *name) {
        void *fn;
        int sym;

        sage_real_dlsym_ensure();
        /* Python looks up a module's init function right after its dlopen:
         * a CUDA library that came in as a dependency is seen here. */
        if (atomic_load_explicit(&dlopen_seen, memory_order_relaxed) && !sage_driver_loading())
                sage_warmup_note_library(NULL);
        if (!name || name[0] != 'c' || name[1] != 'u' || name[2] < 'A' || name[2] > 'Z')
                return NULL;
        if (sage_driver_loading())
                return NULL;
        sage_warmup_trigger(SAGE_WARMUP_AT_LOOKUP);
        /* The identity map needs the driver open; the caller is about to use it anyway. */
        if (!sage_driver_load())
                return NULL;
        /*
         * RTLD_NEXT cannot be resolved for the caller from here (glibc would
         * take libsage as the caller): for a driver name, the next object
         * after libsage is what the caller wanted too in every layout where
         * libsage is preloaded, and its answer still goes through identity.
         */
        fn = sage_real_dlsym(handle, name);
        sym = sage_driver_sym_of(fn);
        if (sym < 0) {
                /* No hook: a trampoline while suspend (or the trace) is on; otherwise glibc answers. */
                void *t = sage_tramp_route_on() ? sage_tramp_route(fn, name) : fn;
                return t != fn ? t : NULL;
        }
        sage_stats_count(SAGE_STAT_DLSYM_SUBSTITUTED);
        return sage_hook_table[sym];
}
