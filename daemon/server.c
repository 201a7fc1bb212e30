/*
 * saged's server: one thread, one epoll set, level-triggered.
 *
 * The listening sockets are SOCK_SEQPACKET: message boundaries come from
 * the kernel, so a request is one recvmsg and can never be half-read. Each
 * readable client gets a bounded number of requests served per wakeup, so
 * one busy client cannot starve the others. Requests are decoded strictly;
 * a malformed one gets an ERROR reply, and a client that keeps sending
 * garbage (or speaks another magic/version) is disconnected. Any fds that
 * arrive where none are expected are closed at once. A decoded request goes
 * to its handler through one table generated from common/proto.def, every
 * handler with one signature (server_private.h): handle_extent.c serves the
 * extent requests, handle_info.c the rest; listener.c accepts and admits.
 *
 * A published extent is the broker's own copy (gpu_adopt) and is served
 * only once its bytes were checked against their content key. That check
 * runs here, between epoll waits, a bounded number of bytes per loop turn
 * (epoll_wait does not block while some are pending), so a large extent
 * never stalls other clients; an extent that fails it is dropped, its
 * publishers' references with it.
 *
 * Per-namespace request counters (tally.c) live while their namespace is
 * connected or holds extents (tally_release): a tenant taking uid after uid
 * must not grow the broker.
 */
#include "list.h"
#include "server_private.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "access.h"
#include "client.h"
#include "config.h"
#include "conn_table.h"
#include "ipc_handle.h"
#include "identity.h"
#include "log.h"
#include "tally.h"
#include "util.h"

#define SERVER_REQUESTS_PER_WAKEUP 32
/* Bytes of pending extents hashed per loop turn: ~10 ms of read-back and hashing. */
#define SERVER_VERIFY_BYTES_PER_TURN (64ull << 20)
#define SERVER_VERIFY_ON_LOOKUP_MAX (256ull << 20)
#define SERVER_MAX_MALFORMED 16
/* --exit-idle: while a sage-run holds the lock, try it again this soon. */
#define SERVER_IDLE_RETRY_NS (50ull * 1000000)

/* epoll data: the stop fd is told apart by this; listeners by their address in s->listeners. */
static char tag_stop;

/* Each IPC registration holds one fd open: keep half of the fd limit for
 * clients, their replies and the driver. */
static size_t ipc_max_total(const ServerConfig *config) {
        struct rlimit rl;
        size_t max = config->max_ipc_exports ? config->max_ipc_exports : IPC_REGISTRY_MAX_TOTAL;

        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur / 2 < max)
                max = rl.rlim_cur / 2 > 0 ? (size_t)(rl.rlim_cur / 2) : 1;
        return max;
}

/*
 * A namespace's counters live while it is connected or holds extents, no
 * longer: a tenant taking uid after uid must not grow the broker (the
 * broker-wide figures keep what it counted). Called when either ends.
 */
static void tally_release(Server *s, uint64_t namespace_id) {
        if (conn_table_namespace_count(s->conns, sage_namespace_uid(namespace_id),
                                       sage_namespace_label(namespace_id)) == 0 &&
            !extent_store_holds(s->store, namespace_id))
                tally_forget(&s->tallies, namespace_id);
}

static void namespace_gone(void *userdata, uint64_t namespace_id) {
        tally_release(userdata, namespace_id);
}

/* --exit-idle: SOCKET.lock, which sage-run holds while it starts or picks this broker. */
static int open_idle_lock(Server *s, const char *socket_path) {
        char path[PATH_MAX];

        if (snprintf(path, sizeof(path), "%s.lock", socket_path) >= (int)sizeof(path))
                return -ENAMETOOLONG;
        s->idle_lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        return s->idle_lock_fd < 0 ? -errno : 0;
}

/* What server_new sets up besides the instances, gone again (server_new's
 * failure, server_free): its sockets and tables; the buffers and the Server stay. */
static void server_release(Server *s) {
        metrics_http_free(s->metrics);
        server_close_listeners(s);
        if (s->idle_lock_fd >= 0)
                close(s->idle_lock_fd); /* after the sockets went: a sage-run waiting on it starts a new broker */
        if (s->epoll_fd >= 0)
                close(s->epoll_fd);
        ipc_registry_free(s->ipc);
        conn_table_free(s->conns);
        identity_table_free(s->identities);
        tally_table_clear(&s->tallies);
        free(s->verifying);
}

