/*
 * A library named like a CUDA library (libcublas-...: sage_library_is_cuda)
 * whose constructor looks up a driver symbol, as cudart and the frameworks'
 * CUDA parts do while glibc's dlopen holds the loader lock. Under
 * SAGE_WARMUP=eager its dlopen starts the warm-up thread, which opens the
 * driver and so needs the same lock: the constructor first waits until that
 * thread is blocked (in futex, or gone), so the lookup below happens inside
 * the window where a libsage wait on the warm-up thread deadlocks. With
 * EAGER_CTOR_GO_FD it first tells eager_ctor_test.c's racer thread to look up
 * a driver symbol (the first, so that thread opens the driver and blocks on
 * the loader lock), and waits for that thread the same way.
 */
#include <cuda.h>

#include <dirent.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <time.h>
#include <unistd.h>

/* Read by eager_ctor_test.c: the constructor's cuInit result, and 1 when the
 * other thread was seen blocked when the lookup ran. */
__attribute__((visibility("default"))) int eager_ctor_result = -1;
__attribute__((visibility("default"))) int eager_ctor_window = 0;
/* EAGER_CTOR_NESTED: how long a fork() in the constructor took (ms), or -1. */
__attribute__((visibility("default"))) int eager_ctor_fork_ms = -1;

static int read_line(const char *path, char *buf, size_t size) {
        FILE *f = fopen(path, "re");
        int ok = f && fgets(buf, (int)size, f) != NULL;

        if (f)
                fclose(f);
        return ok;
}

/* 1: a warm-up thread (or eager_ctor_test.c's racer) sits in futex(); 0: one runs; -1: there is none. */
static int warmup_thread_blocked(void) {
        DIR *d = opendir("/proc/self/task");
        struct dirent *e;
        int state = -1;

        if (!d)
                return -1;
        while ((e = readdir(d))) {
                char path[300], line[256];

                if (e->d_name[0] == '.')
                        continue;
                snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
                if (!read_line(path, line, sizeof(line)) ||
                    (strncmp(line, "sage-warmup", 11) != 0 && strncmp(line, "ctor-racer", 10) != 0))
                        continue;
                snprintf(path, sizeof(path), "/proc/self/task/%s/syscall", e->d_name);
                state = read_line(path, line, sizeof(line)) && atol(line) == SYS_futex ? 1 : 0;
                if (state == 1)
                        break;
        }
        closedir(d);
        return state;
}

__attribute__((constructor)) static void eager_ctor(void) {
        struct timespec poll = { 0, 1000000 };
        CUresult (*init)(unsigned);
        const char *go = getenv("EAGER_CTOR_GO_FD");
        const char *nested = getenv("EAGER_CTOR_NESTED");

        /*
         * Loaded under another name (eager_ctor_test.c nested): dlopen this
         * library by its CUDA name from here, with the loader lock held (the
         * eager warm-up's dlopen trigger inside a constructor, as a framework's
         * library loading cudart as a dependency), then fork. libsage's fork
         * handler waits for the warm-up (bounded, 10 s): a warm-up thread that
         * had to open the driver itself would sit on the loader lock held here
         * until this dlopen returns, and the fork would stall for the bound.
         */
        if (nested && *nested) {
                struct timespec t0, t1;
                pid_t pid;

                unsetenv("EAGER_CTOR_NESTED");
                if (!dlopen(nested, RTLD_NOW | RTLD_LOCAL))
                        return;
                clock_gettime(CLOCK_MONOTONIC, &t0);
                pid = fork();
                if (pid == 0)
                        _exit(0);
                if (pid > 0)
                        waitpid(pid, NULL, 0);
                clock_gettime(CLOCK_MONOTONIC, &t1);
                eager_ctor_fork_ms =
                        pid < 0 ? -2 : (int)((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000);
        }

        /* The racer (eager_ctor_test.c race) starts its driver lookup now, with the loader lock held here. */
        if (go)
                (void)!write(atoi(go), "g", 1);

        /*
         * Polls a condition, bounded (1 s; the thread reaches the loader lock
         * within milliseconds of its start): not a sleep standing in for a
         * wait. A fixed libsage may never block there (the driver's own
         * threads inherit the name "sage-warmup" and block elsewhere): the
         * bound then just ends the poll.
         */
        for (int i = 0; i < 1000; i++) {
                int s = warmup_thread_blocked();

                if (s != 0) {
                        eager_ctor_window = s == 1;
                        break;
                }
                nanosleep(&poll, NULL);
        }
        *(void **)&init = dlsym(RTLD_DEFAULT, "cuInit"); /* POSIX-sanctioned object-to-function conversion */
        eager_ctor_result = init ? (int)init(0) : -2;
}
