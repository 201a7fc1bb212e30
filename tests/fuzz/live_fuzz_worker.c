/*
 * One hostile client process of the live fuzzer: until its deadline it picks
 * actions at random from its own seed (a run replays from the printed seed;
 * only the interleaving with the other processes is the scheduler's).
 *
 * Valid requests of every type check what the broker promises besides an
 * answer (live_fuzz_conn.c checks that): the reply names the request, and
 * namespaces hold. HELLO tells the namespace the kernel gives; LOOKUP never
 * hits another namespace's key and returns the notes its publisher gave;
 * LIST shows only the caller's extents (root on the main socket: all);
 * RELEASE, EVICT, IPC_IMPORT and IPC_REVOKE of another namespace's (or
 * connection's) ids and tokens answer NOT_FOUND; what the connection holds
 * it can release, import, revoke, and not evict; LABEL names only what the
 * caller may see. Keys of valid requests come from a per-namespace pool
 * (fuzz_key); mutated and hostile messages use random keys, so no mutation
 * can make a checked answer wrong.
 *
 * Hostile traffic: mutated valid requests and replies, garbage, other
 * versions and magics, oversize packets, zero-length packets with fds, fds
 * of every kind and too many of them, floods without reading, half-closed,
 * abandoned and bursts of connections, sudden exits.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "live_fuzz.h"
#include "util.h"

static uint64_t now_ns(void) {
        return sage_now_ns();
}

/* Another namespace some worker may use (socket and uid at random), or the caller's own. */
static uint64_t any_namespace(Worker *w) {
        unsigned socket = (unsigned)rng_below(&w->rng, FUZZ_SOCKETS);
        return namespace_of(w, socket, w->cfg->uids[rng_below(&w->rng, w->cfg->n_uids)]);
}

static SageExtentKey random_key(Worker *w) {
        return (SageExtentKey){ .hash = { rng_next(&w->rng), rng_next(&w->rng) },
                                .size = (rng_below(&w->rng, 3) + 1) << 21,
                                .device = rng_chance(&w->rng, 90) ? 0 : (uint32_t)rng_next(&w->rng) };
}

/* 0: the expected reply; a positive SageProtoError: an ERROR; -1 (a violation): neither. */
static int outcome(Worker *w, const SageMessage *req, const SageMessage *reply) {
        if (reply->header.request_id != req->header.request_id) {
                VIOLATION(w, "%s: reply for request %u, sent %u", sage_proto_type_name(req->header.type),
                          reply->header.request_id, req->header.request_id);
                return -1;
        }
        if (reply->header.type == SAGE_MSG_ERROR && reply->error.code != 0)
                return (int)reply->error.code;
        if (reply->header.type != (req->header.type | SAGE_MSG_REPLY_BIT)) {
                VIOLATION(w, "%s answered by %s", sage_proto_type_name(req->header.type),
                          sage_proto_type_name(reply->header.type));
                return -1;
        }
        return 0;
}

