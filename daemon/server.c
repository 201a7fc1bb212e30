/*
 * saged's server: one thread, one epoll set, level-triggered.
 *
 * The listening socket is SOCK_SEQPACKET: message boundaries come from the
 * kernel, so a request is one recvmsg and can never be half-read. At accept
 * the peer's credentials are read once (SO_PEERCRED) and fix the client's
 * namespace. Each readable client gets a bounded number of requests served
 * per wakeup, so one busy client cannot starve the others. Requests are
 * decoded strictly; a malformed one gets an ERROR reply, and a client that
 * keeps sending garbage (or speaks another magic/version) is disconnected.
 * Any fds that arrive where none are expected are closed at once.
 *
 * A node service must survive its clients: connections are capped per
 * namespace and per label (conn_table.c), so one tenant cannot lock the
 * others out; a refused one is told LIMIT and closed. When accept runs out
 * of fds the listeners leave the (level-triggered) epoll set for a moment
 * rather than spin; IPC_EXPORT holds only CUDA shareable handles
 * (ipc_handle.c), never a socket that would keep a connection from EOF.
 *
 * Besides the main socket the server may listen on labelled ones
 * (--label-socket): the socket a client came through gives the upper half
 * of its namespace (label << 32 | uid, label.c), so the label is as
 * unforgeable as the uid. Every listener is one epoll entry; what each
 * accepted client gets is decided in accept_clients, once (admit()): a
 * labelled socket's access rule (access.c), or, on the main socket, the
 * container the peer lives in (identity.c).
 *
 * Authorisation lives here, next to dispatch: LOOKUP and PUBLISH (and their
 * NOTED variants, which also carry an extent's notes) act in the caller's
 * namespace only; RELEASE only on references the caller holds; LIST and
 * EVICT see the caller's namespace, or everything for root on the
 * unlabelled socket (root on a labelled socket is confined to its label:
 * that socket is a tenant's door). An
 * extent of another namespace answers exactly like a missing one. CUDA-IPC
 * registrations (ipc_registry.c) follow the same rule: IPC_IMPORT works
 * within the exporter's namespace only, IPC_REVOKE for the exporting
 * connection only, and both answer "not found" otherwise.
 *
 * A published extent is the broker's own copy (gpu_adopt) and is served
 * only once its bytes were checked against their content key. That check
 * runs between epoll waits, a bounded number of bytes per loop turn
 * (epoll_wait does not block while some are pending), so a large extent
 * never stalls other clients; an extent that fails it is dropped, its
 * publishers' references with it. STATS answers a tenant about its own
 * namespace (tally.c, the store's namespace counters); root on the main
 * socket gets broker-wide figures.
 */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
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
#define SERVER_MAX_MALFORMED 16
/* Out of fds: how long the listeners rest before accept is tried again
 * (sooner when a client leaves and gives one back). */
#define SERVER_ACCEPT_PAUSE_NS (100 * 1000000ull)

/* One listening socket: the main one (label 0) or a labelled one. */
typedef struct Listener {
        char *path;
        int fd;
        uint32_t label;
        bool labelled;       /* access applies */
        LabelAccess access;  /* who may connect */
        AccessWarnings warnings;
} Listener;

struct Server {
        Listener *listeners;    /* [0]: the main socket */
        size_t n_listeners;
        LabelTable labels;
        IdentityTable *identities; /* containers on the main socket (identity.c) */
        int epoll_fd;
        ConnTable *conns; /* per-namespace, per-label and broker-wide connection caps */
        ExtentStore *store;
        Gpu *gpu;
        IpcRegistry *ipc;
        Client *clients;
        size_t n_clients;
        uint64_t started_ns;
        uint64_t hits, misses, publishes, rejected_budget, rejected_content;
        TallyTable tallies;  /* the same, per namespace */
        uint64_t *verifying; /* ids of extents not verified yet, oldest first */
        size_t n_verifying, cap_verifying;
        uint8_t *rx;  /* one receive buffer, SAGE_PROTO_MAX_MESSAGE */
        /* accept failed for want of fds: listeners are out of the epoll set's
         * interest until accept_resume_ns or until a client goes. */
        bool accept_paused;
        uint64_t accept_resume_ns;
        SageListEntry *list; /* LIST reply scratch, SAGE_PROTO_LIST_MAX */
};

