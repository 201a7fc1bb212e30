/*
 * Wire protocol codec: the bytes of every message, and nothing else.
 *
 * Encoding goes through a tiny cursor (Writer/Reader, proto_rw.h) that knows its bounds:
 * every put/get checks the remaining space first and records a sticky
 * failure, so no payload's code can walk off the buffer. That code is
 * generated from proto.def: one put_M/get_M pair per SageMessage member M,
 * from the field list of M's SAGE_PAYLOAD line, and a table of what each
 * type is (sage_proto_message_info) from its SAGE_MESSAGE line. The decoder is
 * strict on purpose: unknown flag bits, payloads of the wrong length for
 * their type, a boolean that is not 0/1, or an error message that is not
 * text are all SAGE_ERR_MALFORMED. The broker treats the peer as hostile;
 * being strict costs nothing and removes ambiguity between versions.
 */
#include "proto.h"

#include <errno.h>
#include <string.h>

#include "proto_rw.h"

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

/* A text of at most `max` bytes (its array holds one more, for the NUL),
 * after its length in `width` bytes. */
static void put_text(Writer *w, const char *text, size_t max, size_t width) {
        size_t n = strnlen(text, max);

        put_le(w, n, width);
        put_bytes(w, text, n);
}

static int get_text(Reader *r, char *text, size_t max, size_t width, bool (*valid)(const char *, size_t)) {
        size_t n = get_le(r, width);

        if (r->failed)
                return 0;
        if (n > max || r->size - r->pos != n || !valid((const char *)r->p + r->pos, n))
                return SAGE_ERR_MALFORMED;
        memcpy(text, r->p + r->pos, n);
        text[n] = 0;
        r->pos += n;
        return 0;
}

static bool text_printable(const char *text, size_t n) {
        for (size_t i = 0; i < n; i++)
                if ((uint8_t)text[i] < 0x20 || text[i] == 0x7f)
                        return false;
        return true;
}

/*
 * The payload codecs, generated from proto.def's SAGE_PAYLOAD and
 * SAGE_RECORD lines: put_M/put_R record failure in the Writer; get_M/get_R
 * in the Reader, or return a SageProtoError for a value out of range.
 * `p` is the member (or record) a field's path starts from.
 */
static void put_none(Writer *w, const SageMessage *m) {
}

static int get_none(Reader *r, SageMessage *m, SageListEntry *list) {
        return 0;
}

/* clang-format off */
#define U8(path) put_u8(w, (*p)path);
#define U16(path) put_u16(w, (*p)path);
#define U32(path) put_u32(w, (*p)path);
#define U64(path) put_u64(w, (*p)path);
#define BOOL(path) U8(path)
#define BYTES(path) put_bytes(w, (*p)path, sizeof((*p)path));
#define ZERO32 put_u32(w, 0);
#define HASH(path) U64(path.low) U64(path.high)
#define WHEN(cond, ...) if (cond) { __VA_ARGS__ }
#define NOTES(path) put_notes(w, &(*p)path);
#define TEXT(path, width, valid) put_text(w, (*p)path, sizeof((*p)path) - 1, width);
#define LIST(count, max, record, entries, store, ...)                              \
        if ((*p)count > max)                                                       \
                w->failed = true;                                                  \
        put_u32(w, (*p)count);                                                     \
        __VA_ARGS__                                                                \
        for (uint32_t i = 0; !w->failed && i < (*p)count; i++)                     \
                put_##record(w, &(*p)entries[i]);
#define REFUSE(cond) if (cond) w->failed = true;
#define REJECT(cond)
#define SAGE_RECORD(name, type, size, ...)                                         \
        typedef type record_##name;                                                \
        enum { record_size_##name = size };                                        \
        static void put_##name(Writer *w, const type *p) {                         \
                size_t start = w->pos;                                             \
                __VA_ARGS__                                                        \
                if (!w->failed && w->pos - start != size)                          \
                        w->failed = true;                                          \
        }
#define SAGE_PAYLOAD(member, ...)                                                  \
        static void put_##member(Writer *w, const SageMessage *m) {                \
                const __typeof__(m->member) *p = &m->member;                       \
                __VA_ARGS__                                                        \
        }
#include "proto.def"
#undef U8
#undef U16
#undef U32
#undef U64
#undef BOOL
#undef BYTES
#undef ZERO32
#undef NOTES
#undef TEXT
#undef LIST
#undef REFUSE
#undef REJECT
#undef SAGE_RECORD
#undef SAGE_PAYLOAD

