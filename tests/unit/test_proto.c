/* Unit test of common/proto: round trips of every message, strict rejection
 * of malformed input, fd passing, and a deterministic fuzz of the decoder. */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto.h"

#include "check.h"

static uint8_t buf[SAGE_PROTO_MAX_MESSAGE];
static SageListEntry list_in[SAGE_PROTO_LIST_MAX], list_out[SAGE_PROTO_LIST_MAX];
static uint8_t notes_in[SAGE_PROTO_NOTES_MAX + 1];

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng(void) {
        /* xorshift64*: deterministic, so a failure reproduces. */
        rng_state ^= rng_state >> 12;
        rng_state ^= rng_state << 25;
        rng_state ^= rng_state >> 27;
        return rng_state * 2685821657736338717ull;
}

static void roundtrip(const SageMessage *in, SageMessage *out) {
        ssize_t n = sage_proto_encode(in, buf, sizeof(buf));
        CHECK(n >= SAGE_PROTO_HEADER_SIZE);
        CHECK(sage_proto_decode(buf, (size_t)n, out, list_out) == 0);
        CHECK(out->header.type == in->header.type);
        CHECK(out->header.flags == in->header.flags);
        CHECK(out->header.request_id == in->header.request_id);
        CHECK(out->header.payload_length == (uint32_t)n - SAGE_PROTO_HEADER_SIZE);
        /* Every truncation of a valid message is rejected. */
        for (ssize_t k = 0; k < n; k++)
                CHECK(sage_proto_decode(buf, (size_t)k, out, list_out) != 0);
        CHECK(sage_proto_decode(buf, (size_t)n, out, list_out) == 0);
}

