/*
 * Backtraces for the trace (SAGE_TRACE_STACKS=1) through libunwind. The
 * library is opened only when stacks are asked for, so libsage's hard
 * dependencies stay libc/libdl/libpthread: a node without libunwind runs
 * libsage fine and records events without stacks (warned once with
 * SAGE_VERBOSE=1). Frames are symbolized with dladdr at dump time, not
 * while the app runs.
 */
#include "trace.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "driver.h"
#include "log.h"
#include "util.h"

typedef int (*unw_backtrace_fn)(void **buffer, int size);

static unw_backtrace_fn unwind_backtrace;
static pthread_once_t unwind_once = PTHREAD_ONCE_INIT;
static void *our_base;

static void unwind_open(void) {
        Dl_info info;

        if (dladdr(SAGE_FN_CAST(void *, sage_stack_capture), &info))
                our_base = info.dli_fbase;
#if SAGE_HAVE_LIBUNWIND
        {
                void *lib = dlopen("libunwind.so.8", RTLD_NOW | RTLD_LOCAL);

                if (lib)
                        unwind_backtrace = SAGE_FN_CAST(unw_backtrace_fn, sage_real_dlsym(lib, "unw_backtrace"));
                if (!unwind_backtrace)
                        sage_warn(
                                "SAGE_TRACE_STACKS=1 but libunwind.so.8 cannot be loaded (%s); events carry no stacks",
                                lib ? "no unw_backtrace" : dlerror());
        }
#else
        sage_warn("SAGE_TRACE_STACKS=1 but this libsage was built without libunwind; events carry no stacks");
#endif
}

int sage_stack_capture(void **frames, int max) {
        pthread_once(&unwind_once, unwind_open);
        return unwind_backtrace ? unwind_backtrace(frames, max) : 0;
}

bool sage_stack_is_ours(const void *frame) {
        Dl_info info;

        return our_base && dladdr(frame, &info) && info.dli_fbase == our_base;
}

void sage_stack_describe(const void *frame, char *out, unsigned size) {
        Dl_info info;
        const char *object;

        if (!dladdr(frame, &info)) {
                snprintf(out, size, "%p", frame);
                return;
        }
        object = info.dli_fname ? info.dli_fname : "?";
        if (strrchr(object, '/'))
                object = strrchr(object, '/') + 1;
        if (info.dli_sname)
                snprintf(out, size, "%s+0x%lx (%s)", info.dli_sname,
                         (unsigned long)((const char *)frame - (const char *)info.dli_saddr), object);
        else
                snprintf(out, size, "%s+0x%lx", object,
                         (unsigned long)((const char *)frame - (const char *)info.dli_fbase));
}
