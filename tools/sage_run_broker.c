/*
 * sage-run --share with no broker configured: an embedded default.
 *
 * A system broker (saged on SAGE_DEFAULT_SOCKET_ROOT, e.g. under systemd)
 * wins when it answers. Otherwise sage-run starts, or reuses, a broker of
 * the user's own: `saged --socket DIR/saged.sock --exit-idle GRACE`, DIR
 * being $XDG_RUNTIME_DIR/sage or /tmp/sage-UID, a folder only the user may
 * write (saged's own rule for socket folders: anyone who can write there
 * can put their own socket in its place). The broker outlives the run by
 * GRACE seconds so that the next run maps what this one published, then
 * exits by itself.
 *
 * Two things make that safe under concurrency, both through the lock file
 * DIR/saged.sock.lock (flock):
 * - sage-run checks for a live broker and starts one only while holding
 *   it, so concurrent runs start one broker, not two that steal each
 *   other's socket path;
 * - the broker exits only while holding it (server.c, --exit-idle) and
 *   after taking in every waiting connection, while sage-run releases it
 *   only once the broker accepted its connection (the HELLO was answered).
 *   So a run either holds a connection to a broker that will not exit under
 *   it, or finds the socket gone and starts a new broker.
 * A stale socket of a broker that died is replaced by saged itself.
 *
 * The run's connection is what keeps the broker: sage-run holds it in its
 * own process and runs the program as a child (the program never sees the
 * fd), waits for it, forwards signals, and exits as the child did.
 */
#include "sage_run_broker.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"

#ifndef SAGE_SBINDIR
#define SAGE_SBINDIR "/usr/local/sbin"
#endif

/* Bounds on waiting: for the lock (another run starting a broker) and for a broker to come up. */
#define LOCK_TIMEOUT_S 60
#define CONNECT_TIMEOUT_MS 5000

static void nothing(int sig) {
        (void)sig;
}

/* DIR: $XDG_RUNTIME_DIR/sage or /tmp/sage-UID, created 0700, and only the user's (or root's) to write. */
static int private_dir(char *dir, size_t size, char *why, size_t why_size) {
        const char *xdg = getenv("XDG_RUNTIME_DIR");
        struct stat st;
        int n = xdg && xdg[0] == '/' ? snprintf(dir, size, "%s/sage", xdg)
                                     : snprintf(dir, size, "/tmp/sage-%u", (unsigned)geteuid());

        if (n < 0 || (size_t)n >= size)
                return -ENAMETOOLONG;
        if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
                snprintf(why, why_size, "cannot create %s: %s", dir, strerror(errno));
                return -errno;
        }
        if (lstat(dir, &st) < 0) {
                snprintf(why, why_size, "%s: %s", dir, strerror(errno));
                return -errno;
        }
        if (!S_ISDIR(st.st_mode) || (st.st_uid != geteuid() && st.st_uid != 0) || (st.st_mode & 022)) {
                snprintf(why, why_size,
                         "%s is not a folder only you may write (owner %u, mode %04o): someone could put their own "
                         "broker there; not starting one",
                         dir, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777));
                return -EPERM;
        }
        return 0;
}

/* Take the lock, waiting at most LOCK_TIMEOUT_S for a run that is starting a broker. */
static int take_lock(const char *path, char *why, size_t why_size) {
        struct sigaction sa = { .sa_handler = nothing }, old;
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600), r;

        if (fd < 0) {
                snprintf(why, why_size, "cannot open %s: %s", path, strerror(errno));
                return -errno;
        }
        sigaction(SIGALRM, &sa, &old); /* no SA_RESTART: the alarm ends flock with EINTR */
        alarm(LOCK_TIMEOUT_S);
        r = flock(fd, LOCK_EX) < 0 ? -errno : 0;
        alarm(0);
        sigaction(SIGALRM, &old, NULL);
        if (r < 0) {
                snprintf(why, why_size, "cannot lock %s: %s", path, r == -EINTR ? "timed out" : strerror(-r));
                close(fd);
                return r;
        }
        return fd;
}

/* saged: the build tree's (next to tools/), else the installed one, else PATH's. */
static void find_saged(const char *self_dir, char *out, size_t size) {
        if (self_dir && snprintf(out, size, "%s/../daemon/saged", self_dir) < (int)size && access(out, X_OK) == 0)
                return;
        if (snprintf(out, size, "%s/saged", SAGE_SBINDIR) < (int)size && access(out, X_OK) == 0)
                return;
        snprintf(out, size, "saged");
}