static void test_roundtrips(void) {
        SageMessage m, d;
        SageHash h = { 0x0123456789abcdefull, 0xfedcba9876543210ull };

        sage_proto_init(&m, SAGE_MSG_HELLO, 7);
        m.hello = (SageHello){ .client_version = 1, .pid = 4242, .features = SAGE_FEATURES_ALL | 1ull << 63 };
        roundtrip(&m, &d);
        CHECK(d.hello.client_version == 1 && d.hello.pid == 4242 &&
              d.hello.features == (SAGE_FEATURES_ALL | 1ull << 63));

        sage_proto_init(&m, SAGE_MSG_HELLO_REPLY, 7);
        m.hello_reply = (SageHelloReply){ 1, 8, 1000, 2 << 20, SAGE_FEATURE_CONTENT };
        roundtrip(&m, &d);
        CHECK(d.hello_reply.n_devices == 8 && d.hello_reply.namespace_id == 1000 &&
              d.hello_reply.granularity == 2 << 20 && d.hello_reply.features == SAGE_FEATURE_CONTENT);

        sage_proto_init(&m, SAGE_MSG_PING, 1);
        roundtrip(&m, &d);
        sage_proto_init(&m, SAGE_MSG_PONG, 1);
        roundtrip(&m, &d);

        sage_proto_init(&m, SAGE_MSG_LOOKUP, 9);
        m.lookup = (SageExtentKey){ h, 6ull << 30, 3 };
        roundtrip(&m, &d);
        CHECK(sage_hash_equal(d.lookup.hash, h) && d.lookup.size == 6ull << 30 && d.lookup.device == 3);

        sage_proto_init(&m, SAGE_MSG_LOOKUP_REPLY, 9);
        m.lookup_reply = (SageLookupReply){ 1, 55, 4 << 20, { 0, NULL } };
        roundtrip(&m, &d);
        CHECK(d.lookup_reply.found == 1 && d.lookup_reply.extent_id == 55 && sage_proto_expected_fds(&d) == 1);

        sage_proto_init(&m, SAGE_MSG_PUBLISH, 10);
        m.header.flags = SAGE_PUBLISH_SEALED;
        m.publish.key = (SageExtentKey){ h, 2 << 20, 0 };
        roundtrip(&m, &d);
        CHECK(d.header.flags == SAGE_PUBLISH_SEALED && sage_proto_expected_fds(&d) == 1);

        sage_proto_init(&m, SAGE_MSG_PUBLISH_REPLY, 10);
        m.publish_reply = (SagePublishReply){ 77, 1 };
        roundtrip(&m, &d);
        CHECK(d.publish_reply.extent_id == 77 && d.publish_reply.existed == 1);

        sage_proto_init(&m, SAGE_MSG_RELEASE, 11);
        m.release = 77;
        roundtrip(&m, &d);
        CHECK(d.release == 77);

        sage_proto_init(&m, SAGE_MSG_STATS_REPLY, 12);
        m.stats_reply = (SageStats){ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13 };
        roundtrip(&m, &d);
        CHECK(memcmp(&d.stats_reply, &m.stats_reply, sizeof(SageStats)) == 0);

        sage_proto_init(&m, SAGE_MSG_LIST, 13);
        m.list.after_id = 99;
        roundtrip(&m, &d);
        CHECK(d.list.after_id == 99);

        for (uint32_t n = 0; n <= SAGE_PROTO_LIST_MAX; n += SAGE_PROTO_LIST_MAX / 4) {
                for (uint32_t i = 0; i < n; i++)
                        list_in[i] =
                                (SageListEntry){ i + 1, 1000, { i, ~i }, 2 << 20, i % 8, i, 100 + i, 1, i * 1000ull };
                sage_proto_init(&m, SAGE_MSG_LIST_REPLY, 14);
                m.list_reply = (SageListReply){ n, n == SAGE_PROTO_LIST_MAX, list_in };
                roundtrip(&m, &d);
                CHECK(d.list_reply.n_entries == n && d.list_reply.more == (n == SAGE_PROTO_LIST_MAX));
                for (uint32_t i = 0; i < n; i++)
                        CHECK(memcmp(&list_out[i], &list_in[i], sizeof(SageListEntry)) == 0);
        }
        /* More entries than a reply may carry do not encode. */
        sage_proto_init(&m, SAGE_MSG_LIST_REPLY, 14);
        m.list_reply = (SageListReply){ SAGE_PROTO_LIST_MAX + 1, 0, list_in };
        CHECK(sage_proto_encode(&m, buf, sizeof(buf)) < 0);

        sage_proto_init(&m, SAGE_MSG_EVICT, 15);
        m.header.flags = SAGE_EVICT_ALL_UNREFERENCED;
        roundtrip(&m, &d);
        CHECK(d.header.flags == SAGE_EVICT_ALL_UNREFERENCED);

        sage_proto_init(&m, SAGE_MSG_EVICT_REPLY, 15);
        m.evict_reply = (SageEvictReply){ 3, 6 << 20 };
        roundtrip(&m, &d);

        SageIpcToken t;
        for (size_t i = 0; i < sizeof(t.bytes); i++)
                t.bytes[i] = (uint8_t)(0xf0 ^ i);
        sage_proto_init(&m, SAGE_MSG_IPC_EXPORT, 17);
        m.ipc_export = (SageIpcAllocation){ .size = 3ull << 32, .device = 5 };
        roundtrip(&m, &d);
        CHECK(d.ipc_export.size == 3ull << 32 && d.ipc_export.device == 5 && sage_proto_expected_fds(&d) == 1);
        CHECK(d.header.payload_length == 12);
        /* The field table of proto.h: size at payload offset 0, device at 8. */
        CHECK(buf[SAGE_PROTO_HEADER_SIZE + 4] == 3 && buf[SAGE_PROTO_HEADER_SIZE + 8] == 5);

        sage_proto_init(&m, SAGE_MSG_IPC_EXPORT_REPLY, 17);
        m.ipc_export_reply = t;
        roundtrip(&m, &d);
        CHECK(memcmp(d.ipc_export_reply.bytes, t.bytes, sizeof(t.bytes)) == 0 && sage_proto_expected_fds(&d) == 0);
        CHECK(d.header.payload_length == 16 && memcmp(buf + SAGE_PROTO_HEADER_SIZE, t.bytes, 16) == 0);

        sage_proto_init(&m, SAGE_MSG_IPC_IMPORT, 18);
        m.ipc_import = t;
        roundtrip(&m, &d);
        CHECK(memcmp(d.ipc_import.bytes, t.bytes, sizeof(t.bytes)) == 0 && sage_proto_expected_fds(&d) == 0);

        sage_proto_init(&m, SAGE_MSG_IPC_IMPORT_REPLY, 18);
        m.ipc_import_reply = (SageIpcAllocation){ .size = 2 << 20, .device = 1 };
        roundtrip(&m, &d);
        CHECK(d.ipc_import_reply.size == 2 << 20 && d.ipc_import_reply.device == 1 && sage_proto_expected_fds(&d) == 1);

        sage_proto_init(&m, SAGE_MSG_IPC_REVOKE, 19);
        m.ipc_revoke = t;
        roundtrip(&m, &d);
        CHECK(memcmp(d.ipc_revoke.bytes, t.bytes, sizeof(t.bytes)) == 0);

        sage_proto_init(&m, SAGE_MSG_IPC_REVOKE_REPLY, 19);
        roundtrip(&m, &d);
        CHECK(d.header.payload_length == 0);

        /* Notes: none, one byte, the most allowed; the bytes come back as sent. */
        for (size_t i = 0; i < sizeof(notes_in); i++)
                notes_in[i] = (uint8_t)(i * 131 + 7);
        static const uint32_t notes_lengths[] = { 0, 1, 1000, SAGE_PROTO_NOTES_MAX };
        for (size_t i = 0; i < sizeof(notes_lengths) / sizeof(notes_lengths[0]); i++) {
                uint32_t len = notes_lengths[i];

                sage_proto_init(&m, SAGE_MSG_PUBLISH, 20);
                m.header.flags = SAGE_PUBLISH_SEALED;
                m.publish.key = (SageExtentKey){ h, 2 << 20, 2 };
                m.publish.notes = (SageNotes){ len, len ? notes_in : NULL };
                roundtrip(&m, &d);
                CHECK(d.header.flags == SAGE_PUBLISH_SEALED && sage_proto_expected_fds(&d) == 1);
                CHECK(sage_hash_equal(d.publish.key.hash, h) && d.publish.key.size == 2 << 20 &&
                      d.publish.key.device == 2);
                CHECK(d.header.payload_length == 28 + 4 + len && d.publish.notes.length == len);
                /* The field table: the key, then notes_len, then the bytes (in place). */
                CHECK(buf[SAGE_PROTO_HEADER_SIZE + 18] == 0x20 && buf[SAGE_PROTO_HEADER_SIZE + 24] == 2);
                CHECK(buf[SAGE_PROTO_HEADER_SIZE + 28] == (len & 0xff) &&
                      buf[SAGE_PROTO_HEADER_SIZE + 29] == (len >> 8 & 0xff));
                CHECK(len == 0 ? d.publish.notes.bytes == NULL
                               : d.publish.notes.bytes == buf + SAGE_PROTO_HEADER_SIZE + 32 &&
                                         memcmp(d.publish.notes.bytes, notes_in, len) == 0);

                sage_proto_init(&m, SAGE_MSG_LOOKUP_REPLY, 21);
                m.lookup_reply = (SageLookupReply){ 1, 56, 4 << 20, { len, len ? notes_in : NULL } };
                roundtrip(&m, &d);
                CHECK(d.lookup_reply.found == 1 && d.lookup_reply.extent_id == 56 && d.lookup_reply.size == 4 << 20 &&
                      sage_proto_expected_fds(&d) == 1);
                CHECK(d.header.payload_length == 17 + 4 + len && d.lookup_reply.notes.length == len);
                CHECK(len == 0 || memcmp(d.lookup_reply.notes.bytes, notes_in, len) == 0);
                /* found, extent id, size first, byte for byte. */
                CHECK(buf[SAGE_PROTO_HEADER_SIZE] == 1 && buf[SAGE_PROTO_HEADER_SIZE + 1] == 56);
                CHECK(buf[SAGE_PROTO_HEADER_SIZE + 17] == (len & 0xff));
        }
        /* A file-keyed publish states the content key the broker verifies: after the key, before the notes. */
        sage_proto_init(&m, SAGE_MSG_PUBLISH, 20);
        m.header.flags = SAGE_PUBLISH_SEALED | SAGE_PUBLISH_CONTENT;
        m.publish.key = (SageExtentKey){ h, 2 << 20, 2 };
        m.publish.content = (SageHash){ 0x1122, 0x3344 };
        m.publish.notes = (SageNotes){ 3, notes_in };
        roundtrip(&m, &d);
        CHECK(d.header.payload_length == 28 + 16 + 4 + 3 && d.publish.content.low == 0x1122 &&
              d.publish.content.high == 0x3344 && d.publish.notes.length == 3 &&
              memcmp(d.publish.notes.bytes, notes_in, 3) == 0 && sage_proto_expected_fds(&d) == 1);
        CHECK(buf[SAGE_PROTO_HEADER_SIZE + 28] == 0x22 && buf[SAGE_PROTO_HEADER_SIZE + 44] == 3);

        sage_proto_init(&m, SAGE_MSG_LOOKUP_REPLY, 21);
        roundtrip(&m, &d); /* a miss: no fd, no notes */
        CHECK(d.lookup_reply.found == 0 && sage_proto_expected_fds(&d) == 0 && d.header.payload_length == 21);

        /* Over the cap, or a length without bytes, or notes on a miss: not encoded. */
        sage_proto_init(&m, SAGE_MSG_PUBLISH, 20);
        m.publish.notes = (SageNotes){ SAGE_PROTO_NOTES_MAX + 1, notes_in };
        CHECK(sage_proto_encode(&m, buf, sizeof(buf)) == -EINVAL);
        m.publish.notes = (SageNotes){ 1, NULL };
        CHECK(sage_proto_encode(&m, buf, sizeof(buf)) == -EINVAL);
        sage_proto_init(&m, SAGE_MSG_LOOKUP_REPLY, 21);
        m.lookup_reply.notes = (SageNotes){ 1, notes_in };
        CHECK(sage_proto_encode(&m, buf, sizeof(buf)) == -EINVAL);

        for (unsigned type = SAGE_MSG_IPC_EXPORT; type <= SAGE_MSG_IPC_REVOKE; type++) {
                CHECK(strcmp(sage_proto_type_name(type), "?") != 0);
                CHECK(strcmp(sage_proto_type_name(SAGE_MSG_REPLY_BIT | type), "?") != 0);
        }

        sage_proto_error(&m, 16, SAGE_ERR_BUDGET, "budget %s", "exhausted");
        roundtrip(&m, &d);
        CHECK(d.error.code == SAGE_ERR_BUDGET && strcmp(d.error.message, "budget exhausted") == 0);

        /* Unknown flag bits are refused on both sides. */
        sage_proto_init(&m, SAGE_MSG_PING, 1);
        m.header.flags = 0x80;
        CHECK(sage_proto_encode(&m, buf, sizeof(buf)) == -EINVAL);
        /* Too small a buffer. */
        sage_proto_init(&m, SAGE_MSG_STATS_REPLY, 1);
        CHECK(sage_proto_encode(&m, buf, 40) == -ENOBUFS);
}

