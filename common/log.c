/*
 * The logger. Its level is a relaxed atomic so any thread may ask cheaply
 * whether a line would be printed; a line is formatted on the stack and
 * written with one write(2) so it never interleaves with another. Warning
 * and info lines are rate limited per call site (log.h says why).
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>

#include "util.h"

static atomic_int log_level = SAGE_LOG_SILENT;
static const char *_Atomic log_program;

void sage_log_set_level(int level) {
        atomic_store_explicit(&log_level, level, memory_order_relaxed);
}

int sage_log_get_level(void) {
        return atomic_load_explicit(&log_level, memory_order_relaxed);
}

bool sage_log_enabled(int level) {
        return level <= sage_log_get_level() && level > SAGE_LOG_SILENT;
}

void sage_log_set_program(const char *name) {
        atomic_store(&log_program, name);
}

/* `suppressed`: lines of this call site dropped since its last one (0: say nothing).
 * The attribute lets clang's -Wformat-nonliteral (-Wformat=2) see the format is checked upstream. */
static void log_line(const char *format, va_list ap, unsigned suppressed) __attribute__((format(printf, 1, 0)));
static void log_line(const char *format, va_list ap, unsigned suppressed) {
        char line[1024];
        const char *program = atomic_load(&log_program);
        size_t n;
        int k;

        k = program ? snprintf(line, sizeof(line), "sage: %s: ", program) : snprintf(line, sizeof(line), "sage: ");
        n = k > 0 ? (size_t)k : 0;
        k = vsnprintf(line + n, sizeof(line) - n - 1, format, ap);
        if (k > 0)
                n += (size_t)k < sizeof(line) - n - 1 ? (size_t)k : sizeof(line) - n - 2;
        if (suppressed > 0) {
                k = snprintf(line + n, sizeof(line) - n - 1, " (%u similar messages suppressed)", suppressed);
                if (k > 0)
                        n += (size_t)k < sizeof(line) - n - 1 ? (size_t)k : sizeof(line) - n - 2;
        }
        line[n++] = '\n';
        for (size_t off = 0; off < n;) {
                ssize_t w = write(STDERR_FILENO, line + off, n - off);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0)
                        break;
                off += (size_t)w;
        }
}

void sage_log(int level, const char *format, ...) {
        int saved_errno = errno;
        va_list ap;

        if (!sage_log_enabled(level))
                return;
        va_start(ap, format);
        log_line(format, ap, 0);
        va_end(ap);
        errno = saved_errno;
}

/*
 * Threads of the preload may share a site: the counters are atomics and the
 * window restarts by compare-and-swap, so at worst a few lines more or less
 * pass at a window's edge; nothing blocks.
 */
void sage_log_limited(SageLogSite *site, int level, const char *format, ...) {
        int saved_errno = errno;
        unsigned long long now = sage_now_ns(), start;
        unsigned suppressed = 0;
        va_list ap;

        if (!sage_log_enabled(level))
                return;
        start = atomic_load_explicit(&site->window_start_ns, memory_order_relaxed);
        if ((start == 0 || now - start >= SAGE_LOG_WINDOW_NS) &&
            atomic_compare_exchange_strong(&site->window_start_ns, &start, now ? now : 1))
                atomic_store(&site->lines, 0);
        if (atomic_fetch_add(&site->lines, 1) >= SAGE_LOG_BURST) {
                atomic_fetch_add_explicit(&site->suppressed, 1, memory_order_relaxed);
                errno = saved_errno;
                return;
        }
        suppressed = atomic_exchange(&site->suppressed, 0);
        va_start(ap, format);
        log_line(format, ap, suppressed);
        va_end(ap);
        errno = saved_errno;
}
