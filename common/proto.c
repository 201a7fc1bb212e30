/*
 * Wire protocol codec and socket helpers.
 *
 * Encoding goes through a tiny cursor (Writer/Reader) that knows its bounds:
 * every put/get checks the remaining space first and records a sticky
 * failure, so the per-type code reads like the field table and cannot walk
 * off the buffer. The decoder is strict on purpose: unknown flag bits,
 * payloads of the wrong length for their type, a boolean that is not 0/1,
 * or an error message that is not text are all SAGE_ERR_MALFORMED. The
 * broker treats the peer as hostile; being strict costs nothing and removes
 * ambiguity between versions.
 */
#include "proto.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct Writer {
        uint8_t *p;
        size_t size, pos;
        bool failed;
        bool overflow; /* failed for want of room (rather than bad input) */
} Writer;

typedef struct Reader {
        const uint8_t *p;
        size_t size, pos;
        bool failed;
} Reader;

static void put_bytes(Writer *w, const void *data, size_t n) {
        if (w->failed)
                return;
        if (w->size - w->pos < n) {
                w->failed = w->overflow = true;
                return;
        }
        memcpy(w->p + w->pos, data, n);
        w->pos += n;
}

static void put_le(Writer *w, uint64_t v, size_t n) {
        uint8_t b[8];
        for (size_t i = 0; i < n; i++)
                b[i] = (uint8_t)(v >> (8 * i));
        put_bytes(w, b, n);
}

#define put_u8(w, v)  put_le((w), (v), 1)
#define put_u16(w, v) put_le((w), (v), 2)
#define put_u32(w, v) put_le((w), (v), 4)
#define put_u64(w, v) put_le((w), (v), 8)

static uint64_t get_le(Reader *r, size_t n) {
        uint64_t v = 0;
        if (r->failed || r->size - r->pos < n) {
                r->failed = true;
                return 0;
        }
        for (size_t i = 0; i < n; i++)
                v |= (uint64_t)r->p[r->pos + i] << (8 * i);
        r->pos += n;
        return v;
}

#define get_u8(r)  ((uint8_t)get_le((r), 1))
#define get_u16(r) ((uint16_t)get_le((r), 2))
#define get_u32(r) ((uint32_t)get_le((r), 4))
#define get_u64(r) get_le((r), 8)

static void put_hash(Writer *w, SageHash h) {
        put_u64(w, h.low);
        put_u64(w, h.high);
}

static SageHash get_hash(Reader *r) {
        SageHash h;
        h.low = get_u64(r);
        h.high = get_u64(r);
        return h;
}

static void put_key(Writer *w, const SageExtentKey *k) {
        put_hash(w, k->hash);
        put_u64(w, k->size);
        put_u32(w, k->device);
}

static void get_key(Reader *r, SageExtentKey *k) {
        k->hash = get_hash(r);
        k->size = get_u64(r);
        k->device = get_u32(r);
}

static void put_token(Writer *w, const SageIpcToken *t) {
        put_bytes(w, t->bytes, sizeof(t->bytes));
}

static void get_token(Reader *r, SageIpcToken *t) {
        if (r->failed || r->size - r->pos < sizeof(t->bytes)) {
                r->failed = true;
                return;
        }
        memcpy(t->bytes, r->p + r->pos, sizeof(t->bytes));
        r->pos += sizeof(t->bytes);
}

static void put_ipc_allocation(Writer *w, const SageIpcAllocation *a) {
        put_u64(w, a->size);
        put_u32(w, a->device);
}

static void get_ipc_allocation(Reader *r, SageIpcAllocation *a) {
        a->size = get_u64(r);
        a->device = get_u32(r);
}

/* notes_len, then the bytes; the length must account for the rest of the
 * payload exactly (notes are always last), and stay within the cap. */
static void put_notes(Writer *w, const SageNotes *n) {
        if (n->length > SAGE_PROTO_NOTES_MAX || (n->length > 0 && !n->bytes)) {
                w->failed = true;
                return;
        }
        put_u32(w, n->length);
        if (n->length > 0) /* bytes may be NULL then, which memcpy must not see */
                put_bytes(w, n->bytes, n->length);
}

