/* What libsage hands out for a driver entry point it does not hook (tramp_route.c). */
#pragma once

#include <stdbool.h>

/* Are trampolines handed out (SAGE_SUSPEND=1, or the trace on with SAGE_TRACE_UNHOOKED=1)? */
bool sage_tramp_route_on(void);

/*
 * For a driver answer that is no hooked entry point: a trampoline to `fn`
 * when trampolines are on and `fn` is driver code, else `fn` unchanged.
 * `label` names it in the trace when cuda.h does not (the requested name).
 */
void *sage_tramp_route(void *fn, const char *label);

/* The same without the on/off check (export tables decide for themselves); `untyped`: what `fn`
 * returns is not known (an export-table slot: tramp.h, SAGE_TRAMP_UNTYPED). */
void *sage_tramp_wrap(void *fn, const char *label, bool untyped);

/* Does `p` point into the driver's executable text? */
bool sage_driver_text_holds(const void *p);

/*
 * Has an entry point been handed out ungated while suspend is on (the
 * trampoline pool full, an export table without a size word, or
 * SAGE_GATE_EXPORT_TABLES=0)? A call through it would run into a
 * checkpointed driver instead of resuming the process first: suspend.c
 * may report the instance as not suspendable for "ungated entry points".
 * Entry points the app links directly (-lcuda) and SAGE does not hook are
 * not seen at all (docs/interception.md).
 */
bool sage_tramp_ungated_seen(void);
/* export_tables.c: the part of it that concerns export tables. */
bool sage_export_tables_ungated(void);
