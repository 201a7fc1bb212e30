/*
 * cuGetProcAddress routing. cudart (static or shared) and frameworks fetch
 * every driver entry point through cuGetProcAddress, by base name plus a
 * CUDA version and a per-thread-stream flag; the driver decides which
 * versioned export answers. We ask the driver exactly the same question and
 * then route by pointer identity: if the answer is the address of an entry
 * point we hook, the caller gets our hook for that very entry point. A NULL
 * answer or an error (VERSION_NOT_SUFFICIENT, NOT_FOUND) passes through
 * untouched, so the caller sees what it would have seen without SAGE.
 */
#include <cuda.h>

#include <string.h>

#include "driver.h"
#include "hooks.h"
#include "log.h"
#include "stats.h"
#include "trace.h"
#include "tramp_route.h"
#include "warmup.h"

/* Does `symbol` name the base of an entry point we hook ("cuMemcpyHtoD" for
 * cuMemcpyHtoD_v2_ptds)? Diagnostic only: it is a scan, done when someone
 * looks (logging or tracing on). */
static bool names_hooked_base(const char *symbol) {
        size_t n = strlen(symbol);

        for (int i = 0; i < SAGE_SYM_COUNT; i++) {
                const char *name = sage_sym_info[i].name;

                if (strncmp(name, symbol, n) == 0 &&
                    (name[n] == 0 || strncmp(name + n, "_v", 2) == 0 || strncmp(name + n, "_pt", 3) == 0))
                        return true;
        }
        return false;
}

static void route(const char *symbol, void **pfn, int version, cuuint64_t flags) {
        int sym = sage_driver_sym_of(*pfn);

        if (sym >= 0) {
                *pfn = sage_hook_table[sym];
                sage_stats_count(SAGE_STAT_PROCADDR_SUBSTITUTED);
                return;
        }
        if ((sage_trace_on() || sage_log_enabled(SAGE_LOG_INFO)) && symbol && names_hooked_base(symbol)) {
                sage_stats_count(SAGE_STAT_PROCADDR_UNMATCHED);
                sage_info("cuGetProcAddress(%s, %d, %llu) returned %p, which is no hooked entry point", symbol, version,
                          (unsigned long long)flags, *pfn);
        }
        /* No hook: a trampoline while suspend (or the trace) is on, so the call still passes the gate. */
        *pfn = sage_tramp_route(*pfn, symbol);
}

CUresult sage_impl_cuGetProcAddress(sage_fn_cuGetProcAddress_t real, const char *symbol, void **pfn, int cudaVersion,
                                    cuuint64_t flags) {
        CUresult r;

        sage_warmup_trigger(SAGE_WARMUP_AT_LOOKUP);
        r = real(symbol, pfn, cudaVersion, flags);
        sage_stats_count(SAGE_STAT_PROCADDR_CALLS);
        if (r == CUDA_SUCCESS && pfn && *pfn)
                route(symbol, pfn, cudaVersion, flags);
        return r;
}

CUresult sage_impl_cuGetProcAddress_v2(sage_fn_cuGetProcAddress_v2_t real, const char *symbol, void **pfn,
                                       int cudaVersion, cuuint64_t flags,
                                       CUdriverProcAddressQueryResult *symbolStatus) {
        CUresult r;

        sage_warmup_trigger(SAGE_WARMUP_AT_LOOKUP);
        r = real(symbol, pfn, cudaVersion, flags, symbolStatus);
        sage_stats_count(SAGE_STAT_PROCADDR_CALLS);
        if (r == CUDA_SUCCESS && pfn && *pfn)
                route(symbol, pfn, cudaVersion, flags);
        return r;
}

CUresult sage_impl_cuInit(sage_fn_cuInit_t real, unsigned int Flags) {
        /* The app's own cuInit: a warm-up already running makes it return as
         * soon as the driver is up; otherwise (lazy, auto) one starts now and
         * retains the primary context while the app goes on. */
        sage_warmup_trigger(SAGE_WARMUP_AT_INIT);
        return real(Flags);
}
