/*
 * One client process of the live fuzzer: until its deadline it picks
 * actions at random from its own seed (a run replays from the printed seed;
 * only the interleaving with the other processes is the scheduler's): a
 * valid request (here) or hostile traffic (live_fuzz_hostile.c).
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
 * (fuzz_key) and are published with their content; hostile messages use
 * random keys, so no mutation can make a checked answer wrong.
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

#define EXPECT(w, req, cond, code)                                                                        \
        do {                                                                                              \
                if (!(cond))                                                                              \
                        VIOLATION(w, "%s: got %s, expected %s", sage_proto_type_name((req)->header.type), \
                                  (code) > 0    ? sage_proto_error_name(code)                             \
                                  : (code) == 0 ? "a reply"                                               \
                                                : "?",                                                    \
                                  #cond);                                                                 \
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
        const SageLookupReply *l = &reply->lookup_reply;
        uint8_t want[300];
        uint32_t len;

        if (code != 0 || !l->found)
                return;
        if (key_namespace != c->namespace_id)
                VIOLATION(w, "LOOKUP hit a key of namespace %#llx from namespace %#llx",
                          (unsigned long long)key_namespace, (unsigned long long)c->namespace_id);
        if (fd < 0)
                VIOLATION(w, "LOOKUP hit without an fd");
        /* Notes: none (published without), or the publisher's. */
        len = key_notes(&req->lookup, want);
        if (l->notes.length != 0 && (l->notes.length != len || memcmp(l->notes.bytes, want, len) != 0))
                VIOLATION(w, "LOOKUP: %u bytes of notes not the publisher's %u", l->notes.length, len);
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
static void make_request(Worker *w, Conn *c, SageMessage *m, unsigned type, uint64_t *key_namespace, uint8_t *notes,
                         int *what) {
        FuzzSlot s;

        sage_proto_init(m, type, ++w->request_id);
        *what = 0;
        *key_namespace = c->namespace_id;
        switch (type) {
        case SAGE_MSG_HELLO:
                m->hello = (SageHello){ SAGE_PROTO_VERSION, (uint32_t)getpid(),
                                        rng_below(&w->rng, 2) ? SAGE_FEATURES_ALL : 0 };
                break;
        case SAGE_MSG_LOOKUP:
                if (rng_chance(&w->rng, 40))
                        *key_namespace = any_namespace(w);
                m->lookup = fuzz_key(w->cfg->key_seed, *key_namespace, (unsigned)rng_below(&w->rng, FUZZ_KEYS));
                break;
        case SAGE_MSG_PUBLISH:
                m->header.flags = rng_chance(&w->rng, 90) ? SAGE_PUBLISH_SEALED : 0;
                *what = (int)rng_below(&w->rng, FUZZ_KEYS); /* the key, for its content */
                m->publish.key = fuzz_key(w->cfg->key_seed, c->namespace_id, (unsigned)*what);
                if (rng_chance(&w->rng, 50)) {
                        m->publish.notes.length = key_notes(&m->publish.key, notes);
                        m->publish.notes.bytes = notes;
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
        case SAGE_MSG_LIST: m->list.after_id = rng_chance(&w->rng, 70) ? 0 : rng_below(&w->rng, 2000); break;
        case SAGE_MSG_IPC_EXPORT:
                m->ipc_export = (SageIpcAllocation){ .size = FUZZ_KEY_SIZE, .device = 0 }; /* checked against the fd */
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
        unsigned type;
        SageMessage m, reply;
        uint64_t key_namespace;
        int what, fd = -1, reply_fd = -1, code;
        bool hostile;
        ssize_t len;

        do /* a request type of proto.def (12 and 13 are retired) */
                type = 1 + (unsigned)rng_below(&w->rng, SAGE_MSG_LABEL);
        while (strcmp(sage_proto_type_name(type), "?") == 0);
        make_request(w, c, &m, type, &key_namespace, notes, &what);
        /* Mostly the memfd a VMM export is; now and then any fd (the answer is then not checked), with a
         * key of its own: bytes that fail verification drop the extent, with every reference on it. */
        hostile = rng_chance(&w->rng, 15);
        if (hostile && type == SAGE_MSG_PUBLISH)
                m.publish.key.hash = (SageHash){ rng_next(&w->rng), rng_next(&w->rng) };
        if (type == SAGE_MSG_PUBLISH || type == SAGE_MSG_IPC_EXPORT)
                fd = hostile                       ? hostile_fd(w, c)
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
        if ((what == 1 && type != SAGE_MSG_PUBLISH) || key_namespace != c->namespace_id)
                __atomic_add_fetch(&w->cfg->shared->foreign_checks, 1, __ATOMIC_RELAXED);
        if (hostile && code != 0) {
                if (reply_fd >= 0)
                        close(reply_fd);
                return;
        }
        switch (code < 0 ? 0 : type) {
        case SAGE_MSG_HELLO: EXPECT(w, &m, code == 0 && reply.hello_reply.namespace_id == c->namespace_id, code); break;
        case SAGE_MSG_PING:
        case SAGE_MSG_STATS: EXPECT(w, &m, code == 0, code); break;
        case SAGE_MSG_LOOKUP: check_lookup(w, c, &m, &reply, code, key_namespace, reply_fd); break;
        case SAGE_MSG_PUBLISH:
                if (!(m.header.flags & SAGE_PUBLISH_SEALED)) /* a broker without a driver says that first */
                        EXPECT(w, &m, code == SAGE_ERR_PERMISSION || code == SAGE_ERR_NO_DRIVER, code);
                else if (code == 0 && !hostile) {
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
                } else if (roll < 899)
                        oversize(w, c);
                else if (roll < 900) {
                        if (rng_chance(&w->rng, 20)) /* 4097 exchanges each */
                                export_flood(w, c);
                } else if (roll < 999 || rng_chance(&w->rng, 80))
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