static size_t valid_ping(void) {
        SageMessage m;
        sage_proto_init(&m, SAGE_MSG_LOOKUP, 3);
        return (size_t)sage_proto_encode(&m, buf, sizeof(buf));
}

/* Patch the u32 at `at` (little-endian). */
static void set_u32(size_t at, uint32_t v) {
        for (int i = 0; i < 4; i++)
                buf[at + i] = (uint8_t)(v >> (8 * i));
}

/* Notes whose length disagrees with the payload, exceeds the cap, or rides on a miss. */
static void test_rejects_notes(void) {
        static const struct {
                unsigned type;
                size_t notes_at; /* offset of notes_len in the payload */
        } noted[] = { { SAGE_MSG_PUBLISH, 28 }, { SAGE_MSG_LOOKUP_REPLY, 17 } };
        SageMessage m, d;
        size_t n;

        for (size_t i = 0; i < 2; i++) {
                const size_t len_at = SAGE_PROTO_HEADER_SIZE + noted[i].notes_at;

                sage_proto_init(&m, noted[i].type, 1);
                if (noted[i].type == SAGE_MSG_PUBLISH)
                        m.publish.notes = (SageNotes){ 100, notes_in };
                else
                        m.lookup_reply = (SageLookupReply){ 1, 5, 2 << 20, { 100, notes_in } };
                n = (size_t)sage_proto_encode(&m, buf, sizeof(buf));
                CHECK(n == len_at + 4 + 100);
                CHECK(sage_proto_decode(buf, n, &d, NULL) == 0);
                /* notes_len larger than what follows, by one and by a lot. */
                set_u32(len_at, 101);
                CHECK(sage_proto_decode(buf, n, &d, NULL) == SAGE_ERR_MALFORMED);
                set_u32(len_at, 0xffffffffu);
                CHECK(sage_proto_decode(buf, n, &d, NULL) == SAGE_ERR_MALFORMED);
                /* Smaller: the rest are trailing bytes. */
                set_u32(len_at, 99);
                CHECK(sage_proto_decode(buf, n, &d, NULL) == SAGE_ERR_MALFORMED);
                set_u32(len_at, 0);
                CHECK(sage_proto_decode(buf, n, &d, NULL) == SAGE_ERR_MALFORMED);
                /* One trailing byte after notes that are otherwise right. */
                set_u32(len_at, 100);
                buf[n] = 0;
                set_u32(16, (uint32_t)(n + 1 - SAGE_PROTO_HEADER_SIZE));
                CHECK(sage_proto_decode(buf, n + 1, &d, NULL) == SAGE_ERR_MALFORMED);
                /* notes_len itself cut short. */
                set_u32(16, (uint32_t)(len_at + 2 - SAGE_PROTO_HEADER_SIZE));
                CHECK(sage_proto_decode(buf, len_at + 2, &d, NULL) == SAGE_ERR_MALFORMED);
                /* Over the cap, however consistent with the payload. */
                memset(buf + len_at + 4, 0xab, SAGE_PROTO_NOTES_MAX + 1);
                set_u32(len_at, SAGE_PROTO_NOTES_MAX + 1);
                set_u32(16, (uint32_t)(len_at + 4 + SAGE_PROTO_NOTES_MAX + 1 - SAGE_PROTO_HEADER_SIZE));
                CHECK(sage_proto_decode(buf, len_at + 4 + SAGE_PROTO_NOTES_MAX + 1, &d, NULL) == SAGE_ERR_MALFORMED);
                /* Exactly at the cap: fine. */
                set_u32(len_at, SAGE_PROTO_NOTES_MAX);
                set_u32(16, (uint32_t)(len_at + 4 + SAGE_PROTO_NOTES_MAX - SAGE_PROTO_HEADER_SIZE));
                CHECK(sage_proto_decode(buf, len_at + 4 + SAGE_PROTO_NOTES_MAX, &d, NULL) == 0);
        }
        /* PUBLISH: SEALED and CONTENT (whose field must be there), no others. */
        sage_proto_init(&m, SAGE_MSG_PUBLISH, 1);
        n = (size_t)sage_proto_encode(&m, buf, sizeof(buf));
        buf[8] = SAGE_PUBLISH_SEALED;
        CHECK(sage_proto_decode(buf, n, &d, NULL) == 0 && d.header.flags == SAGE_PUBLISH_SEALED);
        buf[8] = SAGE_PUBLISH_CONTENT; /* 4 bytes of payload after the key: no content key */
        CHECK(sage_proto_decode(buf, n, &d, NULL) == SAGE_ERR_MALFORMED);
        buf[8] = 4;
        CHECK(sage_proto_decode(buf, n, &d, NULL) == SAGE_ERR_MALFORMED);
        /* A miss with notes, and a found that is neither 0 nor 1. */
        sage_proto_init(&m, SAGE_MSG_LOOKUP_REPLY, 1);
        m.lookup_reply.found = 1;
        m.lookup_reply.notes = (SageNotes){ 3, notes_in };
        n = (size_t)sage_proto_encode(&m, buf, sizeof(buf));
        CHECK(sage_proto_decode(buf, n, &d, NULL) == 0);
        buf[SAGE_PROTO_HEADER_SIZE] = 0;
        CHECK(sage_proto_decode(buf, n, &d, NULL) == SAGE_ERR_MALFORMED);
        buf[SAGE_PROTO_HEADER_SIZE] = 2;
        CHECK(sage_proto_decode(buf, n, &d, NULL) == SAGE_ERR_MALFORMED);
        /* LOOKUP is a bare key: one byte short or long. */
        sage_proto_init(&m, SAGE_MSG_LOOKUP, 1);
        n = (size_t)sage_proto_encode(&m, buf, sizeof(buf));
        set_u32(16, 27);
        CHECK(sage_proto_decode(buf, n - 1, &d, NULL) == SAGE_ERR_MALFORMED);
        set_u32(16, 29);
        buf[n] = 0;
        CHECK(sage_proto_decode(buf, n + 1, &d, NULL) == SAGE_ERR_MALFORMED);
        /* PUBLISH_REPLY: existed neither 0 nor 1. */
        sage_proto_init(&m, SAGE_MSG_PUBLISH_REPLY, 1);
        n = (size_t)sage_proto_encode(&m, buf, sizeof(buf));
        buf[SAGE_PROTO_HEADER_SIZE + 8] = 2;
        CHECK(sage_proto_decode(buf, n, &d, NULL) == SAGE_ERR_MALFORMED);
}

