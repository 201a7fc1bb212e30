/*
 * Who may reach saged's sockets.
 *
 * A socket is only as safe as its directory: whoever may write there can
 * unlink the broker's socket and bind an impostor on the same path (clients
 * check the broker's uid, but a root broker's clients would still lose it),
 * or, before saged starts, plant a socket of their own. So saged refuses to
 * create a socket in a directory writable by anyone but itself and root
 * (the sticky bit does not help: /tmp lets anyone bind a fresh name).
 *
 * Labelled sockets are tenants' doors: the rule of each (label.h) goes into
 * the socket file when it is created (the socket is bound with umask 0777
 * and opened up only as the rule says, so there is no window with a looser
 * mode) and is checked again at accept, so a door that ends up reachable by
 * others (a bind mount, a directory mode changed later) still admits no one
 * the operator did not name.
 */
#include "access.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

int access_check_socket_dir(const char *socket_path) {
        char dir[PATH_MAX];
        const char *slash = strrchr(socket_path, '/');
        struct stat st;

        if (!slash)
                snprintf(dir, sizeof(dir), ".");
        else if (slash == socket_path)
                snprintf(dir, sizeof(dir), "/");
        else if ((size_t)(slash - socket_path) >= sizeof(dir))
                return -ENAMETOOLONG;
        else
                snprintf(dir, sizeof(dir), "%.*s", (int)(slash - socket_path), socket_path);
        if (stat(dir, &st) < 0)
                return -errno;
        if ((st.st_uid != 0 && st.st_uid != geteuid()) || (st.st_mode & (S_IWGRP | S_IWOTH)))
                return -EPERM;
        return 0;
}

int access_apply(const char *socket_path, const LabelAccess *a) {
        if (chown(socket_path, label_access_owner(a), label_access_group(a)) < 0 || chmod(socket_path, a->mode) < 0)
                return -errno;
        return 0;
}

/* The peer's supplementary groups into *groups (malloc'd); 0 or -errno. */
static int peer_groups(int fd, gid_t **groups, size_t *n) {
        socklen_t len = 64 * sizeof(gid_t);

        *groups = NULL;
        *n = 0;
        for (int tries = 0; tries < 2; tries++) {
                gid_t *g = malloc(len ? len : sizeof(gid_t));
                if (!g)
                        return -ENOMEM;
                if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &len) == 0) {
                        *groups = g;
                        *n = len / sizeof(gid_t);
                        return 0;
                }
                free(g);
                if (errno != ERANGE)
                        return -errno;
                /* len now holds the size needed */
        }
        return -ERANGE;
}

bool access_allows(int fd, const struct ucred *cred, const LabelAccess *a, const char *socket_path, AccessWarnings *w) {
        _cleanup_free_ gid_t *groups = NULL;
        size_t n_groups = 0;
        uint64_t suppressed;

        if (a->n_gids > 0 || (a->mode & S_IWGRP))
                (void)peer_groups(fd, &groups, &n_groups); /* without them: primary group only */
        if (label_access_allows(a, cred, groups, n_groups))
                return true;
        if (access_warning_due(w, &suppressed))
                sage_warn("%s: refused client pid %d uid %u gid %u (not in the socket's access rule; %llu more "
                          "refused since the last warning)",
                          socket_path, (int)cred->pid, (unsigned)cred->uid, (unsigned)cred->gid,
                          (unsigned long long)suppressed);
        return false;
}

bool access_warning_due(AccessWarnings *w, uint64_t *suppressed) {
        uint64_t now = sage_now_ns();

        if (w->last_ns && now - w->last_ns < 1000000000ull) {
                w->suppressed++;
                return false;
        }
        *suppressed = w->suppressed;
        w->last_ns = now;
        w->suppressed = 0;
        return true;
}