static int get_notes(Reader *r, SageNotes *n) {
        uint32_t length = get_u32(r);

        if (r->failed)
                return 0;
        if (length > SAGE_PROTO_NOTES_MAX || r->size - r->pos != length)
                return SAGE_ERR_MALFORMED;
        n->length = length;
        n->bytes = length ? r->p + r->pos : NULL;
        r->pos += length;
        return 0;
}

static void put_lookup_reply(Writer *w, const SageLookupReply *l) {
        put_u8(w, l->found);
        put_u64(w, l->extent_id);
        put_u64(w, l->size);
}

static int get_lookup_reply(Reader *r, SageLookupReply *l) {
        l->found = get_u8(r);
        l->extent_id = get_u64(r);
        l->size = get_u64(r);
        return l->found > 1 ? SAGE_ERR_MALFORMED : 0;
}

static void put_publish_reply(Writer *w, const SagePublishReply *p) {
        put_u64(w, p->extent_id);
        put_u8(w, p->existed);
}

static int get_publish_reply(Reader *r, SagePublishReply *p) {
        p->extent_id = get_u64(r);
        p->existed = get_u8(r);
        return p->existed > 1 ? SAGE_ERR_MALFORMED : 0;
}

static void put_list_entry(Writer *w, const SageListEntry *e) {
        size_t start = w->pos;
        put_u64(w, e->id);
        put_u64(w, e->namespace_id);
        put_hash(w, e->hash);
        put_u64(w, e->size);
        put_u32(w, e->device);
        put_u32(w, e->refs);
        put_u32(w, e->publisher_pid);
        put_u32(w, e->flags);
        put_u64(w, e->idle_ns);
        if (!w->failed && w->pos - start != SAGE_PROTO_LIST_ENTRY_SIZE)
                w->failed = true;
}

static void get_list_entry(Reader *r, SageListEntry *e) {
        e->id = get_u64(r);
        e->namespace_id = get_u64(r);
        e->hash = get_hash(r);
        e->size = get_u64(r);
        e->device = get_u32(r);
        e->refs = get_u32(r);
        e->publisher_pid = get_u32(r);
        e->flags = get_u32(r);
        e->idle_ns = get_u64(r);
}

static const char *const error_names[_SAGE_ERR_MAX] = {
        [SAGE_ERR_OK] = "ok",
        [SAGE_ERR_MALFORMED] = "malformed message",
        [SAGE_ERR_BAD_MAGIC] = "bad magic",
        [SAGE_ERR_VERSION] = "unsupported protocol version",
        [SAGE_ERR_UNKNOWN_TYPE] = "unknown message type",
        [SAGE_ERR_TOO_LARGE] = "message too large",
        [SAGE_ERR_NOT_FOUND] = "not found",
        [SAGE_ERR_BUDGET] = "budget exhausted",
        [SAGE_ERR_PERMISSION] = "permission denied",
        [SAGE_ERR_DRIVER] = "driver error",
        [SAGE_ERR_BAD_FD] = "bad file descriptor",
        [SAGE_ERR_SIZE_MISMATCH] = "size mismatch",
        [SAGE_ERR_BAD_DEVICE] = "device not served",
        [SAGE_ERR_BUSY] = "extent in use",
        [SAGE_ERR_LIMIT] = "limit reached",
        [SAGE_ERR_INTERNAL] = "internal error",
        [SAGE_ERR_NO_DRIVER] = "broker has no CUDA driver",
};

const char *sage_proto_error_name(int code) {
        if (code < 0 || code >= _SAGE_ERR_MAX || !error_names[code])
                return "unknown error";
        return error_names[code];
}

