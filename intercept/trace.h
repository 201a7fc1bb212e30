/* The trace dump (SAGE_TRACE): per-thread event buffers, Chrome trace-event JSON at exit. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "hooks.h"

/* Is the trace on (SAGE_TRACE named a file at start-up)? */
bool sage_trace_on(void);

/* The trace's observer (hooks.h): times each call, records it after. */
extern const SageObserver sage_trace_observer;

/* Start tracing to `path` ("%p" becomes the pid). Returns false if disabled. */
bool sage_trace_start(const char *path, uint64_t max_events, bool stacks);

/* Record one call. Lock-free: the thread's own buffer. The observer calls it. */
void sage_trace_record(SageSym sym, uint64_t t0_ns, uint64_t t1_ns, int result, uint64_t a0, uint64_t a1, uint64_t a2);

/* Write the dump now (at exit, or from a fatal-signal handler). Idempotent. */
void sage_trace_dump(void);

/* Stack capture (trace_stacks.c): fills `frames`, returns the count (0 if unavailable). */
int sage_stack_capture(void **frames, int max);
/* "symbol+0xoff (object)" for one frame. */
void sage_stack_describe(const void *frame, char *out, unsigned size);
/* True when `frame` lies in libsage itself (skipped at the top of stacks). */
bool sage_stack_is_ours(const void *frame);