/* epoll data: the stop fd is told apart by this; listeners by their address in s->listeners. */
static char tag_stop;

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

/* Each IPC registration holds one fd open: keep half of the fd limit for
 * clients, their replies and the driver. */
static size_t ipc_max_total(const ServerConfig *config) {
        struct rlimit rl;
        size_t max = config->max_ipc_exports ? config->max_ipc_exports : IPC_REGISTRY_MAX_TOTAL;

        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur / 2 < max)
                max = rl.rlim_cur / 2 > 0 ? (size_t)(rl.rlim_cur / 2) : 1;
        return max;
}

static void close_listeners(Server *s) {
        for (size_t i = 0; i < s->n_listeners; i++) {
                Listener *l = &s->listeners[i];
                if (l->fd >= 0) {
                        close(l->fd);
                        unlink(l->path);
                }
                free(l->path);
        }
        free(s->listeners);
        s->listeners = NULL;
        s->n_listeners = 0;
}

/* Listen on `path` for clients of `label`; the listener is s->n_listeners - 1 on success. */
static int add_listener(Server *s, const char *path, uint32_t label, const LabelAccess *access) {
        Listener *l = &s->listeners[s->n_listeners];
        struct epoll_event ev = { .events = EPOLLIN };
        int r;

        *l = (Listener){ .path = strdup(path), .fd = -1, .label = label, .labelled = access != NULL };
        if (access)
                l->access = *access;
        if (!l->path)
                return -ENOMEM;
        s->n_listeners++; /* from here close_listeners owns it */
        r = listen_on(path, access);
        if (r < 0)
                return r;
        l->fd = r;
        ev.data.ptr = l;
        if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, l->fd, &ev) < 0)
                return -errno;
        return 0;
}

/* A container number that never comes back: its namespaces' counters and (empty) accounting go. */
static void forget_container(void *userdata, uint32_t number) {
        Server *s = userdata;
        tally_forget_label(&s->tallies, number);
        extent_store_forget_label(s->store, number);
}

int server_new(Server **out, const ServerConfig *config, ExtentStore *store, Gpu *gpu, const char **failed_path) {
        Server *s = calloc(1, sizeof(*s));
        int r;

        *failed_path = config->socket_path;
        if (!s)
                return -ENOMEM;
        s->epoll_fd = -1;
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
        r = identity_table_new(&s->identities, config->container_namespaces, store, 0, forget_container, s);
        if (r < 0)
                goto fail;
        *failed_path = config->socket_path;
        s->started_ns = sage_now_ns();
        s->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
        if (s->epoll_fd < 0) {
                r = -errno;
                goto fail;
        }
        r = add_listener(s, config->socket_path, 0, NULL);
        if (r < 0)
                goto fail;
        for (size_t i = 0; i < config->n_label_sockets; i++) {
                const LabelSocket *ls = &config->label_sockets[i];
                uint32_t label;

                *failed_path = ls->path;
                r = label_table_add(&s->labels, ls->label, &label);
                if (r < 0)
                        goto fail;
                r = add_listener(s, ls->path, label, &ls->access);
                if (r < 0)
                        goto fail;
                sage_info("label %u (%s): %s", label, ls->label, ls->path);
        }
        s->store = store;
        s->gpu = gpu;
        *failed_path = NULL;
        *out = s;
        return 0;
fail:
        /* Sockets this call created go again (a stale or live one it refused is untouched). */
        close_listeners(s);
        if (s->epoll_fd >= 0)
                close(s->epoll_fd);
        ipc_registry_free(s->ipc);
        conn_table_free(s->conns);
        identity_table_free(s->identities);
        free(s->rx);
        free(s->list);
        free(s);
        return r;
}

/* Level-triggered listeners stay readable while accept fails for want of
 * fds: without a pause the loop would spin and log at full speed. */