const char *sage_proto_type_name(unsigned type) {
        switch (type) {
        case SAGE_MSG_HELLO: return "HELLO";
        case SAGE_MSG_PING: return "PING";
        case SAGE_MSG_LOOKUP: return "LOOKUP";
        case SAGE_MSG_PUBLISH: return "PUBLISH";
        case SAGE_MSG_RELEASE: return "RELEASE";
        case SAGE_MSG_STATS: return "STATS";
        case SAGE_MSG_LIST: return "LIST";
        case SAGE_MSG_EVICT: return "EVICT";
        case SAGE_MSG_IPC_EXPORT: return "IPC_EXPORT";
        case SAGE_MSG_IPC_IMPORT: return "IPC_IMPORT";
        case SAGE_MSG_IPC_REVOKE: return "IPC_REVOKE";
        case SAGE_MSG_PUBLISH_NOTED: return "PUBLISH_NOTED";
        case SAGE_MSG_LOOKUP_NOTED: return "LOOKUP_NOTED";
        case SAGE_MSG_LABEL: return "LABEL";
        case SAGE_MSG_HELLO_REPLY: return "HELLO_REPLY";
        case SAGE_MSG_PONG: return "PONG";
        case SAGE_MSG_LOOKUP_REPLY: return "LOOKUP_REPLY";
        case SAGE_MSG_PUBLISH_REPLY: return "PUBLISH_REPLY";
        case SAGE_MSG_RELEASE_REPLY: return "RELEASE_REPLY";
        case SAGE_MSG_STATS_REPLY: return "STATS_REPLY";
        case SAGE_MSG_LIST_REPLY: return "LIST_REPLY";
        case SAGE_MSG_EVICT_REPLY: return "EVICT_REPLY";
        case SAGE_MSG_IPC_EXPORT_REPLY: return "IPC_EXPORT_REPLY";
        case SAGE_MSG_IPC_IMPORT_REPLY: return "IPC_IMPORT_REPLY";
        case SAGE_MSG_IPC_REVOKE_REPLY: return "IPC_REVOKE_REPLY";
        case SAGE_MSG_PUBLISH_NOTED_REPLY: return "PUBLISH_NOTED_REPLY";
        case SAGE_MSG_LOOKUP_NOTED_REPLY: return "LOOKUP_NOTED_REPLY";
        case SAGE_MSG_LABEL_REPLY: return "LABEL_REPLY";
        case SAGE_MSG_ERROR: return "ERROR";
        default: return "?";
        }
}

bool sage_proto_label_valid(const char *name, size_t length) {
        if (length == 0 || length > SAGE_PROTO_LABEL_MAX)
                return false;
        for (size_t i = 0; i < length; i++) {
                char c = name[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                      c == '_' || c == '-'))
                        return false;
        }
        return true;
}

static uint32_t allowed_flags(unsigned type) {
        switch (type) {
        case SAGE_MSG_PUBLISH: return SAGE_PUBLISH_FLAGS_ALL;
        case SAGE_MSG_PUBLISH_NOTED: return SAGE_PUBLISH_NOTED_FLAGS_ALL;
        case SAGE_MSG_EVICT: return SAGE_EVICT_FLAGS_ALL;
        default: return 0;
        }
}

void sage_proto_init(SageMessage *m, unsigned type, uint32_t request_id) {
        memset(m, 0, sizeof(*m));
        m->header.magic = SAGE_PROTO_MAGIC;
        m->header.version = SAGE_PROTO_VERSION;
        m->header.type = (uint16_t)type;
        m->header.request_id = request_id;
}

void sage_proto_error(SageMessage *m, uint32_t request_id, int code, const char *format, ...) {
        va_list ap;

        sage_proto_init(m, SAGE_MSG_ERROR, request_id);
        m->error.code = (uint32_t)code;
        va_start(ap, format);
        vsnprintf(m->error.message, sizeof(m->error.message), format, ap);
        va_end(ap);
}

size_t sage_proto_expected_fds(const SageMessage *m) {
        switch (m->header.type) {
        case SAGE_MSG_PUBLISH: return 1;
        case SAGE_MSG_PUBLISH_NOTED: return 1;
        case SAGE_MSG_IPC_EXPORT: return 1;
        case SAGE_MSG_IPC_IMPORT_REPLY: return 1;
        case SAGE_MSG_LOOKUP_REPLY: return m->lookup_reply.found ? 1 : 0;
        case SAGE_MSG_LOOKUP_NOTED_REPLY: return m->lookup_noted_reply.lookup.found ? 1 : 0;
        default: return 0;
        }
}

