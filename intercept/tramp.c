/*
 * The trampoline table (tramp.h). The trampolines themselves are code
 * generated at build time (tramp_table.S, fixed stride); this file gives
 * each one its target: sage_tramp_real[i], read by the trampoline's
 * jump. A slot is written once, under the lock, before its trampoline is
 * first handed out, and never changes: a trampoline the app holds always
 * enters the same driver function. A map from driver function to slot
 * makes the answer stable whichever way the app asked (cuGetProcAddress,
 * dlsym, an export table).
 *
 * The slow path runs when the gate word says so, or always for the
 * counted variant (the trace): it counts the call by slot and hands it to
 * the gate (tramp_gate.c) with what the slot's function is known to
 * return: a CUresult, unless every request for it came from an export
 * table.
 */
#include "tramp.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "hooks.h"
#include "util.h"

/* The jump slots (tramp_table.S reads them by name). */
void *sage_tramp_real[SAGE_TRAMP_TOTAL];

/* The generated code, two variants of fixed stride (tramp_table.S). */
extern const char sage_tramp_gated[], sage_tramp_gated_end[];
extern const char sage_tramp_counted[], sage_tramp_counted_end[];

static pthread_mutex_t tramp_lock = PTHREAD_MUTEX_INITIALIZER;
static bool named_bound;     /* under tramp_lock */
static unsigned pool_used;   /* under tramp_lock */
static atomic_uint used;     /* slots with a target, named or pool */
static atomic_bool counting; /* the trace is on: count in the slow path */
static _Atomic uint64_t calls[SAGE_TRAMP_TOTAL];
static atomic_bool untyped[SAGE_TRAMP_TOTAL]; /* written under tramp_lock, before the slot is handed out */
static char pool_labels[SAGE_TRAMP_POOL][64]; /* written with the slot */

/* Open addressing, at most half full: driver function -> slot + 1 (under tramp_lock). */
#define MAP_SLOTS 8192
_Static_assert(MAP_SLOTS >= 2 * SAGE_TRAMP_TOTAL, "trampoline map too small");
static struct {
        const void *fn;
        uint32_t slot;
} map[MAP_SLOTS];

static size_t map_hash(const void *fn) {
        uintptr_t h = (uintptr_t)fn;
        h ^= h >> 17;
        h *= 0x9e3779b97f4a7c15ull;
        return (size_t)(h >> 40) & (MAP_SLOTS - 1);
}

static int map_find(const void *fn) {
        for (size_t i = map_hash(fn);; i = (i + 1) & (MAP_SLOTS - 1)) {
                if (!map[i].fn)
                        return -1;
                if (map[i].fn == fn)
                        return (int)map[i].slot;
        }
}

static void map_insert(const void *fn, uint32_t slot) {
        for (size_t i = map_hash(fn);; i = (i + 1) & (MAP_SLOTS - 1)) {
                if (!map[i].fn) {
                        map[i].fn = fn;
                        map[i].slot = slot;
                        return;
                }
                if (map[i].fn == fn)
                        return; /* an alias (two names, one function): the first name keeps it */
        }
}

void sage_tramp_bind_named(void *(*resolve)(const char *name, void *ctx), void *ctx) {
        pthread_mutex_lock(&tramp_lock);
        if (!named_bound) {
                named_bound = true;
                for (uint32_t i = 0; i < SAGE_TRAMP_NAMED; i++) {
                        void *fn = resolve(sage_tramp_names[i], ctx);

                        if (fn && map_find(fn) < 0) {
                                sage_tramp_real[i] = fn;
                                map_insert(fn, i);
                                atomic_fetch_add(&used, 1);
                        }
                }
        }
        pthread_mutex_unlock(&tramp_lock);
}

static void *tramp_address(uint32_t slot, bool counted) {
        if (counted)
                return (void *)(sage_tramp_counted + (size_t)slot * SAGE_TRAMP_COUNTED_STRIDE);
        return (void *)(sage_tramp_gated + (size_t)slot * SAGE_TRAMP_GATED_STRIDE);
}

void *sage_tramp_get(void *fn, const char *label, unsigned flags) {
        int slot;

        if (!fn)
                return NULL;
        pthread_mutex_lock(&tramp_lock);
        slot = map_find(fn);
        if (slot < 0 && pool_used < SAGE_TRAMP_POOL) {
                slot = (int)(SAGE_TRAMP_NAMED + pool_used);
                snprintf(pool_labels[pool_used], sizeof(pool_labels[0]), "%s", label ? label : "?");
                pool_used++;
                sage_tramp_real[slot] = fn;
                atomic_store(&untyped[slot], (flags & SAGE_TRAMP_UNTYPED) != 0);
                map_insert(fn, (uint32_t)slot);
                atomic_fetch_add(&used, 1);
        } else if (slot >= 0 && !(flags & SAGE_TRAMP_UNTYPED)) {
                atomic_store(&untyped[slot], false); /* asked for by name: a driver entry point */
        }
        pthread_mutex_unlock(&tramp_lock);
        return slot < 0 ? NULL : tramp_address((uint32_t)slot, (flags & SAGE_TRAMP_COUNTED) != 0);
}

bool sage_tramp_owns(const void *p) {
        const char *c = p;

        return (c >= sage_tramp_gated && c < sage_tramp_gated_end) ||
               (c >= sage_tramp_counted && c < sage_tramp_counted_end);
}

void sage_tramp_set_counting(bool on) {
        atomic_store(&counting, on);
}

unsigned sage_tramp_used(void) {
        return atomic_load(&used);
}

void sage_tramp_each_count(void (*visit)(const char *label, uint64_t count, void *ctx), void *ctx) {
        for (uint32_t i = 0; i < SAGE_TRAMP_TOTAL; i++) {
                uint64_t n = atomic_load_explicit(&calls[i], memory_order_relaxed);

                if (n)
                        visit(i < SAGE_TRAMP_NAMED ? sage_tramp_names[i] : pool_labels[i - SAGE_TRAMP_NAMED], n, ctx);
        }
}

uint32_t sage_tramp_slow_path(uint32_t index, uint32_t entered) {
        bool no_type = false;

        if (index < SAGE_TRAMP_TOTAL) {
                if (atomic_load_explicit(&counting, memory_order_relaxed))
                        atomic_fetch_add_explicit(&calls[index], 1, memory_order_relaxed);
                no_type = atomic_load_explicit(&untyped[index], memory_order_relaxed);
        }
        return sage_tramp_gate_pass(entered, no_type);
}
