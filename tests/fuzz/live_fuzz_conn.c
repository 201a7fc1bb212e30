/*
 * The live fuzzer's client side: connections to saged, packets with any
 * number of fds, fds of every kind, and the one rule every exchange checks:
 * each packet gets exactly one well-formed reply, in time, or a hang-up;
 * a notice to the broker (proto.def) none, which a PING after it shows.
 * Also the slots through which workers show each other their tokens and
 * extent ids (live_fuzz.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "hash.h"
#include "live_fuzz.h"
#include "util.h"

/* A pool key's content: 2 MiB of zeros but for a head drawn from (seed, namespace, k). */
#define KEY_HEAD 64

static void key_head(uint64_t key_seed, uint64_t namespace_id, unsigned k, uint8_t head[KEY_HEAD]) {
        Rng r = { key_seed ^ (namespace_id * 0x100000001b3ull) ^ ((uint64_t)k << 56) };
        for (size_t i = 0; i < KEY_HEAD; i += 8) {
                uint64_t v = rng_next(&r);
                memcpy(head + i, &v, 8);
        }
}

/* Keys are their content's key, as libsage's are: the broker verifies them (a mismatch drops the extent). */
SageExtentKey fuzz_key(uint64_t key_seed, uint64_t namespace_id, unsigned k) {
        typedef struct Cached {
                uint64_t namespace_id;
                unsigned k;
                SageHash hash;
        } Cached;
        static Cached cache[FUZZ_SOCKETS * FUZZ_UIDS * FUZZ_KEYS];
        static size_t n_cache;
        static uint8_t *content;
        SageExtentKey key = { .size = FUZZ_KEY_SIZE, .device = 0 };

        for (size_t i = 0; i < n_cache; i++)
                if (cache[i].namespace_id == namespace_id && cache[i].k == k) {
                        key.hash = cache[i].hash;
                        return key;
                }
        if (!content && !(content = calloc(1, FUZZ_KEY_SIZE)))
                abort();
        key_head(key_seed, namespace_id, k, content);
        key.hash = sage_content_key(content, FUZZ_KEY_SIZE);
        if (n_cache < SAGE_ARRAY_SIZE(cache))
                cache[n_cache++] = (Cached){ namespace_id, k, key.hash };
        return key;
}

int fuzz_key_memfd(uint64_t key_seed, uint64_t namespace_id, unsigned k) {
        uint8_t head[KEY_HEAD];
        int fd = memfd_of(FUZZ_KEY_SIZE);

        key_head(key_seed, namespace_id, k, head);
        if (fd >= 0 && pwrite(fd, head, sizeof(head), 0) != (ssize_t)sizeof(head)) {
                close(fd);
                return -1;
        }
        return fd;
}

/* The notes a pool key is published with: derived from the key, so any looker-up can check them. */
uint32_t key_notes(const SageExtentKey *k, uint8_t *out) {
        uint32_t n = (uint32_t)(k->hash.low % 300);
        for (uint32_t i = 0; i < n; i++)
                out[i] = (uint8_t)(k->hash.high >> (i % 8 * 8)) ^ (uint8_t)i;
        return n;
}

uint64_t namespace_of(const Worker *w, unsigned socket, uid_t uid) {
        return (uint64_t)w->cfg->labels[socket] << 32 | (uint32_t)uid;
}

/* ------------------------------------------------------------ fds */

/* A VMM handle of the simulated driver's GPU 0: it imports only its own
 * exported memfds, named this way (tests/fakecuda/fake_vmm.c), as a real
 * driver refuses any other file. */
int memfd_of(size_t size) {
        int fd = memfd_create("sage-fake-vmm-gpu0", MFD_CLOEXEC);
        if (fd >= 0 && ftruncate(fd, (off_t)size) < 0) {
                close(fd);
                return -1;
        }
        return fd;
}

int connect_to(const char *path) {
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

        snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
                close(fd);
                return -1;
        }
        return fd;
}