static void encode_payload(Writer *w, const SageMessage *m) {
        switch (m->header.type) {
        case SAGE_MSG_HELLO:
                put_u32(w, m->hello.client_version);
                put_u32(w, m->hello.pid);
                break;
        case SAGE_MSG_HELLO_REPLY:
                put_u32(w, m->hello_reply.broker_version);
                put_u32(w, m->hello_reply.n_devices);
                put_u64(w, m->hello_reply.namespace_id);
                put_u64(w, m->hello_reply.granularity);
                break;
        case SAGE_MSG_PING:
        case SAGE_MSG_PONG:
        case SAGE_MSG_STATS:
        case SAGE_MSG_RELEASE_REPLY:
        case SAGE_MSG_IPC_REVOKE_REPLY:
                break;
        case SAGE_MSG_IPC_EXPORT:
                put_ipc_allocation(w, &m->ipc_export);
                break;
        case SAGE_MSG_IPC_EXPORT_REPLY:
                put_token(w, &m->ipc_export_reply);
                break;
        case SAGE_MSG_IPC_IMPORT:
                put_token(w, &m->ipc_import);
                break;
        case SAGE_MSG_IPC_IMPORT_REPLY:
                put_ipc_allocation(w, &m->ipc_import_reply);
                break;
        case SAGE_MSG_IPC_REVOKE:
                put_token(w, &m->ipc_revoke);
                break;
        case SAGE_MSG_LOOKUP:
                put_key(w, &m->lookup);
                break;
        case SAGE_MSG_PUBLISH:
                put_key(w, &m->publish);
                break;
        case SAGE_MSG_LOOKUP_REPLY:
                put_lookup_reply(w, &m->lookup_reply);
                break;
        case SAGE_MSG_PUBLISH_REPLY:
                put_publish_reply(w, &m->publish_reply);
                break;
        case SAGE_MSG_PUBLISH_NOTED:
                put_key(w, &m->publish_noted.key);
                if (m->header.flags & SAGE_PUBLISH_CONTENT)
                        put_hash(w, m->publish_noted.content);
                put_notes(w, &m->publish_noted.notes);
                break;
        case SAGE_MSG_PUBLISH_NOTED_REPLY:
                put_publish_reply(w, &m->publish_noted_reply);
                break;
        case SAGE_MSG_LOOKUP_NOTED:
                put_key(w, &m->lookup_noted);
                break;
        case SAGE_MSG_LOOKUP_NOTED_REPLY:
                /* A miss carries no notes. */
                if (!m->lookup_noted_reply.lookup.found && m->lookup_noted_reply.notes.length) {
                        w->failed = true;
                        break;
                }
                put_lookup_reply(w, &m->lookup_noted_reply.lookup);
                put_notes(w, &m->lookup_noted_reply.notes);
                break;
        case SAGE_MSG_RELEASE:
                put_u64(w, m->release);
                break;
        case SAGE_MSG_LABEL:
                put_u32(w, m->label);
                break;
        case SAGE_MSG_LABEL_REPLY: {
                size_t n = strnlen(m->label_reply.name, sizeof(m->label_reply.name));
                if (!sage_proto_label_valid(m->label_reply.name, n)) {
                        w->failed = true;
                        break;
                }
                put_u8(w, n);
                put_bytes(w, m->label_reply.name, n);
                break;
        }
        case SAGE_MSG_STATS_REPLY: {
                const SageStats *s = &m->stats_reply;
                put_u64(w, s->extents);
                put_u64(w, s->bytes_resident);
                put_u64(w, s->budget);
                put_u64(w, s->hits);
                put_u64(w, s->misses);
                put_u64(w, s->clients);
                put_u64(w, s->refs);
                put_u64(w, s->publishes);
                put_u64(w, s->evictions);
                put_u64(w, s->rejected_budget);
                put_u64(w, s->uptime_ns);
                put_u64(w, s->rejected_content);
                break;
        }
        case SAGE_MSG_LIST:
                put_u64(w, m->list.after_id);
                break;
        case SAGE_MSG_LIST_REPLY:
                if (m->list_reply.n_entries > SAGE_PROTO_LIST_MAX ||
                    (m->list_reply.n_entries > 0 && !m->list_reply.entries)) {
                        w->failed = true;
                        break;
                }
                put_u32(w, m->list_reply.n_entries);
                put_u8(w, m->list_reply.more);
                for (uint32_t i = 0; i < m->list_reply.n_entries; i++)
                        put_list_entry(w, &m->list_reply.entries[i]);
                break;
        case SAGE_MSG_EVICT:
                put_u64(w, m->evict.extent_id);
                break;
        case SAGE_MSG_EVICT_REPLY:
                put_u64(w, m->evict_reply.evicted);
                put_u64(w, m->evict_reply.bytes);
                break;
        case SAGE_MSG_ERROR: {
                size_t n = strnlen(m->error.message, SAGE_PROTO_ERROR_MESSAGE_MAX);
                put_u32(w, m->error.code);
                put_u16(w, n);
                put_bytes(w, m->error.message, n);
                break;
        }
        default:
                w->failed = true;
        }
}

