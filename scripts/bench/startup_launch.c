/*
 * Launcher of the startup benchmark: starts N copies of a program at once,
 * each with SAGE_BENCH_T0_NS = CLOCK_MONOTONIC read in the child right
 * before execv, so the program can measure from its own exec on. Waits for
 * all; exits 1 if any failed.
 *
 * SAGE_BENCH_CHILD_PRELOAD, if set, becomes the children's LD_PRELOAD: the
 * launcher itself must run without libsage, whose warm-up thread would
 * otherwise give it a context of its own and skew what the children see.
 *
 * Usage: startup_launch N PROGRAM [ARGS...]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
        if (argc < 3 || atoi(argv[1]) < 1) {
                fprintf(stderr, "usage: %s N PROGRAM [ARGS...]\n", argv[0]);
                return 2;
        }
        int n = atoi(argv[1]);
        fflush(stdout);
        for (int i = 0; i < n; i++) {
                pid_t pid = fork();
                if (pid < 0) {
                        perror("fork");
                        return 1;
                }
                if (pid == 0) {
                        struct timespec ts;
                        char value[32];
                        clock_gettime(CLOCK_MONOTONIC, &ts);
                        snprintf(value, sizeof(value), "%" PRIu64,
                                 (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec);
                        const char *preload = getenv("SAGE_BENCH_CHILD_PRELOAD");
                        if (preload && *preload)
                                setenv("LD_PRELOAD", preload, 1);
                        unsetenv("SAGE_BENCH_CHILD_PRELOAD");
                        setenv("SAGE_BENCH_T0_NS", value, 1);
                        execv(argv[2], argv + 2);
                        fprintf(stderr, "execv %s: %s\n", argv[2], strerror(errno));
                        _exit(127);
                }
        }
        int failed = 0;
        for (int i = 0; i < n; i++) {
                int status;
                if (wait(&status) < 0) {
                        perror("wait");
                        return 1;
                }
                if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                        failed++;
        }
        if (failed)
                fprintf(stderr, "startup_launch: %d of %d processes failed\n", failed, n);
        return failed ? 1 : 0;
}