static void set_accepting(Server *s, bool on) {
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

/* Undo admit(): a container's client count. */
static void unadmit(Server *s, uint32_t label) {
        if (identity_is_container(label))
                identity_detach(s->identities, label);
}

static void drop_client(Server *s, Client *c) {
        epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
        if (c->prev)
                c->prev->next = c->next;
        else
                s->clients = c->next;
        if (c->next)
                c->next->prev = c->prev;
        s->n_clients--;
        sage_debug("client pid %d uid %u gone (%zu IPC exports dropped)", (int)c->pid, (unsigned)c->uid,
                   c->ipc.n_exports);
        ipc_registry_drop_owner(s->ipc, &c->ipc);
        conn_table_release(s->conns, c->uid, c->label);
        unadmit(s, c->label);
        client_free(c, s->store);
        if (s->accept_paused)
                set_accepting(s, true); /* an fd came free */
}

Server *server_free(Server *s) {
        if (!s)
                return NULL;
        while (s->clients)
                drop_client(s, s->clients);
        close_listeners(s);
        if (s->epoll_fd >= 0)
                close(s->epoll_fd);
        ipc_registry_free(s->ipc);
        conn_table_free(s->conns);
        identity_table_free(s->identities);
        tally_table_clear(&s->tallies);
        free(s->verifying);
        /* Store first: its release callback still needs the driver. */
        extent_store_free(s->store);
        gpu_close(s->gpu);
        free(s->rx);
        free(s->list);
        free(s);
        return NULL;
}

/* Over a connection cap: say why (one non-blocking send, never waited on), then hang up. */
static void refuse_client(Server *s, int fd, const struct ucred *cred, const Listener *l, int code) {
        const char *why = code > 0 ? conn_table_error(code) : strerror(-code);
        SageMessage m;

        sage_warn("refusing a connection of pid %d uid %u on %s: %s (%zu clients)", (int)cred->pid,
                  (unsigned)cred->uid, l->path, why, conn_table_total(s->conns));
        sage_proto_error(&m, 0, SAGE_ERR_LIMIT, "%s", why);
        (void)sage_proto_send_message(fd, &m, NULL, 0);
        close(fd);
}

static void accept_clients(Server *s, Listener *l) {
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
                                set_accepting(s, false);
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
                        unadmit(s, label);
                        refuse_client(s, fd, &cred, l, r);
                        continue;
                }
                if (client_new(&c, fd, &cred, label) < 0) {
                        conn_table_release(s->conns, cred.uid, label);
                        unadmit(s, label);
                        close(fd);
                        continue;
                }
                struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
                if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
                        conn_table_release(s->conns, cred.uid, label);
                        unadmit(s, label);
                        client_free(c, s->store);
                        continue;
                }
                c->next = s->clients;
                if (s->clients)
                        s->clients->prev = c;
                s->clients = c;
                s->n_clients++;
                sage_debug("client pid %d uid %u label %u connected", (int)c->pid, (unsigned)c->uid,
                           (unsigned)c->label);
        }
}

static int send_error(Client *c, uint32_t request_id, int code, const char *what) {
        SageMessage m;
        sage_proto_error(&m, request_id, code, "%s", what);
        return client_send(c, &m, NULL, 0);
}

static int handle_hello(Server *s, Client *c, const SageMessage *req, SageMessage *reply) {
        sage_proto_init(reply, SAGE_MSG_HELLO_REPLY, req->header.request_id);
        reply->hello_reply.broker_version = SAGE_PROTO_VERSION;
        reply->hello_reply.n_devices = gpu_device_count(s->gpu);
        reply->hello_reply.namespace_id = c->namespace_id;
        reply->hello_reply.granularity = gpu_granularity(s->gpu);
        return 0;
}

/* The caller's namespace's counters (STATS answers tenants about their own). */
static Tally *tally(Server *s, uint64_t namespace_id) {
        static Tally lost; /* out of memory: the broker-wide count still moves */
        Tally *t = tally_get(&s->tallies, namespace_id);
        return t ? t : &lost;
}

static int check_key(Server *s, const SageExtentKey *k, const char **why) {
        if (!s->gpu) {
                *why = "saged runs without a CUDA driver";
                return SAGE_ERR_NO_DRIVER;
        }
        if (!gpu_serves(s->gpu, k->device)) {
                *why = "device not served by this broker";
                return SAGE_ERR_BAD_DEVICE;
        }
        if (k->size == 0 || k->size % gpu_granularity(s->gpu) != 0) {
                *why = "size must be a nonzero multiple of the VMM granularity";
                return SAGE_ERR_SIZE_MISMATCH;
        }
        return 0;
}