ssize_t sage_proto_encode(const SageMessage *m, void *buf, size_t size) {
        Writer w = { .p = buf, .size = size < SAGE_PROTO_MAX_MESSAGE ? size : SAGE_PROTO_MAX_MESSAGE };
        Writer hw;

        if (size < SAGE_PROTO_HEADER_SIZE)
                return -ENOBUFS;
        if (m->header.flags & ~allowed_flags(m->header.type))
                return -EINVAL;
        w.pos = SAGE_PROTO_HEADER_SIZE;
        encode_payload(&w, m);
        if (w.failed)
                return w.overflow ? -ENOBUFS : -EINVAL;

        hw = (Writer){ .p = buf, .size = SAGE_PROTO_HEADER_SIZE };
        put_u32(&hw, SAGE_PROTO_MAGIC);
        put_u16(&hw, SAGE_PROTO_VERSION);
        put_u16(&hw, m->header.type);
        put_u32(&hw, m->header.flags);
        put_u32(&hw, m->header.request_id);
        put_u32(&hw, w.pos - SAGE_PROTO_HEADER_SIZE);
        return (ssize_t)w.pos;
}

static int decode_payload(Reader *r, SageMessage *m, SageListEntry *list_storage) {
        switch (m->header.type) {
        case SAGE_MSG_HELLO:
                m->hello.client_version = get_u32(r);
                m->hello.pid = get_u32(r);
                break;
        case SAGE_MSG_HELLO_REPLY:
                m->hello_reply.broker_version = get_u32(r);
                m->hello_reply.n_devices = get_u32(r);
                m->hello_reply.namespace_id = get_u64(r);
                m->hello_reply.granularity = get_u64(r);
                break;
        case SAGE_MSG_PING:
        case SAGE_MSG_PONG:
        case SAGE_MSG_STATS:
        case SAGE_MSG_RELEASE_REPLY:
        case SAGE_MSG_IPC_REVOKE_REPLY:
                break;
        case SAGE_MSG_IPC_EXPORT:
                get_ipc_allocation(r, &m->ipc_export);
                break;
        case SAGE_MSG_IPC_EXPORT_REPLY:
                get_token(r, &m->ipc_export_reply);
                break;
        case SAGE_MSG_IPC_IMPORT:
                get_token(r, &m->ipc_import);
                break;
        case SAGE_MSG_IPC_IMPORT_REPLY:
                get_ipc_allocation(r, &m->ipc_import_reply);
                break;
        case SAGE_MSG_IPC_REVOKE:
                get_token(r, &m->ipc_revoke);
                break;
        case SAGE_MSG_LOOKUP:
                get_key(r, &m->lookup);
                break;
        case SAGE_MSG_PUBLISH:
                get_key(r, &m->publish);
                break;
        case SAGE_MSG_LOOKUP_REPLY:
                if (get_lookup_reply(r, &m->lookup_reply))
                        return SAGE_ERR_MALFORMED;
                break;
        case SAGE_MSG_PUBLISH_REPLY:
                if (get_publish_reply(r, &m->publish_reply))
                        return SAGE_ERR_MALFORMED;
                break;
        case SAGE_MSG_PUBLISH_NOTED:
                get_key(r, &m->publish_noted.key);
                if (m->header.flags & SAGE_PUBLISH_CONTENT)
                        m->publish_noted.content = get_hash(r);
                if (get_notes(r, &m->publish_noted.notes))
                        return SAGE_ERR_MALFORMED;
                break;
        case SAGE_MSG_PUBLISH_NOTED_REPLY:
                if (get_publish_reply(r, &m->publish_noted_reply))
                        return SAGE_ERR_MALFORMED;
                break;
        case SAGE_MSG_LOOKUP_NOTED:
                get_key(r, &m->lookup_noted);
                break;
        case SAGE_MSG_LOOKUP_NOTED_REPLY:
                if (get_lookup_reply(r, &m->lookup_noted_reply.lookup) ||
                    get_notes(r, &m->lookup_noted_reply.notes))
                        return SAGE_ERR_MALFORMED;
                if (!m->lookup_noted_reply.lookup.found && m->lookup_noted_reply.notes.length)
                        return SAGE_ERR_MALFORMED;
                break;
        case SAGE_MSG_RELEASE:
                m->release = get_u64(r);
                break;
        case SAGE_MSG_LABEL:
                m->label = get_u32(r);
                break;
        case SAGE_MSG_LABEL_REPLY: {
                uint8_t n = get_u8(r);
                if (r->failed)
                        break;
                if (r->size - r->pos != n || !sage_proto_label_valid((const char *)r->p + r->pos, n))
                        return SAGE_ERR_MALFORMED;
                memcpy(m->label_reply.name, r->p + r->pos, n);
                m->label_reply.name[n] = 0;
                r->pos += n;
                break;
        }
        case SAGE_MSG_STATS_REPLY: {
                SageStats *s = &m->stats_reply;
                s->extents = get_u64(r);
                s->bytes_resident = get_u64(r);
                s->budget = get_u64(r);
                s->hits = get_u64(r);
                s->misses = get_u64(r);
                s->clients = get_u64(r);
                s->refs = get_u64(r);
                s->publishes = get_u64(r);
                s->evictions = get_u64(r);
                s->rejected_budget = get_u64(r);
                s->uptime_ns = get_u64(r);
                s->rejected_content = get_u64(r);
                break;
        }
        case SAGE_MSG_LIST:
                m->list.after_id = get_u64(r);
                break;
        case SAGE_MSG_LIST_REPLY: {
                uint32_t n = get_u32(r);
                m->list_reply.more = get_u8(r);
                if (r->failed)
                        break;
                if (n > SAGE_PROTO_LIST_MAX || m->list_reply.more > 1)
                        return SAGE_ERR_MALFORMED;
                /* The count must match the payload exactly before anything is stored. */
                if ((r->size - r->pos) != (size_t)n * SAGE_PROTO_LIST_ENTRY_SIZE)
                        return SAGE_ERR_MALFORMED;
                if (n > 0 && !list_storage)
                        return SAGE_ERR_INTERNAL;
                m->list_reply.n_entries = n;
                m->list_reply.entries = list_storage;
                for (uint32_t i = 0; i < n; i++)
                        get_list_entry(r, &list_storage[i]);
                break;
        }
        case SAGE_MSG_EVICT:
                m->evict.extent_id = get_u64(r);
                break;
        case SAGE_MSG_EVICT_REPLY:
                m->evict_reply.evicted = get_u64(r);
                m->evict_reply.bytes = get_u64(r);
                break;
        case SAGE_MSG_ERROR: {
                uint16_t n;
                m->error.code = get_u32(r);
                n = get_u16(r);
                if (r->failed)
                        break;
                if (n > SAGE_PROTO_ERROR_MESSAGE_MAX || r->size - r->pos != n)
                        return SAGE_ERR_MALFORMED;
                for (uint16_t i = 0; i < n; i++) {
                        uint8_t c = r->p[r->pos + i];
                        /* Printable text only: it ends up in logs and terminals. */
                        if (c < 0x20 || c == 0x7f)
                                return SAGE_ERR_MALFORMED;
                }
                memcpy(m->error.message, r->p + r->pos, n);
                m->error.message[n] = 0;
                r->pos += n;
                break;
        }
        default:
                return SAGE_ERR_UNKNOWN_TYPE;
        }
        if (r->failed || r->pos != r->size)
                return SAGE_ERR_MALFORMED;
        return 0;
}

