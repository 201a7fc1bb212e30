/*
 * sage-run: start a program under SAGE. It finds libsage.so (next to the
 * build tree's tools/, or the installed libdir, or --lib / SAGE_LIB), puts it
 * first in LD_PRELOAD, turns its flags into SAGE_* variables and execs the
 * program. It checks that the library exists first: ld.so silently ignores
 * a preload it cannot load, and a function would then run without SAGE
 * with nobody told.
 *
 *   sage-run [--trace FILE] [--stacks] [--verbose N] [--warmup MODE] [--share] [--suspend] [--suspend-idle DUR]
 *            [--socket PATH] [--lib PATH] [--] PROGRAM [ARGS...]
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "options.h"

#ifndef SAGE_LIBDIR
#define SAGE_LIBDIR "/usr/local/lib"
#endif

static void usage(FILE *f) {
        fprintf(f,
                "usage: sage-run [--trace FILE] [--stacks] [--verbose N] [--warmup MODE] [--share] [--suspend]\n"
                "                [--suspend-idle DUR] [--socket PATH] [--lib PATH] [--] PROGRAM [ARGS...]\n"
                "  --trace FILE   write a trace dump (SAGE_TRACE; %%p = pid)\n"
                "  --stacks       add backtraces to the trace (SAGE_TRACE_STACKS=1)\n"
                "  --verbose N    SAGE_VERBOSE=N (1 lists options and warnings on stderr)\n"
                "  --warmup MODE  SAGE_WARMUP=auto|eager|lazy|off (eager for a function that imports\n"
                "                 a framework before it touches the GPU, e.g. PyTorch)\n"
                "  --share        SAGE_SHARE=1: map uploads the broker already holds (needs saged)\n"
                "  --suspend      SAGE_SUSPEND=1: an instance saged may suspend while it idles (its GPU\n"
                "                 memory goes back); its next driver call resumes it (needs saged)\n"
                "  --suspend-idle DUR  --suspend, and suspended after DUR without a call (2s, 500ms)\n"
                "  --socket PATH  the broker's socket (SAGE_SOCKET)\n"
                "  --lib PATH     libsage.so to preload (default: SAGE_LIB, the build tree, %s)\n",
                SAGE_LIBDIR);
}

static int find_library(const char *explicit_path, char *out, size_t size) {
        char self[PATH_MAX], *slash;
        ssize_t n;
        const char *candidates[3];
        char build_tree[PATH_MAX + 32];

        if (explicit_path) {
                snprintf(out, size, "%s", explicit_path);
                return access(out, R_OK) == 0 ? 0 : -errno;
        }
        n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        build_tree[0] = 0;
        if (n > 0) {
                self[n] = 0;
                if ((slash = strrchr(self, '/')))
                        *slash = 0;
                snprintf(build_tree, sizeof(build_tree), "%s/../intercept/libsage.so", self);
        }
        candidates[0] = build_tree;
        candidates[1] = SAGE_LIBDIR "/libsage.so";
        candidates[2] = NULL;
        for (int i = 0; candidates[i]; i++) {
                if (candidates[i][0] && access(candidates[i], R_OK) == 0) {
                        if (!realpath(candidates[i], out))
                                snprintf(out, size, "%s", candidates[i]);
                        return 0;
                }
        }
        return -ENOENT;
}

int main(int argc, char **argv) {
        const char *lib = getenv("SAGE_LIB");
        char path[PATH_MAX];
        int i, r;

        for (i = 1; i < argc; i++) {
                const char *a = argv[i];

                if (!strcmp(a, "--")) {
                        i++;
                        break;
                }
                if (a[0] != '-')
                        break;
                if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
                        usage(stdout);
                        return 0;
                } else if (!strcmp(a, "--version")) {
                        printf("sage-run %s\n", SAGE_VERSION);
                        return 0;
                } else if (!strcmp(a, "--stacks")) {
                        setenv("SAGE_TRACE_STACKS", "1", 1);
                } else if (!strcmp(a, "--share")) {
                        setenv("SAGE_SHARE", "1", 1);
                } else if (!strcmp(a, "--suspend")) {
                        setenv("SAGE_SUSPEND", "1", 1);
                } else if (!strcmp(a, "--suspend-idle") && i + 1 < argc) {
                        uint64_t ms;
                        if (sage_parse_duration_ms(argv[++i], &ms) < 0) {
                                fprintf(stderr, "sage-run: --suspend-idle takes a duration (2s, 500ms), not %s\n",
                                        argv[i]);
                                return 2;
                        }
                        setenv("SAGE_SUSPEND", "1", 1);
                        setenv("SAGE_SUSPEND_IDLE", argv[i], 1);
                } else if ((!strcmp(a, "--trace") || !strcmp(a, "--verbose") || !strcmp(a, "--lib") ||
                            !strcmp(a, "--warmup") || !strcmp(a, "--socket")) &&
                           i + 1 < argc) {
                        const char *v = argv[++i];
                        if (!strcmp(a, "--socket"))
                                setenv("SAGE_SOCKET", v, 1);
                        else if (!strcmp(a, "--trace"))
                                setenv("SAGE_TRACE", v, 1);
                        else if (!strcmp(a, "--warmup")) {
                                if (strcmp(v, "auto") && strcmp(v, "eager") && strcmp(v, "lazy") && strcmp(v, "off")) {
                                        fprintf(stderr, "sage-run: --warmup takes auto, eager, lazy or off, not %s\n",
                                                v);
                                        return 2;
                                }
                                setenv("SAGE_WARMUP", v, 1);
                        } else if (!strcmp(a, "--verbose"))
                                setenv("SAGE_VERBOSE", v, 1);
                        else
                                lib = v;
                } else {
                        fprintf(stderr, "sage-run: unknown or incomplete option %s\n", a);
                        usage(stderr);
                        return 2;
                }
        }
        if (i >= argc) {
                usage(stderr);
                return 2;
        }
        r = find_library(lib, path, sizeof(path));
        if (r < 0) {
                fprintf(stderr, "sage-run: cannot find libsage.so%s%s: %s\n", lib ? " at " : "", lib ? lib : "",
                        strerror(-r));
                return 127;
        }
        {
                const char *old = getenv("LD_PRELOAD");
                size_t len = strlen(path) + (old ? strlen(old) : 0) + 2;
                char *preload = malloc(len);

                if (!preload)
                        return 127;
                snprintf(preload, len, "%s%s%s", path, old && *old ? " " : "", old && *old ? old : "");
                setenv("LD_PRELOAD", preload, 1);
                free(preload);
        }
        execvp(argv[i], argv + i);
        fprintf(stderr, "sage-run: cannot run %s: %s\n", argv[i], strerror(errno));
        return errno == ENOENT ? 127 : 126;
}
