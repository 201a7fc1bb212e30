/* Built as libholder.so by run.sh: its constructor, which runs inside dlopen
 * with glibc's loader lock held, says so on LOADER_PROBE_IN and then waits
 * for a byte on LOADER_PROBE_OUT (bounded by the probe closing the pipe). */
#include <stdlib.h>
#include <unistd.h>

__attribute__((constructor)) static void hold_loader_lock(void) {
        const char *in = getenv("LOADER_PROBE_IN"), *out = getenv("LOADER_PROBE_OUT");
        char c;

        if (!in || !out)
                return;
        (void)!write(atoi(in), "h", 1);
        (void)!read(atoi(out), &c, 1);
}
