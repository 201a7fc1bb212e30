/*
 * saged's doors: the listening sockets, accept, and who gets in.
 *
 * The main socket and each labelled one (--label-socket) is one epoll
 * entry. At accept the peer's credentials are read once (SO_PEERCRED) and
 * fix the client's namespace; what each accepted client gets is decided
 * once (admit()): a labelled socket's access rule (access.c), or, on the
 * main socket, the container the peer lives in (identity.c). Connections
 * are capped per namespace and per label (conn_table.c), so one tenant
 * cannot lock the others out; a refused one is told LIMIT and closed. When
 * accept runs out of fds the listeners leave the (level-triggered) epoll
 * set for a moment rather than spin.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "activation.h"
#include "list.h"
#include "log.h"
#include "server_private.h"
#include "util.h"

static int make_parent_dirs(const char *path) {
        char buf[PATH_MAX];
        mode_t mode = geteuid() == 0 ? 0755 : 0700;

        if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
                return -ENAMETOOLONG;
        for (char *p = buf + 1; *p; p++) {
                if (*p != '/')
                        continue;
                *p = 0;
                if (mkdir(buf, mode) < 0 && errno != EEXIST)
                        return -errno;
                *p = '/';
        }
        return 0;
}

/* 0: nobody listens there (stale socket removed); -EADDRINUSE: a broker answers. */
static int clear_stale_socket(const struct sockaddr_un *addr) {
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        struct stat st;

        if (fd < 0)
                return -errno;
        if (lstat(addr->sun_path, &st) < 0)
                return errno == ENOENT ? 0 : -errno;
        if (!S_ISSOCK(st.st_mode))
                return -EEXIST; /* never unlink something that is not a socket */
        if (connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) == 0)
                return -EADDRINUSE;
        if (errno != ECONNREFUSED)
                return -errno;
        if (unlink(addr->sun_path) < 0 && errno != ENOENT)
                return -errno;
        return 0;
}

/* `access`: a labelled socket's rule (the file gets it); NULL: the main socket. */
static int listen_on(const char *path, const LabelAccess *access) {
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
        _cleanup_close_ int fd = -1;
        mode_t umask_before = 0;
        int r;

        if (strlen(path) >= sizeof(addr.sun_path))
                return -ENAMETOOLONG;
        memcpy(addr.sun_path, path, strlen(path) + 1);
        r = make_parent_dirs(path);
        if (r < 0)
                return r;
        r = access_check_socket_dir(path);
        if (r < 0)
                return r;
        r = clear_stale_socket(&addr);
        if (r < 0)
                return r;
        fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        /* A labelled socket is born closed and opened up only as its rule says. */
        if (access)
                umask_before = umask(0777);
        r = bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ? -errno : 0;
        if (access)
                umask(umask_before);
        if (r < 0)
                return r;
        if (access && (r = access_apply(path, access)) < 0) {
                unlink(path);
                return r;
        }
        /* Any local user may connect to root's broker: what each one can reach
         * is decided per request from its credentials, not by the socket mode. */
        if ((!access && chmod(path, geteuid() == 0 ? 0666 : 0600) < 0) || listen(fd, 128) < 0) {
                r = -errno;
                unlink(path);
                return r;
        }
        return SAGE_TAKE_FD(fd);
}

/*
 * A socket systemd bound for us (activation.c): the same checks and the same
 * file owner and mode as one saged makes, since the unit's SocketMode= may
 * say otherwise and the folder may be anyone's.
 */
static int adopt(int fd, const char *path, const LabelAccess *access) {
        _cleanup_close_ int owned = fd;
        int r = access_check_socket_dir(path);

        if (r < 0)
                return r;
        if (access)
                r = access_apply(path, access);
        else if (chmod(path, geteuid() == 0 ? 0666 : 0600) < 0)
                r = -errno;
        if (r < 0)
                return r;
        return SAGE_TAKE_FD(owned);
}

void server_close_listeners(Server *s) {
        for (size_t i = 0; i < s->n_listeners; i++) {
                Listener *l = &s->listeners[i];
                if (l->fd >= 0) {
                        close(l->fd);
                        /* An activated socket's file is systemd's: the next start needs it. */
                        if (!l->inherited)
                                unlink(l->path);
                }
                free(l->path);
        }
        free(s->listeners);
        s->listeners = NULL;
        s->n_listeners = 0;
}