/* ERROR reads the same in every version from 2 on: saged answers a peer of
 * another version in that version, and a peer decodes an ERROR of any. */
static void test_error_across_versions(void) {
        SageMessage m, d;
        ssize_t n;

        sage_proto_error(&m, 5, SAGE_ERR_VERSION, "protocol version 2 not spoken");
        m.header.version = 2;
        n = sage_proto_encode(&m, buf, sizeof(buf));
        CHECK(n > 0 && buf[4] == 2 && buf[5] == 0);
        CHECK(sage_proto_decode(buf, (size_t)n, &d, NULL) == 0);
        CHECK(d.header.version == 2 && d.error.code == SAGE_ERR_VERSION && d.header.request_id == 5);
        CHECK(strcmp(d.error.message, "protocol version 2 not spoken") == 0);
        /* An ERROR of a later version too (the layout is frozen). */
        buf[4] = SAGE_PROTO_VERSION + 1;
        CHECK(sage_proto_decode(buf, (size_t)n, &d, NULL) == 0 && d.error.code == SAGE_ERR_VERSION);
        /* Version 1 predates that promise; a version below 2 is never echoed. */
        buf[4] = 1;
        CHECK(sage_proto_decode(buf, (size_t)n, &d, NULL) == SAGE_ERR_VERSION && d.header.version == 1);
        m.header.version = 1;
        CHECK(sage_proto_encode(&m, buf, sizeof(buf)) == n && buf[4] == SAGE_PROTO_VERSION);
        /* Any other type keeps to our own version on both sides. */
        sage_proto_init(&m, SAGE_MSG_PING, 1);
        m.header.version = 2;
        n = sage_proto_encode(&m, buf, sizeof(buf));
        CHECK(n == SAGE_PROTO_HEADER_SIZE && buf[4] == SAGE_PROTO_VERSION);
        buf[4] = 2;
        CHECK(sage_proto_decode(buf, (size_t)n, &d, NULL) == SAGE_ERR_VERSION && d.header.version == 2);
}

static void test_rejects(void) {
        SageMessage d;
        size_t n;

        n = valid_ping();
        buf[0] ^= 1;
        CHECK(sage_proto_decode(buf, n, &d, NULL) == SAGE_ERR_BAD_MAGIC);

        n = valid_ping();
        buf[4] = SAGE_PROTO_VERSION + 1;
        CHECK(sage_proto_decode(buf, n, &d, NULL) == SAGE_ERR_VERSION);

        n = valid_ping();
        buf[6] = 0x55;
        CHECK(sage_proto_decode(buf, n, &d, NULL) == SAGE_ERR_UNKNOWN_TYPE);

        n = valid_ping();
        buf[16] += 1; /* payload length says one more byte than there is */
        CHECK(sage_proto_decode(buf, n, &d, NULL) == SAGE_ERR_MALFORMED);

        /* Version 2's PUBLISH_NOTED (12) and LOOKUP_NOTED (13), in a version-3 header: no such types. */
        for (uint8_t type = 12; type <= 13; type++) {
                n = valid_ping();
                buf[6] = type;
                CHECK(sage_proto_decode(buf, n, &d, NULL) == SAGE_ERR_UNKNOWN_TYPE);
        }

        n = valid_ping();
        buf[8] = 1; /* a flag LOOKUP does not have */
        CHECK(sage_proto_decode(buf, n, &d, NULL) == SAGE_ERR_MALFORMED);

        n = valid_ping();
        buf[n] = 0; /* one trailing byte, length field adjusted */
        buf[16] += 1;
        CHECK(sage_proto_decode(buf, n + 1, &d, NULL) == SAGE_ERR_MALFORMED);

        CHECK(sage_proto_decode(buf, SAGE_PROTO_MAX_MESSAGE + 1, &d, NULL) == SAGE_ERR_TOO_LARGE);
        CHECK(sage_proto_decode(buf, 0, &d, NULL) == SAGE_ERR_MALFORMED);

        /* A LIST reply whose count disagrees with its length. */
        SageMessage m;
        sage_proto_init(&m, SAGE_MSG_LIST_REPLY, 1);
        m.list_reply = (SageListReply){ 2, 0, list_in };
        n = (size_t)sage_proto_encode(&m, buf, sizeof(buf));
        buf[SAGE_PROTO_HEADER_SIZE] = 3;
        CHECK(sage_proto_decode(buf, n, &d, list_out) == SAGE_ERR_MALFORMED);
        buf[SAGE_PROTO_HEADER_SIZE] = 0xff; /* and a huge one */
        buf[SAGE_PROTO_HEADER_SIZE + 3] = 0xff;
        CHECK(sage_proto_decode(buf, n, &d, list_out) == SAGE_ERR_MALFORMED);

        /* A LIST reply of more entries than the caller's storage holds, its
         * lengths consistent (it still fits a message): refused. */
        {
                static SageListEntry roomy[2 * SAGE_PROTO_LIST_MAX]; /* so that a bug cannot overflow */
                uint32_t count = SAGE_PROTO_LIST_MAX + 1;
                size_t payload = 4 + 1 + (size_t)count * SAGE_PROTO_LIST_ENTRY_SIZE;
                sage_proto_init(&m, SAGE_MSG_LIST_REPLY, 1);
                m.list_reply = (SageListReply){ 0, 0, list_in };
                CHECK(sage_proto_encode(&m, buf, sizeof(buf)) == SAGE_PROTO_HEADER_SIZE + 5);
                CHECK(SAGE_PROTO_HEADER_SIZE + payload <= sizeof(buf));
                for (int i = 0; i < 4; i++) {
                        buf[16 + i] = (uint8_t)(payload >> (8 * i));
                        buf[SAGE_PROTO_HEADER_SIZE + i] = (uint8_t)(count >> (8 * i));
                }
                buf[SAGE_PROTO_HEADER_SIZE + 4] = 0;
                memset(buf + SAGE_PROTO_HEADER_SIZE + 5, 0, payload - 5);
                CHECK(sage_proto_decode(buf, SAGE_PROTO_HEADER_SIZE + payload, &d, roomy) == SAGE_ERR_MALFORMED);
        }

        /* An error message with control characters. */
        sage_proto_error(&m, 1, SAGE_ERR_INTERNAL, "abc");
        n = (size_t)sage_proto_encode(&m, buf, sizeof(buf));
        buf[n - 1] = '\n';
        CHECK(sage_proto_decode(buf, n, &d, NULL) == SAGE_ERR_MALFORMED);

        /* An error message longer than the decoder's buffer, printable and
         * consistent in every length field: refused, never copied. */
        for (size_t len = SAGE_PROTO_ERROR_MESSAGE_MAX; len <= SAGE_PROTO_ERROR_MESSAGE_MAX + 800; len += 200) {
                sage_proto_error(&m, 1, SAGE_ERR_INTERNAL, "abc");
                n = (size_t)sage_proto_encode(&m, buf, sizeof(buf));
                CHECK(n == SAGE_PROTO_HEADER_SIZE + 4 + 2 + 3);
                n = SAGE_PROTO_HEADER_SIZE + 4 + 2 + len;
                CHECK(n <= sizeof(buf));
                buf[16] = (uint8_t)((n - SAGE_PROTO_HEADER_SIZE) & 0xff); /* payload length, little-endian */
                buf[17] = (uint8_t)((n - SAGE_PROTO_HEADER_SIZE) >> 8);
                buf[SAGE_PROTO_HEADER_SIZE + 4] = (uint8_t)(len & 0xff);
                buf[SAGE_PROTO_HEADER_SIZE + 5] = (uint8_t)(len >> 8);
                memset(buf + SAGE_PROTO_HEADER_SIZE + 6, 'x', len);
                CHECK(sage_proto_decode(buf, n, &d, NULL) ==
                      (len == SAGE_PROTO_ERROR_MESSAGE_MAX ? 0 : SAGE_ERR_MALFORMED));
        }

        /* IPC messages: a token one byte short or long, a flag they do not have. */
        static const unsigned token_types[] = { SAGE_MSG_IPC_EXPORT_REPLY, SAGE_MSG_IPC_IMPORT, SAGE_MSG_IPC_REVOKE };
        for (size_t i = 0; i < sizeof(token_types) / sizeof(token_types[0]); i++) {
                sage_proto_init(&m, token_types[i], 1);
                n = (size_t)sage_proto_encode(&m, buf, sizeof(buf));
                CHECK(n == SAGE_PROTO_HEADER_SIZE + 16);
                buf[16] = 15;
                CHECK(sage_proto_decode(buf, n - 1, &d, NULL) == SAGE_ERR_MALFORMED);
                buf[16] = 17;
                buf[n] = 0;
                CHECK(sage_proto_decode(buf, n + 1, &d, NULL) == SAGE_ERR_MALFORMED);
                buf[16] = 16;
                CHECK(sage_proto_decode(buf, n, &d, NULL) == 0);
                buf[8] = 1;
                CHECK(sage_proto_decode(buf, n, &d, NULL) == SAGE_ERR_MALFORMED);
                m.header.flags = 1;
                CHECK(sage_proto_encode(&m, buf, sizeof(buf)) == -EINVAL);
        }
        static const unsigned allocation_types[] = { SAGE_MSG_IPC_EXPORT, SAGE_MSG_IPC_IMPORT_REPLY };
        for (size_t i = 0; i < 2; i++) {
                sage_proto_init(&m, allocation_types[i], 1);
                n = (size_t)sage_proto_encode(&m, buf, sizeof(buf));
                CHECK(n == SAGE_PROTO_HEADER_SIZE + 12);
                buf[16] = 8; /* size only, no device */
                CHECK(sage_proto_decode(buf, n - 4, &d, NULL) == SAGE_ERR_MALFORMED);
                buf[16] = 16; /* a token where size + device belong */
                memset(buf + n, 0, 4);
                CHECK(sage_proto_decode(buf, n + 4, &d, NULL) == SAGE_ERR_MALFORMED);
        }
        /* A REVOKE reply has no payload. */
        sage_proto_init(&m, SAGE_MSG_IPC_REVOKE_REPLY, 1);
        n = (size_t)sage_proto_encode(&m, buf, sizeof(buf));
        buf[16] = 1;
        buf[n] = 0;
        CHECK(sage_proto_decode(buf, n + 1, &d, NULL) == SAGE_ERR_MALFORMED);

        /* A boolean that is neither 0 nor 1. */
        sage_proto_init(&m, SAGE_MSG_LOOKUP_REPLY, 1);
        n = (size_t)sage_proto_encode(&m, buf, sizeof(buf));
        buf[SAGE_PROTO_HEADER_SIZE] = 2;
        CHECK(sage_proto_decode(buf, n, &d, NULL) == SAGE_ERR_MALFORMED);

        test_rejects_notes();
}

