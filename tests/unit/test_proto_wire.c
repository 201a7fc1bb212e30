/*
 * The wire bytes of every message type, pinned: one sample per type (and per
 * layout where a flag changes it), its encoding as hex, and a digest of how
 * the decoder answers every truncation and every one-byte change of it. The
 * expected values were taken from the hand-written codec, before the codec
 * was generated from proto.def, so a generated codec that drifts by one byte
 * or one verdict fails here. The values are in proto_wire.golden (the
 * test's argument); `test-proto_wire print` prints them, to extend it with
 * a new type.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "proto.h"

#include "check.h"

static const uint8_t notes[] = { 0x6e, 0x00, 0xff, 0x10, 0x7f };
static SageListEntry list_entries[2] = {
        { 0x1111, 0x2222000003e8ull, { 0x0123456789abcdefull, 0xfedcba9876543210ull }, 2 << 20, 1, 3, 4242, 1, 777 },
        { 0x1112, 0x3e8, { 0x55, 0xaa }, 4 << 20, 0, 0, 1, 0x80000003u, 0 },
};

#define KEY \
        { { 0x0123456789abcdefull, 0xfedcba9876543210ull }, 6ull << 30, 3 }
#define TOKEN                                                                                                      \
        {                                                                                                          \
                { 0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff } \
        }
#define UUID(b) \
        { b, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, b }

#define HEADER(TYPE, FLAGS) .header = { SAGE_PROTO_MAGIC, SAGE_PROTO_VERSION, SAGE_MSG_##TYPE, FLAGS, 0x01020304 }

static const SageMessage samples[] = {
        { HEADER(HELLO, 0), .hello = { 3, 4242, SAGE_FEATURES_ALL | 1ull << 63 } },
        { HEADER(HELLO_REPLY, 0), .hello_reply = { 3, 8, 0x100000003e8ull, 2 << 20, SAGE_FEATURE_CONTENT } },
        { HEADER(PING, 0) },
        { HEADER(PONG, 0) },
        { HEADER(LOOKUP, 0), .lookup = KEY },
        { HEADER(LOOKUP_REPLY, 0), .lookup_reply = { 1, 55, 4 << 20, { sizeof(notes), notes } } },
        { HEADER(LOOKUP_REPLY, 0), .lookup_reply = { 0, 0, 0, { 0, NULL } } },
        { HEADER(PUBLISH, SAGE_PUBLISH_SEALED), .publish = { KEY, { 0, 0 }, { sizeof(notes), notes } } },
        { HEADER(PUBLISH, SAGE_PUBLISH_SEALED | SAGE_PUBLISH_CONTENT),
          .publish = { KEY, { 0x1122, 0x3344 }, { 0, NULL } } },
        { HEADER(PUBLISH_REPLY, 0), .publish_reply = { 77, 1 } },
        { HEADER(RELEASE, 0), .release = 0x0102030405060708ull },
        { HEADER(RELEASE_REPLY, 0) },
        { HEADER(STATS, 0) },
        { HEADER(STATS_REPLY, 0), .stats_reply = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13 } },
        { HEADER(LIST, 0), .list = { 99 } },
        { HEADER(LIST_REPLY, 0), .list_reply = { 2, 1, list_entries } },
        { HEADER(LIST_REPLY, 0), .list_reply = { 0, 0, NULL } },
        { HEADER(EVICT, SAGE_EVICT_ALL_UNREFERENCED), .evict = { 5 } },
        { HEADER(EVICT_REPLY, 0), .evict_reply = { 3, 6 << 20 } },
        { HEADER(IPC_EXPORT, 0), .ipc_export = { 3ull << 32, 5 } },
        { HEADER(IPC_EXPORT_REPLY, 0), .ipc_export_reply = TOKEN },
        { HEADER(IPC_IMPORT, 0), .ipc_import = TOKEN },
        { HEADER(IPC_IMPORT_REPLY, 0), .ipc_import_reply = { 2 << 20, 1 } },
        { HEADER(IPC_REVOKE, 0), .ipc_revoke = TOKEN },
        { HEADER(IPC_REVOKE_REPLY, 0) },
        { HEADER(LABEL, 0), .label = 0x80000001u },
        { HEADER(LABEL_REPLY, 0), .label_reply = { "tenant-a.b_c" } },
        { HEADER(INSTANCE_REGISTER, SAGE_INSTANCE_MPS), .instance_register = { UUID(0xaa), 0 } },
        { HEADER(INSTANCE_REGISTER, SAGE_INSTANCE_GATE | SAGE_INSTANCE_IPC),
          .instance_register = { UUID(0xbb), 30000 } },
        { HEADER(INSTANCE_REGISTER_REPLY, 0) },
        { HEADER(INSTANCES, 0), .instances = 4000 },
        { HEADER(INSTANCES_REPLY, 0),
          .instances_reply = { 2,
                               1,
                               { { 4001, SAGE_INSTANCE_SUSPENDED, 0x1000003e8ull, UUID(0x11), SAGE_INSTANCE_GATE,
                                   SAGE_INSTANCE_WHY_IPC, 120, 340, SAGE_INSTANCE_BYTES_UNKNOWN, 5000000000ull,
                                   1ull << 33, SAGE_INSTANCE_ACTIVITY_IDLE, 0 },
                                 { 4002, SAGE_INSTANCE_FAILED, 7, UUID(0x22), 0, 0, 0, 0, 0, 0, 0, 0, 0 } } } },
        { HEADER(SUSPEND, 0), .suspend = 4001 },
        { HEADER(SUSPEND_REPLY, 0), .suspend_reply = { SAGE_INSTANCE_SUSPENDED, 250 } },
        { HEADER(RESUME, 0), .resume = 4002 },
        { HEADER(RESUME_REPLY, 0), .resume_reply = { SAGE_INSTANCE_ACTIVE, 90 } },
        { HEADER(DEVICES, 0) },
        { HEADER(DEVICES_REPLY, 0),
          .devices_reply = { 2, { { UUID(0x33), 0, 0 }, { UUID(0x44), 80ull << 30, SAGE_DEVICE_SERVED } } } },
        { HEADER(INSTANCE_RESUME, 0) },
        { HEADER(INSTANCE_RESUME_REPLY, 0), .instance_resume_reply = { SAGE_INSTANCE_RESUMING, 17 } },
        { HEADER(INSTANCE_IDLE, 0) },
        { HEADER(INSTANCE_ACTIVE, 0) },
        { HEADER(INSTANCE_FLAGS, 0), .instance_flags = SAGE_INSTANCE_MULTI_GPU | SAGE_INSTANCE_IPC },
        { HEADER(SUSPEND_PREPARE, 0) },
        { HEADER(SUSPEND_PREPARED, 0), .suspend_prepared = { SAGE_GATE_REFUSED, SAGE_INSTANCE_WHY_MANAGED } },
        { HEADER(INSTANCE_RESUMED, 0), .instance_resumed = { SAGE_GATE_OK, 0 } },
        { HEADER(INSTANCE_REMAPPED, 0), .instance_remapped = { SAGE_GATE_FAILED, 0 } },
        { HEADER(ERROR, 0), .error = { SAGE_ERR_BUDGET, "budget exhausted (42 of 40 MiB)" } },
};

/* Messages the encoder refuses, and how. */
static const struct {
        SageMessage m;
        ssize_t result;
} refused[] = {
        { { HEADER(PING, 0x80) }, -EINVAL },
        { { HEADER(LOOKUP_REPLY, 0), .lookup_reply = { 0, 0, 0, { 1, notes } } }, -EINVAL },
        { { HEADER(PUBLISH, 0), .publish = { KEY, { 0, 0 }, { 1, NULL } } }, -EINVAL },
        { { HEADER(PUBLISH, 0), .publish = { KEY, { 0, 0 }, { SAGE_PROTO_NOTES_MAX + 1, notes } } }, -EINVAL },
        { { HEADER(LIST_REPLY, 0), .list_reply = { 1, 0, NULL } }, -EINVAL },
        { { HEADER(LIST_REPLY, 0), .list_reply = { SAGE_PROTO_LIST_MAX + 1, 0, list_entries } }, -EINVAL },
        { { HEADER(LABEL_REPLY, 0), .label_reply = { "" } }, -EINVAL },
        { { HEADER(LABEL_REPLY, 0), .label_reply = { "a/b" } }, -EINVAL },
        { { HEADER(INSTANCES_REPLY, 0), .instances_reply = { SAGE_PROTO_INSTANCES_MAX + 1, 0, { { 0 } } } }, -EINVAL },
        { { HEADER(DEVICES_REPLY, 0), .devices_reply = { SAGE_PROTO_DEVICES_MAX + 1, { { { 0 } } } } }, -EINVAL },
        { { HEADER(INSTANCE_FLAGS, 0), .instance_flags = SAGE_INSTANCE_MPS }, -EINVAL },
        { { HEADER(SUSPEND_PREPARED, 0), .suspend_prepared = { _SAGE_GATE_STATUS_MAX, 0 } }, -EINVAL },
        { { HEADER(INSTANCE_RESUMED, 0), .instance_resumed = { SAGE_GATE_OK, SAGE_INSTANCE_WHY_MPS } }, -EINVAL },
        { { HEADER(RESUME, SAGE_INSTANCE_GATE) }, -EINVAL },
        { { HEADER(INSTANCE_REGISTER, 0x80000000u) }, -EINVAL },
        { { .header = { SAGE_PROTO_MAGIC, SAGE_PROTO_VERSION, 12, 0, 1 } }, -EINVAL },
};

