/*
 * Wire protocol codec: the bytes of every message, and nothing else.
 *
 * Encoding goes through a tiny cursor (Writer/Reader, proto_rw.h) that knows its bounds:
 * every put/get checks the remaining space first and records a sticky
 * failure, so the per-type code reads like the field table and cannot walk
 * off the buffer. Which code encodes which type is generated from
 * proto.def: one put_M/get_M pair per SageMessage member M. The decoder is
 * strict on purpose: unknown flag bits, payloads of the wrong length for
 * their type, a boolean that is not 0/1, or an error message that is not
 * text are all SAGE_ERR_MALFORMED. The broker treats the peer as hostile;
 * being strict costs nothing and removes ambiguity between versions.
 */
#include "proto.h"

#include <errno.h>
#include <string.h>

#include "proto_rw.h"

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

static uint32_t allowed_flags(unsigned type) {
        switch (type) {
/* clang-format off */
#define SAGE_MESSAGE(NAME, NUMBER, REQUEST, FLAGS, FDS, REPLY_NAME, REPLY, REPLY_FDS, FEATURE, HANDLER) \
        case SAGE_MSG_##NAME: return FLAGS;
/* clang-format on */
#include "proto.def"
#undef SAGE_MESSAGE
        default: return 0;
        }
}

/*
 * Payload codecs, one pair per SageMessage member (proto.def names the
 * member of each type). put_* records failure in the Writer; get_* in the
 * Reader, or returns a SageProtoError for a value out of range.
 */
static void put_none(Writer *w, const SageMessage *m) {
}

static int get_none(Reader *r, SageMessage *m, SageListEntry *list) {
        return 0;
}

static void put_hello(Writer *w, const SageMessage *m) {
        put_u32(w, m->hello.client_version);
        put_u32(w, m->hello.pid);
        put_u64(w, m->hello.features);
}

static int get_hello(Reader *r, SageMessage *m, SageListEntry *list) {
        m->hello.client_version = get_u32(r);
        m->hello.pid = get_u32(r);
        m->hello.features = get_u64(r);
        return 0;
}

static void put_hello_reply(Writer *w, const SageMessage *m) {
        put_u32(w, m->hello_reply.broker_version);
        put_u32(w, m->hello_reply.n_devices);
        put_u64(w, m->hello_reply.namespace_id);
        put_u64(w, m->hello_reply.granularity);
        put_u64(w, m->hello_reply.features);
}

static int get_hello_reply(Reader *r, SageMessage *m, SageListEntry *list) {
        m->hello_reply.broker_version = get_u32(r);
        m->hello_reply.n_devices = get_u32(r);
        m->hello_reply.namespace_id = get_u64(r);
        m->hello_reply.granularity = get_u64(r);
        m->hello_reply.features = get_u64(r);
        return 0;
}

/* Payloads of one value: an extent key, an IPC token or allocation, an extent id, a label number. */
VALUE_CODEC(static, lookup, put_key, get_key)
VALUE_CODEC(static, ipc_export_reply, put_token, get_token)
VALUE_CODEC(static, ipc_import, put_token, get_token)
VALUE_CODEC(static, ipc_revoke, put_token, get_token)
VALUE_CODEC(static, ipc_export, put_ipc_allocation, get_ipc_allocation)
VALUE_CODEC(static, ipc_import_reply, put_ipc_allocation, get_ipc_allocation)
VALUE_CODEC(static, release, put_u64_of, get_u64_into)
VALUE_CODEC(static, label, put_u32_of, get_u32_into)

static void put_lookup_reply(Writer *w, const SageMessage *m) {
        const SageLookupReply *l = &m->lookup_reply;

        if (!l->found && l->notes.length) { /* a miss carries no notes */
                w->failed = true;
                return;
        }
        put_u8(w, l->found);
        put_u64(w, l->extent_id);
        put_u64(w, l->size);
        put_notes(w, &l->notes);
}

static int get_lookup_reply(Reader *r, SageMessage *m, SageListEntry *list) {
        SageLookupReply *l = &m->lookup_reply;

        l->found = get_u8(r);
        l->extent_id = get_u64(r);
        l->size = get_u64(r);
        if (l->found > 1 || get_notes(r, &l->notes) || (!l->found && l->notes.length))
                return SAGE_ERR_MALFORMED;
        return 0;
}