/* LOOKUP, and LOOKUP_NOTED (which also answers the extent's notes). */
static int handle_lookup(Server *s, Client *c, const SageMessage *req, SageMessage *reply, int *fd,
                         const char **why) {
        bool noted = req->header.type == SAGE_MSG_LOOKUP_NOTED;
        const SageExtentKey *k = noted ? &req->lookup_noted : &req->lookup;
        SageLookupReply *found = noted ? &reply->lookup_noted_reply.lookup : &reply->lookup_reply;
        Extent *e;
        int r = check_key(s, k, why);

        if (r)
                return r;
        sage_proto_init(reply, noted ? SAGE_MSG_LOOKUP_NOTED_REPLY : SAGE_MSG_LOOKUP_REPLY, req->header.request_id);
        e = extent_store_lookup(s->store, c->namespace_id, k);
        if (!e || e->unverified) { /* not verified yet: a miss, the client copies */
                s->misses++;
                tally(s, c->namespace_id)->misses++;
                return 0;
        }
        r = gpu_export(s->gpu, e->payload, fd);
        if (r) {
                *why = "export of the extent failed";
                return r;
        }
        r = client_ref(c, s->store, e);
        if (r) {
                close(*fd);
                *fd = -1;
                *why = "too many references held by this client";
                return r == CLIENT_E_LIMIT ? SAGE_ERR_LIMIT : SAGE_ERR_INTERNAL;
        }
        s->hits++;
        tally(s, c->namespace_id)->hits++;
        found->found = 1;
        found->extent_id = e->id;
        found->size = e->key.size;
        /* Encoded before this returns to the event loop: the extent (referenced
         * by this client now) outlives the pointer. */
        if (noted)
                reply->lookup_noted_reply.notes = (SageNotes){ .length = e->notes_len, .bytes = e->notes };
        return 0;
}

/* PUBLISH, and PUBLISH_NOTED (the same, with notes for a new extent). */
static int handle_publish(Server *s, Client *c, const SageMessage *req, int publish_fd, SageMessage *reply,
                          const char **why) {
        bool noted = req->header.type == SAGE_MSG_PUBLISH_NOTED;
        const SageExtentKey *k = noted ? &req->publish_noted.key : &req->publish;
        const SageNotes *notes = noted ? &req->publish_noted.notes : &(SageNotes){ 0 };
        /* What the bytes must hash to: the key, or the content key a file-keyed publish states. */
        SageHash want = noted && (req->header.flags & SAGE_PUBLISH_CONTENT) ? req->publish_noted.content : k->hash;
        SagePublishReply *published = noted ? &reply->publish_noted_reply : &reply->publish_reply;
        GpuExtent *x = NULL;
        Extent *e;
        int r = check_key(s, k, why);

        if (r)
                return r;
        /* Policy, for now: only content the publisher declares sealed (read-only
         * from here on) is accepted. Establishing read-only is libsage's job;
         * the broker never hands out a writable grant either way. */
        if (!(req->header.flags & SAGE_PUBLISH_SEALED)) {
                *why = "only sealed extents may be published";
                return SAGE_ERR_PERMISSION;
        }
        sage_proto_init(reply, noted ? SAGE_MSG_PUBLISH_NOTED_REPLY : SAGE_MSG_PUBLISH_REPLY,
                        req->header.request_id);
        e = extent_store_lookup(s->store, c->namespace_id, k);
        if (e) {
                /* Sealed is immutable: the resident extent keeps its notes. */
                r = client_ref(c, s->store, e);
                if (r) {
                        *why = "too many references held by this client";
                        return SAGE_ERR_LIMIT;
                }
                published->extent_id = e->id;
                published->existed = 1;
                return 0;
        }
        if (!extent_store_can_fit(s->store, c->namespace_id, k->device, k->size + notes->length)) {
                s->rejected_budget++;
                tally(s, c->namespace_id)->rejected_budget++;
                *why = "the broker's memory budget (or this namespace's share of it) is exhausted";
                return SAGE_ERR_BUDGET;
        }
        if (s->n_verifying == s->cap_verifying) {
                size_t cap = s->cap_verifying ? 2 * s->cap_verifying : 64;
                uint64_t *grown = realloc(s->verifying, cap * sizeof(*grown));
                if (!grown) {
                        *why = "out of memory";
                        return SAGE_ERR_INTERNAL;
                }
                s->verifying = grown;
                s->cap_verifying = cap;
        }
        r = gpu_adopt(s->gpu, k->device, publish_fd, k->size, want, &x);
        if (r) {
                if (r == SAGE_ERR_BUDGET) {
                        s->rejected_budget++;
                        tally(s, c->namespace_id)->rejected_budget++;
                }
                *why = r == SAGE_ERR_SIZE_MISMATCH ? "the handle is not the announced size"
                       : r == SAGE_ERR_BUDGET      ? "no device memory for the broker's copy"
                                                   : "the driver refused the handle";
                return r;
        }
        r = extent_store_insert(s->store, c->namespace_id, k, req->header.flags, (uint32_t)c->pid, notes->bytes,
                                notes->length, x, &e);
        if (r) {
                gpu_release(s->gpu, x);
                if (r == EXTENT_STORE_E_BUDGET) {
                        s->rejected_budget++;
                        tally(s, c->namespace_id)->rejected_budget++;
                        *why = "the broker's memory budget is exhausted";
                        return SAGE_ERR_BUDGET;
                }
                *why = "cannot store the extent";
                return SAGE_ERR_INTERNAL;
        }
        e->unverified = true; /* served once verify_some checked it */
        s->verifying[s->n_verifying++] = e->id;
        r = client_ref(c, s->store, e);
        if (r) {
                *why = "too many references held by this client";
                return SAGE_ERR_LIMIT; /* the extent stays, unreferenced, evictable */
        }
        s->publishes++;
        tally(s, c->namespace_id)->publishes++;
        sage_info("extent %llu published by pid %d uid %u: %llu bytes on device %u, %u bytes of notes",
                  (unsigned long long)e->id, (int)c->pid, (unsigned)c->uid, (unsigned long long)k->size,
                  k->device, e->notes_len);
        published->extent_id = e->id;
        return 0;
}

