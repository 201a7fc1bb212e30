/*
 * Broker client: one UNIX SOCK_SEQPACKET connection, strictly request/reply.
 *
 * The socket is non-blocking and every wait goes through poll() with the
 * deadline of the current call, so a broker that stops answering costs the
 * application at most one timeout. Replies are matched by request id; a
 * late reply to a request that already timed out is discarded (closing any
 * fd it carried) instead of being taken for the answer to the next one.
 * Notes in a reply are copied out before the receive buffer goes.
 */
#include "broker_client.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "options.h"
#include "util.h"

struct SageBroker {
        int fd;
        int timeout_ms;
        uint32_t next_request_id;
        pthread_mutex_t lock;
        SageHelloReply hello;
        char last_error[SAGE_PROTO_ERROR_MESSAGE_MAX + 1];
};

int sage_broker_default_socket(char *buf, size_t size) {
        const char *env = sage_options()->socket;
        const char *xdg;
        int n;

        if (env && env[0])
                n = snprintf(buf, size, "%s", env);
        else if (geteuid() == 0)
                n = snprintf(buf, size, "%s", SAGE_DEFAULT_SOCKET_ROOT);
        else if ((xdg = getenv("XDG_RUNTIME_DIR")) && xdg[0] == '/')
                n = snprintf(buf, size, "%s/sage/saged.sock", xdg);
        else
                n = snprintf(buf, size, "/run/user/%u/sage/saged.sock", (unsigned)geteuid());
        if (n < 0 || (size_t)n >= size)
                return -ENAMETOOLONG;
        return 0;
}

static int remaining_ms(uint64_t deadline_ns) {
        uint64_t now = sage_now_ns();
        if (now >= deadline_ns)
                return 0;
        return (int)((deadline_ns - now + 999999) / 1000000);
}

static int wait_for(int fd, short events, uint64_t deadline_ns) {
        struct pollfd p = { .fd = fd, .events = events };
        for (;;) {
                int ms = remaining_ms(deadline_ns);
                int r;
                if (ms == 0)
                        return -ETIMEDOUT;
                r = poll(&p, 1, ms);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r < 0)
                        return -errno;
                if (r == 0)
                        return -ETIMEDOUT;
                return 0;
        }
}

SageBroker *sage_broker_free(SageBroker *b) {
        if (!b)
                return NULL;
        if (b->fd >= 0)
                close(b->fd);
        pthread_mutex_destroy(&b->lock);
        free(b);
        return NULL;
}

/* Where the notes of a LOOKUP_NOTED reply go: `length` receives their size,
 * the bytes are copied only if they fit in `capacity`. */
typedef struct NotesSink {
        void *bytes;
        uint32_t capacity;
        uint32_t length;
} NotesSink;

/* The decoded reply's notes point into the receive buffer: copy them out
 * (if asked to) and drop the pointer before that buffer is freed. */
static void take_notes(SageMessage *reply, NotesSink *sink) {
        SageNotes *notes;

        if (reply->header.type != SAGE_MSG_LOOKUP_NOTED_REPLY)
                return;
        notes = &reply->lookup_noted_reply.notes;
        if (sink) {
                sink->length = notes->length;
                if (notes->length > 0 && notes->length <= sink->capacity)
                        memcpy(sink->bytes, notes->bytes, notes->length);
        }
        notes->bytes = NULL;
}

/* The broker hung up before our request: if it said why first (an ERROR
 * with request id 0, e.g. LIMIT at accept), that code, else `error`. */
