/*
 * libsage's helper threads: the warm-up, the suspend listener, the staging
 * pages, the idle pass's synchronize. Detached (nobody joins them), and
 * with every signal blocked: the app's signals are the app's threads'
 * business, never a thread it does not know of.
 */
#include "spawn.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>

int sage_spawn_thread(void *(*main_fn)(void *), void *arg, const char *name) {
        pthread_t thread;
        pthread_attr_t attr;
        sigset_t all, old;
        int r;

        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        r = pthread_create(&thread, &attr, main_fn, arg);
        if (r == 0 && name)
                pthread_setname_np(thread, name);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        pthread_attr_destroy(&attr);
        errno = r;
        return r ? -1 : 0;
}