#define EXPECT(w, req, cond, code)                                                                          \
        do {                                                                                                \
                if (!(cond))                                                                                \
                        VIOLATION(w, "%s: got %s, expected %s", sage_proto_type_name((req)->header.type),   \
                                  (code) > 0 ? sage_proto_error_name(code) : (code) == 0 ? "a reply" : "?", \
                                  #cond);                                                                   \
        } while (0)

static void hold(Conn *c, uint64_t id) {
        if (c->n_held < MAX_HELD)
                c->held[c->n_held++] = id;
}

static bool holds(const Conn *c, uint64_t id) {
        for (size_t i = 0; i < c->n_held; i++)
                if (c->held[i] == id)
                        return true;
        return false;
}

static bool has_token(const Conn *c, const uint8_t *token) {
        for (size_t i = 0; i < c->n_tokens; i++)
                if (memcmp(c->tokens[i], token, SAGE_IPC_TOKEN_SIZE) == 0)
                        return true;
        return false;
}

/* A slot of another namespace (peek), or false. */
static bool foreign_slot(Worker *w, const Conn *c, FuzzSlot *s) {
        return peek(w, s) && s->namespace_id != c->namespace_id;
}

/* ------------------------------------------------------------ valid requests */

static void check_lookup(Worker *w, Conn *c, const SageMessage *req, const SageMessage *reply, int code,
                         uint64_t key_namespace, int fd) {
        bool noted = req->header.type == SAGE_MSG_LOOKUP_NOTED;
        const SageLookupReply *l = noted ? &reply->lookup_noted_reply.lookup : &reply->lookup_reply;
        uint8_t want[300];

        if (code != 0 || !l->found)
                return;
        if (key_namespace != c->namespace_id)
                VIOLATION(w, "LOOKUP hit a key of namespace %#llx from namespace %#llx",
                          (unsigned long long)key_namespace, (unsigned long long)c->namespace_id);
        if (fd < 0)
                VIOLATION(w, "LOOKUP hit without an fd");
        if (noted) {
                const SageNotes *n = &reply->lookup_noted_reply.notes;
                uint32_t len = key_notes(&req->lookup_noted, want);
                if (n->length != 0 && (n->length != len || memcmp(n->bytes, want, len) != 0))
                        VIOLATION(w, "LOOKUP_NOTED: %u bytes of notes not the publisher's %u", n->length, len);
        }
        hold(c, l->extent_id);
        __atomic_add_fetch(&w->cfg->shared->hits, 1, __ATOMIC_RELAXED);
}

static void check_list(Worker *w, const Conn *c, const SageMessage *reply) {
        for (uint32_t i = 0; i < reply->list_reply.n_entries; i++)
                if (!c->sees_all && reply->list_reply.entries[i].namespace_id != c->namespace_id)
                        VIOLATION(w, "LIST from namespace %#llx shows extent %llu of %#llx",
                                  (unsigned long long)c->namespace_id,
                                  (unsigned long long)reply->list_reply.entries[i].id,
                                  (unsigned long long)reply->list_reply.entries[i].namespace_id);
}

/* Fill `m` with a valid request of `type` (pool keys, own or other ids); *what says which case for checks. */
static void make_request(Worker *w, Conn *c, SageMessage *m, unsigned type, uint64_t *key_namespace,
                         uint8_t *notes, int *what) {
        FuzzSlot s;

        sage_proto_init(m, type, ++w->request_id);
        *what = 0;
        *key_namespace = c->namespace_id;
        switch (type) {
        case SAGE_MSG_HELLO:
                m->hello = (SageHello){ SAGE_PROTO_VERSION, (uint32_t)getpid() };
                break;
        case SAGE_MSG_LOOKUP:
        case SAGE_MSG_LOOKUP_NOTED:
                if (rng_chance(&w->rng, 40))
                        *key_namespace = any_namespace(w);
                m->lookup = fuzz_key(w->cfg->key_seed, *key_namespace, (unsigned)rng_below(&w->rng, FUZZ_KEYS));
                break;
        case SAGE_MSG_PUBLISH:
        case SAGE_MSG_PUBLISH_NOTED:
                m->header.flags = rng_chance(&w->rng, 90) ? SAGE_PUBLISH_SEALED : 0;
                *what = (int)rng_below(&w->rng, FUZZ_KEYS); /* the key, for its content */
                m->publish = fuzz_key(w->cfg->key_seed, c->namespace_id, (unsigned)*what);
                if (type == SAGE_MSG_PUBLISH_NOTED) {
                        m->publish_noted.notes.length = key_notes(&m->publish_noted.key, notes);
                        m->publish_noted.notes.bytes = notes;
                }
                break;
        case SAGE_MSG_RELEASE:
        case SAGE_MSG_EVICT:
                *what = (int)rng_below(&w->rng, 3);
                if (*what == 0 && c->n_held > 0)
                        m->release = c->held[rng_below(&w->rng, c->n_held)];
                else if (*what == 1 && foreign_slot(w, c, &s) && s.extent_id != 0 && !holds(c, s.extent_id))
                        m->release = s.extent_id;
                else {
                        *what = 2;
                        m->release = 1ull << 62 | rng_next(&w->rng) >> 3; /* never allocated */
                }
                if (type == SAGE_MSG_EVICT && rng_chance(&w->rng, 20)) {
                        m->header.flags = SAGE_EVICT_ALL_UNREFERENCED;
                        *what = 3;
                }
                break;
        case SAGE_MSG_LIST:
                m->list.after_id = rng_chance(&w->rng, 70) ? 0 : rng_below(&w->rng, 2000);
                break;
        case SAGE_MSG_IPC_EXPORT:
                m->ipc_export = (SageIpcAllocation){ .size = 1 + rng_below(&w->rng, 1u << 30), .device = 0 };
                break;
        case SAGE_MSG_IPC_IMPORT:
        case SAGE_MSG_IPC_REVOKE:
                *what = (int)rng_below(&w->rng, 3);
                if (*what == 0 && c->n_tokens > 0)
                        memcpy(m->ipc_import.bytes, c->tokens[rng_below(&w->rng, c->n_tokens)], SAGE_IPC_TOKEN_SIZE);
                else if (*what == 1 && peek(w, &s) && !has_token(c, s.token) &&
                         (type == SAGE_MSG_IPC_REVOKE || s.namespace_id != c->namespace_id))
                        memcpy(m->ipc_import.bytes, s.token, SAGE_IPC_TOKEN_SIZE);
                else {
                        *what = 2;
                        for (size_t i = 0; i < SAGE_IPC_TOKEN_SIZE; i++)
                                m->ipc_import.bytes[i] = (uint8_t)rng_next(&w->rng);
                }
                break;
        case SAGE_MSG_LABEL:
                m->label = rng_chance(&w->rng, 90) ? (uint32_t)rng_below(&w->rng, FUZZ_SOCKETS + 1)
                                                   : (uint32_t)rng_next(&w->rng);
                break;
        }
}

static void valid_request(Worker *w, Conn *c) {
        static uint8_t notes[300];
        unsigned type = 1 + (unsigned)rng_below(&w->rng, SAGE_MSG_LABEL);
        SageMessage m, reply;
        uint64_t key_namespace;
        int what, fd = -1, reply_fd = -1, code;
        bool hostile;
        ssize_t len;

        make_request(w, c, &m, type, &key_namespace, notes, &what);
        /* Mostly the memfd a VMM export is; now and then any fd (the answer is then not checked). */
        hostile = rng_chance(&w->rng, 15);
        if (type == SAGE_MSG_PUBLISH || type == SAGE_MSG_PUBLISH_NOTED || type == SAGE_MSG_IPC_EXPORT)
                fd = hostile                        ? hostile_fd(w, c)
                     : type == SAGE_MSG_IPC_EXPORT ? memfd_of(FUZZ_KEY_SIZE)
                                                   : fuzz_key_memfd(w->cfg->key_seed, c->namespace_id, (unsigned)what);
        if (hostile && sage_proto_expected_fds(&m) == 1 && fd < 0)
                return; /* no fd of the kind drawn (a full backlog): nothing to send */
        len = sage_proto_encode(&m, w->buf, sizeof(w->buf));
        if (len < 0 || (sage_proto_expected_fds(&m) == 1 && fd < 0)) {
                VIOLATION(w, "cannot make a valid %s", sage_proto_type_name(type));
                return;
        }
        hostile = hostile && fd >= 0;
        code = exchange(w, c, w->buf, (size_t)len, &fd, fd >= 0 ? 1 : 0, &reply, &reply_fd);
        if (fd >= 0)
                close(fd);
        if (code != REPLIED)
                return;
        code = outcome(w, &m, &reply);
        if ((what == 1 && type != SAGE_MSG_PUBLISH && type != SAGE_MSG_PUBLISH_NOTED) ||
            key_namespace != c->namespace_id)
                __atomic_add_fetch(&w->cfg->shared->foreign_checks, 1, __ATOMIC_RELAXED);
        if (hostile && code != 0) {
                if (reply_fd >= 0)
                        close(reply_fd);
                return;
        }
        switch (code < 0 ? 0 : type) {
        case SAGE_MSG_HELLO:
                EXPECT(w, &m, code == 0 && reply.hello_reply.namespace_id == c->namespace_id, code);
                break;
        case SAGE_MSG_PING:
        case SAGE_MSG_STATS:
                EXPECT(w, &m, code == 0, code);
                break;
        case SAGE_MSG_LOOKUP:
        case SAGE_MSG_LOOKUP_NOTED:
                check_lookup(w, c, &m, &reply, code, key_namespace, reply_fd);
                break;
        case SAGE_MSG_PUBLISH:
        case SAGE_MSG_PUBLISH_NOTED:
                if (!(m.header.flags & SAGE_PUBLISH_SEALED)) /* a broker without a driver says that first */
                        EXPECT(w, &m, code == SAGE_ERR_PERMISSION || code == SAGE_ERR_NO_DRIVER, code);
                else if (code == 0) {
                        hold(c, reply.publish_reply.extent_id);
                        show(w, w->next_slot++, c->namespace_id, reply.publish_reply.extent_id, NULL);
                }
                break;
        case SAGE_MSG_RELEASE:
                EXPECT(w, &m, what == 0 ? code == 0 : code == SAGE_ERR_NOT_FOUND, code);
                for (size_t i = 0; what == 0 && i < c->n_held; i++)
                        if (c->held[i] == m.release) {
                                c->held[i] = c->held[--c->n_held];
                                break;
                        }
                break;
        case SAGE_MSG_LIST:
                if (code == 0)
                        check_list(w, c, &reply);
                EXPECT(w, &m, code == 0, code);
                break;
        case SAGE_MSG_EVICT:
                if (what == 0)
                        EXPECT(w, &m, code == SAGE_ERR_BUSY, code);
                else if (what == 2 || (what == 1 && !c->sees_all))
                        EXPECT(w, &m, code == SAGE_ERR_NOT_FOUND, code);
                else if (what == 3)
                        EXPECT(w, &m, code == 0, code);
                break;
        case SAGE_MSG_IPC_EXPORT:
                if (code == 0 && c->n_tokens < FUZZ_SLOTS) {
                        memcpy(c->tokens[c->n_tokens++], reply.ipc_export_reply.bytes, SAGE_IPC_TOKEN_SIZE);
                        show(w, w->next_slot++, c->namespace_id, 0, reply.ipc_export_reply.bytes);
                }
                EXPECT(w, &m, code == 0 || code == SAGE_ERR_LIMIT, code);
                break;
        case SAGE_MSG_IPC_IMPORT:
                EXPECT(w, &m, what == 0 ? code == 0 || code == SAGE_ERR_LIMIT : code == SAGE_ERR_NOT_FOUND, code);
                break;
        case SAGE_MSG_IPC_REVOKE:
                EXPECT(w, &m, what == 0 ? code == 0 : code == SAGE_ERR_NOT_FOUND, code);
                for (size_t i = 0; what == 0 && i < c->n_tokens; i++)
                        if (memcmp(c->tokens[i], m.ipc_revoke.bytes, SAGE_IPC_TOKEN_SIZE) == 0) {
                                memcpy(c->tokens[i], c->tokens[--c->n_tokens], SAGE_IPC_TOKEN_SIZE);
                                break;
                        }
                break;
        case SAGE_MSG_LABEL: {
                bool named = m.label > 0 && m.label < FUZZ_SOCKETS;
                bool mine = c->sees_all || m.label == w->cfg->labels[c->socket];
                EXPECT(w, &m, named && mine ? code == 0 : code == SAGE_ERR_NOT_FOUND, code);
                if (code == 0 && named && strcmp(reply.label_reply.name, fuzz_label_names[m.label]) != 0)
                        VIOLATION(w, "LABEL %u is named '%s'", m.label, reply.label_reply.name);
                break;
        }
        }
        if (reply_fd >= 0)
                close(reply_fd);
}

/* ------------------------------------------------------------ hostile traffic */

/* A message of any type (replies too) with random keys and ids; its length. */
static size_t any_message(Worker *w, uint8_t *buf, size_t size) {
        static const unsigned replies[] = { SAGE_MSG_HELLO_REPLY, SAGE_MSG_LOOKUP_REPLY, SAGE_MSG_LIST_REPLY,
                                            SAGE_MSG_IPC_IMPORT_REPLY, SAGE_MSG_LOOKUP_NOTED_REPLY,
                                            SAGE_MSG_LABEL_REPLY, SAGE_MSG_ERROR };
        static uint8_t notes[SAGE_PROTO_NOTES_MAX];
        unsigned type = rng_chance(&w->rng, 80) ? 1 + (unsigned)rng_below(&w->rng, SAGE_MSG_LABEL)
                                                : replies[rng_below(&w->rng, SAGE_ARRAY_SIZE(replies))];
        SageMessage m;
        ssize_t n;

        sage_proto_init(&m, type, (uint32_t)rng_next(&w->rng));
        m.header.flags = (uint32_t)rng_below(&w->rng, 2);
        m.publish_noted.key = random_key(w); /* overlays every request's key, id and token */
        switch (type) {
        case SAGE_MSG_PUBLISH_NOTED:
        case SAGE_MSG_LOOKUP_NOTED_REPLY:
                m.publish_noted.notes = (SageNotes){ (uint32_t)rng_below(&w->rng, SAGE_PROTO_NOTES_MAX + 1), notes };
                if (type == SAGE_MSG_LOOKUP_NOTED_REPLY)
                        m.lookup_noted_reply = (SageLookupNotedReply){ { 1, 1, 2u << 20 }, { 3, notes } };
                break;
        case SAGE_MSG_LIST_REPLY:
                m.list_reply = (SageListReply){ (uint32_t)rng_below(&w->rng, SAGE_PROTO_LIST_MAX + 1), 0, w->list };
                break;
        case SAGE_MSG_LABEL_REPLY:
                snprintf(m.label_reply.name, sizeof(m.label_reply.name), "x");
                break;
        case SAGE_MSG_ERROR:
                sage_proto_error(&m, 1, SAGE_ERR_BUSY, "busy");
                break;
        }
        n = sage_proto_encode(&m, buf, size);
        return n > 0 ? (size_t)n : 0;
}

/* 1-4 mutations; never to length 0 (zero_length_fds does that on purpose). */
static size_t mutate(Worker *w, uint8_t *buf, size_t len, size_t size) {
        for (unsigned k = 1 + (unsigned)rng_below(&w->rng, 4); k > 0 && len > 0; k--) {
                size_t at = rng_below(&w->rng, len), add;
                uint32_t v = (uint32_t)rng_next(&w->rng);

                switch (rng_below(&w->rng, 8)) {
                case 0: buf[at] ^= (uint8_t)(1u << (v % 8)); break;
                case 1: buf[at] = (uint8_t)v; break;
                case 2: len = 1 + rng_below(&w->rng, len); break;
                case 3:
                        add = 1 + rng_below(&w->rng, 100);
                        add = len + add > size ? size - len : add;
                        for (size_t i = 0; i < add; i++)
                                buf[len + i] = (uint8_t)rng_next(&w->rng);
                        len += add;
                        break;
                case 4:
                        /* The payload length: huge, off by one, or anything. */
                        v = v % 3 == 0 ? 0xffffffffu : v % 3 == 1 ? (uint32_t)(len - SAGE_PROTO_HEADER_SIZE + 1) : v;
                        if (len >= 20)
                                memcpy(buf + 16, &v, 4);
                        break;
                case 5:
                        if (len >= 8)
                                memcpy(buf + 6, &v, 2); /* type */
                        break;
                case 6:
                        if (len >= 12)
                                memcpy(buf + 8, &v, 4); /* flags */
                        break;
                default:
                        if (len >= 6)
                                buf[v % 6] ^= (uint8_t)(1u << (v % 8)); /* magic, version */
                }
        }
        return len;
}

/* Send `len` bytes with a random handful of fds (mostly what the type wants) and take the answer. */
static void send_with_fds(Worker *w, Conn *c, size_t len, unsigned max_fds) {
        static int fds[MAX_SEND_FDS];
        SageMessage reply;
        size_t n = rng_below(&w->rng, 2);

        if (rng_chance(&w->rng, 30))
                n = 1 + rng_below(&w->rng, rng_chance(&w->rng, 50) ? 4 : max_fds);
        for (size_t i = 0; i < n; i++)
                fds[i] = i == 0 && rng_chance(&w->rng, 50) ? memfd_of(2u << 20) : hostile_fd(w, c);
        for (size_t i = 0; i < n; i++)
                if (fds[i] < 0)
                        fds[i] = fds[0] >= 0 ? fds[0] : 0; /* the same fd twice is hostile too */
        exchange(w, c, w->buf, len, fds, n, &reply, NULL);
        for (size_t i = 0; i < n; i++)
                if (fds[i] > 2 && (i == 0 || fds[i] != fds[0]))
                        close(fds[i]);
}

static void mutated(Worker *w, Conn *c) {
        size_t len = any_message(w, w->buf, sizeof(w->buf));
        if (len > 0)
                send_with_fds(w, c, mutate(w, w->buf, len, sizeof(w->buf)), 8);
}

static void garbage(Worker *w, Conn *c) {
        size_t len = 1 + rng_below(&w->rng, rng_chance(&w->rng, 90) ? 200 : sizeof(w->buf) - 1);

        for (size_t i = 0; i < len; i++)
                w->buf[i] = (uint8_t)rng_next(&w->rng);
        if (len >= 6 && rng_chance(&w->rng, 50))
                memcpy(w->buf, "SAGE\x01\x00", 6);
        send_with_fds(w, c, len, 4);
}

/* Many fds, of every kind, on an otherwise valid message. */
static void many_fds(Worker *w, Conn *c) {
        size_t len = any_message(w, w->buf, sizeof(w->buf));
        if (len > 0)
                send_with_fds(w, c, len, MAX_SEND_FDS);
}

/* A zero-length packet (the broker must not take it for the end of the stream and forget its fds). */
static void zero_length_fds(Worker *w, Conn *c) {
        int fds[8] = { 0 };
        size_t n = rng_below(&w->rng, 9);
        SageMessage reply;

        for (size_t i = 0; i < n; i++)
                fds[i] = hostile_fd(w, c);
        for (size_t i = 0; i < n; i++)
                if (fds[i] < 0)
                        fds[i] = 0;
        /* Either answer is fine here; what the broker keeps open is checked at the end. */
        exchange(w, c, w->buf, 0, fds, n, &reply, NULL);
        for (size_t i = 0; i < n; i++)
                if (fds[i] > 2)
                        close(fds[i]);
}

/* PINGs without reading: the broker stops reading, never drops or reorders. */
static void flood(Worker *w, Conn *c) {
        SageMessage m, reply;
        size_t sent = 0, n = 16 + rng_below(&w->rng, 400);
        uint32_t first = w->request_id + 1;

        for (; sent < n; sent++) {
                ssize_t len;
                sage_proto_init(&m, SAGE_MSG_PING, ++w->request_id);
                len = sage_proto_encode(&m, w->buf, sizeof(w->buf));
                if (send_raw(c->fd, w->buf, (size_t)len, NULL, 0, MSG_DONTWAIT) < 0)
                        break;
                __atomic_add_fetch(&w->cfg->shared->requests, 1, __ATOMIC_RELAXED);
        }
        if (rng_chance(&w->rng, 40)) {
                conn_close(c); /* abandoned with replies queued */
                return;
        }
        for (size_t i = 0; i < sent; i++) {
                if (receive(w, c, &reply, NULL) != REPLIED)
                        return;
                if (reply.header.type != SAGE_MSG_PONG || reply.header.request_id != first + i) {
                        VIOLATION(w, "flood: reply %zu is %s for %u", i, sage_proto_type_name(reply.header.type),
                                  reply.header.request_id);
                        conn_close(c);
                        return;
                }
        }
}

/* A request, then shutdown: the broker answers what came before the end, then hangs up. */
static void half_close(Worker *w, Conn *c) {
        SageMessage m, reply;
        ssize_t len;

        sage_proto_init(&m, SAGE_MSG_PING, ++w->request_id);
        len = sage_proto_encode(&m, w->buf, sizeof(w->buf));
        if (send_raw(c->fd, w->buf, (size_t)len, NULL, 0, 0) < 0) {
                conn_close(c);
                return;
        }
        if (rng_chance(&w->rng, 30)) {
                shutdown(c->fd, SHUT_RD);
                conn_close(c);
                return;
        }
        shutdown(c->fd, SHUT_WR);
        if (receive(w, c, &reply, NULL) != REPLIED)
                return;
        if (reply.header.type != SAGE_MSG_PONG)
                VIOLATION(w, "half-closed: %s instead of PONG", sage_proto_type_name(reply.header.type));
        if (receive(w, c, &reply, NULL) == REPLIED)
                VIOLATION(w, "half-closed: a second reply to one request");
        conn_close(c);
}

/* Many connections at once, some saying HELLO, none reading; all closed (or kept, if we exit). */
static void burst(Worker *w) {
        int fds[64];
        size_t n = 8 + rng_below(&w->rng, SAGE_ARRAY_SIZE(fds) - 8);
        SageMessage m;

        sage_proto_init(&m, SAGE_MSG_HELLO, 1);
        m.hello.client_version = SAGE_PROTO_VERSION;
        ssize_t len = sage_proto_encode(&m, w->buf, sizeof(w->buf));
        for (size_t i = 0; i < n; i++) {
                fds[i] = connect_to(w->cfg->sockets[rng_below(&w->rng, FUZZ_SOCKETS)]);
                if (fds[i] >= 0 && rng_chance(&w->rng, 50))
                        send_raw(fds[i], w->buf, (size_t)len, NULL, 0, MSG_DONTWAIT);
        }
        if (rng_chance(&w->rng, 3))
                _exit(3);
        for (size_t i = 0; i < n; i++)
                if (fds[i] >= 0)
                        close(fds[i]);
}

static void oversize(Worker *w, Conn *c) {
        size_t len = SAGE_PROTO_MAX_MESSAGE + 1 + rng_below(&w->rng, sizeof(w->buf) - SAGE_PROTO_MAX_MESSAGE - 1);
        size_t head = any_message(w, w->buf, sizeof(w->buf));

        for (size_t i = head; i < len; i++)
                w->buf[i] = (uint8_t)i;
        send_with_fds(w, c, len, 2);
}

int fuzz_worker_run(const FuzzWorker *cfg) {
        Worker *w = calloc(1, sizeof(*w));
        int status;

        if (!w)
                return 2;
        w->cfg = cfg;
        w->rng.state = cfg->seed;
        for (size_t i = 0; i < MAX_CONNS; i++)
                w->conns[i].fd = -1;
        while (now_ns() < cfg->deadline_ns) {
                unsigned roll = (unsigned)rng_below(&w->rng, 1000);
                Conn *c = some_conn(w);

                if (!c)
                        continue;
                if (roll < 420)
                        valid_request(w, c);
                else if (roll < 600)
                        mutated(w, c);
                else if (roll < 660)
                        garbage(w, c);
                else if (roll < 760)
                        many_fds(w, c);
                else if (roll < 790) {
                        if (!(cfg->skip & FUZZ_SKIP_ZERO_FDS))
                                zero_length_fds(w, c);
                } else if (roll < 830)
                        flood(w, c);
                else if (roll < 860)
                        half_close(w, c);
                else if (roll < 880) {
                        if (!(cfg->skip & FUZZ_SKIP_BURSTS))
                                burst(w);
                } else if (roll < 900)
                        oversize(w, c);
                else if (roll < 999 || rng_chance(&w->rng, 80))
                        conn_open(w, c);
                else
                        _exit(3); /* sudden: connections, references and exports left to the broker */
        }
        for (size_t i = 0; i < MAX_CONNS; i++)
                conn_close(&w->conns[i]);
        status = w->violations ? 1 : 0;
        free(w);
        return status;
}