static int refusal(SageBroker *b, uint8_t *buf, int error) {
        int fds[SAGE_PROTO_MAX_FDS];
        size_t n_fds = 0;
        SageMessage m;
        ssize_t n = sage_proto_recv(b->fd, buf, SAGE_PROTO_MAX_MESSAGE, fds, SAGE_PROTO_MAX_FDS, &n_fds);

        /* A broker that closed with our request unread leaves ECONNRESET
         * pending, reported (once) before what it had sent. */
        if (n == -ECONNRESET)
                n = sage_proto_recv(b->fd, buf, SAGE_PROTO_MAX_MESSAGE, fds, SAGE_PROTO_MAX_FDS, &n_fds);

        for (size_t i = 0; i < n_fds; i++)
                close(fds[i]);
        if (n <= 0 || sage_proto_decode(buf, (size_t)n, &m, NULL) != 0 || m.header.type != SAGE_MSG_ERROR ||
            m.header.request_id != 0 || m.error.code == 0 || m.error.code >= 0x10000)
                return error;
        snprintf(b->last_error, sizeof(b->last_error), "%s", m.error.message);
        return (int)m.error.code;
}

/* Send `req`, wait for the reply with its request id. Caller holds the lock.
 * *reply_fd receives the fd of a reply that carries one (else -1). */
static int transact(SageBroker *b, SageMessage *req, const int *fds, size_t n_fds, SageMessage *reply,
                    SageListEntry *list_storage, int *reply_fd, NotesSink *notes) {
        uint64_t deadline = sage_now_ns() + (uint64_t)b->timeout_ms * 1000000ull;
        uint8_t *buf;
        int r;

        if (reply_fd)
                *reply_fd = -1;
        if (b->fd < 0)
                return -EPIPE;
        req->header.request_id = b->next_request_id++;
        b->last_error[0] = 0;

        buf = malloc(SAGE_PROTO_MAX_MESSAGE);
        if (!buf)
                return -ENOMEM;
        ssize_t len = sage_proto_encode(req, buf, SAGE_PROTO_MAX_MESSAGE);
        if (len < 0) {
                r = (int)len;
                goto out;
        }
        for (;;) {
                r = sage_proto_send(b->fd, buf, (size_t)len, fds, n_fds);
                if (r != -EAGAIN)
                        break;
                r = wait_for(b->fd, POLLOUT, deadline);
                if (r < 0)
                        goto out;
        }
        if (r == -EPIPE || r == -ECONNRESET)
                r = refusal(b, buf, r);
        if (r != 0)
                goto out;

        for (;;) {
                int rfds[SAGE_PROTO_MAX_FDS];
                size_t n_rfds = 0;
                ssize_t n;

                r = wait_for(b->fd, POLLIN, deadline);
                if (r < 0)
                        goto out;
                n = sage_proto_recv(b->fd, buf, SAGE_PROTO_MAX_MESSAGE, rfds, SAGE_PROTO_MAX_FDS, &n_rfds);
                if (n == -EAGAIN)
                        continue;
                if (n == 0 || n == -ECONNRESET) {
                        r = refusal(b, buf, n == 0 ? -EPIPE : -ECONNRESET);
                        goto out;
                }
                if (n < 0) {
                        r = (int)n;
                        goto out;
                }
                r = sage_proto_decode(buf, (size_t)n, reply, list_storage);
                /* An ERROR with request id 0 is the broker's word on the connection
                 * itself (refused at accept: LIMIT), the answer to whatever we asked. */
                if (r == 0 && reply->header.request_id != req->header.request_id &&
                    !(reply->header.type == SAGE_MSG_ERROR && reply->header.request_id == 0)) {
                        /* A late answer to an abandoned request. */
                        for (size_t i = 0; i < n_rfds; i++)
                                close(rfds[i]);
                        continue;
                }
                if (r != 0 || n_rfds != sage_proto_expected_fds(reply)) {
                        for (size_t i = 0; i < n_rfds; i++)
                                close(rfds[i]);
                        r = -EPROTO;
                        goto out;
                }
                if (reply->header.type == SAGE_MSG_ERROR) {
                        snprintf(b->last_error, sizeof(b->last_error), "%s", reply->error.message);
                        r = reply->error.code > 0 && reply->error.code < 0x10000 ? (int)reply->error.code
                                                                                   : SAGE_ERR_INTERNAL;
                        goto out;
                }
                if (reply->header.type != (SAGE_MSG_REPLY_BIT | req->header.type)) {
                        for (size_t i = 0; i < n_rfds; i++)
                                close(rfds[i]);
                        r = -EPROTO;
                        goto out;
                }
                if (n_rfds == 1) {
                        if (reply_fd)
                                *reply_fd = rfds[0];
                        else
                                close(rfds[0]);
                }
                take_notes(reply, notes);
                r = 0;
                goto out;
        }
out:
        free(buf);
        /* Transport failures leave the stream in an unknown state: a timed-out
         * request's reply may still come, which the id check absorbs, but a
         * protocol error means we no longer understand the broker. */
        if (r == -EPROTO || r == -EPIPE || r == -ECONNRESET) {
                close(b->fd);
                b->fd = -1;
        }
        return r;
}

