/*
 * The protocol codec's cursor (private to common/proto*.c): a Writer and a
 * Reader that know their bounds, with a sticky failure flag, and the
 * little-endian primitives over them; and the table of message types that
 * proto_codec.c generates from proto.def.
 */
#ifndef SAGE_PROTO_RW_H
#define SAGE_PROTO_RW_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "proto.h"

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

static inline void put_bytes(Writer *w, const void *data, size_t n) {
        if (w->failed)
                return;
        if (w->size - w->pos < n) {
                w->failed = w->overflow = true;
                return;
        }
        memcpy(w->p + w->pos, data, n);
        w->pos += n;
}

static inline void put_le(Writer *w, uint64_t v, size_t n) {
        uint8_t b[8];
        for (size_t i = 0; i < n; i++)
                b[i] = (uint8_t)(v >> (8 * i));
        put_bytes(w, b, n);
}

#define put_u8(w, v) put_le((w), (v), 1)
#define put_u16(w, v) put_le((w), (v), 2)
#define put_u32(w, v) put_le((w), (v), 4)
#define put_u64(w, v) put_le((w), (v), 8)

static inline uint64_t get_le(Reader *r, size_t n) {
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

static inline void get_bytes(Reader *r, void *data, size_t n) {
        if (r->failed || r->size - r->pos < n) {
                r->failed = true;
                return;
        }
        memcpy(data, r->p + r->pos, n);
        r->pos += n;
}

#define get_u8(r) ((uint8_t)get_le((r), 1))
#define get_u16(r) ((uint16_t)get_le((r), 2))
#define get_u32(r) ((uint32_t)get_le((r), 4))
#define get_u64(r) get_le((r), 8)

/* What a message type is (proto.def), for proto.c and the codec. */
#define SAGE_NOTICE_TO_BROKER 1
#define SAGE_NOTICE_TO_CLIENT 2
typedef struct SageMessageInfo {
        const char *name;
        uint32_t flags;   /* header flags it may carry */
        uint64_t feature; /* the HELLO feature a request or notice needs (0: none) */
        int notice;       /* SAGE_NOTICE_TO_*, or 0: no notice */
        void (*put)(Writer *w, const SageMessage *m);
        int (*get)(Reader *r, SageMessage *m, SageListEntry *list);
} SageMessageInfo;

/* NULL for a type that does not exist. */
const SageMessageInfo *sage_proto_message_info(unsigned type);

#endif
