/* The logger's per-call-site rate limit: a flood from one site is cut to a
 * burst per window and the next line says how much was dropped; other
 * sites and debug lines are not affected. */
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "check.h"
#include "log.h"

static int capture; /* memfd standing in for stderr */

static void flood(int n) {
        for (int i = 0; i < n; i++)
                sage_warn("accept: line %d", i); /* one call site */
}

/* Lines written to the capture so far, and whether `needle` is among them. */
static int lines(const char *needle, int *found) {
        static char buf[1 << 16];
        ssize_t n = pread(capture, buf, sizeof(buf) - 1, 0);
        int count = 0;

        CHECK(n >= 0);
        buf[n] = 0;
        for (ssize_t i = 0; i < n; i++)
                count += buf[i] == '\n';
        if (found)
                *found = needle && strstr(buf, needle) != NULL;
        return count;
}

int main(void) {
        int found;

        capture = memfd_create("log", MFD_CLOEXEC);
        CHECK(capture >= 0 && dup2(capture, STDERR_FILENO) == STDERR_FILENO);
        sage_log_set_level(SAGE_LOG_DEBUG);

        flood(1000);
        CHECK(lines(NULL, NULL) == SAGE_LOG_BURST);
        /* Another site still speaks; debug lines are not limited. */
        sage_warn("another site");
        for (int i = 0; i < 50; i++)
                sage_debug("debug %d", i);
        CHECK(lines("another site", &found) == SAGE_LOG_BURST + 51 && found);

        /* The next window: the first line says how many were dropped. */
        usleep((useconds_t)(SAGE_LOG_WINDOW_NS / 1000) + 50000);
        flood(1);
        CHECK(lines("(990 similar messages suppressed)", &found) == SAGE_LOG_BURST + 52 && found);

        /* Silent level: nothing at all, and nothing counted. */
        sage_log_set_level(SAGE_LOG_SILENT);
        flood(100);
        CHECK(lines(NULL, NULL) == SAGE_LOG_BURST + 52);
        return 0;
}
