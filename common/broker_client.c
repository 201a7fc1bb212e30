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
#include "broker_client_private.h"

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
        return now >= deadline_ns ? 0 : (int)((deadline_ns - now + 999999) / 1000000);
}

static int wait_for(int fd, short events, uint64_t deadline_ns) {
        struct pollfd p = { .fd = fd, .events = events };
        for (;;) {
                int ms = remaining_ms(deadline_ns);
                int r;
                /* Past the deadline, what is already there still counts: one look, no wait. */
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
        free(b->devices);
        free(b);
        return NULL;
}

/* The decoded reply's notes point into the receive buffer: copy them out
 * (if asked to) and drop the pointer before that buffer is freed. */
static void take_notes(SageMessage *reply, NotesSink *sink) {
        SageNotes *notes;

        if (reply->header.type != SAGE_MSG_LOOKUP_REPLY)
                return;
        notes = &reply->lookup_reply.notes;
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

/* Transport failures leave the stream in an unknown state: a timed-out
 * request's reply may still come, which the id check absorbs, but a
 * protocol error means we no longer understand the broker. */
static int broken(SageBroker *b, int r) {
        if (r == -EPROTO || r == -EPROTONOSUPPORT || r == -EPIPE || r == -ECONNRESET) {
                close(b->fd);
                b->fd = -1;
        }
        return r;
}

/* Send `req` (its request id assigned) in `buf`. Caller holds the lock. */
static int send_request(SageBroker *b, SageMessage *req, const int *fds, size_t n_fds, uint8_t *buf,
                        uint64_t deadline) {
        ssize_t len;
        int r;

        if (b->fd < 0)
                return -EPIPE;
        req->header.request_id = b->next_request_id++;
        b->last_error[0] = 0;
        /* Never ask a broker for what it did not offer at HELLO (proto.def says what each request needs). */
        if (sage_proto_feature(req->header.type) & ~b->hello.features) {
                snprintf(b->last_error, sizeof(b->last_error), "the broker does not offer %s",
                         sage_proto_type_name(req->header.type));
                return SAGE_ERR_UNKNOWN_TYPE;
        }
        len = sage_proto_encode(req, buf, SAGE_PROTO_MAX_MESSAGE);
        if (len < 0)
                return (int)len;
        for (;;) {
                r = sage_proto_send(b->fd, buf, (size_t)len, fds, n_fds);
                if (r != -EAGAIN)
                        break;
                r = wait_for(b->fd, POLLOUT, deadline);
                if (r < 0)
                        return r;
        }
        if (r == -EPIPE || r == -ECONNRESET)
                r = refusal(b, buf, r);
        return broken(b, r);
}

/* Wait for the reply to `req` (sent). *reply_fd receives the fd of a reply that carries one (else -1). */
static int receive_reply(SageBroker *b, const SageMessage *req, SageMessage *reply, SageListEntry *list_storage,
                         int *reply_fd, NotesSink *notes, uint8_t *buf, uint64_t deadline) {
        int r;

        if (reply_fd)
                *reply_fd = -1;
        if (b->fd < 0)
                return -EPIPE;
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
                /* The broker's own word, whenever it comes: not an answer to us. */
                if (r == 0 && sage_proto_notice_to_client(reply->header.type)) {
                        for (size_t i = 0; i < n_rfds; i++)
                                close(rfds[i]);
                        if (b->on_notice)
                                b->on_notice(b->notice_userdata, reply);
                        continue;
                }
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
                        /* Another protocol version (a node and a pod of different
                         * releases) is worth telling apart from garbage: say which. */
                        if (r == SAGE_ERR_VERSION && n >= 6)
                                snprintf(b->last_error, sizeof(b->last_error), "it speaks protocol version %u",
                                         (unsigned)(buf[4] | buf[5] << 8));
                        r = r == SAGE_ERR_VERSION ? -EPROTONOSUPPORT : -EPROTO;
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
        return broken(b, r);
}

/* Send `req`, wait for the reply with its request id. Caller holds the lock. */
static int transact(SageBroker *b, SageMessage *req, const int *fds, size_t n_fds, SageMessage *reply,
                    SageListEntry *list_storage, int *reply_fd, NotesSink *notes) {
        uint64_t deadline = sage_now_ns() + (uint64_t)b->timeout_ms * 1000000ull;
        uint8_t *buf = malloc(SAGE_PROTO_MAX_MESSAGE);
        int r;

        if (reply_fd)
                *reply_fd = -1;
        if (!buf)
                return -ENOMEM;
        r = send_request(b, req, fds, n_fds, buf, deadline);
        if (r == 0)
                r = receive_reply(b, req, reply, list_storage, reply_fd, notes, buf, deadline);
        free(buf);
        return r;
}

/*
 * Pipelined: up to SAGE_BROKER_PIPELINE requests on the wire, so n requests
 * wait ~n / SAGE_BROKER_PIPELINE round trips, and one sent while the caller
 * works (assembly's read-back) is answered meanwhile. Answers already there
 * are read at each send: replies with notes (up to 32 KiB) fill the socket
 * long before 32 do, and a broker that cannot write stops reading (bert's
 * 19th of 34 answers waited 6 ms on an H100). A request that cannot be sent
 * fails with the rest; one gets the timeout from its send, or from when its
 * answer is read if later: the caller's own work meanwhile is not the broker's.
 */
int sage_broker_window_open(SageBroker *b, SageBrokerWindow *w, SageMessage *reqs, SageMessage *replies, int *fds,
                            int *results, NotesSink *notes) {
        uint64_t t = sage_now_ns();

        *w = (SageBrokerWindow){ .b = b, .reqs = reqs, .replies = replies, .fds = fds, .results = results };
        w->notes = notes;
        w->unsent_from = SIZE_MAX;
        if (!(w->buf = malloc(SAGE_PROTO_MAX_MESSAGE)))
                return -ENOMEM;
        pthread_mutex_lock(&b->lock);
        b->waits = (SageBrokerWaits){ .lock_ns = sage_now_ns() - t };
        w->t0 = t + b->waits.lock_ns;
        return 0;
}

/* Something to read on the connection now (an answer). */
static bool answer_waiting(int fd) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        return poll(&p, 1, 0) > 0 && (p.revents & POLLIN);
}

/* The answer to the oldest request not answered yet. */
static void window_receive(SageBrokerWindow *w) {
        size_t i = w->answered++;
        uint64_t deadline = w->deadline[i % SAGE_BROKER_PIPELINE], now = sage_now_ns(), took;
        /* From now on the caller waits: its own work since the send (a read-back) is not the broker's. */
        uint64_t waiting = now + (uint64_t)w->b->timeout_ms * 1000000ull;

        if (w->failed)
                w->results[i] = w->failed;
        else if (i < w->unsent_from)
                w->results[i] =
                        receive_reply(w->b, &w->reqs[i], &w->replies[i], NULL, &w->fds[i],
                                      w->notes ? &w->notes[i] : NULL, w->buf, waiting > deadline ? waiting : deadline);
        else
                w->results[i] = w->send_failed; /* the request that could not go, and those after it */
        took = sage_now_ns() - now;
        if (took > w->b->waits.slowest_ns) {
                w->b->waits.slowest_ns = took;
                w->b->waits.slowest_at = (uint32_t)i;
        }
        if (i == 0)
                w->b->waits.first_answer_ns = now + took - w->t0;
        /* The stream is out of step after a timeout or a broken connection. */
        if (!w->failed && w->results[i] < 0)
                w->failed = w->results[i];
}

void sage_broker_window_send(SageBrokerWindow *w) {
        size_t i = w->sent++;
        int r;

        w->fds[i] = -1;
        while (i - w->answered >= SAGE_BROKER_PIPELINE || (w->answered < i && !w->failed && answer_waiting(w->b->fd)))
                window_receive(w);
        if (w->failed || w->unsent_from != SIZE_MAX)
                return;
        w->deadline[i % SAGE_BROKER_PIPELINE] = sage_now_ns() + (uint64_t)w->b->timeout_ms * 1000000ull;
        r = send_request(w->b, &w->reqs[i], NULL, 0, w->buf, w->deadline[i % SAGE_BROKER_PIPELINE]);
        if (r != 0) {
                w->unsent_from = i;
                w->send_failed = r;
        }
}

int sage_broker_window_close(SageBrokerWindow *w) {
        while (w->answered < w->sent)
                window_receive(w);
        pthread_mutex_unlock(&w->b->lock);
        free(w->buf);
        w->buf = NULL;
        return w->failed;
}

int sage_broker_call(SageBroker *b, SageMessage *req, const int *fds, size_t n_fds, SageMessage *reply,
                     SageListEntry *list_storage, int *reply_fd) {
        int r;
        pthread_mutex_lock(&b->lock);
        r = transact(b, req, fds, n_fds, reply, list_storage, reply_fd, NULL);
        pthread_mutex_unlock(&b->lock);
        return r;
}

int sage_broker_call_noted(SageBroker *b, SageMessage *req, SageMessage *reply, int *reply_fd, NotesSink *notes) {
        return sage_broker_call_noted_meanwhile(b, req, reply, reply_fd, notes, NULL, NULL);
}

int sage_broker_call_noted_meanwhile(SageBroker *b, SageMessage *req, SageMessage *reply, int *reply_fd,
                                     NotesSink *notes, SageBrokerMeanwhile meanwhile, void *ctx) {
        uint8_t *buf = malloc(SAGE_PROTO_MAX_MESSAGE);
        int r = -ENOMEM;

        *reply_fd = -1;
        pthread_mutex_lock(&b->lock);
        if (buf)
                r = send_request(b, req, NULL, 0, buf, sage_now_ns() + (uint64_t)b->timeout_ms * 1000000ull);
        if (meanwhile)
                meanwhile(ctx);
        if (r == 0)
                r = receive_reply(b, req, reply, NULL, reply_fd, notes, buf,
                                  sage_now_ns() + (uint64_t)b->timeout_ms * 1000000ull);
        pthread_mutex_unlock(&b->lock);
        free(buf);
        return r;
}

int sage_broker_call_timeout(SageBroker *b, SageMessage *req, const int *fds, size_t n_fds, SageMessage *reply,
                             int timeout_ms) {
        int r, saved;
        pthread_mutex_lock(&b->lock);
        saved = b->timeout_ms;
        b->timeout_ms = timeout_ms > 0 ? timeout_ms : 1;
        r = transact(b, req, fds, n_fds, reply, NULL, NULL, NULL);
        b->timeout_ms = saved;
        pthread_mutex_unlock(&b->lock);
        return r;
}

void sage_broker_on_notice(SageBroker *b, SageBrokerNoticeFn fn, void *userdata) {
        pthread_mutex_lock(&b->lock);
        b->on_notice = fn;
        b->notice_userdata = userdata;
        pthread_mutex_unlock(&b->lock);
}

int sage_broker_notify(SageBroker *b, SageMessage *m) {
        uint8_t buf[256];
        ssize_t len;
        int r;

        if (!sage_proto_notice_to_broker(m->header.type))
                return -EINVAL;
        pthread_mutex_lock(&b->lock);
        if (b->fd < 0)
                r = -EPIPE;
        else if (sage_proto_feature(m->header.type) & ~b->hello.features)
                r = SAGE_ERR_UNKNOWN_TYPE;
        else if ((len = sage_proto_encode(m, buf, sizeof(buf))) < 0)
                r = (int)len;
        else {
                /* A notice is small: a socket that will not take it now has a broker that stopped reading. */
                r = sage_proto_send(b->fd, buf, (size_t)len, NULL, 0);
                if (r == -EAGAIN) {
                        r = wait_for(b->fd, POLLOUT, sage_now_ns() + (uint64_t)b->timeout_ms * 1000000ull);
                        if (r == 0)
                                r = sage_proto_send(b->fd, buf, (size_t)len, NULL, 0);
                }
        }
        pthread_mutex_unlock(&b->lock);
        return r;
}

int sage_broker_pump(SageBroker *b) {
        uint8_t *buf = malloc(SAGE_PROTO_MAX_MESSAGE);
        int r = 0;

        if (!buf)
                return -ENOMEM;
        pthread_mutex_lock(&b->lock);
        while (b->fd >= 0) {
                int fds[SAGE_PROTO_MAX_FDS];
                size_t n_fds = 0;
                SageMessage m;
                ssize_t n = sage_proto_recv(b->fd, buf, SAGE_PROTO_MAX_MESSAGE, fds, SAGE_PROTO_MAX_FDS, &n_fds);

                if (n == -EAGAIN)
                        break;
                for (size_t i = 0; i < n_fds; i++)
                        close(fds[i]); /* nothing we wait for carries one here */
                if (n <= 0) {
                        close(b->fd);
                        b->fd = -1;
                        break;
                }
                /* Late replies to abandoned requests go; notices go to the handler. */
                if (sage_proto_decode(buf, (size_t)n, &m, NULL) == 0 && sage_proto_notice_to_client(m.header.type) &&
                    b->on_notice)
                        b->on_notice(b->notice_userdata, &m);
        }
        if (b->fd < 0)
                r = -EPIPE;
        pthread_mutex_unlock(&b->lock);
        free(buf);
        return r;
}

void sage_broker_set_error(SageBroker *b, const char *format, ...) {
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
        req.hello.features = SAGE_FEATURES_ALL;
        r = sage_broker_call(b, &req, NULL, 0, &reply, NULL, NULL);
        if (r == SAGE_ERR_VERSION || r == -EPROTONOSUPPORT) {
                if (why && why_size)
                        snprintf(why, why_size,
                                 "the broker on %s speaks another protocol version (%s); this one "
                                 "speaks version %d",
                                 addr.sun_path, b->last_error[0] ? b->last_error : "it refused ours",
                                 SAGE_PROTO_VERSION);
                sage_broker_free(b);
                return -EPROTONOSUPPORT;
        }
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

void sage_broker_many_waits(const SageBroker *b, SageBrokerWaits *waits) {
        *waits = b->waits;
}

int sage_broker_fd(const SageBroker *b) {
        return b->fd;
}

const char *sage_broker_last_error(const SageBroker *b) {
        return b->last_error;
}