static void put_publish(Writer *w, const SageMessage *m) {
        put_key(w, &m->publish.key);
        if (m->header.flags & SAGE_PUBLISH_CONTENT)
                put_hash(w, m->publish.content);
        put_notes(w, &m->publish.notes);
}

static int get_publish(Reader *r, SageMessage *m, SageListEntry *list) {
        get_key(r, &m->publish.key);
        if (m->header.flags & SAGE_PUBLISH_CONTENT)
                m->publish.content = get_hash(r);
        return get_notes(r, &m->publish.notes) ? SAGE_ERR_MALFORMED : 0;
}

static void put_publish_reply(Writer *w, const SageMessage *m) {
        put_u64(w, m->publish_reply.extent_id);
        put_u8(w, m->publish_reply.existed);
}

static int get_publish_reply(Reader *r, SageMessage *m, SageListEntry *list) {
        m->publish_reply.extent_id = get_u64(r);
        m->publish_reply.existed = get_u8(r);
        return m->publish_reply.existed > 1 ? SAGE_ERR_MALFORMED : 0;
}

static void put_label_reply(Writer *w, const SageMessage *m) {
        size_t n = strnlen(m->label_reply.name, sizeof(m->label_reply.name));

        if (!sage_proto_label_valid(m->label_reply.name, n)) {
                w->failed = true;
                return;
        }
        put_u8(w, n);
        put_bytes(w, m->label_reply.name, n);
}

static int get_label_reply(Reader *r, SageMessage *m, SageListEntry *list) {
        uint8_t n = get_u8(r);

        if (r->failed)
                return 0;
        if (r->size - r->pos != n || !sage_proto_label_valid((const char *)r->p + r->pos, n))
                return SAGE_ERR_MALFORMED;
        memcpy(m->label_reply.name, r->p + r->pos, n);
        m->label_reply.name[n] = 0;
        r->pos += n;
        return 0;
}

/* STATS_REPLY: its fields in this order, all u64. */
/* One list of fields, wrapped by hand: clang-format re-wraps it differently on each pass. */
/* clang-format off */
#define STATS_FIELDS(X)                                                                                          \
        X(extents) X(bytes_resident) X(budget) X(hits) X(misses) X(clients) X(refs) X(publishes) X(evictions) \
        X(rejected_budget) X(uptime_ns) X(rejected_content) X(records)
/* clang-format on */

static void put_stats_reply(Writer *w, const SageMessage *m) {
#define PUT_STAT(field) put_u64(w, m->stats_reply.field);
        STATS_FIELDS(PUT_STAT)
#undef PUT_STAT
}

static int get_stats_reply(Reader *r, SageMessage *m, SageListEntry *list) {
#define GET_STAT(field) m->stats_reply.field = get_u64(r);
        STATS_FIELDS(GET_STAT)
#undef GET_STAT
        return 0;
}

static void put_list(Writer *w, const SageMessage *m) {
        put_u64(w, m->list.after_id);
}

static int get_list(Reader *r, SageMessage *m, SageListEntry *list) {
        m->list.after_id = get_u64(r);
        return 0;
}

static void put_list_reply(Writer *w, const SageMessage *m) {
        if (m->list_reply.n_entries > SAGE_PROTO_LIST_MAX || (m->list_reply.n_entries > 0 && !m->list_reply.entries)) {
                w->failed = true;
                return;
        }
        put_u32(w, m->list_reply.n_entries);
        put_u8(w, m->list_reply.more);
        for (uint32_t i = 0; i < m->list_reply.n_entries; i++)
                put_list_entry(w, &m->list_reply.entries[i]);
}

static int get_list_reply(Reader *r, SageMessage *m, SageListEntry *list) {
        uint32_t n = get_u32(r);

        m->list_reply.more = get_u8(r);
        if (r->failed)
                return 0;
        if (n > SAGE_PROTO_LIST_MAX || m->list_reply.more > 1)
                return SAGE_ERR_MALFORMED;
        /* The count must match the payload exactly before anything is stored. */
        if ((r->size - r->pos) != (size_t)n * SAGE_PROTO_LIST_ENTRY_SIZE)
                return SAGE_ERR_MALFORMED;
        if (n > 0 && !list)
                return SAGE_ERR_INTERNAL;
        m->list_reply.n_entries = n;
        m->list_reply.entries = list;
        for (uint32_t i = 0; i < n; i++)
                get_list_entry(r, &list[i]);
        return 0;
}

