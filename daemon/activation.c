/*
 * systemd's two small protocols, spoken without libsystemd (saged links
 * nothing it does not need; a node without libsystemd still runs it).
 *
 * Socket activation (sd_listen_fds(3)): systemd binds the sockets of
 * saged.socket itself and passes them from fd 3, LISTEN_FDS of them, to
 * the process LISTEN_PID names. saged takes each by the path it is bound
 * to (activation_take), so the unit's ListenSequentialPacket= lines and
 * saged's --socket/--label-socket options meet by path, not by order; a
 * socket saged did not ask for is closed (main.c says so). A socket that
 * is not a listening SOCK_SEQPACKET UNIX socket is never taken: saged would
 * otherwise serve on something it cannot vouch for (a stream socket would
 * mangle message boundaries). systemd owns those socket files: saged
 * leaves them in place when it stops, so the next activation finds them.
 *
 * Readiness (sd_notify(3)): with Type=notify, "READY=1" on NOTIFY_SOCKET
 * once every socket listens, so "systemctl start saged && sagectl ping"
 * works without socket activation too.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "activation.h"
#include "options.h"
#include "util.h"

static void forget_environment(void) {
        unsetenv("LISTEN_PID");
        unsetenv("LISTEN_FDS");
        unsetenv("LISTEN_FDNAMES");
}

int activation_listen_fds(int *fds, size_t max, size_t *n) {
        const char *pid_text = getenv("LISTEN_PID"), *fds_text = getenv("LISTEN_FDS");
        uint64_t pid, count;

        *n = 0;
        if (!pid_text || !fds_text) {
                forget_environment();
                return 0;
        }
        if (sage_parse_uint(pid_text, &pid) < 0 || sage_parse_uint(fds_text, &count) < 0) {
                forget_environment();
                return -EINVAL;
        }
        forget_environment();
        if (pid != (uint64_t)getpid())
                return 0; /* meant for another process (we were started by one that got them) */
        if (count > max)
                return -EINVAL;
        for (size_t i = 0; i < count; i++) {
                int fd = ACTIVATION_FD_START + (int)i;
                int flags = fcntl(fd, F_GETFD);
                if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0)
                        return -errno;
                fds[(*n)++] = fd;
        }
        return 0;
}

static bool is_listener_at(int fd, const char *path) {
        struct sockaddr_un addr;
        socklen_t len = sizeof(addr);
        int type = 0, listening = 0;
        socklen_t opt_len = sizeof(int);

        memset(&addr, 0, sizeof(addr));
        if (getsockname(fd, (struct sockaddr *)&addr, &len) < 0 || addr.sun_family != AF_UNIX)
                return false;
        if (len <= offsetof(struct sockaddr_un, sun_path) || addr.sun_path[0] == 0)
                return false; /* unnamed or abstract */
        if (strnlen(addr.sun_path, sizeof(addr.sun_path)) == sizeof(addr.sun_path) || strcmp(addr.sun_path, path) != 0)
                return false;
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &opt_len) < 0 || type != SOCK_SEQPACKET)
                return false;
        opt_len = sizeof(int);
        return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &opt_len) == 0 && listening;
}

int activation_take(int *fds, size_t n, const char *path) {
        for (size_t i = 0; i < n; i++) {
                int fd = fds[i], flags;
                if (fd < 0 || !is_listener_at(fd, path))
                        continue;
                flags = fcntl(fd, F_GETFL);
                if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
                        return -errno;
                fds[i] = -1;
                return fd;
        }
        return -ENOENT;
}

int activation_notify_ready(void) {
        const char *path = getenv("NOTIFY_SOCKET");
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
        static const char ready[] = "READY=1";
        _cleanup_close_ int fd = -1;
        size_t len;

        if (!path || !*path) {
                unsetenv("NOTIFY_SOCKET");
                return 0;
        }
        len = strlen(path);
        if (len >= sizeof(addr.sun_path) || (path[0] != '/' && path[0] != '@')) {
                unsetenv("NOTIFY_SOCKET");
                return -EINVAL;
        }
        memcpy(addr.sun_path, path, len);
        if (path[0] == '@')
                addr.sun_path[0] = 0; /* abstract namespace */
        unsetenv("NOTIFY_SOCKET");
        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (sendto(fd, ready, sizeof(ready) - 1, MSG_NOSIGNAL, (struct sockaddr *)&addr,
                   (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0)
                return -errno;
        return 0;
}