/* Broker-wide figures for root on the main socket; a tenant's namespace's own for everyone else. */
static void fill_stats(Server *s, const Client *c, SageStats *st) {
        ExtentStoreCounters counters;
        Tally t = { s->hits, s->misses, s->publishes, s->rejected_budget, s->rejected_content };
        uint64_t budget = 0, clients = s->n_clients;

        if (c->sees_all)
                extent_store_counters(s->store, &counters);
        else {
                extent_store_namespace_counters(s->store, c->namespace_id, &counters);
                t = tally_of(&s->tallies, c->namespace_id);
                clients = conn_table_namespace_count(s->conns, c->uid, c->label);
        }
        for (uint32_t d = 0; d < gpu_device_count(s->gpu); d++) {
                uint64_t b;
                if (!gpu_serves(s->gpu, d))
                        continue;
                b = c->sees_all ? extent_store_get_budget(s->store, d) : extent_store_namespace_cap(s->store, d);
                budget = (b == EXTENT_STORE_UNLIMITED || budget + b < budget) ? UINT64_MAX : budget + b;
        }
        memset(st, 0, sizeof(*st));
        st->extents = counters.extents;
        st->bytes_resident = counters.bytes_resident;
        st->budget = budget;
        st->hits = t.hits;
        st->misses = t.misses;
        st->clients = clients;
        st->refs = counters.refs;
        st->publishes = t.publishes;
        st->evictions = counters.evictions;
        st->rejected_budget = t.rejected_budget;
        st->rejected_content = t.rejected_content;
        st->uptime_ns = sage_now_ns() - s->started_ns;
}

static bool visible(const Client *c, const Extent *e) {
        return c->sees_all || e->namespace_id == c->namespace_id;
}

/* A label's name, to those who can see its namespaces: its own clients, and root on the main socket. */
static int handle_label(Server *s, Client *c, const SageMessage *req, SageMessage *reply, const char **why) {
        const char *name = label_table_name(&s->labels, req->label);

        if (!name || (!c->sees_all && req->label != c->label)) {
                *why = "no such label";
                return SAGE_ERR_NOT_FOUND;
        }
        sage_proto_init(reply, SAGE_MSG_LABEL_REPLY, req->header.request_id);
        snprintf(reply->label_reply.name, sizeof(reply->label_reply.name), "%s", name);
        return 0;
}