/* Random bytes, random valid-looking headers, and mutations of valid messages:
 * the decoder returns a code for each and never reads out of bounds (ASan). */
static void test_fuzz(void) {
        /* Every type of proto.def, and ERROR. */
        static const unsigned types[] = {
#define SAGE_MESSAGE(NAME, NUMBER, REQUEST, FLAGS, FDS, REPLY_NAME, REPLY, REPLY_FDS, FEATURE, HANDLER) \
        SAGE_MSG_##NAME, SAGE_MSG_##REPLY_NAME,
#include "proto.def"
#undef SAGE_MESSAGE
                SAGE_MSG_ERROR,
        };
        unsigned accepted = 0, rejected = 0;
        SageMessage m, d;

        for (int iter = 0; iter < 200000; iter++) {
                size_t len;
                int mode = (int)(rng() % 3);
                uint8_t *p;

                if (mode == 0) {
                        len = (size_t)(rng() % 256);
                        for (size_t i = 0; i < len; i++)
                                buf[i] = (uint8_t)rng();
                } else {
                        sage_proto_init(&m, types[rng() % (sizeof(types) / sizeof(types[0]))], (uint32_t)rng());
                        if (m.header.type == SAGE_MSG_LIST_REPLY)
                                m.list_reply = (SageListReply){ (uint32_t)(rng() % 8), 0, list_in };
                        if (m.header.type == SAGE_MSG_ERROR)
                                snprintf(m.error.message, sizeof(m.error.message), "err %u", (unsigned)rng());
                        if (m.header.type == SAGE_MSG_PUBLISH)
                                m.publish.notes = (SageNotes){ (uint32_t)(rng() % 64), notes_in };
                        if (m.header.type == SAGE_MSG_LOOKUP_REPLY && rng() % 2) {
                                m.lookup_reply.found = 1;
                                m.lookup_reply.notes = (SageNotes){ (uint32_t)(rng() % 64), notes_in };
                        }
                        if (m.header.type == SAGE_MSG_LABEL)
                                m.label = (uint32_t)rng();
                        if (m.header.type == SAGE_MSG_DEVICES_REPLY) {
                                m.devices_reply.n_devices = (uint32_t)(rng() % 4);
                                for (uint32_t i = 0; i < m.devices_reply.n_devices; i++)
                                        m.devices_reply.devices[i] = (SageDeviceEntry){
                                                .uuid = { (uint8_t)rng(), (uint8_t)i }, .memory = rng(), .flags = 1
                                        };
                        }
                        if (m.header.type == SAGE_MSG_LABEL_REPLY)
                                snprintf(m.label_reply.name, sizeof(m.label_reply.name), "tenant-%u",
                                         (unsigned)(rng() % 1000));
                        if (m.header.type == SAGE_MSG_IPC_IMPORT || m.header.type == SAGE_MSG_IPC_REVOKE)
                                for (size_t i = 0; i < SAGE_IPC_TOKEN_SIZE; i++)
                                        m.ipc_import.bytes[i] = (uint8_t)rng();
                        ssize_t n = sage_proto_encode(&m, buf, sizeof(buf));
                        CHECK(n > 0);
                        len = (size_t)n;
                        if (mode == 2) {
                                /* 1..4 mutations: flip, overwrite, or change the length. */
                                for (int k = 0, nm = 1 + (int)(rng() % 4); k < nm; k++) {
                                        switch (rng() % 4) {
                                        case 0: buf[rng() % len] ^= (uint8_t)(1u << (rng() % 8)); break;
                                        case 1: buf[rng() % len] = (uint8_t)rng(); break;
                                        case 2: len = (size_t)(rng() % (len + 1)); break;
                                        case 3:
                                                if (len + 8 < sizeof(buf))
                                                        for (int j = 0; j < 8; j++)
                                                                buf[len++] = (uint8_t)rng();
                                                break;
                                        }
                                        if (len == 0)
                                                break;
                                }
                        }
                }
                /* Decode from an exact-size heap copy so ASan catches any over-read. */
                p = malloc(len ? len : 1);
                CHECK(p);
                memcpy(p, buf, len);
                int r = sage_proto_decode(p, len, &d, list_out);
                CHECK(r >= 0 && r < _SAGE_ERR_MAX);
                if (r == 0) {
                        accepted++;
                        /* Whatever decodes must re-encode to the same bytes (decoded
                         * notes point into p: it goes after). */
                        uint8_t again[SAGE_PROTO_MAX_MESSAGE];
                        ssize_t n2 = sage_proto_encode(&d, again, sizeof(again));
                        CHECK(n2 == (ssize_t)len && memcmp(again, buf, len) == 0);
                } else
                        rejected++;
                free(p);
        }
        CHECK(accepted > 1000 && rejected > 1000);
        printf("fuzz: %u accepted, %u rejected\n", accepted, rejected);
}

