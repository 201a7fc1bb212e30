/*
 * The wire bytes of every message type, pinned: one sample per type (and per
 * layout where a flag changes it), its encoding as hex, and a digest of how
 * the decoder answers every truncation and every one-byte change of it. The
 * expected values were taken from the hand-written codec, before the codec
 * was generated from proto.def, so a generated codec that drifts by one byte
 * or one verdict fails here. `test-proto_wire print` prints the table's
 * values (to extend it with a new type).
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

typedef struct Sample {
        SageMessage m;
        const char *hex;   /* the encoding, header included */
        uint64_t verdicts; /* digest of the decoder's answers (verdicts()) */
} Sample;

#define HEADER(TYPE, FLAGS) .header = { SAGE_PROTO_MAGIC, SAGE_PROTO_VERSION, SAGE_MSG_##TYPE, FLAGS, 0x01020304 }

static const Sample samples[] = {
        { { HEADER(HELLO, 0), .hello = { 3, 4242, SAGE_FEATURES_ALL | 1ull << 63 } },
          "53414745030001000000000004030201100000000300000092100000fe00000000000080",
          0x4b1044182b5defecull },
        { { HEADER(HELLO_REPLY, 0), .hello_reply = { 3, 8, 0x100000003e8ull, 2 << 20, SAGE_FEATURE_CONTENT } },
          "53414745030001800000000004030201200000000300000008000000e80300000001000000002000000000000200000000000000",
          0x06e2f9860b6802dcull },
        { { HEADER(PING, 0) }, "5341474503000200000000000403020100000000", 0x3cb1a6461660cddcull },
        { { HEADER(PONG, 0) }, "5341474503000280000000000403020100000000", 0x4404691fe1366c5cull },
        { { HEADER(LOOKUP, 0), .lookup = KEY },
          "534147450300030000000000040302011c000000efcdab89674523011032547698badcfe000000800100000003000000",
          0xd67bd238be0cac73ull },
        { { HEADER(LOOKUP_REPLY, 0), .lookup_reply = { 1, 55, 4 << 20, { sizeof(notes), notes } } },
          "534147450300038000000000040302011a0000000137000000000000000000400000000000050000006e00ff107f",
          0xcd329d420426ea16ull },
        { { HEADER(LOOKUP_REPLY, 0), .lookup_reply = { 0, 0, 0, { 0, NULL } } },
          "5341474503000380000000000403020115000000000000000000000000000000000000000000000000",
          0x85c67679ad36a241ull },
        { { HEADER(PUBLISH, SAGE_PUBLISH_SEALED), .publish = { KEY, { 0, 0 }, { sizeof(notes), notes } } },
          "5341474503000400010000000403020125000000efcdab89674523011032547698badcfe000000800100000003000000050000006e00"
          "ff107f",
          0x8d5ffdb2eef1048eull },
        { { HEADER(PUBLISH, SAGE_PUBLISH_SEALED | SAGE_PUBLISH_CONTENT),
            .publish = { KEY, { 0x1122, 0x3344 }, { 0, NULL } } },
          "5341474503000400030000000403020130000000efcdab89674523011032547698badcfe000000800100000003000000221100000000"
          "0000443300000000000000000000",
          0x186c701e982a729bull },
        { { HEADER(PUBLISH_REPLY, 0), .publish_reply = { 77, 1 } },
          "53414745030004800000000004030201090000004d0000000000000001",
          0x87b4c11a62d5362bull },
        { { HEADER(RELEASE, 0), .release = 0x0102030405060708ull },
          "53414745030005000000000004030201080000000807060504030201",
          0x02eb90fcb7bca14full },
        { { HEADER(RELEASE_REPLY, 0) }, "5341474503000580000000000403020100000000", 0x72a7f4fb15ae64efull },
        { { HEADER(STATS, 0) }, "5341474503000600000000000403020100000000", 0x4aa1713d219e9a38ull },
        { { HEADER(STATS_REPLY, 0), .stats_reply = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13 } },
          "534147450300068000000000040302016800000001000000000000000200000000000000030000000000000004000000000000000500"
          "00000000000006000000000000000700000000000000080000000000000009000000000000000a000000000000000b00000000000000"
          "0c000000000000000d00000000000000",
          0x499c29e3570c5589ull },
        { { HEADER(LIST, 0), .list = { 99 } },
          "53414745030007000000000004030201080000006300000000000000",
          0x9896c8f0cfeab226ull },
        { { HEADER(LIST_REPLY, 0), .list_reply = { 2, 1, list_entries } },
          "534147450300078000000000040302018500000002000000011111000000000000e803000022220000efcdab89674523011032547698"
          "badcfe00002000000000000100000003000000921000000100000009030000000000001211000000000000e803000000000000550000"
          "0000000000aa000000000000000000400000000000000000000000000001000000030000800000000000000000",
          0x3dfa28c3ddd9428dull },
        { { HEADER(LIST_REPLY, 0), .list_reply = { 0, 0, NULL } },
          "53414745030007800000000004030201050000000000000000",
          0x6bdf9d4899f053a1ull },
        { { HEADER(EVICT, SAGE_EVICT_ALL_UNREFERENCED), .evict = { 5 } },
          "53414745030008000100000004030201080000000500000000000000",
          0xd5c588e5bb4b72e6ull },
        { { HEADER(EVICT_REPLY, 0), .evict_reply = { 3, 6 << 20 } },
          "534147450300088000000000040302011000000003000000000000000000600000000000",
          0xfc21348f676baa35ull },
        { { HEADER(IPC_EXPORT, 0), .ipc_export = { 3ull << 32, 5 } },
          "534147450300090000000000040302010c000000000000000300000005000000",
          0xa83f3ca522671e55ull },
        { { HEADER(IPC_EXPORT_REPLY, 0), .ipc_export_reply = TOKEN },
          "5341474503000980000000000403020110000000f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
          0xe5e3efb52e1cf96bull },
        { { HEADER(IPC_IMPORT, 0), .ipc_import = TOKEN },
          "5341474503000a00000000000403020110000000f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
          0x6f776f04cefde394ull },
        { { HEADER(IPC_IMPORT_REPLY, 0), .ipc_import_reply = { 2 << 20, 1 } },
          "5341474503000a8000000000040302010c000000000020000000000001000000",
          0xbd1fd5d28004e94dull },
        { { HEADER(IPC_REVOKE, 0), .ipc_revoke = TOKEN },
          "5341474503000b00000000000403020110000000f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
          0xf45bb73ecacd2d11ull },
        { { HEADER(IPC_REVOKE_REPLY, 0) }, "5341474503000b80000000000403020100000000", 0xa4b33ed46e70df91ull },
        { { HEADER(LABEL, 0), .label = 0x80000001u },
          "5341474503000e0000000000040302010400000001000080",
          0x45073d1f1048bd59ull },
        { { HEADER(LABEL_REPLY, 0), .label_reply = { "tenant-a.b_c" } },
          "5341474503000e8000000000040302010d0000000c74656e616e742d612e625f63",
          0x230560059096dd89ull },
        { { HEADER(INSTANCE_REGISTER, SAGE_INSTANCE_MPS), .instance_register = { UUID(0xaa), 0 } },
          "5341474503000f00040000000403020110000000aa0102030405060708090a0b0c0d0eaa",
          0xb6f972c2adc78e14ull },
        { { HEADER(INSTANCE_REGISTER, SAGE_INSTANCE_GATE | SAGE_INSTANCE_IPC),
            .instance_register = { UUID(0xbb), 30000 } },
          "5341474503000f00300000000403020114000000bb0102030405060708090a0b0c0d0ebb30750000",
          0x9c0ce23885d4690dull },
        { { HEADER(INSTANCE_REGISTER_REPLY, 0) }, "5341474503000f80000000000403020100000000", 0xc1488f7f0f59e8edull },
        { { HEADER(INSTANCES, 0), .instances = 4000 },
          "5341474503001000000000000403020104000000a00f0000",
          0xb29ffe2abf115003ull },
        { { HEADER(INSTANCES_REPLY, 0),
            .instances_reply = { 2,
                                 1,
                                 { { 4001, SAGE_INSTANCE_SUSPENDED, 0x1000003e8ull, UUID(0x11), SAGE_INSTANCE_GATE,
                                     SAGE_INSTANCE_WHY_IPC, 120, 340, SAGE_INSTANCE_BYTES_UNKNOWN, 5000000000ull,
                                     1ull << 33, SAGE_INSTANCE_ACTIVITY_IDLE, 0 },
                                   { 4002, SAGE_INSTANCE_FAILED, 7, UUID(0x22), 0, 0, 0, 0, 0, 0, 0, 0, 0 } } } },
          "53414745030010800000000004030201a50000000200000001a10f000002000000e803000001000000110102030405060708090a0b0c"
          "0d0e1120000000200000007800000054010000ffffffffffffffff00f2052a0100000000000000020000000100000000000000a20f00"
          "00040000000700000000000000220102030405060708090a0b0c0d0e2200000000000000000000000000000000000000000000000000"
          "0000000000000000000000000000000000000000000000",
          0xb3c1982ba80927d7ull },
        { { HEADER(SUSPEND, 0), .suspend = 4001 },
          "5341474503001100000000000403020104000000a10f0000",
          0x316cccace78bc9d7ull },
        { { HEADER(SUSPEND_REPLY, 0), .suspend_reply = { SAGE_INSTANCE_SUSPENDED, 250 } },
          "534147450300118000000000040302010800000002000000fa000000",
          0x7fcd483edcd12a45ull },
        { { HEADER(RESUME, 0), .resume = 4002 },
          "5341474503001200000000000403020104000000a20f0000",
          0x3074c41699fdb603ull },
        { { HEADER(RESUME_REPLY, 0), .resume_reply = { SAGE_INSTANCE_ACTIVE, 90 } },
          "5341474503001280000000000403020108000000000000005a000000",
          0xf04e862e467c9219ull },
        { { HEADER(DEVICES, 0) }, "5341474503001300000000000403020100000000", 0xa079fb2f73d64349ull },
        { { HEADER(DEVICES_REPLY, 0),
            .devices_reply = { 2, { { UUID(0x33), 0, 0 }, { UUID(0x44), 80ull << 30, SAGE_DEVICE_SERVED } } } },
          "534147450300138000000000040302014400000002000000330102030405060708090a0b0c0d0e330000000000000000000000000000"
          "0000440102030405060708090a0b0c0d0e4400000000140000000100000000000000",
          0x58ce0d6d59a6f850ull },
        { { HEADER(INSTANCE_RESUME, 0) }, "5341474503001400000000000403020100000000", 0xaec8e6ea4903cf0aull },
        { { HEADER(INSTANCE_RESUME_REPLY, 0), .instance_resume_reply = { SAGE_INSTANCE_RESUMING, 17 } },
          "53414745030014800000000004030201080000000300000011000000",
          0x10605b8ab4f39a01ull },
        { { HEADER(INSTANCE_IDLE, 0) }, "5341474503001500000000000403020100000000", 0x543d2523bff850dfull },
        { { HEADER(INSTANCE_ACTIVE, 0) }, "5341474503001600000000000403020100000000", 0x3389643f96be24a8ull },
        { { HEADER(INSTANCE_FLAGS, 0), .instance_flags = SAGE_INSTANCE_MULTI_GPU | SAGE_INSTANCE_IPC },
          "534147450300170000000000040302010400000012000000",
          0x9edb9c5357500257ull },
        { { HEADER(SUSPEND_PREPARE, 0) }, "5341474503001800000000000403020100000000", 0x954d15747855c7e6ull },
        { { HEADER(SUSPEND_PREPARED, 0), .suspend_prepared = { SAGE_GATE_REFUSED, SAGE_INSTANCE_WHY_MANAGED } },
          "53414745030019000000000004030201080000000200000008000000",
          0x6bb37ca70a7d7c08ull },
        { { HEADER(INSTANCE_RESUMED, 0), .instance_resumed = { SAGE_GATE_OK, 0 } },
          "5341474503001a000000000004030201080000000000000000000000",
          0x615732eff226a6b9ull },
        { { HEADER(INSTANCE_REMAPPED, 0), .instance_remapped = { SAGE_GATE_FAILED, 0 } },
          "5341474503001b000000000004030201080000000300000000000000",
          0xdb450ddf91d96221ull },
        { { HEADER(ERROR, 0), .error = { SAGE_ERR_BUDGET, "budget exhausted (42 of 40 MiB)" } },
          "534147450300ffff000000000403020125000000070000001f006275646765742065786861757374656420283432206f66203430204d"
          "694229",
          0x7660a31b7043b5a4ull },
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
                if (samples[i].m.header.type == type)
                        return true;
        return false;
}