int server_new(Server **out, const ServerConfig *config, ExtentStore *store, Gpu *gpu, const char **failed_path) {
        Server *s = calloc(1, sizeof(*s));
        int r;

        *failed_path = config->socket_path;
        if (!s)
                return -ENOMEM;
        s->epoll_fd = -1;
        s->ops_event_fd = -1;
        s->gate_timer_fd = -1;
        s->policy_timer_fd = -1;
        s->idle_lock_fd = -1;
        if (config->n_label_sockets > LABEL_MAX_SOCKETS) {
                r = -E2BIG;
                goto fail;
        }
        s->listeners = calloc(1 + config->n_label_sockets, sizeof(*s->listeners));
        s->rx = malloc(SAGE_PROTO_MAX_MESSAGE);
        s->list = calloc(SAGE_PROTO_LIST_MAX, sizeof(SageListEntry));
        if (!s->listeners || !s->rx || !s->list) {
                r = -ENOMEM;
                goto fail;
        }
        r = conn_table_new(&s->conns, &(ConnLimits){ .max_total = config->max_clients,
                                                     .max_per_namespace = config->max_clients_per_uid,
                                                     .max_per_label = config->max_clients_per_label });
        if (r < 0)
                goto fail;
        r = ipc_registry_new(&s->ipc, 0, ipc_max_total(config));
        if (r < 0)
                goto fail;
        *failed_path = "/proc/self/ns (--container-namespaces=isolate needs saged's own namespaces)";
        /* No forget callback: a forgotten container's namespaces keep nothing here
         * (their counters go with their last connection and extent, tally_release). */
        r = identity_table_new(&s->identities, config->container_namespaces, store, 0, NULL, NULL);
        if (r < 0)
                goto fail;
        *failed_path = config->socket_path;
        s->started_ns = sage_now_ns();
        s->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
        if (s->epoll_fd < 0) {
                r = -errno;
                goto fail;
        }
        r = server_instances_init(s, config);
        if (r < 0)
                goto fail;
        s->inherited_fds = config->inherited_fds;
        s->n_inherited_fds = config->n_inherited_fds;
        r = server_add_listener(s, config->socket_path, 0, NULL);
        if (r < 0)
                goto fail;
        for (size_t i = 0; i < config->n_label_sockets; i++) {
                const LabelSocket *ls = &config->label_sockets[i];
                uint32_t label;

                *failed_path = ls->path;
                r = label_table_add(&s->labels, ls->label, &label);
                if (r < 0)
                        goto fail;
                r = server_add_listener(s, ls->path, label, &ls->access);
                if (r < 0)
                        goto fail;
                sage_info("label %u (%s): %s", label, ls->label, ls->path);
        }
        if (config->metrics_address) {
                *failed_path = "--metrics-listen";
                r = metrics_http_new(&s->metrics, config->metrics_address, config->metrics_address_len, s->epoll_fd,
                                     server_render_metrics, s);
                if (r < 0)
                        goto fail;
                sage_info("metrics: http://%s/metrics", metrics_http_address(s->metrics));
        }
        if (config->exit_idle) {
                r = open_idle_lock(s, config->socket_path);
                *failed_path = config->socket_path;
                if (r < 0)
                        goto fail;
                s->exit_idle = true;
                s->exit_idle_ms = config->exit_idle_ms;
                s->idle_since_ns = s->started_ns;
        }
        s->inherited_fds = NULL;
        s->n_inherited_fds = 0;
        s->store = store;
        s->gpu = gpu;
        extent_store_on_namespace_gone(store, namespace_gone, s);
        *failed_path = NULL;
        *out = s;
        return 0;
fail:
        /* Sockets this call created go again (a stale or live one it refused is untouched). */
        server_instances_free(s);
        server_release(s);
        free(s->rx);
        free(s->list);
        free(s);
        return r;
}

static void drop_client(Server *s, Client *c) {
        epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
        SAGE_LIST_UNLINK(s->clients, c, prev, next);
        s->n_clients--;
        sage_debug("client pid %d uid %u gone (%zu IPC exports dropped)", (int)c->pid, (unsigned)c->uid,
                   c->ipc.n_exports);
        ipc_registry_drop_owner(s->ipc, &c->ipc);
        server_instances_client_gone(s, c);
        conn_table_release(s->conns, c->uid, c->label);
        tally_release(s, c->namespace_id);
        server_unadmit(s, c->label);
        client_free(c, s->store);
        if (s->accept_paused)
                server_set_accepting(s, true); /* an fd came free */
        if (s->n_clients == 0)
                s->idle_since_ns = sage_now_ns();
}