/* An fd of a random kind (the caller closes it); -1 if making it failed. */
int hostile_fd(Worker *w, const Conn *c) {
        int p[2], fd;

        unsigned kind = (unsigned)rng_below(&w->rng, 12);

        if ((kind == 6 || kind == 7) && (w->cfg->skip & FUZZ_SKIP_SOCKET_FDS))
                kind = 8;
        switch (kind) {
        case 0: return memfd_of(2u << 20);
        case 1: return memfd_of(4096);
        case 2: return memfd_of(0);
        case 3:
        case 4:
                if (pipe2(p, O_CLOEXEC) < 0)
                        return -1;
                fd = p[rng_below(&w->rng, 2)];
                close(p[fd == p[0]]);
                return fd;
        case 5:
                if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, p) < 0)
                        return -1;
                close(p[1]);
                return p[0];
        case 6: return c && c->fd >= 0 ? fcntl(c->fd, F_DUPFD_CLOEXEC, 0) : -1;       /* the connection itself */
        case 7: return connect_to(w->cfg->sockets[rng_below(&w->rng, FUZZ_SOCKETS)]); /* another connection */
        case 8: return open("/dev/null", O_RDWR | O_CLOEXEC);
        case 9: return open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        case 10: return eventfd(0, EFD_CLOEXEC);
        default: return epoll_create1(EPOLL_CLOEXEC);
        }
}

/* ------------------------------------------------------------ connections */

void conn_close(Conn *c) {
        if (c->fd >= 0)
                close(c->fd);
        c->fd = -1;
        c->n_held = 0;
        c->n_tokens = 0;
}

Conn *conn_open(Worker *w, Conn *c) {
        struct timeval tv = { .tv_sec = FUZZ_REPLY_TIMEOUT_MS / 1000 };

        conn_close(c);
        c->socket = (unsigned)rng_below(&w->rng, FUZZ_SOCKETS);
        c->fd = connect_to(w->cfg->sockets[c->socket]);
        if (c->fd < 0)
                return NULL; /* a full backlog is the kernel's answer, not the broker's fault */
        /* A send the broker never drains is a stall like a missing reply. */
        setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        c->namespace_id = namespace_of(w, c->socket, w->cfg->uid);
        c->sees_all = w->cfg->uid == 0 && c->socket == 0;
        return c;
}

Conn *some_conn(Worker *w) {
        Conn *c = &w->conns[rng_below(&w->rng, MAX_CONNS)];
        return c->fd >= 0 ? c : conn_open(w, c);
}

/* sendmsg with any number of fds; 0, or negative errno. */
int send_raw(int sock, const void *buf, size_t len, const int *fds, size_t n_fds, int flags) {
        return sage_proto_sendmsg(sock, buf, len, fds, n_fds, flags);
}

/*
 * Wait for the reply to one packet; decode and vet it. REPLIED (with the
 * reply's fd, if one came, in *fd_out or closed), HANGUP, or a violation
 * (-1): no answer within FUZZ_REPLY_TIMEOUT_MS, or one that is not a
 * well-formed reply.
 */
int receive(Worker *w, Conn *c, SageMessage *reply, int *fd_out) {
        struct pollfd p = { .fd = c->fd, .events = POLLIN };
        int fds[SAGE_PROTO_MAX_FDS];
        size_t n_fds = 0;
        ssize_t n;
        int r;

        if (fd_out)
                *fd_out = -1;
        r = poll(&p, 1, FUZZ_REPLY_TIMEOUT_MS);
        if (r == 0) {
                VIOLATION(w, "no reply within %d ms (socket %u)", FUZZ_REPLY_TIMEOUT_MS, c->socket);
                conn_close(c);
                return -1;
        }
        n = sage_proto_recv(c->fd, w->rx, sizeof(w->rx), fds, SAGE_PROTO_MAX_FDS, &n_fds);
        if (n == 0 || n == -ECONNRESET || n == -EPIPE) {
                __atomic_add_fetch(&w->cfg->shared->hangups, 1, __ATOMIC_RELAXED);
                conn_close(c);
                return HANGUP;
        }
        __atomic_add_fetch(&w->cfg->shared->replies, 1, __ATOMIC_RELAXED);
        r = n < 0 ? -(int)n : sage_proto_decode(w->rx, (size_t)n, reply, w->list);
        if (r == 0 && (!(reply->header.type & SAGE_MSG_REPLY_BIT) || n_fds != sage_proto_expected_fds(reply)))
                r = -1;
        if (r != 0)
                VIOLATION(w, "bad reply (%zd bytes, %zu fds): %d", n, n_fds, r);
        for (size_t i = 0; i < n_fds; i++)
                if (r == 0 && i == 0 && fd_out)
                        *fd_out = fds[0];
                else
                        close(fds[i]);
        if (r != 0) {
                conn_close(c);
                return -1;
        }
        /* A broker over its connection limits may say so (request 0) before it hangs up. */
        if (reply->header.type == SAGE_MSG_ERROR && reply->error.code == SAGE_ERR_LIMIT &&
            reply->header.request_id == 0) {
                if (fd_out && *fd_out >= 0)
                        close(*fd_out);
                conn_close(c);
                return HANGUP;
        }
        return REPLIED;
}