static void test_fd_passing(void) {
        int sv[2], fds[3], got[SAGE_PROTO_MAX_FDS];
        size_t n_got;
        SageMessage m, d;
        ssize_t n;

        CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
        for (int i = 0; i < 3; i++)
                fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);

        sage_proto_init(&m, SAGE_MSG_PUBLISH, 5);
        m.header.flags = SAGE_PUBLISH_SEALED;
        CHECK(sage_proto_send_message(sv[0], &m, fds, 1) == 0);
        n = sage_proto_recv(sv[1], buf, sizeof(buf), got, SAGE_PROTO_MAX_FDS, &n_got);
        CHECK(n > 0 && n_got == 1);
        CHECK(fcntl(got[0], F_GETFD) & FD_CLOEXEC);
        CHECK(sage_proto_decode(buf, (size_t)n, &d, NULL) == 0 && d.header.request_id == 5);
        close(got[0]);

        /* More fds than the receiver accepts: all closed, message refused. */
        sage_proto_init(&m, SAGE_MSG_PING, 6);
        CHECK(sage_proto_send_message(sv[0], &m, fds, 3) == 0);
        n = sage_proto_recv(sv[1], buf, sizeof(buf), got, 1, &n_got);
        CHECK(n == -EBADMSG && n_got == 0);

        /* A message larger than the receive buffer is refused (its fds closed). */
        CHECK(sage_proto_send(sv[0], buf, 100, fds, 1) == 0);
        n = sage_proto_recv(sv[1], buf, 50, got, SAGE_PROTO_MAX_FDS, &n_got);
        CHECK(n == -EMSGSIZE && n_got == 0);

        /* IPC_EXPORT carries its fd like PUBLISH. */
        sage_proto_init(&m, SAGE_MSG_IPC_EXPORT, 7);
        m.ipc_export.size = 4096;
        CHECK(sage_proto_send_message(sv[0], &m, fds, 1) == 0);
        n = sage_proto_recv(sv[1], buf, sizeof(buf), got, SAGE_PROTO_MAX_FDS, &n_got);
        CHECK(n > 0 && n_got == 1);
        CHECK(sage_proto_decode(buf, (size_t)n, &d, NULL) == 0 && n_got == sage_proto_expected_fds(&d));
        close(got[0]);

        /* A zero-length message with fds is no end of stream: refused, its fds closed. */
        CHECK(sage_proto_send(sv[0], buf, 0, fds, 2) == 0);
        n = sage_proto_recv(sv[1], buf, sizeof(buf), got, SAGE_PROTO_MAX_FDS, &n_got);
        CHECK(n == -EBADMSG && n_got == 0);
        CHECK(sage_proto_send(sv[0], buf, 0, fds, 1) == 0);
        n = sage_proto_recv(sv[1], buf, sizeof(buf), got, 1, &n_got);
        CHECK(n == -EBADMSG && n_got == 0);

        /* No fd leaked: the next fd number is the lowest free one. */
        int probe = open("/dev/null", O_RDONLY | O_CLOEXEC);
        CHECK(probe == fds[2] + 1);
        close(probe);

        close(sv[0]);
        n = sage_proto_recv(sv[1], buf, sizeof(buf), got, SAGE_PROTO_MAX_FDS, &n_got);
        CHECK(n == 0);
        close(sv[1]);
        for (int i = 0; i < 3; i++)
                close(fds[i]);
}

