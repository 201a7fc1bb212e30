/*
 * Process-level set-up of libsage, and the one place that wires its
 * features to the hook layer: each feature's observer is registered in its
 * slot here (hooks.h), and the feature turns it on while it needs to see
 * calls. The constructor stays trivial: it reads the options (getenv only)
 * and, when SAGE_TRACE is set, arms the trace. The driver itself is opened
 * lazily by the first hook that needs it, so a process that never touches
 * CUDA never loads libcuda because of us.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "capture_mode.h"
#include "hooks.h"
#include "log.h"
#include "options.h"
#include "redirect.h"
#include "share.h"
#include "stats.h"
#include "suspend.h"
#include "trace.h"
#include "tramp.h"
#include "warmup.h"

static void at_exit_stats(void) {
        if (sage_log_enabled(SAGE_LOG_INFO))
                sage_stats_print(stderr, false);
}

/* A fork()ed child: its CUDA is not the parent's (suspend.c, share_state.c say what that means to them). */
static void forked_child(void) {
        sage_suspend_forked();
        sage_share_forked();
}

static void init_once(void) {
        const SageOptions *o = sage_options();

        sage_hooks_register(SAGE_OBSERVER_TRACE, &sage_trace_observer);
        sage_hooks_register(SAGE_OBSERVER_REDIRECT, &sage_redirect_observer);
        sage_hooks_register(SAGE_OBSERVER_SHARE, &sage_share_observer);
        sage_hooks_register(SAGE_OBSERVER_SUSPEND, &sage_suspend_observer);
        sage_capture_on_close(sage_share_captures_closed);
        sage_suspend_start();
        sage_trace_start(o->trace, o->trace_max_events, o->trace_stacks);
        /* The trace counts calls through trampolines too (entry points without a hook). */
        sage_tramp_set_counting(sage_trace_on() && o->trace_unhooked);
        atexit(at_exit_stats);
        /* Here, at the start, once: not from a thread holding a lock a fork's handlers would need. */
        pthread_atfork(NULL, NULL, forked_child);
        sage_warmup_set_work(sage_share_populate_ahead, sage_share_prestage);
        sage_warmup_trigger(SAGE_WARMUP_AT_LOAD);
}

__attribute__((constructor)) static void sage_constructor(void) {
        static pthread_once_t once = PTHREAD_ONCE_INIT;
        pthread_once(&once, init_once);
}
