/* Unit test of daemon/activation: which passed sockets saged takes, the LISTEN_* variables, READY=1. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* The daemon's headers are not on the unit tests' include path. */
#include "../../daemon/activation.h"

#include "check.h"

static char dir[64];

static int bound(const char *name, int type, bool listening) {
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);

        CHECK(fd >= 0);
        snprintf(addr.sun_path, sizeof(addr.sun_path), "%s/%s", dir, name);
        CHECK(bind(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0);
        CHECK(!listening || listen(fd, 4) == 0);
        return fd;
}

static const char *path_of(const char *name) {
        static char path[128];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        return path;
}

/* Only a listening SOCK_SEQPACKET UNIX socket bound to the very path is taken. */
static void test_take(void) {
        int stream = bound("a", SOCK_STREAM, true);    /* a stream socket would merge messages */
        int idle = bound("a2", SOCK_SEQPACKET, false); /* bound, not listening */
        int other = bound("b", SOCK_SEQPACKET, true);
        int good = bound("c", SOCK_SEQPACKET, true);
        int unnamed = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        int fds[] = { stream, idle, other, unnamed, good };

        struct sockaddr_un autobind = { .sun_family = AF_UNIX };
        /* An address of the family alone: the kernel picks an abstract name. */
        CHECK(unnamed >= 0 && bind(unnamed, (struct sockaddr *)&autobind, sizeof(sa_family_t)) == 0);
        CHECK(listen(unnamed, 1) == 0);
        CHECK(activation_take(fds, 5, path_of("a")) == -ENOENT);
        CHECK(activation_take(fds, 5, path_of("a2")) == -ENOENT);
        CHECK(activation_take(fds, 5, path_of("nowhere")) == -ENOENT);
        CHECK(activation_take(fds, 5, path_of("c")) == good);
        CHECK(fds[4] == -1 && (fcntl(good, F_GETFL) & O_NONBLOCK));
        CHECK(activation_take(fds, 5, path_of("c")) == -ENOENT); /* taken once */
        CHECK(activation_take(fds, 5, path_of("b")) == other && fds[2] == -1);
        CHECK(activation_take(NULL, 0, path_of("b")) == -ENOENT);
        for (int i = 0; i < 4; i++)
                if (fds[i] >= 0)
                        close(fds[i]);
        close(other);
        close(good);
}

/* LISTEN_*: only for this pid, removed either way, bounded, fds made close-on-exec. */
static void test_listen_fds(void) {
        char pid[16];
        int fds[2];
        size_t n = 99;

        snprintf(pid, sizeof(pid), "%d", (int)getpid());
        CHECK(activation_listen_fds(fds, 2, &n) == 0 && n == 0); /* none */

        setenv("LISTEN_PID", "1", 1); /* for another process: not ours */
        setenv("LISTEN_FDS", "1", 1);
        setenv("LISTEN_FDNAMES", "x", 1);
        CHECK(activation_listen_fds(fds, 2, &n) == 0 && n == 0);
        CHECK(!getenv("LISTEN_PID") && !getenv("LISTEN_FDS") && !getenv("LISTEN_FDNAMES"));

        setenv("LISTEN_PID", pid, 1);
        setenv("LISTEN_FDS", "3", 1); /* more than the caller takes */
        CHECK(activation_listen_fds(fds, 2, &n) == -EINVAL && !getenv("LISTEN_FDS"));
        setenv("LISTEN_PID", pid, 1);
        setenv("LISTEN_FDS", "1x", 1);
        CHECK(activation_listen_fds(fds, 2, &n) == -EINVAL && !getenv("LISTEN_PID"));

        int s = bound("d", SOCK_SEQPACKET, true);
        CHECK(dup2(s, ACTIVATION_FD_START) == ACTIVATION_FD_START); /* dup2: no close-on-exec */
        setenv("LISTEN_PID", pid, 1);
        setenv("LISTEN_FDS", "1", 1);
        CHECK(activation_listen_fds(fds, 2, &n) == 0 && n == 1 && fds[0] == ACTIVATION_FD_START);
        CHECK(fcntl(ACTIVATION_FD_START, F_GETFD) & FD_CLOEXEC);
        close(ACTIVATION_FD_START);
        close(s);
}

static void test_notify(void) {
        char buf[32] = { 0 };
        int fd = bound("notify", SOCK_DGRAM, false);

        unsetenv("NOTIFY_SOCKET");
        CHECK(activation_notify_ready() == 0); /* no service manager: nothing to do */
        setenv("NOTIFY_SOCKET", path_of("notify"), 1);
        CHECK(activation_notify_ready() == 0 && !getenv("NOTIFY_SOCKET"));
        CHECK(recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT) == 7 && strcmp(buf, "READY=1") == 0);
        setenv("NOTIFY_SOCKET", "relative", 1);
        CHECK(activation_notify_ready() == -EINVAL && !getenv("NOTIFY_SOCKET"));
        close(fd);
}

int main(void) {
        snprintf(dir, sizeof(dir), "/tmp/sage-activation-XXXXXX");
        CHECK(mkdtemp(dir));
        test_take();
        test_listen_fds();
        test_notify();
        for (const char *const *n = (const char *const[]){ "a", "a2", "b", "c", "d", "notify", NULL }; *n; n++)
                unlink(path_of(*n));
        rmdir(dir);
        printf("activation: ok\n");
        return 0;
}