/* LABEL / LABEL_REPLY: names are 1..63 bytes of [A-Za-z0-9._-], on both sides. */
static void test_labels(void) {
        SageMessage m, d;
        ssize_t n;

        CHECK(sage_proto_label_valid("tenant-a", 8) && sage_proto_label_valid("A.b_9-", 6));
        CHECK(!sage_proto_label_valid("", 0) && !sage_proto_label_valid("a/b", 3) && !sage_proto_label_valid("a b", 3));
        CHECK(!sage_proto_label_valid("a=b", 3) && !sage_proto_label_valid("\xc3\xa9", 2));
        char longest[SAGE_PROTO_LABEL_MAX + 2];
        memset(longest, 'x', sizeof(longest));
        CHECK(sage_proto_label_valid(longest, SAGE_PROTO_LABEL_MAX) &&
              !sage_proto_label_valid(longest, SAGE_PROTO_LABEL_MAX + 1));
        CHECK(sage_namespace_label(3ull << 32 | 1000) == 3 && sage_namespace_uid(3ull << 32 | 1000) == 1000);

        sage_proto_init(&m, SAGE_MSG_LABEL, 30);
        m.label = 0xfffffffeu;
        n = sage_proto_encode(&m, buf, sizeof(buf));
        CHECK(n == SAGE_PROTO_HEADER_SIZE + 4);
        CHECK(sage_proto_decode(buf, (size_t)n, &d, NULL) == 0 && d.label == 0xfffffffeu);

        sage_proto_init(&m, SAGE_MSG_LABEL_REPLY, 31);
        memcpy(m.label_reply.name, longest, SAGE_PROTO_LABEL_MAX);
        n = sage_proto_encode(&m, buf, sizeof(buf));
        CHECK(n == SAGE_PROTO_HEADER_SIZE + 1 + SAGE_PROTO_LABEL_MAX);
        CHECK(sage_proto_decode(buf, (size_t)n, &d, NULL) == 0 && strlen(d.label_reply.name) == SAGE_PROTO_LABEL_MAX);
        /* A character outside the set, a length that disagrees, an empty name. */
        buf[SAGE_PROTO_HEADER_SIZE + 5] = '/';
        CHECK(sage_proto_decode(buf, (size_t)n, &d, NULL) == SAGE_ERR_MALFORMED);
        buf[SAGE_PROTO_HEADER_SIZE + 5] = 'x';
        buf[SAGE_PROTO_HEADER_SIZE] = SAGE_PROTO_LABEL_MAX - 1;
        CHECK(sage_proto_decode(buf, (size_t)n, &d, NULL) == SAGE_ERR_MALFORMED);
        buf[SAGE_PROTO_HEADER_SIZE] = 0;
        set_u32(16, 1);
        CHECK(sage_proto_decode(buf, SAGE_PROTO_HEADER_SIZE + 1, &d, NULL) == SAGE_ERR_MALFORMED);
        /* Over-long: 64 bytes, however consistent. */
        buf[SAGE_PROTO_HEADER_SIZE] = SAGE_PROTO_LABEL_MAX + 1;
        memset(buf + SAGE_PROTO_HEADER_SIZE + 1, 'x', SAGE_PROTO_LABEL_MAX + 1);
        set_u32(16, SAGE_PROTO_LABEL_MAX + 2);
        CHECK(sage_proto_decode(buf, SAGE_PROTO_HEADER_SIZE + SAGE_PROTO_LABEL_MAX + 2, &d, NULL) ==
              SAGE_ERR_MALFORMED);
        /* The encoder refuses what the decoder would. */
        sage_proto_init(&m, SAGE_MSG_LABEL_REPLY, 31);
        CHECK(sage_proto_encode(&m, buf, sizeof(buf)) == -EINVAL);
        strcpy(m.label_reply.name, "no spaces");
        CHECK(sage_proto_encode(&m, buf, sizeof(buf)) == -EINVAL);
}