int sage_proto_decode(const void *buf, size_t size, SageMessage *out, SageListEntry *list_storage) {
        Reader r = { .p = buf, .size = size };
        Reader payload;
        SageHeader *h = &out->header;

        memset(out, 0, sizeof(*out));
        if (size > SAGE_PROTO_MAX_MESSAGE)
                return SAGE_ERR_TOO_LARGE;
        if (size < SAGE_PROTO_HEADER_SIZE)
                return SAGE_ERR_MALFORMED;
        h->magic = get_u32(&r);
        h->version = get_u16(&r);
        h->type = get_u16(&r);
        h->flags = get_u32(&r);
        h->request_id = get_u32(&r);
        h->payload_length = get_u32(&r);
        if (h->magic != SAGE_PROTO_MAGIC)
                return SAGE_ERR_BAD_MAGIC;
        if (h->version != SAGE_PROTO_VERSION)
                return SAGE_ERR_VERSION;
        if (h->payload_length != size - SAGE_PROTO_HEADER_SIZE)
                return SAGE_ERR_MALFORMED;
        if (h->flags & ~allowed_flags(h->type))
                return SAGE_ERR_MALFORMED;
        payload = (Reader){ .p = r.p + r.pos, .size = h->payload_length };
        return decode_payload(&payload, out, list_storage);
}