static uint8_t buf[SAGE_PROTO_MAX_MESSAGE], again[SAGE_PROTO_MAX_MESSAGE];
static SageListEntry storage[SAGE_PROTO_LIST_MAX];

static uint64_t fnv(uint64_t h, const void *data, size_t n) {
        const uint8_t *p = data;
        for (size_t i = 0; i < n; i++)
                h = (h ^ p[i]) * 0x100000001b3ull;
        return h;
}

/* What the decoder says to `bytes` (its code; when it accepts, what the decoded message encodes to again). */
static uint64_t verdict(uint64_t h, const uint8_t *bytes, size_t n) {
        static SageMessage d;
        int code = sage_proto_decode(bytes, n, &d, storage);
        h = fnv(h, &code, sizeof(code));
        if (code == 0) {
                ssize_t k = sage_proto_encode(&d, again, sizeof(again));
                h = fnv(h, &k, sizeof(k));
                if (k > 0)
                        h = fnv(h, again, (size_t)k);
        }
        return h;
}

/* Every truncation, and every byte of the payload xor'd with 0x01, 0x80 and 0xff; the header's are the same for all. */
static uint64_t verdicts(uint8_t *bytes, size_t n) {
        static const uint8_t masks[] = { 0x01, 0x80, 0xff };
        uint64_t h = 0xcbf29ce484222325ull;

        for (size_t k = 0; k < n; k++)
                h = verdict(h, bytes, k);
        for (size_t i = SAGE_PROTO_HEADER_SIZE; i < n; i++)
                for (size_t j = 0; j < sizeof(masks); j++) {
                        bytes[i] ^= masks[j];
                        h = verdict(h, bytes, n);
                        bytes[i] ^= masks[j];
                }
        return verdict(h, bytes, n);
}

