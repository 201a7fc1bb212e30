/*
 * The eager warm-up against a CUDA library whose constructor looks up the
 * driver (eager_ctor_lib.c): the dlopen must return, with the lookup
 * answered. Before the fix it deadlocked (the PyTorch hang under
 * SAGE_WARMUP=eager): an alarm turns a hang into a failure. With "race"
 * (any SAGE_WARMUP), a thread of the app makes the process's first driver
 * lookup while the constructor holds the loader lock: the same deadlock
 * without the warm-up (libsage's driver load waited for another thread's).
 * "race-open" is "race" with libsage's dlsym set up first, so that the
 * racer's lookup goes straight to opening the driver (in "race" it blocks
 * earlier, on the loader lock in libsage's first dlvsym): a driver open that
 * waits for another thread's open deadlocks there. With "nested" the
 * library is loaded under a name that is not a CUDA library's, and its
 * constructor loads itself by its CUDA name (the eager warm-up's dlopen
 * trigger with the loader lock held) and forks: the fork must not wait on a
 * warm-up thread stuck behind that lock.
 *   eager-ctor-test LIBRARY [race|race-open|nested]
 */
#include <dlfcn.h>
#include <stdbool.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void on_alarm(int sig) {
        static const char msg[] = "FAIL: dlopen of the CUDA library hung (deadlock on the loader lock)\n";

        (void)sig;
        (void)!write(2, msg, sizeof(msg) - 1);
        _exit(1);
}

static int go_pipe[2];

static void *racer(void *arg) {
        char c;

        (void)arg;
        if (read(go_pipe[0], &c, 1) == 1)
                (void)!dlsym(RTLD_DEFAULT, "cuDriverGetVersion");
        return NULL;
}

int main(int argc, char **argv) {
        pthread_t thread;
        const char *mode = argc == 3 ? argv[2] : "";
        bool race = strcmp(mode, "race") == 0 || strcmp(mode, "race-open") == 0;
        bool nested = strcmp(mode, "nested") == 0;
        char dir[] = "/tmp/sage-eager-ctor-XXXXXX", alias[64];
        const char *path = argc >= 2 ? argv[1] : NULL;

        void *lib;
        int *result, *window, *fork_ms = NULL;

        if (argc < 2 || (argc == 3 && !race && !nested) || argc > 3) {
                fprintf(stderr, "usage: %s LIBRARY [race|race-open|nested]\n", argv[0]);
                return 2;
        }
        signal(SIGALRM, on_alarm);
        alarm(20);
        /* Any name but a driver's: libsage resolves glibc's dlsym (dlvsym) here, before any race. */
        if (strcmp(mode, "race-open") == 0)
                (void)!dlsym(RTLD_DEFAULT, "printf");
        if (nested) {
                /* The same file under a name that is not a CUDA library's: its dlopen starts no warm-up. */
                if (!mkdtemp(dir) ||
                    snprintf(alias, sizeof(alias), "%s/libnested-outer.so", dir) >= (int)sizeof(alias) ||
                    symlink(argv[1], alias) < 0) {
                        perror("nested set-up");
                        return 2;
                }
                setenv("EAGER_CTOR_NESTED", argv[1], 1);
                path = alias;
        }
        if (race) {
                char fd[16];

                if (pipe(go_pipe) < 0 || pthread_create(&thread, NULL, racer, NULL) != 0) {
                        perror("race set-up");
                        return 2;
                }
                pthread_setname_np(thread, "ctor-racer");
                snprintf(fd, sizeof(fd), "%d", go_pipe[1]);
                setenv("EAGER_CTOR_GO_FD", fd, 1);
        }
        lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (race)
                pthread_join(thread, NULL);
        alarm(0);
        if (nested) {
                unlink(alias);
                rmdir(dir);
        }
        if (!lib) {
                fprintf(stderr, "FAIL: dlopen %s: %s\n", argv[1], dlerror());
                return 1;
        }
        result = dlsym(lib, "eager_ctor_result");
        window = dlsym(lib, "eager_ctor_window");
        if (!result || !window || *result != 0) {
                fprintf(stderr, "FAIL: the constructor's cuInit returned %d\n", result ? *result : -3);
                return 1;
        }
        /* The fork waits for a warm-up of milliseconds (10 s when it is stuck behind the loader lock). */
        if (nested && (!(fork_ms = dlsym(lib, "eager_ctor_fork_ms")) || *fork_ms < 0 || *fork_ms > 5000)) {
                fprintf(stderr, "FAIL: the constructor's fork took %d ms (the warm-up waited for the loader lock)\n",
                        fork_ms ? *fork_ms : -3);
                return 1;
        }
        if (nested)
                printf("ok: the constructor's fork took %d ms\n", *fork_ms);
        printf("ok: constructor's cuInit succeeded; %s thread %s during the lookup\n", race ? "racer" : "warm-up",
               *window ? "was blocked on the loader" : "was not seen blocked");
        return 0;
}