/* A page costs O(log N + page): only the caller's namespace is walked (all for root on main). */
static void handle_list(Server *s, Client *c, const SageMessage *req, SageMessage *reply) {
        uint64_t now = sage_now_ns();
        Extent *page[SAGE_PROTO_LIST_MAX];
        bool more;
        uint32_t n = (uint32_t)extent_store_page(s->store, c->sees_all, c->namespace_id, req->list.after_id, page,
                                                 SAGE_PROTO_LIST_MAX, &more);

        sage_proto_init(reply, SAGE_MSG_LIST_REPLY, req->header.request_id);
        reply->list_reply.more = more;
        for (uint32_t i = 0; i < n; i++) {
                const Extent *e = page[i];
                s->list[i] = (SageListEntry){
                        .id = e->id,
                        .namespace_id = e->namespace_id,
                        .hash = e->key.hash,
                        .size = e->key.size,
                        .device = e->key.device,
                        .refs = e->refs,
                        /* A host pid means nothing (or too much) in another pid namespace. */
                        .publisher_pid = c->label == 0 ? e->publisher_pid : 0,
                        .flags = e->flags,
                        .idle_ns = e->refs || now < e->last_use_ns ? 0 : now - e->last_use_ns,
                };
        }
        reply->list_reply.n_entries = n;
        reply->list_reply.entries = s->list;
}

static int handle_evict(Server *s, Client *c, const SageMessage *req, SageMessage *reply, const char **why) {
        sage_proto_init(reply, SAGE_MSG_EVICT_REPLY, req->header.request_id);
        if (req->header.flags & SAGE_EVICT_ALL_UNREFERENCED) {
                reply->evict_reply.evicted = extent_store_evict_unreferenced(s->store, c->sees_all, c->namespace_id,
                                                                             &reply->evict_reply.bytes);
                return 0;
        }
        Extent *e = extent_store_get(s->store, req->evict.extent_id);
        if (!e || !visible(c, e)) {
                *why = "no such extent";
                return SAGE_ERR_NOT_FOUND;
        }
        uint64_t size = e->key.size;
        if (extent_store_evict(s->store, e) == EXTENT_STORE_E_BUSY) {
                *why = "the extent is referenced";
                return SAGE_ERR_BUSY;
        }
        reply->evict_reply.evicted = 1;
        reply->evict_reply.bytes = size;
        return 0;
}

/* Takes the fd (sets *fd to -1) once it is registered. */
static int handle_ipc_export(Server *s, Client *c, const SageMessage *req, int *fd, SageMessage *reply,
                             const char **why) {
        IpcExport *e;
        int r;

        if (req->ipc_export.size == 0) {
                *why = "size must be nonzero";
                return SAGE_ERR_MALFORMED;
        }
        r = ipc_handle_check(s->gpu, *fd, &req->ipc_export, why);
        if (r)
                return r;
        r = ipc_registry_add(s->ipc, &c->ipc, c->namespace_id, *fd, &req->ipc_export, c->pid, &e);
        switch (r) {
        case 0:
                break;
        case IPC_REGISTRY_E_OWNER_LIMIT:
                *why = "too many IPC exports on this connection";
                return SAGE_ERR_LIMIT;
        case IPC_REGISTRY_E_TOTAL_LIMIT:
                *why = "too many IPC exports in the broker";
                return SAGE_ERR_LIMIT;
        default:
                *why = "cannot register the IPC export";
                return SAGE_ERR_INTERNAL;
        }
        *fd = -1;
        sage_debug("IPC export by pid %d uid %u: %llu bytes on device %u (%zu held)", (int)c->pid,
                   (unsigned)c->uid, (unsigned long long)e->allocation.size, e->allocation.device,
                   c->ipc.n_exports);
        sage_proto_init(reply, SAGE_MSG_IPC_EXPORT_REPLY, req->header.request_id);
        reply->ipc_export_reply = e->token;
        return 0;
}

static int handle_ipc_import(Server *s, Client *c, const SageMessage *req, SageMessage *reply, int *fd,
                             const char **why) {
        const IpcExport *e = ipc_registry_find(s->ipc, &req->ipc_import, c->namespace_id);

        if (!e) {
                *why = "no such IPC handle";
                return SAGE_ERR_NOT_FOUND;
        }
        /* The registration keeps its fd; the importer gets its own. */
        *fd = fcntl(e->fd, F_DUPFD_CLOEXEC, 3);
        if (*fd < 0) {
                *why = "the broker is out of file descriptors";
                return SAGE_ERR_LIMIT;
        }
        sage_proto_init(reply, SAGE_MSG_IPC_IMPORT_REPLY, req->header.request_id);
        reply->ipc_import_reply = e->allocation;
        return 0;
}

