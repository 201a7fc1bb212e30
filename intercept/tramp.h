/*
 * Trampolines: a libsage entry for every driver entry point that has no
 * hook (docs/interception.md, "Trampolines"). With SAGE_SUSPEND=1 (or the
 * trace on) what the app fetches through cuGetProcAddress, dlsym on
 * libcuda, or cudart's export tables comes back as a trampoline to the
 * driver's function: it passes the suspend gate (a counter and one load
 * while the gate is open) and enters the driver with every argument
 * register, stack argument and return address as the caller left them;
 * the call counts as in flight until the driver function returns
 * (tramp_entry.S). The table is generated from cuda.h
 * (tramp_gen.py): one named trampoline per unhooked entry point it
 * declares, then a pool for export-table slots and pointers the header
 * does not name. This module owns the table: which driver function each
 * trampoline enters, the call counts; what to hand out is
 * tramp_route.c's decision.
 */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "tramp_abi.h"
#include "tramp_table.h"

#define SAGE_TRAMP_TOTAL (SAGE_TRAMP_NAMED + SAGE_TRAMP_POOL)

/* Generated: the names of the named trampolines, in table order. */
extern const char *const sage_tramp_names[SAGE_TRAMP_NAMED];

/*
 * Bind the named trampolines to the driver: resolve(name) gives the
 * driver's function of that exported name (NULL if it has none). Once,
 * before the first sage_tramp_get; later calls do nothing.
 */
void sage_tramp_bind_named(void *(*resolve)(const char *name, void *ctx), void *ctx);

/* sage_tramp_get's flags. */
enum {
        SAGE_TRAMP_COUNTED = 1, /* the variant that always takes the slow path and counts (the trace) */
        SAGE_TRAMP_UNTYPED = 2, /* what `fn` returns is not known (an export-table slot): a failed gate
                                 * never returns a CUresult from it (tramp_gate.c) */
};

/*
 * The trampoline that enters `fn`: the named one if `fn` is a named entry
 * point, else a pool slot labelled `label` (kept for the trace; truncated
 * to 63 bytes). The same `fn` always gets the same slot; it is untyped
 * only while every request for it was (a named entry point, or one asked
 * for by name, returns CUresult). NULL when the pool is full (the caller
 * then hands out `fn` itself).
 */
void *sage_tramp_get(void *fn, const char *label, unsigned flags);

/* Is `p` one of our trampolines? */
bool sage_tramp_owns(const void *p);

/* Count calls in the slow path (the counted variant takes it always). */
void sage_tramp_set_counting(bool on);

/* Calls counted per trampoline: visit(label, count, ctx) for each one called. */
void sage_tramp_each_count(void (*visit)(const char *label, uint64_t count, void *ctx), void *ctx);

/* Trampolines handed out so far (named + pool), for the log and the tests. */
unsigned sage_tramp_used(void);

/* Called by tramp_entry.S (`entered`: the fast path counted the call in flight): SAGE_TRAMP_TRACK,
 * SAGE_TRAMP_TAIL (tramp_abi.h), or the CUresult to return without entering the driver. */
uint32_t sage_tramp_slow_path(uint32_t index, uint32_t entered);

/* The slow path through the suspend gate (tramp_gate.c; a test's own in test_tramp.c): as
 * sage_tramp_slow_path answers, for a call whose return type is known unless `untyped`. */
uint32_t sage_tramp_gate_pass(uint32_t entered, bool untyped);
