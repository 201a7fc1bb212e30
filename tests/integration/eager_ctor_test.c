/*
 * The eager warm-up against a CUDA library whose constructor looks up the
 * driver (eager_ctor_lib.c): the dlopen must return, with the lookup
 * answered. Before the fix it deadlocked (the PyTorch hang under
 * SAGE_WARMUP=eager): an alarm turns a hang into a failure. With "race"
 * (any SAGE_WARMUP), a thread of the app makes the process's first driver
 * lookup while the constructor holds the loader lock: the same deadlock
 * without the warm-up (libsage's driver load waited for another thread's).
 *   eager-ctor-test LIBRARY [race]
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
        bool race = argc == 3 && strcmp(argv[2], "race") == 0;

        void *lib;
        int *result, *window;

        if (argc < 2 || (argc == 3 && !race) || argc > 3) {
                fprintf(stderr, "usage: %s LIBRARY [race]\n", argv[0]);
                return 2;
        }
        signal(SIGALRM, on_alarm);
        alarm(20);
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
        lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
        if (race)
                pthread_join(thread, NULL);
        alarm(0);
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
        printf("ok: constructor's cuInit succeeded; %s thread %s during the lookup\n", race ? "racer" : "warm-up",
               *window ? "was blocked on the loader" : "was not seen blocked");
        return 0;
}
