/*
 * sage-run: start a program under SAGE. It finds libsage.so (next to the
 * build tree's tools/, or the installed libdir, or --lib / SAGE_LIB), puts it
 * first in LD_PRELOAD, turns its flags into SAGE_* variables and execs the
 * program. It checks that the library exists first: ld.so silently ignores
 * a preload it cannot load, and a function would then run without SAGE
 * with nobody told. --share without a socket of the caller's finds a broker
 * or starts the user's own (sage_run_broker.c); only then does sage-run
 * stay, as the program's parent, to keep that broker for the run.
 *
 *   sage-run [--trace FILE] [--stacks] [--verbose N] [--warmup MODE] [--share] [--broker-grace S] [--socket PATH]
 *            [--lib PATH] [--] PROGRAM [ARGS...]
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "options.h"
#include "sage_run_broker.h"

#ifndef SAGE_LIBDIR
#define SAGE_LIBDIR "/usr/local/lib"
#endif

static void usage(FILE *f) {
        fprintf(f,
                "usage: sage-run [--trace FILE] [--stacks] [--verbose N] [--warmup MODE] [--share]\n"
                "                [--broker-grace SECONDS] [--socket PATH] [--lib PATH] [--] PROGRAM [ARGS...]\n"
                "  --trace FILE   write a trace dump (SAGE_TRACE; %%p = pid)\n"
                "  --stacks       add backtraces to the trace (SAGE_TRACE_STACKS=1)\n"
                "  --verbose N    SAGE_VERBOSE=N (1 lists options and warnings on stderr)\n"
                "  --warmup MODE  SAGE_WARMUP=auto|eager|lazy|off (eager for a function that imports\n"
                "                 a framework before it touches the GPU, e.g. PyTorch)\n"
                "  --share        SAGE_SHARE=1: map uploads the broker already holds. Without --socket or\n"
                "                 SAGE_SOCKET: the system broker (%s) if it runs, else\n"
                "                 your own, started on demand in $XDG_RUNTIME_DIR/sage (or /tmp/sage-UID)\n"
                "  --broker-grace SECONDS\n"
                "                 how long your own broker outlives the run (default %d; 0: it exits with\n"
                "                 the run) so the next run maps what this one published\n"
                "  --socket PATH  the broker's socket (SAGE_SOCKET)\n"
                "  --lib PATH     libsage.so to preload (default: SAGE_LIB, the build tree, %s)\n",
                SAGE_DEFAULT_SOCKET_ROOT, RUN_BROKER_GRACE_DEFAULT, SAGE_LIBDIR);
}

/* sage-run's own folder ("" if unknown): a build tree's libsage and saged are found from it. */
static void self_dir(char *out, size_t size) {
        ssize_t n = readlink("/proc/self/exe", out, size - 1);
        char *slash;

        out[n > 0 ? n : 0] = 0;
        if ((slash = strrchr(out, '/')))
                *slash = 0;
}

static int find_library(const char *explicit_path, const char *self, char *out, size_t size) {
        const char *candidates[3];
        char build_tree[PATH_MAX + 32];

        if (explicit_path) {
                snprintf(out, size, "%s", explicit_path);
                return access(out, R_OK) == 0 ? 0 : -errno;
        }
        build_tree[0] = 0;
        if (self[0])
                snprintf(build_tree, sizeof(build_tree), "%s/../intercept/libsage.so", self);
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

/*
 * What of LD_PRELOAD stays in front of libsage: a leading AddressSanitizer
 * runtime, which the dynamic loader must map before any instrumented library;
 * a program started with it behind libsage crashes at start (sanitizer builds
 * of SAGE, a sanitized application). Returns the length of that first entry
 * (0: none) and in *rest where the other entries begin.
 */
static size_t sanitizer_prefix(const char *old, size_t *rest) {
        size_t start, end, name;

        *rest = 0;
        if (!old)
                return 0;
        start = strspn(old, " :");
        end = start + strcspn(old + start, " :");
        name = end;
        while (name > start && old[name - 1] != '/')
                name--;
        if (strncmp(old + name, "libasan.so", 10) != 0 && strncmp(old + name, "libclang_rt.asan", 16) != 0)
                return 0;
        *rest = end + strspn(old + end, " :");
        return end;
}

int main(int argc, char **argv) {
        const char *lib = getenv("SAGE_LIB"), *env_socket = getenv("SAGE_SOCKET");
        char path[PATH_MAX], self[PATH_MAX], why[512];
        bool share = false, socket_given = env_socket && env_socket[0];
        uint64_t grace = RUN_BROKER_GRACE_DEFAULT;
        RunBroker broker = { 0 };
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
                        share = true;
                } else if (!strcmp(a, "--broker-grace") && i + 1 < argc) {
                        if (sage_parse_uint(argv[++i], &grace) < 0 || grace > 86400) {
                                fprintf(stderr, "sage-run: --broker-grace takes seconds from 0 to 86400, not %s\n",
                                        argv[i]);
                                return 2;
                        }
                } else if ((!strcmp(a, "--trace") || !strcmp(a, "--verbose") || !strcmp(a, "--lib") ||
                            !strcmp(a, "--warmup") || !strcmp(a, "--socket")) &&
                           i + 1 < argc) {
                        const char *v = argv[++i];
                        if (!strcmp(a, "--socket")) {
                                setenv("SAGE_SOCKET", v, 1);
                                socket_given = true;
                        } else if (!strcmp(a, "--trace"))
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
        self_dir(self, sizeof(self));
        r = find_library(lib, self, path, sizeof(path));
        if (r < 0) {
                fprintf(stderr, "sage-run: cannot find libsage.so%s%s: %s\n", lib ? " at " : "", lib ? lib : "",
                        strerror(-r));
                return 127;
        }
        {
                const char *old = getenv("LD_PRELOAD");
                size_t len = strlen(path) + (old ? strlen(old) : 0) + 3;
                char *preload = malloc(len);

                if (!preload)
                        return 127;
                size_t rest, keep = sanitizer_prefix(old, &rest);
                /* libsage first, but after a sanitizer runtime that must lead the list. */
                snprintf(preload, len, "%.*s%s%s%s%s", (int)keep, keep ? old : "", keep ? " " : "", path,
                         old && old[rest] ? " " : "", old && old[rest] ? old + rest : "");
                /* A broker sage-run starts must not run under libsage itself: find it first. */
                if (share && !socket_given) {
                        r = run_broker_find(&broker, (unsigned)grace, self, why, sizeof(why));
                        if (r < 0)
                                fprintf(stderr, "sage-run: no broker (%s): running without sharing\n",
                                        why[0] ? why : strerror(-r));
                        else
                                setenv("SAGE_SOCKET", broker.socket, 1);
                }
                setenv("LD_PRELOAD", preload, 1);
                free(preload);
        }
        if (broker.held)
                return run_supervised(argv + i, &broker);
        execvp(argv[i], argv + i);
        fprintf(stderr, "sage-run: cannot run %s: %s\n", argv[i], strerror(errno));
        return errno == ENOENT ? 127 : 126;
}