/* What proto.def generates: a name for every type, the features, the fixed version-2 layouts. */
static void test_table(void) {
        static const struct {
                unsigned type;
                uint64_t feature;
        } requests[] = {
#define SAGE_MESSAGE(NAME, NUMBER, REQUEST, FLAGS, FDS, REPLY_NAME, REPLY, REPLY_FDS, FEATURE, HANDLER) \
        { SAGE_MSG_##NAME, FEATURE },
#include "proto.def"
#undef SAGE_MESSAGE
        };
        SageMessage m;

        CHECK((sizeof(requests) / sizeof(requests[0])) == 17);
        for (size_t i = 0; i < (sizeof(requests) / sizeof(requests[0])); i++) {
                unsigned t = requests[i].type;
                CHECK(strcmp(sage_proto_type_name(t), "?") != 0);
                CHECK(strcmp(sage_proto_type_name(t | SAGE_MSG_REPLY_BIT), "?") != 0);
                CHECK(sage_proto_feature(t) == requests[i].feature);
                CHECK((requests[i].feature & ~SAGE_FEATURES_ALL) == 0);
        }
        CHECK(strcmp(sage_proto_type_name(SAGE_MSG_PONG), "PONG") == 0);
        CHECK(strcmp(sage_proto_type_name(SAGE_MSG_LOOKUP_REPLY), "LOOKUP_REPLY") == 0);
        /* Version 2's PUBLISH_NOTED and LOOKUP_NOTED (12, 13) are no types now. */
        CHECK(strcmp(sage_proto_type_name(12), "?") == 0 && strcmp(sage_proto_type_name(13), "?") == 0);
        CHECK(strcmp(sage_proto_type_name(20), "?") == 0);
        CHECK(sage_proto_feature(SAGE_MSG_DEVICES) == SAGE_FEATURE_DEVICES);
        CHECK(sage_proto_feature(SAGE_MSG_SUSPEND) == SAGE_FEATURE_INSTANCES);
        CHECK(sage_proto_feature(SAGE_MSG_LOOKUP) == 0 && sage_proto_feature(SAGE_MSG_IPC_IMPORT) == SAGE_FEATURE_IPC);
        CHECK(sage_proto_feature(SAGE_MSG_PUBLISH) == 0);
        /* Layouts since version 2: HELLO 16 bytes, HELLO_REPLY 32, STATS_REPLY 13 u64s. */
        sage_proto_init(&m, SAGE_MSG_HELLO, 1);
        CHECK(sage_proto_encode(&m, buf, sizeof(buf)) == SAGE_PROTO_HEADER_SIZE + 16);
        sage_proto_init(&m, SAGE_MSG_HELLO_REPLY, 1);
        CHECK(sage_proto_encode(&m, buf, sizeof(buf)) == SAGE_PROTO_HEADER_SIZE + 32);
        sage_proto_init(&m, SAGE_MSG_STATS_REPLY, 1);
        CHECK(sage_proto_encode(&m, buf, sizeof(buf)) == SAGE_PROTO_HEADER_SIZE + 13 * 8);
        /* A version-1 HELLO (8 bytes) is malformed now, whatever its header says. */
        sage_proto_init(&m, SAGE_MSG_PING, 1);
        CHECK(sage_proto_encode(&m, buf, sizeof(buf)) == SAGE_PROTO_HEADER_SIZE);
        buf[6] = SAGE_MSG_HELLO;
        buf[16] = 8;
        SageMessage d;
        CHECK(sage_proto_decode(buf, SAGE_PROTO_HEADER_SIZE + 8, &d, NULL) == SAGE_ERR_MALFORMED);
}

/* DEVICES_REPLY: the broker's table by UUID; bounded, exact, known flags, zero reserved bytes. */
static void test_devices(void) {
        char text[SAGE_UUID_STRING_SIZE];
        SageMessage m, d;
        ssize_t n;

        sage_proto_init(&m, SAGE_MSG_DEVICES, 5);
        n = sage_proto_encode(&m, buf, sizeof(buf));
        CHECK(n == SAGE_PROTO_HEADER_SIZE && sage_proto_decode(buf, (size_t)n, &d, NULL) == 0);
        sage_proto_init(&m, SAGE_MSG_DEVICES_REPLY, 5);
        m.devices_reply.n_devices = 2;
        for (int i = 0; i < 2; i++) {
                memset(m.devices_reply.devices[i].uuid, 0x10 * (i + 1), 16);
                m.devices_reply.devices[i].memory = (80ull << 30) + (uint64_t)i;
                m.devices_reply.devices[i].flags = i ? SAGE_DEVICE_SERVED : 0;
        }
        n = sage_proto_encode(&m, buf, sizeof(buf));
        CHECK(n == SAGE_PROTO_HEADER_SIZE + 4 + 2 * SAGE_PROTO_DEVICE_ENTRY_SIZE);
        CHECK(sage_proto_decode(buf, (size_t)n, &d, NULL) == 0 && d.devices_reply.n_devices == 2 &&
              d.devices_reply.devices[1].uuid[15] == 0x20 && d.devices_reply.devices[1].memory == (80ull << 30) + 1 &&
              d.devices_reply.devices[1].flags == SAGE_DEVICE_SERVED && d.devices_reply.devices[0].flags == 0);
        buf[SAGE_PROTO_HEADER_SIZE + 4 + 28] = 1; /* a reserved byte */
        CHECK(sage_proto_decode(buf, (size_t)n, &d, NULL) == SAGE_ERR_MALFORMED);
        buf[SAGE_PROTO_HEADER_SIZE + 4 + 28] = 0;
        buf[SAGE_PROTO_HEADER_SIZE + 4 + 24] = 0x80; /* an unknown flag */
        CHECK(sage_proto_decode(buf, (size_t)n, &d, NULL) == SAGE_ERR_MALFORMED);
        buf[SAGE_PROTO_HEADER_SIZE + 4 + 24] = 0;
        buf[SAGE_PROTO_HEADER_SIZE] = 3; /* more entries than bytes */
        CHECK(sage_proto_decode(buf, (size_t)n, &d, NULL) == SAGE_ERR_MALFORMED);
        m.devices_reply.n_devices = SAGE_PROTO_DEVICES_MAX + 1;
        CHECK(sage_proto_encode(&m, buf, sizeof(buf)) == -EINVAL);

        static const uint8_t u[16] = {
                0x53, 0x41, 0x47, 0x45, 0x46, 0x41, 0x4b, 0x45, 0x47, 0x50, 0x55, 0, 0, 0, 0, 1
        };
        CHECK(strcmp(sage_uuid_format(u, text, sizeof(text)), "GPU-53414745-4641-4b45-4750-550000000001") == 0);
        uint8_t back[16];
        CHECK(sage_uuid_parse(text, back) == 0 && !memcmp(back, u, 16));
        CHECK(sage_uuid_parse("GPU-534147454641-4B45-4750550000000001", back) == 0 && !memcmp(back, u, 16));
        CHECK(sage_uuid_parse("GPU-53414745-4641-4b45-4750-5500000000", back) == -EINVAL);     /* short */
        CHECK(sage_uuid_parse("GPU-53414745-4641-4b45-4750-55000000000100", back) == -EINVAL); /* long */
        CHECK(sage_uuid_parse("GPU-53414745-4641-4b45-4750-55000000000x", back) == -EINVAL);
        CHECK(sage_uuid_parse("53414745-4641-4b45-4750-550000000001", back) == -EINVAL);
}

/* Instances: register, list, suspend/resume replies, and what the decoder refuses. */
static void test_instances(void) {
        SageMessage m, d;
        ssize_t n;

        sage_proto_init(&m, SAGE_MSG_INSTANCE_REGISTER, 3);
        m.header.flags = SAGE_INSTANCE_KEEP_ALIVE;
        memset(m.instance_register.uuid, 0xab, 16);
        n = sage_proto_encode(&m, buf, sizeof(buf));
        CHECK(n == SAGE_PROTO_HEADER_SIZE + 16);
        CHECK(sage_proto_decode(buf, (size_t)n, &d, NULL) == 0 && d.header.flags == SAGE_INSTANCE_KEEP_ALIVE &&
              d.instance_register.uuid[15] == 0xab);
        buf[8] = 0x80; /* an unknown flag */
        CHECK(sage_proto_decode(buf, (size_t)n, &d, NULL) == SAGE_ERR_MALFORMED);

        sage_proto_init(&m, SAGE_MSG_INSTANCES_REPLY, 4);
        m.instances_reply.n_entries = 2;
        m.instances_reply.more = 1;
        m.instances_reply.entries[0] = (SageInstanceEntry){ .pid = 42,
                                                            .state = SAGE_INSTANCE_SUSPENDED,
                                                            .namespace_id = 7,
                                                            .why_not = SAGE_INSTANCE_WHY_EXTENTS,
                                                            .suspend_ms = 5,
                                                            .resume_ms = 6,
                                                            .idle_ns = 9 };
        m.instances_reply.entries[1] = (SageInstanceEntry){ .pid = 43, .flags = SAGE_INSTANCE_MPS };
        n = sage_proto_encode(&m, buf, sizeof(buf));
        CHECK(n == SAGE_PROTO_HEADER_SIZE + 5 + 2 * SAGE_PROTO_INSTANCE_ENTRY_SIZE);
        CHECK(sage_proto_decode(buf, (size_t)n, &d, NULL) == 0 && d.instances_reply.n_entries == 2 &&
              d.instances_reply.more == 1 && d.instances_reply.entries[0].pid == 42 &&
              d.instances_reply.entries[0].state == SAGE_INSTANCE_SUSPENDED &&
              d.instances_reply.entries[0].why_not == SAGE_INSTANCE_WHY_EXTENTS &&
              d.instances_reply.entries[0].idle_ns == 9 && d.instances_reply.entries[1].flags == SAGE_INSTANCE_MPS);
        /* A state past FAILED, or a count the payload does not hold: malformed. */
        buf[SAGE_PROTO_HEADER_SIZE + 5 + 4] = _SAGE_INSTANCE_STATE_MAX;
        CHECK(sage_proto_decode(buf, (size_t)n, &d, NULL) == SAGE_ERR_MALFORMED);
        buf[SAGE_PROTO_HEADER_SIZE + 5 + 4] = 0;
        buf[SAGE_PROTO_HEADER_SIZE] = 3;
        CHECK(sage_proto_decode(buf, (size_t)n, &d, NULL) == SAGE_ERR_MALFORMED);
        m.instances_reply.n_entries = SAGE_PROTO_INSTANCES_MAX + 1;
        CHECK(sage_proto_encode(&m, buf, sizeof(buf)) == -EINVAL);

        sage_proto_init(&m, SAGE_MSG_RESUME_REPLY, 5);
        m.resume_reply = (SageInstanceOpReply){ SAGE_INSTANCE_FAILED, 310 };
        n = sage_proto_encode(&m, buf, sizeof(buf));
        CHECK(n == SAGE_PROTO_HEADER_SIZE + 8);
        CHECK(sage_proto_decode(buf, (size_t)n, &d, NULL) == 0 && d.resume_reply.state == SAGE_INSTANCE_FAILED &&
              d.resume_reply.elapsed_ms == 310);
        sage_proto_init(&m, SAGE_MSG_SUSPEND, 6);
        m.suspend = 1234;
        n = sage_proto_encode(&m, buf, sizeof(buf));
        CHECK(n == SAGE_PROTO_HEADER_SIZE + 4 && sage_proto_decode(buf, (size_t)n, &d, NULL) == 0 && d.suspend == 1234);
        CHECK(strcmp(sage_instance_state_name(SAGE_INSTANCE_SUSPENDED), "suspended") == 0);
        CHECK(strstr(sage_instance_why_name(SAGE_INSTANCE_WHY_EXTENTS | SAGE_INSTANCE_WHY_MPS), "extents"));
}

int main(void) {
        test_table();
        test_instances();
        test_devices();
        test_labels();
        test_roundtrips();
        test_rejects();
        test_error_across_versions();
        test_fuzz();
        test_fd_passing();
        printf("proto: ok\n");
        return 0;
}