static void hex(char *out, const uint8_t *bytes, size_t n) {
        for (size_t i = 0; i < n; i++)
                sprintf(out + 2 * i, "%02x", bytes[i]);
}

static bool sampled(unsigned type) {
        for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++)
                if (samples[i].header.type == type)
                        return true;
        return false;
}

int main(int argc, char **argv) {
        static char text[2 * SAGE_PROTO_MAX_MESSAGE + 1], line[sizeof(text) + 100], want[sizeof(line)];
        bool print = argc > 1 && strcmp(argv[1], "print") == 0;
        FILE *golden = print ? NULL : fopen(argc > 1 ? argv[1] : "", "r");

        CHECK(print || golden);
        /* Every type of proto.def, and ERROR, has a sample. */
#define SAGE_MESSAGE(NAME, NUMBER, REQUEST, FLAGS, FDS, REPLY_NAME, REPLY, REPLY_FDS, FEATURE, HANDLER) \
        CHECK(sampled(SAGE_MSG_##NAME) && sampled(SAGE_MSG_##REPLY_NAME));
#define SAGE_NOTICE(NAME, NUMBER, PAYLOAD, FLAGS, FDS, DIRECTION, FEATURE, HANDLER) CHECK(sampled(SAGE_MSG_##NAME));
#include "proto.def"
#undef SAGE_NOTICE
#undef SAGE_MESSAGE
        CHECK(sampled(SAGE_MSG_ERROR));

        /* One line a sample in proto_wire.golden: its type, its bytes, the digest of the verdicts. */
        for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
                ssize_t n = sage_proto_encode(&samples[i], buf, sizeof(buf));

                CHECK(n >= SAGE_PROTO_HEADER_SIZE);
                hex(text, buf, (size_t)n);
                snprintf(line, sizeof(line), "%s %s %016llx\n", sage_proto_type_name(samples[i].header.type), text,
                         (unsigned long long)verdicts(buf, (size_t)n));
                if (print) {
                        fputs(line, stdout);
                        continue;
                }
                if (!fgets(want, sizeof(want), golden) || strcmp(line, want) != 0) {
                        fprintf(stderr, "sample %zu, now: %s", i, line);
                        CHECK(!"the encoding or the decoder's verdicts changed");
                }
        }
        CHECK(print || !fgets(want, sizeof(want), golden));
        for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
                CHECK(sage_proto_encode(&refused[i].m, buf, sizeof(buf)) == refused[i].result);
        /* Too small a buffer is ENOBUFS, whatever the type. */
        for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
                ssize_t n = sage_proto_encode(&samples[i], buf, sizeof(buf));
                CHECK(n == SAGE_PROTO_HEADER_SIZE || sage_proto_encode(&samples[i], buf, (size_t)n - 1) == -ENOBUFS);
        }
        if (golden)
                fclose(golden);
        return 0;
}