#define U8(path) (*p)path = get_u8(r);
#define U16(path) (*p)path = get_u16(r);
#define U32(path) (*p)path = get_u32(r);
#define U64(path) (*p)path = get_u64(r);
#define BOOL(path) U8(path) REJECT((*p)path > 1)
#define BYTES(path) get_bytes(r, (*p)path, sizeof((*p)path));
#define ZERO32 REJECT(get_u32(r) != 0)
#define NOTES(path) REJECT(get_notes(r, &(*p)path))
#define TEXT(path, width, valid) REJECT(get_text(r, (*p)path, sizeof((*p)path) - 1, width, valid))
/* The count must match the payload exactly before anything is stored. */
#define LIST(count, max, record, entries, store, ...)                              \
        {                                                                          \
                uint32_t n = get_u32(r);                                           \
                record_##record *dst;                                              \
                __VA_ARGS__                                                        \
                if (r->failed)                                                     \
                        return 0;                                                  \
                if (n > max || r->size - r->pos != (size_t)n * record_size_##record) \
                        return SAGE_ERR_MALFORMED;                                 \
                dst = store;                                                       \
                if (n > 0 && !dst)                                                 \
                        return SAGE_ERR_INTERNAL;                                  \
                (*p)count = n;                                                     \
                for (uint32_t i = 0; i < n; i++) {                                 \
                        int code = get_##record(r, &dst[i]);                       \
                        if (code)                                                  \
                                return code;                                       \
                }                                                                  \
        }
#define REFUSE(cond)
#define REJECT(cond) if (cond) return SAGE_ERR_MALFORMED;
#define SAGE_RECORD(name, type, size, ...)                                         \
        static int get_##name(Reader *r, type *p) {                                \
                __VA_ARGS__                                                        \
                return 0;                                                          \
        }
#define SAGE_PAYLOAD(member, ...)                                                  \
        static int get_##member(Reader *r, SageMessage *m, SageListEntry *list) {  \
                __typeof__(m->member) *p = &m->member;                             \
                __VA_ARGS__                                                        \
                return 0;                                                          \
        }
#include "proto.def"
/* The field macros stay defined to the end of the file: nothing below uses their names. */
#undef SAGE_RECORD
#undef SAGE_PAYLOAD
/* clang-format on */

/* What each type is, and its payload's codec: requests and notices by
 * number, replies by number, and ERROR. */
#define NOTICE_TO_BROKER SAGE_NOTICE_TO_BROKER
#define NOTICE_TO_CLIENT SAGE_NOTICE_TO_CLIENT
static const SageMessageInfo requests[] = {
#define SAGE_MESSAGE(NAME, NUMBER, REQUEST, FLAGS, FDS, REPLY_NAME, REPLY, REPLY_FDS, FEATURE, HANDLER) \
        [NUMBER] = { #NAME, FLAGS, FEATURE, 0, put_##REQUEST, get_##REQUEST },
#define SAGE_NOTICE(NAME, NUMBER, PAYLOAD, FLAGS, FDS, DIRECTION, FEATURE, HANDLER) \
        [NUMBER] = { #NAME, FLAGS, FEATURE, NOTICE_##DIRECTION, put_##PAYLOAD, get_##PAYLOAD },
#include "proto.def"
#undef SAGE_NOTICE
#undef SAGE_MESSAGE
};

static const SageMessageInfo replies[] = {
#define SAGE_MESSAGE(NAME, NUMBER, REQUEST, FLAGS, FDS, REPLY_NAME, REPLY, REPLY_FDS, FEATURE, HANDLER) \
        [NUMBER] = { #REPLY_NAME, 0, 0, 0, put_##REPLY, get_##REPLY },
#include "proto.def"
#undef SAGE_MESSAGE
};

static const SageMessageInfo error_info = { "ERROR", 0, 0, 0, put_error, get_error };

const SageMessageInfo *sage_proto_message_info(unsigned type) {
        unsigned number = type & ~SAGE_MSG_REPLY_BIT;
        bool reply = type & SAGE_MSG_REPLY_BIT;
        const SageMessageInfo *table = reply ? replies : requests;
        size_t size = reply ? sizeof(replies) / sizeof(replies[0]) : sizeof(requests) / sizeof(requests[0]);

        if (type == SAGE_MSG_ERROR)
                return &error_info;
        return number < size && table[number].name ? &table[number] : NULL;
}

static uint32_t allowed_flags(unsigned type) {
        const SageMessageInfo *info = sage_proto_message_info(type);
        return info ? info->flags : 0;
}

static int decode_payload(Reader *r, SageMessage *m, SageListEntry *list_storage) {
        const SageMessageInfo *info = sage_proto_message_info(m->header.type);
        int code;

        if (!info)
                return SAGE_ERR_UNKNOWN_TYPE;
        code = info->get(r, m, list_storage);
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
        const SageMessageInfo *info = sage_proto_message_info(m->header.type);
        Writer w = { .p = buf, .size = size < SAGE_PROTO_MAX_MESSAGE ? size : SAGE_PROTO_MAX_MESSAGE };
        Writer hw;

        if (size < SAGE_PROTO_HEADER_SIZE)
                return -ENOBUFS;
        if (!info || m->header.flags & ~info->flags)
                return -EINVAL;
        w.pos = SAGE_PROTO_HEADER_SIZE;
        info->put(&w, m);
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