/*
 * The type of the notice to the broker this packet is to it, or 0. Those are
 * never answered, not even with an ERROR (proto.def), so waiting for their
 * reply would only end in the timeout. Decided as serve_client() does: a
 * packet it can read whole, that decodes, with the fds its type carries.
 */
static unsigned notice_to_broker(const void *buf, size_t len, size_t n_fds) {
        SageMessage m;

        if (len > SAGE_PROTO_MAX_MESSAGE || sage_proto_decode(buf, len, &m, NULL) != 0 ||
            !sage_proto_notice_to_broker(m.header.type) || n_fds != sage_proto_expected_fds(&m))
                return 0;
        return m.header.type;
}

/*
 * After a notice, a PING: the broker serves a connection's packets in order,
 * so the next packet back is the PONG, and anything before it (an answer to
 * the notice) a violation. No time bound stands in for "no answer came".
 */
static int fence(Worker *w, Conn *c, unsigned notice, SageMessage *reply, int *fd_out) {
        uint8_t buf[SAGE_PROTO_HEADER_SIZE];
        SageMessage ping;
        ssize_t len;
        int r;

        __atomic_add_fetch(&w->cfg->shared->notices, 1, __ATOMIC_RELAXED);
        sage_proto_init(&ping, SAGE_MSG_PING, ++w->request_id);
        len = sage_proto_encode(&ping, buf, sizeof(buf));
        if (len < 0) {
                VIOLATION(w, "cannot make a PING");
                return -1;
        }
        r = exchange(w, c, buf, (size_t)len, NULL, 0, reply, fd_out);
        if (r == REPLIED &&
            (reply->header.type != SAGE_MSG_PONG || reply->header.request_id != ping.header.request_id)) {
                VIOLATION(w, "notice %s answered: %s for request %u before the PONG for %u",
                          sage_proto_type_name(notice), sage_proto_type_name(reply->header.type),
                          reply->header.request_id, ping.header.request_id);
                if (fd_out && *fd_out >= 0)
                        close(*fd_out);
                conn_close(c);
                return -1;
        }
        return r;
}

/* Send one packet and take its reply (a notice's: its fence's PONG): REPLIED, HANGUP, or -1 (a violation). */
int exchange(Worker *w, Conn *c, const void *buf, size_t len, const int *fds, size_t n_fds, SageMessage *reply,
             int *fd_out) {
        int r = send_raw(c->fd, buf, len, fds, n_fds, 0);
        unsigned notice;

        __atomic_add_fetch(&w->cfg->shared->requests, 1, __ATOMIC_RELAXED);
        if (r == -EPIPE || r == -ECONNRESET || r == -ENOTCONN) {
                conn_close(c);
                return HANGUP;
        }
        if (r == -EAGAIN) {
                VIOLATION(w, "the broker stopped reading a connection that reads its replies");
                conn_close(c);
                return -1;
        }
        if (r < 0) /* ours: EMSGSIZE beyond the socket buffer, ETOOMANYREFS */
                return HANGUP;
        notice = notice_to_broker(buf, len, n_fds);
        if (notice)
                return fence(w, c, notice, reply, fd_out);
        return receive(w, c, reply, fd_out);
}

void show(Worker *w, unsigned slot, uint64_t namespace_id, uint64_t extent_id, const uint8_t *token) {
        FuzzSlot *s = &w->cfg->shared->slots[w->cfg->index][slot % FUZZ_SLOTS];

        __atomic_add_fetch(&s->seq, 1, __ATOMIC_ACQ_REL);
        s->namespace_id = namespace_id;
        s->extent_id = extent_id;
        /* One thing per slot: a stale token under a new namespace would be a false alarm. */
        if (token)
                memcpy(s->token, token, SAGE_IPC_TOKEN_SIZE);
        else
                memset(s->token, 0, SAGE_IPC_TOKEN_SIZE);
        __atomic_add_fetch(&s->seq, 1, __ATOMIC_ACQ_REL);
}

/* A consistent copy of some worker's slot; false if it was being written. */
bool peek(Worker *w, FuzzSlot *out) {
        const FuzzSlot *s =
                &w->cfg->shared->slots[rng_below(&w->rng, FUZZ_MAX_WORKERS)][rng_below(&w->rng, FUZZ_SLOTS)];
        uint32_t seq = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);

        memcpy(out, s, sizeof(*out));
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        return seq % 2 == 0 && seq != 0 && __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE) == seq;
}