/* Serve one decoded request. Returns what client_send returned. */
static int dispatch(Server *s, Client *c, const SageMessage *req, int *fds, size_t n_fds) {
        SageMessage reply;
        const char *why = "";
        int reply_fd = -1;
        int code = 0;

        if (req->header.type & SAGE_MSG_REPLY_BIT) {
                code = SAGE_ERR_UNKNOWN_TYPE;
                why = "replies are not requests";
        } else {
                switch (req->header.type) {
                case SAGE_MSG_HELLO:
                        code = handle_hello(s, c, req, &reply);
                        break;
                case SAGE_MSG_PING:
                        sage_proto_init(&reply, SAGE_MSG_PONG, req->header.request_id);
                        break;
                case SAGE_MSG_LOOKUP:
                case SAGE_MSG_LOOKUP_NOTED:
                        code = handle_lookup(s, c, req, &reply, &reply_fd, &why);
                        break;
                case SAGE_MSG_PUBLISH:
                case SAGE_MSG_PUBLISH_NOTED:
                        code = handle_publish(s, c, req, fds[0], &reply, &why);
                        break;
                case SAGE_MSG_RELEASE:
                        if (client_unref(c, s->store, req->release)) {
                                code = SAGE_ERR_NOT_FOUND;
                                why = "no reference held on that extent";
                        } else
                                sage_proto_init(&reply, SAGE_MSG_RELEASE_REPLY, req->header.request_id);
                        break;
                case SAGE_MSG_STATS:
                        sage_proto_init(&reply, SAGE_MSG_STATS_REPLY, req->header.request_id);
                        fill_stats(s, c, &reply.stats_reply);
                        break;
                case SAGE_MSG_LIST:
                        handle_list(s, c, req, &reply);
                        break;
                case SAGE_MSG_EVICT:
                        code = handle_evict(s, c, req, &reply, &why);
                        break;
                case SAGE_MSG_IPC_EXPORT:
                        code = handle_ipc_export(s, c, req, &fds[0], &reply, &why);
                        break;
                case SAGE_MSG_IPC_IMPORT:
                        code = handle_ipc_import(s, c, req, &reply, &reply_fd, &why);
                        break;
                case SAGE_MSG_LABEL:
                        code = handle_label(s, c, req, &reply, &why);
                        break;
                case SAGE_MSG_IPC_REVOKE:
                        if (ipc_registry_revoke(s->ipc, &c->ipc, &req->ipc_revoke)) {
                                code = SAGE_ERR_NOT_FOUND;
                                why = "no such IPC handle exported by this connection";
                        } else
                                sage_proto_init(&reply, SAGE_MSG_IPC_REVOKE_REPLY, req->header.request_id);
                        break;
                default:
                        code = SAGE_ERR_UNKNOWN_TYPE;
                        why = "unknown request";
                }
        }
        /* The broker imported (or registered) what it needed; the client's fds go now. */
        for (size_t i = 0; i < n_fds; i++)
                if (fds[i] >= 0)
                        close(fds[i]);
        if (code) {
                if (reply_fd >= 0)
                        close(reply_fd);
                return send_error(c, req->header.request_id, code, why);
        }
        return client_send(c, &reply, &reply_fd, reply_fd >= 0 ? 1 : 0);
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
                        r = send_error(c, req.header.request_id, code, sage_proto_error_name(code));
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
                  (unsigned long long)e->id, (unsigned long long)e->namespace_id, hex,
                  (unsigned long long)e->key.size, e->publisher_pid);
        s->rejected_content++;
        tally(s, e->namespace_id)->rejected_content++;
        for (Client *c = s->clients; c; c = c->next)
                client_forget(c, s->store, e->id);
        extent_store_evict(s->store, e);
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

/* The listener `tag` is, or NULL for a client. Equality only: comparing
 * unrelated pointers for order is undefined, and there are at most 65. */
static Listener *find_listener(const Server *s, const void *tag) {
        for (size_t i = 0; i < s->n_listeners; i++)
                if (tag == &s->listeners[i])
                        return &s->listeners[i];
        return NULL;
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
                if (s->accept_paused) {
                        uint64_t now = sage_now_ns();
                        if (now >= s->accept_resume_ns)
                                set_accepting(s, true);
                        else if (timeout_ms < 0)
                                timeout_ms = (int)((s->accept_resume_ns - now + 999999) / 1000000);
                }
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
                        Listener *l = find_listener(s, tag);
                        if (l) {
                                accept_clients(s, l);
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