static int call(SageBroker *b, SageMessage *req, const int *fds, size_t n_fds, SageMessage *reply,
                SageListEntry *list_storage, int *reply_fd) {
        int r;
        pthread_mutex_lock(&b->lock);
        r = transact(b, req, fds, n_fds, reply, list_storage, reply_fd, NULL);
        pthread_mutex_unlock(&b->lock);
        return r;
}

static int call_noted(SageBroker *b, SageMessage *req, SageMessage *reply, int *reply_fd, NotesSink *notes) {
        int r;
        pthread_mutex_lock(&b->lock);
        r = transact(b, req, NULL, 0, reply, NULL, reply_fd, notes);
        pthread_mutex_unlock(&b->lock);
        return r;
}

static void set_last_error(SageBroker *b, const char *format, ...) __attribute__((format(printf, 2, 3)));
static void set_last_error(SageBroker *b, const char *format, ...) {
        va_list ap;

        pthread_mutex_lock(&b->lock);
        va_start(ap, format);
        vsnprintf(b->last_error, sizeof(b->last_error), format, ap);
        va_end(ap);
        pthread_mutex_unlock(&b->lock);
}

/* Only a broker of root, of our own uid or of SAGE_BROKER_UID may hear our
 * hashes, hold our uploads and hand us memory to map. */
static int check_broker_peer(int fd, const char *path, char *why, size_t why_size) {
        struct ucred cred;
        socklen_t len = sizeof(cred);
        uint64_t trusted = sage_options()->broker_uid;

        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
                int r = -errno;
                snprintf(why, why_size, "cannot read the credentials of the broker on %s: %s", path, strerror(-r));
                return r;
        }
        if (cred.uid == 0 || cred.uid == geteuid() || (uint64_t)cred.uid == trusted)
                return 0;
        snprintf(why, why_size,
                 "the broker on %s runs as uid %u (pid %d), not as root, as you (uid %u) or as SAGE_BROKER_UID: "
                 "refusing it as an impostor",
                 path, (unsigned)cred.uid, (int)cred.pid, (unsigned)geteuid());
        return -EPERM;
}

int sage_broker_connect(SageBroker **out, const char *path, int timeout_ms) {
        return sage_broker_connect_why(out, path, timeout_ms, NULL, 0);
}

