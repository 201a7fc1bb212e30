/* The real driver: opened lazily, its hooked entry points and their identity map. */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "hooks.h"

/* Real entry points, filled once the driver is open; NULL where it lacks one. */
extern void *sage_real_table[SAGE_SYM_COUNT];
extern atomic_bool sage_driver_loaded;

/* Open the driver (SAGE_DRIVER, default libcuda.so.1) once. False if it cannot be opened. */
bool sage_driver_load(void);

/* The real entry point of `sym`, opening the driver on first use. */
static inline void *sage_real(SageSym sym) {
        if (__builtin_expect(!atomic_load_explicit(&sage_driver_loaded, memory_order_acquire), 0))
                sage_driver_load();
        return sage_real_table[sym];
}

/*
 * Pointer identity: which hooked symbol is `fn` the real driver entry of?
 * -1 when it is none of them (or the driver is not open yet).
 */
int sage_driver_sym_of(const void *fn);

/* Our hook for `fn` when it is a hooked driver entry point, else `fn` itself. */
void *sage_driver_substitute(void *fn);

/* True on the thread that is inside sage_driver_load (dlopen may call back). */
bool sage_driver_loading(void);

/* The real dlsym (glibc's, versioned), for libsage's own use. */
void *sage_real_dlsym(void *handle, const char *name);

/* The handle of the real driver, NULL until loaded or if it could not be opened. */
void *sage_driver_handle(void);
