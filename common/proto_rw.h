/*
 * The protocol codec's cursor (private to common/proto_codec*.c): a Writer
 * and a Reader that know their bounds, with a sticky failure flag, and the
 * little-endian primitives over them. proto_codec.c holds the header and
 * most payloads; the payload codecs of other files are declared here.
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

#define get_u8(r) ((uint8_t)get_le((r), 1))
#define get_u16(r) ((uint16_t)get_le((r), 2))
#define get_u32(r) ((uint32_t)get_le((r), 4))
#define get_u64(r) get_le((r), 8)

/* Pointer-taking forms of the integer primitives, for VALUE_CODEC. */
static inline void put_u32_of(Writer *w, const uint32_t *v) {
        put_u32(w, *v);
}

static inline void get_u32_into(Reader *r, uint32_t *v) {
        *v = get_u32(r);
}

static inline void put_u64_of(Writer *w, const uint64_t *v) {
        put_u64(w, *v);
}

static inline void get_u64_into(Reader *r, uint64_t *v) {
        *v = get_u64(r);
}

/*
 * put_M and get_M (SageMessage member M) of a payload that is one value:
 * `put` writes it from a pointer, `get` reads it into one (any check of the
 * value is the caller's, after decoding). `linkage` is static, or empty for
 * the codecs declared below.
 */
#define VALUE_CODEC(linkage, member, put, get)                                     \
        linkage void put_##member(Writer *w, const SageMessage *m) {               \
                put(w, &m->member);                                                \
        }                                                                          \
        linkage int get_##member(Reader *r, SageMessage *m, SageListEntry *list) { \
                get(r, &m->member);                                                \
                return 0;                                                          \
        }

/* proto_codec_instances.c: the instance messages (suspend, issue 12). */
#define SAGE_PROTO_CODEC(member)                            \
        void put_##member(Writer *w, const SageMessage *m); \
        int get_##member(Reader *r, SageMessage *m, SageListEntry *list);
SAGE_PROTO_CODEC(instance_register)
SAGE_PROTO_CODEC(instances)
SAGE_PROTO_CODEC(instances_reply)
SAGE_PROTO_CODEC(suspend)
SAGE_PROTO_CODEC(suspend_reply)
SAGE_PROTO_CODEC(resume)
SAGE_PROTO_CODEC(resume_reply)
/* proto_codec_devices.c: DEVICES_REPLY (GPU identity by UUID, issue 15). */
SAGE_PROTO_CODEC(devices_reply)
#undef SAGE_PROTO_CODEC

#endif