int sage_broker_connect_why(SageBroker **out, const char *path, int timeout_ms, char *why, size_t why_size) {
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
        char default_path[sizeof(addr.sun_path)], reason[256];
        SageBroker *b;
        SageMessage req, reply;
        int r;

        *out = NULL;
        reason[0] = 0;
        if (why && why_size)
                why[0] = 0;
        if (!path) {
                r = sage_broker_default_socket(default_path, sizeof(default_path));
                if (r < 0)
                        return r;
                path = default_path;
        }
        if (strlen(path) >= sizeof(addr.sun_path))
                return -ENAMETOOLONG;
        memcpy(addr.sun_path, path, strlen(path) + 1);

        b = calloc(1, sizeof(*b));
        if (!b)
                return -ENOMEM;
        pthread_mutex_init(&b->lock, NULL);
        b->timeout_ms = timeout_ms > 0 ? timeout_ms : 1;
        b->next_request_id = 1;
        b->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (b->fd < 0) {
                r = -errno;
                sage_broker_free(b);
                return r;
        }
        /* A UNIX connect either completes at once or fails with EAGAIN when
         * the listen backlog is full; retry that until the deadline. */
        uint64_t deadline = sage_now_ns() + (uint64_t)b->timeout_ms * 1000000ull;
        while (connect(b->fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
                r = -errno;
                if (r == -EINTR)
                        continue;
                if (r == -EINPROGRESS) {
                        int err = 0;
                        socklen_t len = sizeof(err);
                        r = wait_for(b->fd, POLLOUT, deadline);
                        if (r == 0 && getsockopt(b->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                                r = -errno;
                        else if (r == 0 && err)
                                r = -err;
                        if (r < 0) {
                                sage_broker_free(b);
                                return r;
                        }
                        break;
                }
                if (r != -EAGAIN || remaining_ms(deadline) == 0) {
                        sage_broker_free(b);
                        return r == -EAGAIN ? -ETIMEDOUT : r;
                }
                poll(NULL, 0, 1);
        }
        r = check_broker_peer(b->fd, path, reason, sizeof(reason));
        if (r < 0) {
                if (why && why_size)
                        snprintf(why, why_size, "%s", reason);
                sage_broker_free(b);
                return r;
        }

        sage_proto_init(&req, SAGE_MSG_HELLO, 0);
        req.hello.client_version = SAGE_PROTO_VERSION;
        req.hello.pid = (uint32_t)getpid();
        r = call(b, &req, NULL, 0, &reply, NULL, NULL);
        if (r != 0) {
                sage_broker_free(b);
                /* LIMIT: refused at accept, over a connection cap (daemon/README.md). */
                return r == SAGE_ERR_LIMIT ? -EUSERS : r > 0 ? -EPROTO : r;
        }
        b->hello = reply.hello_reply;
        *out = b;
        return 0;
}

const SageHelloReply *sage_broker_hello(const SageBroker *b) {
        return &b->hello;
}

int sage_broker_fd(const SageBroker *b) {
        return b->fd;
}

const char *sage_broker_last_error(const SageBroker *b) {
        return b->last_error;
}

int sage_broker_ping(SageBroker *b) {
        SageMessage req, reply;
        sage_proto_init(&req, SAGE_MSG_PING, 0);
        return call(b, &req, NULL, 0, &reply, NULL, NULL);
}

int sage_broker_lookup(SageBroker *b, SageHash hash, uint64_t size, uint32_t device, uint64_t *extent_id,
                       int *fd_out) {
        SageMessage req, reply;
        int fd = -1, r;

        *fd_out = -1;
        sage_proto_init(&req, SAGE_MSG_LOOKUP, 0);
        req.lookup = (SageExtentKey){ .hash = hash, .size = size, .device = device };
        r = call(b, &req, NULL, 0, &reply, NULL, &fd);
        if (r != 0)
                return r;
        if (!reply.lookup_reply.found)
                return SAGE_ERR_NOT_FOUND;
        if (reply.lookup_reply.size != size) {
                close(fd);
                return -EPROTO;
        }
        if (extent_id)
                *extent_id = reply.lookup_reply.extent_id;
        *fd_out = fd;
        return 0;
}

int sage_broker_publish(SageBroker *b, SageHash hash, uint64_t size, uint32_t device, uint32_t flags, int fd,
                        uint64_t *extent_id, int *existed) {
        SageMessage req, reply;
        int r;

        sage_proto_init(&req, SAGE_MSG_PUBLISH, 0);
        req.header.flags = flags;
        req.publish = (SageExtentKey){ .hash = hash, .size = size, .device = device };
        r = call(b, &req, &fd, 1, &reply, NULL, NULL);
        if (r != 0)
                return r;
        if (extent_id)
                *extent_id = reply.publish_reply.extent_id;
        if (existed)
                *existed = reply.publish_reply.existed;
        return 0;
}

static int publish_noted(SageBroker *b, SageHash hash, const SageHash *content, uint64_t size, uint32_t device,
                         uint32_t flags, int fd, const void *notes, uint32_t notes_len, uint64_t *extent_id,
                         int *existed) {
        SageMessage req, reply;
        int r;

        /* The broker would refuse these too (MALFORMED), without saying why. */
        if (notes_len > SAGE_PROTO_NOTES_MAX) {
                set_last_error(b, "notes of %u bytes exceed the %u allowed", (unsigned)notes_len,
                               (unsigned)SAGE_PROTO_NOTES_MAX);
                return SAGE_ERR_MALFORMED;
        }
        if (notes_len > 0 && !notes) {
                set_last_error(b, "notes of %u bytes given without their bytes", (unsigned)notes_len);
                return SAGE_ERR_MALFORMED;
        }
        sage_proto_init(&req, SAGE_MSG_PUBLISH_NOTED, 0);
        req.header.flags = flags;
        req.publish_noted.key = (SageExtentKey){ .hash = hash, .size = size, .device = device };
        req.publish_noted.notes = (SageNotes){ .length = notes_len, .bytes = notes };
        if (content) {
                req.header.flags |= SAGE_PUBLISH_CONTENT;
                req.publish_noted.content = *content;
        }
        r = call(b, &req, &fd, 1, &reply, NULL, NULL);
        if (r != 0)
                return r;
        if (extent_id)
                *extent_id = reply.publish_noted_reply.extent_id;
        if (existed)
                *existed = reply.publish_noted_reply.existed;
        return 0;
}

int sage_broker_publish_noted(SageBroker *b, SageHash hash, uint64_t size, uint32_t device, uint32_t flags, int fd,
                              const void *notes, uint32_t notes_len, uint64_t *extent_id, int *existed) {
        return publish_noted(b, hash, NULL, size, device, flags, fd, notes, notes_len, extent_id, existed);
}

int sage_broker_publish_content(SageBroker *b, SageHash key, SageHash content, uint64_t size, uint32_t device,
                                uint32_t flags, int fd, const void *notes, uint32_t notes_len, uint64_t *extent_id,
                                int *existed) {
        return publish_noted(b, key, &content, size, device, flags, fd, notes, notes_len, extent_id, existed);
}

int sage_broker_lookup_noted(SageBroker *b, SageHash hash, uint64_t size, uint32_t device, uint64_t *extent_id,
                             int *fd_out, void *notes, uint32_t notes_cap, uint32_t *notes_len) {
        NotesSink sink = { .bytes = notes, .capacity = notes ? notes_cap : 0 };
        SageMessage req, reply;
        int fd = -1, r;

        *fd_out = -1;
        *notes_len = 0;
        sage_proto_init(&req, SAGE_MSG_LOOKUP_NOTED, 0);
        req.lookup_noted = (SageExtentKey){ .hash = hash, .size = size, .device = device };
        r = call_noted(b, &req, &reply, &fd, &sink);
        if (r != 0)
                return r;
        if (!reply.lookup_noted_reply.lookup.found)
                return SAGE_ERR_NOT_FOUND;
        if (reply.lookup_noted_reply.lookup.size != size) {
                close(fd);
                return -EPROTO;
        }
        if (sink.length > sink.capacity) {
                /* No fd, and the reference the hit took goes back at once. */
                close(fd);
                sage_broker_release(b, reply.lookup_noted_reply.lookup.extent_id);
                *notes_len = sink.length;
                set_last_error(b, "notes of %u bytes do not fit in %u", (unsigned)sink.length,
                               (unsigned)sink.capacity);
                return -ENOBUFS;
        }
        if (extent_id)
                *extent_id = reply.lookup_noted_reply.lookup.extent_id;
        *notes_len = sink.length;
        *fd_out = fd;
        return 0;
}

int sage_broker_release(SageBroker *b, uint64_t extent_id) {
        SageMessage req, reply;
        sage_proto_init(&req, SAGE_MSG_RELEASE, 0);
        req.release = extent_id;
        return call(b, &req, NULL, 0, &reply, NULL, NULL);
}

int sage_broker_stats(SageBroker *b, SageStats *out) {
        SageMessage req, reply;
        int r;
        sage_proto_init(&req, SAGE_MSG_STATS, 0);
        r = call(b, &req, NULL, 0, &reply, NULL, NULL);
        if (r == 0)
                *out = reply.stats_reply;
        return r;
}

int sage_broker_list(SageBroker *b, uint64_t after_id, SageListEntry *entries, uint32_t *n_entries, int *more) {
        SageMessage req, reply;
        int r;
        sage_proto_init(&req, SAGE_MSG_LIST, 0);
        req.list.after_id = after_id;
        r = call(b, &req, NULL, 0, &reply, entries, NULL);
        if (r != 0)
                return r;
        *n_entries = reply.list_reply.n_entries;
        *more = reply.list_reply.more;
        return 0;
}

int sage_broker_evict(SageBroker *b, uint64_t extent_id, uint32_t flags, SageEvictReply *out) {
        SageMessage req, reply;
        int r;
        sage_proto_init(&req, SAGE_MSG_EVICT, 0);
        req.header.flags = flags;
        req.evict.extent_id = extent_id;
        r = call(b, &req, NULL, 0, &reply, NULL, NULL);
        if (r == 0 && out)
                *out = reply.evict_reply;
        return r;
}

int sage_broker_ipc_export(SageBroker *b, int fd, uint64_t size, uint32_t device,
                           uint8_t token[SAGE_IPC_TOKEN_SIZE]) {
        SageMessage req, reply;
        int r;

        sage_proto_init(&req, SAGE_MSG_IPC_EXPORT, 0);
        req.ipc_export = (SageIpcAllocation){ .size = size, .device = device };
        r = call(b, &req, &fd, 1, &reply, NULL, NULL);
        if (r == 0)
                memcpy(token, reply.ipc_export_reply.bytes, SAGE_IPC_TOKEN_SIZE);
        return r;
}

int sage_broker_ipc_import(SageBroker *b, const uint8_t token[SAGE_IPC_TOKEN_SIZE], int *fd_out, uint64_t *size,
                           uint32_t *device) {
        SageMessage req, reply;
        int fd = -1, r;

        *fd_out = -1;
        sage_proto_init(&req, SAGE_MSG_IPC_IMPORT, 0);
        memcpy(req.ipc_import.bytes, token, SAGE_IPC_TOKEN_SIZE);
        r = call(b, &req, NULL, 0, &reply, NULL, &fd);
        if (r != 0)
                return r;
        if (size)
                *size = reply.ipc_import_reply.size;
        if (device)
                *device = reply.ipc_import_reply.device;
        *fd_out = fd;
        return 0;
}

int sage_broker_ipc_revoke(SageBroker *b, const uint8_t token[SAGE_IPC_TOKEN_SIZE]) {
        SageMessage req, reply;

        sage_proto_init(&req, SAGE_MSG_IPC_REVOKE, 0);
        memcpy(req.ipc_revoke.bytes, token, SAGE_IPC_TOKEN_SIZE);
        return call(b, &req, NULL, 0, &reply, NULL, NULL);
}

int sage_broker_label_name(SageBroker *b, uint32_t label, char name[SAGE_PROTO_LABEL_MAX + 1]) {
        SageMessage req, reply;
        int r;

        sage_proto_init(&req, SAGE_MSG_LABEL, 0);
        req.label = label;
        r = call(b, &req, NULL, 0, &reply, NULL, NULL);
        if (r == 0)
                memcpy(name, reply.label_reply.name, sizeof(reply.label_reply.name));
        return r;
}