int main(int argc, char **argv) {
        static char text[2 * SAGE_PROTO_MAX_MESSAGE + 1];
        bool print = argc > 1 && strcmp(argv[1], "print") == 0;

        /* Every type of proto.def, and ERROR, has a sample. */
#define SAGE_MESSAGE(NAME, NUMBER, REQUEST, FLAGS, FDS, REPLY_NAME, REPLY, REPLY_FDS, FEATURE, HANDLER) \
        CHECK(sampled(SAGE_MSG_##NAME) && sampled(SAGE_MSG_##REPLY_NAME));
#define SAGE_NOTICE(NAME, NUMBER, PAYLOAD, FLAGS, FDS, DIRECTION, FEATURE, HANDLER) CHECK(sampled(SAGE_MSG_##NAME));
#include "proto.def"
#undef SAGE_NOTICE
#undef SAGE_MESSAGE
        CHECK(sampled(SAGE_MSG_ERROR));

        for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
                const Sample *s = &samples[i];
                ssize_t n = sage_proto_encode(&s->m, buf, sizeof(buf));
                uint64_t v;

                CHECK(n >= SAGE_PROTO_HEADER_SIZE);
                hex(text, buf, (size_t)n);
                v = verdicts(buf, (size_t)n);
                if (print) {
                        printf("%s \"%s\", 0x%016llxull\n", sage_proto_type_name(s->m.header.type), text,
                               (unsigned long long)v);
                        continue;
                }
                if (!s->hex || strcmp(text, s->hex) != 0 || v != s->verdicts) {
                        fprintf(stderr, "sample %zu (%s): %s 0x%016llx\n", i, sage_proto_type_name(s->m.header.type),
                                text, (unsigned long long)v);
                        CHECK(!"the encoding or the decoder's verdicts changed");
                }
        }
        for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
                CHECK(sage_proto_encode(&refused[i].m, buf, sizeof(buf)) == refused[i].result);
        /* Too small a buffer is ENOBUFS, whatever the type. */
        for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
                ssize_t n = sage_proto_encode(&samples[i].m, buf, sizeof(buf));
                CHECK(n == SAGE_PROTO_HEADER_SIZE || sage_proto_encode(&samples[i].m, buf, (size_t)n - 1) == -ENOBUFS);
        }
        return 0;
}
