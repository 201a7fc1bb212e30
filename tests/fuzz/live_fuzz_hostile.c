/*
 * The live fuzzer's hostile traffic: mutated valid requests, replies and
 * notices, garbage, other versions and magics, oversize packets, zero-length packets
 * with fds, fds of every kind and too many of them, floods without reading,
 * half-closed, abandoned and bursts of connections, a connection exporting
 * until the broker's limit. Answers are not checked here beyond what every
 * exchange checks (one well-formed reply in time, or a hang-up; none to a
 * notice to the broker), except
 * where the protocol promises more (floods: every PING answered, in order).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ipc_registry.h"
#include "live_fuzz.h"
#include "util.h"

static SageExtentKey random_key(Worker *w) {
        return (SageExtentKey){ .hash = { rng_next(&w->rng), rng_next(&w->rng) },
                                .size = (rng_below(&w->rng, 3) + 1) << 21,
                                .device = rng_chance(&w->rng, 90) ? 0 : (uint32_t)rng_next(&w->rng) };
}

/* A message of any type (replies and notices of both directions too) with random keys and ids; its length. */
static size_t any_message(Worker *w, uint8_t *buf, size_t size) {
        static const unsigned replies[] = { SAGE_MSG_HELLO_REPLY,      SAGE_MSG_LOOKUP_REPLY, SAGE_MSG_LIST_REPLY,
                                            SAGE_MSG_IPC_IMPORT_REPLY, SAGE_MSG_LABEL_REPLY,  SAGE_MSG_ERROR };
        /* Notices (proto.def): those to the broker are never answered (exchange() fences them). */
        static const unsigned notices[] = {
#define SAGE_NOTICE(NAME, NUMBER, PAYLOAD, FLAGS, FDS, DIRECTION, FEATURE, HANDLER) SAGE_MSG_##NAME,
#include "proto.def"
        };
        static uint8_t notes[SAGE_PROTO_NOTES_MAX];
        unsigned roll = (unsigned)rng_below(&w->rng, 100);
        unsigned type = roll < 76   ? 1 + (unsigned)rng_below(&w->rng, SAGE_MSG_LABEL)
                        : roll < 80 ? notices[rng_below(&w->rng, SAGE_ARRAY_SIZE(notices))]
                                    : replies[rng_below(&w->rng, SAGE_ARRAY_SIZE(replies))];
        SageMessage m;
        ssize_t n;

        sage_proto_init(&m, type, (uint32_t)rng_next(&w->rng));
        m.header.flags = (uint32_t)rng_below(&w->rng, 2);
        m.publish.key = random_key(w); /* overlays every request's key, id and token */
        switch (type) {
        case SAGE_MSG_PUBLISH:
                m.publish.notes = (SageNotes){ (uint32_t)rng_below(&w->rng, SAGE_PROTO_NOTES_MAX + 1), notes };
                break;
        case SAGE_MSG_LOOKUP_REPLY: m.lookup_reply = (SageLookupReply){ 1, 1, 2u << 20, { 3, notes } }; break;
        case SAGE_MSG_LIST_REPLY:
                m.list_reply = (SageListReply){ (uint32_t)rng_below(&w->rng, SAGE_PROTO_LIST_MAX + 1), 0, w->list };
                break;
        case SAGE_MSG_LABEL_REPLY: snprintf(m.label_reply.name, sizeof(m.label_reply.name), "x"); break;
        case SAGE_MSG_ERROR: sage_proto_error(&m, 1, SAGE_ERR_BUSY, "busy"); break;
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

void mutated(Worker *w, Conn *c) {
        size_t len = any_message(w, w->buf, sizeof(w->buf));
        if (len > 0)
                send_with_fds(w, c, mutate(w, w->buf, len, sizeof(w->buf)), 8);
}

void garbage(Worker *w, Conn *c) {
        size_t len = 1 + rng_below(&w->rng, rng_chance(&w->rng, 90) ? 200 : sizeof(w->buf) - 1);

        for (size_t i = 0; i < len; i++)
                w->buf[i] = (uint8_t)rng_next(&w->rng);
        if (len >= 6 && rng_chance(&w->rng, 50)) {
                memcpy(w->buf, "SAGE", 4); /* the magic and this version, so the garbage reaches the payload decoder */
                w->buf[4] = (uint8_t)SAGE_PROTO_VERSION;
                w->buf[5] = (uint8_t)(SAGE_PROTO_VERSION >> 8);
        }
        send_with_fds(w, c, len, 4);
}

/* Many fds, of every kind, on an otherwise valid message. */
void many_fds(Worker *w, Conn *c) {
        size_t len = any_message(w, w->buf, sizeof(w->buf));
        if (len > 0)
                send_with_fds(w, c, len, MAX_SEND_FDS);
}

/* A zero-length packet (the broker must not take it for the end of the stream and forget its fds). */
void zero_length_fds(Worker *w, Conn *c) {
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
void flood(Worker *w, Conn *c) {
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
void half_close(Worker *w, Conn *c) {
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
void burst(Worker *w) {
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

void oversize(Worker *w, Conn *c) {
        size_t len = SAGE_PROTO_MAX_MESSAGE + 1 + rng_below(&w->rng, sizeof(w->buf) - SAGE_PROTO_MAX_MESSAGE - 1);
        size_t head = any_message(w, w->buf, sizeof(w->buf));

        for (size_t i = head; i < len; i++)
                w->buf[i] = (uint8_t)i;
        send_with_fds(w, c, len, 2);
}

/*
 * IPC_EXPORT until the broker says LIMIT: each registration holds an fd in
 * saged, so its per-connection cap (and the total one, half its fd limit)
 * is what stands between one client and the broker's fd table. More than
 * the per-connection cap accepted is a violation; all of it goes with the
 * connection.
 */
void export_flood(Worker *w, Conn *c) {
        int fd = memfd_of(FUZZ_KEY_SIZE);
        SageMessage m, reply;
        size_t accepted = 0;
        ssize_t len;

        if (fd < 0)
                return;
        conn_open(w, c); /* a fresh connection: what it exported before is not counted here */
        for (size_t i = 0; c->fd >= 0 && i <= IPC_REGISTRY_MAX_PER_OWNER + 1; i++) {
                sage_proto_init(&m, SAGE_MSG_IPC_EXPORT, ++w->request_id);
                m.ipc_export = (SageIpcAllocation){ .size = FUZZ_KEY_SIZE, .device = 0 };
                len = sage_proto_encode(&m, w->buf, sizeof(w->buf));
                if (exchange(w, c, w->buf, (size_t)len, &fd, 1, &reply, NULL) != REPLIED)
                        break;
                if (reply.header.type == SAGE_MSG_ERROR) {
                        if (reply.error.code != SAGE_ERR_LIMIT)
                                VIOLATION(w, "IPC_EXPORT #%zu: %s, not LIMIT", i + 1,
                                          sage_proto_error_name((int)reply.error.code));
                        break;
                }
                accepted++;
        }
        if (accepted > IPC_REGISTRY_MAX_PER_OWNER)
                VIOLATION(w, "one connection registered %zu IPC exports (cap %d)", accepted,
                          IPC_REGISTRY_MAX_PER_OWNER);
        close(fd);
        conn_close(c);
}