Server *server_free(Server *s) {
        if (!s)
                return NULL;
        extent_store_on_namespace_gone(s->store, NULL, NULL); /* the tallies go first */
        server_instances_free(s);                             /* waits for checkpoint/restore in flight */
        while (s->clients)
                drop_client(s, s->clients);
        server_release(s);
        /* Store first: its release callback still needs the driver. */
        extent_store_free(s->store);
        gpu_close(s->gpu);
        free(s->rx);
        free(s->list);
        free(s);
        return NULL;
}

static int send_error(Client *c, uint32_t request_id, int code, const char *what) {
        SageMessage m;
        sage_proto_error(&m, request_id, code, "%s", what);
        return client_send(c, &m, NULL, 0);
}

/* A request of another protocol version: say so in the client's version
 * (ERROR reads the same in every version), so an older libsage or sagectl
 * reports why instead of failing to decode our answer. */
static int send_version_error(Client *c, const SageHeader *h) {
        SageMessage m;
        sage_proto_error(&m, h->request_id, SAGE_ERR_VERSION, "protocol version %u not spoken: saged speaks %u",
                         (unsigned)h->version, (unsigned)SAGE_PROTO_VERSION);
        m.header.version = h->version;
        return client_send(c, &m, NULL, 0);
}

Tally *server_tally(Server *s, uint64_t namespace_id) {
        static Tally lost; /* out of memory: the broker-wide count still moves */
        Tally *t = tally_get(&s->tallies, namespace_id);
        return t ? t : &lost;
}

/* Request type -> its handler, from proto.def: nothing listed twice. */
static const ServerHandler handlers[] = {
#define SAGE_MESSAGE(NAME, NUMBER, REQUEST, FLAGS, FDS, REPLY_NAME, REPLY, REPLY_FDS, FEATURE, HANDLER) \
        [NUMBER] = handle_##HANDLER,
#define SAGE_NOTICE_HANDLER_TO_BROKER(NUMBER, HANDLER) [NUMBER] = handle_##HANDLER,
#define SAGE_NOTICE_HANDLER_TO_CLIENT(NUMBER, HANDLER)
#define SAGE_NOTICE(NAME, NUMBER, PAYLOAD, FLAGS, FDS, DIRECTION, FEATURE, HANDLER) \
        SAGE_NOTICE_HANDLER_##DIRECTION(NUMBER, HANDLER)
#include "proto.def"
#undef SAGE_NOTICE
#undef SAGE_NOTICE_HANDLER_TO_BROKER
#undef SAGE_NOTICE_HANDLER_TO_CLIENT
#undef SAGE_MESSAGE
};

/* Serve one decoded request. Returns what client_send returned. */
static int dispatch(Server *s, Client *c, const SageMessage *req, int *fds, size_t n_fds) {
        Request r = { .msg = req, .fds = fds, .n_fds = n_fds, .reply_fd = -1, .why = "" };
        unsigned type = req->header.type;
        int code;

        if (type & SAGE_MSG_REPLY_BIT) {
                code = SAGE_ERR_UNKNOWN_TYPE;
                r.why = "replies are not requests";
        } else if (type >= SAGE_ARRAY_SIZE(handlers) || !handlers[type]) {
                code = SAGE_ERR_UNKNOWN_TYPE;
                r.why = "unknown request";
        } else
                code = handlers[type](s, c, &r);
        /* The broker imported (or registered) what it needed; the client's fds go now. */
        for (size_t i = 0; i < n_fds; i++)
                if (fds[i] >= 0)
                        close(fds[i]);
        if (code == 0 && r.deferred)
                return 0; /* handle_instance.c answers when the driver is done */
        if (sage_proto_notice_to_broker(type)) {
                if (code)
                        sage_debug("client pid %d: %s ignored: %s", (int)c->pid, sage_proto_type_name(type), r.why);
                return 0; /* a notice is never answered */
        }
        if (code) {
                if (r.reply_fd >= 0)
                        close(r.reply_fd);
                return send_error(c, req->header.request_id, code, r.why);
        }
        return client_send(c, &r.reply, &r.reply_fd, r.reply_fd >= 0 ? 1 : 0);
}

