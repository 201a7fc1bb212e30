/*
 * The logger. Its level is a relaxed atomic so any thread may ask cheaply
 * whether a line would be printed; a line is formatted on the stack and
 * written with one write(2) so it never interleaves with another.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>

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

void sage_log(int level, const char *format, ...) {
        char line[1024];
        const char *program = atomic_load(&log_program);
        int saved_errno = errno;
        size_t n;
        int k;
        va_list ap;

        if (!sage_log_enabled(level))
                return;
        k = program ? snprintf(line, sizeof(line), "sage: %s: ", program) : snprintf(line, sizeof(line), "sage: ");
        n = k > 0 ? (size_t)k : 0;
        va_start(ap, format);
        k = vsnprintf(line + n, sizeof(line) - n - 1, format, ap);
        va_end(ap);
        if (k > 0)
                n += (size_t)k < sizeof(line) - n - 1 ? (size_t)k : sizeof(line) - n - 2;
        line[n++] = '\n';
        for (size_t off = 0; off < n;) {
                ssize_t w = write(STDERR_FILENO, line + off, n - off);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0)
                        break;
                off += (size_t)w;
        }
        errno = saved_errno;
}