/* Start saged in the background; it returns once the socket listens (saged daemonises only then). */
static int start_saged(const char *socket_path, unsigned grace_s, const char *self_dir, char *why, size_t why_size) {
        char saged[PATH_MAX], grace[16];
        int status;
        pid_t pid;

        find_saged(self_dir, saged, sizeof(saged));
        snprintf(grace, sizeof(grace), "%u", grace_s);
        pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                /* The broker outlives this run: it must not keep the caller's other fds (a pipe
                 * someone waits on) open for its life. stdio goes to /dev/null once it listens. */
                close_range(3, ~0u, 0);
                execvp(saged, (char *[]){ saged, "--socket", (char *)socket_path, "--exit-idle", grace, NULL });
                fprintf(stderr, "sage-run: cannot run %s: %s\n", saged, strerror(errno));
                _exit(127);
        }
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                snprintf(why, why_size, "%s did not start (exit status %d)", saged,
                         WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
                return -ECHILD;
        }
        return 0;
}

int run_broker_find(RunBroker *rb, unsigned grace_s, const char *self_dir, char *why, size_t why_size) {
        char dir[sizeof(rb->socket) - sizeof("/saged.sock")], lock[sizeof(rb->socket) + 8];
        SageBroker *b = NULL;
        int lock_fd, r;

        *rb = (RunBroker){ 0 };
        why[0] = 0;
        if (sage_broker_connect(&b, SAGE_DEFAULT_SOCKET_ROOT, CONNECT_TIMEOUT_MS) == 0) {
                sage_broker_free(b);
                snprintf(rb->socket, sizeof(rb->socket), "%s", SAGE_DEFAULT_SOCKET_ROOT);
                return 0;
        }
        r = private_dir(dir, sizeof(dir), why, why_size);
        if (r < 0)
                return r;
        snprintf(rb->socket, sizeof(rb->socket), "%s/saged.sock", dir);
        snprintf(lock, sizeof(lock), "%s.lock", rb->socket);
        lock_fd = take_lock(lock, why, why_size);
        if (lock_fd < 0)
                return lock_fd;
        r = sage_broker_connect(&rb->held, rb->socket, CONNECT_TIMEOUT_MS);
        if (r < 0) {
                r = start_saged(rb->socket, grace_s, self_dir, why, why_size);
                if (r == 0) {
                        r = sage_broker_connect_why(&rb->held, rb->socket, CONNECT_TIMEOUT_MS, why, why_size);
                        if (r > 0)
                                r = -EPROTO;
                }
        }
        close(lock_fd); /* the broker accepted our connection (or there is none): others may look now */
        if (r > 0)
                r = -EPROTO;
        return r;
}

void run_broker_release(RunBroker *rb) {
        rb->held = sage_broker_free(rb->held);
}

/* Signals sage-run passes on to the child. INT and QUIT only when sent by
 * a process (kill): from a terminal they reach the child's process group
 * already, and twice would be once too many. */
static const int forwarded[] = { SIGTERM, SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH };

int run_supervised(char **argv, RunBroker *rb) {
        sigset_t mask, old;
        int status;
        pid_t child;

        sigemptyset(&mask);
        for (size_t i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++)
                sigaddset(&mask, forwarded[i]);
        sigaddset(&mask, SIGCHLD);
        sigprocmask(SIG_BLOCK, &mask, &old);
        child = fork();
        if (child < 0) {
                fprintf(stderr, "sage-run: fork: %s\n", strerror(errno));
                return 126;
        }
        if (child == 0) {
                sigprocmask(SIG_SETMASK, &old, NULL);
                execvp(argv[0], argv);
                fprintf(stderr, "sage-run: cannot run %s: %s\n", argv[0], strerror(errno));
                _exit(errno == ENOENT ? 127 : 126);
        }
        for (;;) {
                siginfo_t si;
                int sig = sigwaitinfo(&mask, &si);

                if (sig < 0)
                        continue;
                if (sig == SIGCHLD) {
                        pid_t r = waitpid(child, &status, WNOHANG);
                        if (r == child)
                                break;
                        continue;
                }
                if ((sig == SIGINT || sig == SIGQUIT) && si.si_code > 0)
                        continue; /* the kernel's (a terminal's): the child has it too */
                kill(child, sig);
        }
        run_broker_release(rb); /* the grace period starts now */
        if (WIFEXITED(status))
                return WEXITSTATUS(status);
        /* Die as the child did, without a core of our own. */
        struct rlimit no_core = { 0, 0 };
        int sig = WTERMSIG(status);
        setrlimit(RLIMIT_CORE, &no_core);
        signal(sig, SIG_DFL);
        sigemptyset(&mask);
        sigaddset(&mask, sig);
        sigprocmask(SIG_UNBLOCK, &mask, NULL);
        raise(sig);
        return 128 + sig;
}