static void set_events(Server *s, Client *c, uint32_t events) {
        struct epoll_event ev = { .events = events, .data.ptr = c };
        epoll_ctl(s->epoll_fd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Read and serve requests. Returns false when the client must be dropped. */
static bool serve_client(Server *s, Client *c) {
        for (int i = 0; i < SERVER_REQUESTS_PER_WAKEUP && !c->pending; i++) {
                int fds[SAGE_PROTO_MAX_FDS];
                size_t n_fds = 0;
                SageMessage req;
                ssize_t n;
                int code, r;

                n = sage_proto_recv(c->fd, s->rx, SAGE_PROTO_MAX_MESSAGE, fds, SAGE_PROTO_MAX_FDS, &n_fds);
                if (n == -EAGAIN)
                        return true;
                if (n == 0 || n == -ECONNRESET)
                        return false;
                if (n < 0) {
                        code = n == -EMSGSIZE ? SAGE_ERR_TOO_LARGE : SAGE_ERR_BAD_FD;
                        if (++c->malformed > SERVER_MAX_MALFORMED || send_error(c, 0, code, "bad message") < 0)
                                return false;
                        continue;
                }
                code = sage_proto_decode(s->rx, (size_t)n, &req, NULL);
                if (code == 0 && n_fds != sage_proto_expected_fds(&req))
                        code = SAGE_ERR_BAD_FD;
                if (code) {
                        for (size_t j = 0; j < n_fds; j++)
                                close(fds[j]);
                        sage_debug("client pid %d: bad message: %s", (int)c->pid, sage_proto_error_name(code));
                        r = code == SAGE_ERR_VERSION
                                    ? send_version_error(c, &req.header)
                                    : send_error(c, req.header.request_id, code, sage_proto_error_name(code));
                        /* Another magic or version: we do not share a language. */
                        if (r < 0 || code == SAGE_ERR_BAD_MAGIC || code == SAGE_ERR_VERSION ||
                            ++c->malformed > SERVER_MAX_MALFORMED)
                                return false;
                        continue;
                }
                r = dispatch(s, c, &req, fds, n_fds);
                if (r < 0)
                        return false;
        }
        if (c->pending)
                set_events(s, c, EPOLLOUT);
        return true;
}

/* Bytes that do not hash to their key: nobody may map them, whoever holds a reference. */
static void reject_extent(Server *s, Extent *e) {
        char hex[33];

        sage_hash_format(e->key.hash, hex);
        sage_warn("extent %llu (namespace %llx, key %s, %llu bytes, publisher pid %u): the bytes do not match their "
                  "content key; dropped",
                  (unsigned long long)e->id, (unsigned long long)e->namespace_id, hex, (unsigned long long)e->key.size,
                  e->publisher_pid);
        s->rejected_content++;
        Tally *t = tally_find(&s->tallies, e->namespace_id); /* none once the namespace disconnected */
        if (t)
                t->rejected_content++;
        for (Client *c = s->clients; c; c = c->next)
                client_forget(c, s->store, e->id);
        extent_store_evict(s->store, e);
}

/*
 * A LOOKUP that finds its extent still pending: a miss would make the caller
 * copy what the broker already holds, and publish it again. Finishing the
 * check first costs the loop at most SERVER_VERIFY_ON_LOOKUP_MAX bytes of
 * read-back and hashing (~30 ms); a larger rest stays a miss, verified in turns.
 */
bool server_verify_now(Server *s, Extent **e) {
        GpuExtent *x = (*e)->payload;
        uint64_t budget = SERVER_VERIFY_ON_LOOKUP_MAX;
        int r;

        if (!(*e)->unverified)
                return true;
        if (x->size - x->hashed > SERVER_VERIFY_ON_LOOKUP_MAX)
                return false;
        r = gpu_verify_step(s->gpu, x, &budget);
        if (r == GPU_VERIFY_MATCH) {
                (*e)->unverified = false;
                return true;
        }
        if (r != GPU_VERIFY_PENDING) {
                reject_extent(s, *e);
                *e = NULL;
        }
        return false;
}

/* Verify pending extents, oldest first, up to SERVER_VERIFY_BYTES_PER_TURN. */
static void verify_some(Server *s) {
        uint64_t budget = SERVER_VERIFY_BYTES_PER_TURN;
        size_t done = 0;

        while (done < s->n_verifying && budget > 0) {
                Extent *e = extent_store_get(s->store, s->verifying[done]);
                int r;

                if (!e || !e->unverified) { /* evicted meanwhile */
                        done++;
                        continue;
                }
                r = gpu_verify_step(s->gpu, e->payload, &budget);
                if (r == GPU_VERIFY_PENDING)
                        break;
                done++;
                if (r == GPU_VERIFY_MATCH)
                        e->unverified = false;
                else
                        reject_extent(s, e);
        }
        if (done == 0)
                return;
        s->n_verifying -= done;
        memmove(s->verifying, s->verifying + done, s->n_verifying * sizeof(*s->verifying));
}

/*
 * Idle long enough to go? Only with the lock: a sage-run holding it is about
 * to connect (or has, and waits for its HELLO), and one that comes after we
 * took it finds the socket gone. Clients already in the backlog are taken
 * in first; any there keep the broker. Otherwise try again shortly.
 */
static bool idle_exit_due(Server *s, uint64_t now, int *timeout_ms) {
        uint64_t due = s->idle_since_ns + s->exit_idle_ms * 1000000ull;
        int wait_ms;

        if (!s->exit_idle || s->n_clients > 0)
                return false;
        if (due < s->idle_retry_ns)
                due = s->idle_retry_ns;
        if (now >= due) {
                if (flock(s->idle_lock_fd, LOCK_EX | LOCK_NB) == 0) {
                        for (size_t i = 0; i < s->n_listeners; i++)
                                server_accept_clients(s, &s->listeners[i]);
                        if (s->n_clients == 0) {
                                sage_info("no client for %llu ms: exiting (--exit-idle)",
                                          (unsigned long long)s->exit_idle_ms);
                                return true;
                        }
                        flock(s->idle_lock_fd, LOCK_UN);
                        return false;
                }
                s->idle_retry_ns = now + SERVER_IDLE_RETRY_NS;
                due = s->idle_retry_ns;
        }
        wait_ms = (int)((due - now + 999999) / 1000000);
        if (*timeout_ms < 0 || wait_ms < *timeout_ms)
                *timeout_ms = wait_ms;
        return false;
}

int server_run(Server *s, int stop_fd) {
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &tag_stop };
        struct epoll_event events[64];

        if (stop_fd >= 0 && epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, stop_fd, &ev) < 0)
                return -errno;
        for (size_t i = 0; i < s->n_listeners; i++)
                sage_info("listening on %s (label %u)", s->listeners[i].path, (unsigned)s->listeners[i].label);
        for (;;) {
                int timeout_ms = s->n_verifying ? 0 : -1;
                uint64_t now = sage_now_ns();
                if (s->accept_paused) {
                        if (now >= s->accept_resume_ns)
                                server_set_accepting(s, true);
                        else if (timeout_ms < 0)
                                timeout_ms = (int)((s->accept_resume_ns - now + 999999) / 1000000);
                }
                metrics_http_expire(s->metrics, now);
                int metrics_ms = metrics_http_timeout_ms(s->metrics, now);
                if (metrics_ms >= 0 && (timeout_ms < 0 || metrics_ms < timeout_ms))
                        timeout_ms = metrics_ms;
                if (idle_exit_due(s, now, &timeout_ms))
                        return 0;
                int n = epoll_wait(s->epoll_fd, events, (int)SAGE_ARRAY_SIZE(events), timeout_ms);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                for (int i = 0; i < n; i++) {
                        void *tag = events[i].data.ptr;
                        Client *c = tag;

                        if (tag == &tag_stop) {
                                epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, stop_fd, NULL);
                                return 0;
                        }
                        if (server_instances_event(s, tag))
                                continue;
                        if (metrics_http_event(s->metrics, tag, events[i].events))
                                continue;
                        Listener *l = server_find_listener(s, tag);
                        if (l) {
                                server_accept_clients(s, l);
                                continue;
                        }
                        if (events[i].events & EPOLLOUT) {
                                int r = client_flush(c);
                                if (r < 0) {
                                        drop_client(s, c);
                                        continue;
                                }
                                if (r == 0)
                                        set_events(s, c, EPOLLIN);
                                continue;
                        }
                        /* Serve what was sent before a hang-up; the read then sees the end. */
                        if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                                if (!serve_client(s, c))
                                        drop_client(s, c);
                }
                verify_some(s);
        }
}