int sage_proto_send(int sock, const void *buf, size_t len, const int *fds, size_t n_fds) {
        struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int) * SAGE_PROTO_MAX_FDS)];
        } control;
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
        ssize_t n;

        if (n_fds > SAGE_PROTO_MAX_FDS)
                return -EINVAL;
        if (n_fds > 0) {
                struct cmsghdr *c;
                memset(&control, 0, sizeof(control));
                msg.msg_control = control.buf;
                msg.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
                c = CMSG_FIRSTHDR(&msg);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
                memcpy(CMSG_DATA(c), fds, sizeof(int) * n_fds);
        }
        do
                n = sendmsg(sock, &msg, MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;
        if ((size_t)n != len)
                return -EMSGSIZE; /* SOCK_SEQPACKET sends all or nothing */
        return 0;
}

int sage_proto_send_message(int sock, const SageMessage *m, const int *fds, size_t n_fds) {
        uint8_t buf[SAGE_PROTO_MAX_MESSAGE];
        ssize_t n = sage_proto_encode(m, buf, sizeof(buf));

        if (n < 0)
                return (int)n;
        return sage_proto_send(sock, buf, (size_t)n, fds, n_fds);
}

ssize_t sage_proto_recv(int sock, void *buf, size_t size, int *fds, size_t max_fds, size_t *n_fds) {
        struct iovec iov = { .iov_base = buf, .iov_len = size };
        /* Room for more fds than we accept, so extra ones arrive and get closed
         * instead of being silently truncated (MSG_CTRUNC) by the kernel. */
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int) * 64)];
        } control;
        struct msghdr msg = {
                .msg_iov = &iov,
                .msg_iovlen = 1,
                .msg_control = control.buf,
                .msg_controllen = sizeof(control.buf),
        };
        size_t stored = 0;
        bool bad = false;
        ssize_t n;

        *n_fds = 0;
        do
                n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;

        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
                size_t count;
                int *data;
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
                        bad = true;
                        continue;
                }
                count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                data = (int *)(void *)CMSG_DATA(c);
                for (size_t i = 0; i < count; i++) {
                        int fd;
                        memcpy(&fd, &data[i], sizeof(fd));
                        if (stored < max_fds && fds)
                                fds[stored++] = fd;
                        else {
                                close(fd);
                                bad = true;
                        }
                }
        }
        /* A zero-length message reads like the end of the stream; one that
         * carries fds is not the end, and those fds would leak with it. */
        if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || bad || (n == 0 && stored > 0)) {
                for (size_t i = 0; i < stored; i++)
                        close(fds[i]);
                return (msg.msg_flags & MSG_TRUNC) ? -EMSGSIZE : -EBADMSG;
        }
        *n_fds = stored;
        return n;
}