static void put_evict(Writer *w, const SageMessage *m) {
        put_u64(w, m->evict.extent_id);
}

static int get_evict(Reader *r, SageMessage *m, SageListEntry *list) {
        m->evict.extent_id = get_u64(r);
        return 0;
}

static void put_evict_reply(Writer *w, const SageMessage *m) {
        put_u64(w, m->evict_reply.evicted);
        put_u64(w, m->evict_reply.bytes);
}

static int get_evict_reply(Reader *r, SageMessage *m, SageListEntry *list) {
        m->evict_reply.evicted = get_u64(r);
        m->evict_reply.bytes = get_u64(r);
        return 0;
}

static void put_error(Writer *w, const SageMessage *m) {
        size_t n = strnlen(m->error.message, SAGE_PROTO_ERROR_MESSAGE_MAX);

        put_u32(w, m->error.code);
        put_u16(w, n);
        put_bytes(w, m->error.message, n);
}

static int get_error(Reader *r, SageMessage *m, SageListEntry *list) {
        uint16_t n;

        m->error.code = get_u32(r);
        n = get_u16(r);
        if (r->failed)
                return 0;
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
        return 0;
}

static void encode_payload(Writer *w, const SageMessage *m) {
        switch (m->header.type) {
/* clang-format off */
#define SAGE_MESSAGE(NAME, NUMBER, REQUEST, FLAGS, FDS, REPLY_NAME, REPLY, REPLY_FDS, FEATURE, HANDLER) \
        case SAGE_MSG_##NAME: put_##REQUEST(w, m); break;                                               \
        case SAGE_MSG_##REPLY_NAME: put_##REPLY(w, m); break;
/* clang-format on */
#include "proto.def"
#undef SAGE_MESSAGE
        case SAGE_MSG_ERROR: put_error(w, m); break;
        default: w->failed = true;
        }
}

static int decode_payload(Reader *r, SageMessage *m, SageListEntry *list_storage) {
        int code;

        switch (m->header.type) {
/* clang-format off */
#define SAGE_MESSAGE(NAME, NUMBER, REQUEST, FLAGS, FDS, REPLY_NAME, REPLY, REPLY_FDS, FEATURE, HANDLER) \
        case SAGE_MSG_##NAME: code = get_##REQUEST(r, m, list_storage); break;                          \
        case SAGE_MSG_##REPLY_NAME: code = get_##REPLY(r, m, list_storage); break;
/* clang-format on */
#include "proto.def"
#undef SAGE_MESSAGE
        case SAGE_MSG_ERROR: code = get_error(r, m, list_storage); break;
        default: return SAGE_ERR_UNKNOWN_TYPE;
        }
        if (code)
                return code;
        if (r->failed || r->pos != r->size)
                return SAGE_ERR_MALFORMED;
        return 0;
}

/* An ERROR to a peer of another version goes out in that version: its
 * layout is the same in all of them (proto.h), so the peer can read it. */
static bool error_answers_other_version(const SageMessage *m) {
        return m->header.type == SAGE_MSG_ERROR && m->header.version >= SAGE_PROTO_ERROR_VERSION_MIN;
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
        put_u16(&hw, error_answers_other_version(m) ? m->header.version : SAGE_PROTO_VERSION);
        put_u16(&hw, m->header.type);
        put_u32(&hw, m->header.flags);
        put_u32(&hw, m->header.request_id);
        put_u32(&hw, w.pos - SAGE_PROTO_HEADER_SIZE);
        return (ssize_t)w.pos;
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
        if (h->version != SAGE_PROTO_VERSION &&
            !(h->type == SAGE_MSG_ERROR && h->version >= SAGE_PROTO_ERROR_VERSION_MIN))
                return SAGE_ERR_VERSION;
        if (h->payload_length != size - SAGE_PROTO_HEADER_SIZE)
                return SAGE_ERR_MALFORMED;
        if (h->flags & ~allowed_flags(h->type))
                return SAGE_ERR_MALFORMED;
        payload = (Reader){ .p = r.p + r.pos, .size = h->payload_length };
        return decode_payload(&payload, out, list_storage);
}
