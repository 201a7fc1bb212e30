/*
 * Process-level set-up of libsage. The constructor stays trivial: it reads
 * the options (getenv only) and, when SAGE_TRACE is set, arms the trace.
 * The driver itself is opened lazily by the first hook that needs it, so a
 * process that never touches CUDA never loads libcuda because of us.
 */
#include "intercept.h"

#include <pthread.h>
#include <stdio.h>

#include "log.h"
#include "options.h"
#include "trace.h"
#include "warmup.h"

atomic_ullong sage_stats[SAGE_STAT_COUNT];
atomic_uint sage_hook_slow;

static const char *const stat_names[SAGE_STAT_COUNT] = {
#define SAGE_STAT(name, text) #name,
#include "stats.def"
#undef SAGE_STAT
};

void sage_stats_print(FILE *f, bool json) {
        if (json)
                fputs("\"stats\":{", f);
        for (int i = 0; i < SAGE_STAT_COUNT; i++) {
                unsigned long long v = atomic_load_explicit(&sage_stats[i], memory_order_relaxed);
                if (json)
                        fprintf(f, "%s\"%s\":%llu", i ? "," : "", stat_names[i], v);
                else
                        fprintf(f, "sage: stat %s=%llu\n", stat_names[i], v);
        }
        if (json)
                fputs("}", f);
}

static void at_fork_child(void) {
        if (sage_tracing)
                sage_trace_forget();
}

static void at_exit_stats(void) {
        if (sage_log_enabled(SAGE_LOG_INFO))
                sage_stats_print(stderr, false);
}

static void init_once(void) {
        const SageOptions *o = sage_options();

        sage_trace_start(o->trace, o->trace_max_events, o->trace_stacks);
        pthread_atfork(NULL, NULL, at_fork_child);
        atexit(at_exit_stats);
        sage_warmup_trigger(SAGE_WARMUP_AT_LOAD);
}

void sage_init(void) {
        static pthread_once_t once = PTHREAD_ONCE_INIT;
        pthread_once(&once, init_once);
}

__attribute__((constructor)) static void sage_constructor(void) {
        sage_init();
}