/* Listen on `path` for clients of `label`; the listener is s->n_listeners - 1 on success. */
int server_add_listener(Server *s, const char *path, uint32_t label, const LabelAccess *access) {
        Listener *l = &s->listeners[s->n_listeners];
        struct epoll_event ev = { .events = EPOLLIN };
        int r;

        *l = (Listener){ .path = strdup(path), .fd = -1, .label = label, .labelled = access != NULL };
        if (access)
                l->access = *access;
        if (!l->path)
                return -ENOMEM;
        s->n_listeners++; /* from here server_close_listeners owns it */
        r = activation_take(s->inherited_fds, s->n_inherited_fds, path);
        if (r >= 0) {
                l->inherited = true;
                r = adopt(r, path, access);
        } else
                r = listen_on(path, access);
        if (r < 0)
                return r;
        l->fd = r;
        ev.data.ptr = l;
        if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, l->fd, &ev) < 0)
                return -errno;
        return 0;
}

/* Level-triggered listeners stay readable while accept fails for want of
 * fds: without a pause the loop would spin and log at full speed. */
void server_set_accepting(Server *s, bool on) {
        for (size_t i = 0; i < s->n_listeners; i++) {
                struct epoll_event ev = { .events = on ? EPOLLIN : 0, .data.ptr = &s->listeners[i] };
                epoll_ctl(s->epoll_fd, EPOLL_CTL_MOD, s->listeners[i].fd, &ev);
        }
        s->accept_paused = !on;
        if (!on)
                s->accept_resume_ns = sage_now_ns() + SERVER_ACCEPT_PAUSE_NS;
}

/*
 * Who the peer is, beyond its uid: on a labelled socket, someone the label's
 * rule admits, in that label; on the main socket, the host's (label 0) or
 * its container's namespace family (identity.c). False: refuse it.
 */
static bool admit(Server *s, Listener *l, int fd, const struct ucred *cred, uint32_t *label) {
        int r;

        *label = l->label;
        if (l->labelled)
                return access_allows(fd, cred, &l->access, l->path, &l->warnings);
        uint64_t suppressed;
        r = identity_attach(s->identities, fd, cred, label);
        if (r == IDENTITY_E_FULL && access_warning_due(&l->warnings, &suppressed))
                sage_warn("client pid %d uid %u: too many containers, refused (%llu more since the last warning)",
                          (int)cred->pid, (unsigned)cred->uid, (unsigned long long)suppressed);
        return r == 0;
}

void server_unadmit(Server *s, uint32_t label) {
        if (identity_is_container(label))
                identity_detach(s->identities, label);
}

/* Over a connection cap: say why (one non-blocking send, never waited on), then hang up. */
static void refuse_client(Server *s, int fd, const struct ucred *cred, const Listener *l, int code) {
        const char *why = code > 0 ? conn_table_error(code) : strerror(-code);
        SageMessage m;

        sage_warn("refusing a connection of pid %d uid %u on %s: %s (%zu clients)", (int)cred->pid, (unsigned)cred->uid,
                  l->path, why, conn_table_total(s->conns));
        sage_proto_error(&m, 0, SAGE_ERR_LIMIT, "%s", why);
        (void)sage_proto_send_message(fd, &m, NULL, 0);
        close(fd);
}

void server_accept_clients(Server *s, Listener *l) {
        for (;;) {
                struct ucred cred;
                socklen_t len = sizeof(cred);
                uint32_t label;
                Client *c;
                int r;
                int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

                if (fd < 0) {
                        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                                sage_warn("accept on %s: %s (%zu clients): pausing new connections", l->path,
                                          strerror(errno), s->n_clients);
                                server_set_accepting(s, false);
                        } else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                                sage_warn("accept on %s: %s", l->path, strerror(errno));
                        return;
                }
                if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
                        close(fd);
                        continue;
                }
                if (!admit(s, l, fd, &cred, &label)) {
                        close(fd);
                        continue;
                }
                r = conn_table_admit(s->conns, cred.uid, label);
                if (r != 0) {
                        server_unadmit(s, label);
                        refuse_client(s, fd, &cred, l, r);
                        continue;
                }
                if (client_new(&c, fd, &cred, label) < 0) {
                        conn_table_release(s->conns, cred.uid, label);
                        server_unadmit(s, label);
                        close(fd);
                        continue;
                }
                struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
                if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
                        conn_table_release(s->conns, cred.uid, label);
                        server_unadmit(s, label);
                        client_free(c, s->store);
                        continue;
                }
                SAGE_LIST_PUSH_FRONT(s->clients, c, prev, next);
                s->n_clients++;
                sage_debug("client pid %d uid %u label %u connected", (int)c->pid, (unsigned)c->uid,
                           (unsigned)c->label);
        }
}

/* The listener `tag` is, or NULL for a client. Equality only: comparing
 * unrelated pointers for order is undefined, and there are at most 65. */
Listener *server_find_listener(const Server *s, const void *tag) {
        for (size_t i = 0; i < s->n_listeners; i++)
                if (tag == &s->listeners[i])
                        return &s->listeners[i];
        return NULL;
}
