/* libFuzzer target for the broker protocol decoder (built where clang has
 * libFuzzer; scripts/fuzz.sh builds and runs it, CI included:
 * build-fuzz/daemon/fuzz-proto -dict=tests/unit/fuzz_proto.dict CORPUS).
 * Whatever decodes must re-encode to the same bytes, have a type name, and
 * say how many fds it carries (at most SAGE_PROTO_MAX_FDS); notes must lie
 * inside the input, within SAGE_PROTO_NOTES_MAX. Decoding without LIST
 * storage (as saged does) gives the same verdict but for LIST replies. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const SageNotes *notes_of(const SageMessage *m) {
        switch (m->header.type) {
        case SAGE_MSG_PUBLISH: return &m->publish.notes;
        case SAGE_MSG_LOOKUP_REPLY: return &m->lookup_reply.notes;
        default: return NULL;
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static SageListEntry list[SAGE_PROTO_LIST_MAX];
        static uint8_t again[SAGE_PROTO_MAX_MESSAGE];
        SageMessage m, bare;
        int r = sage_proto_decode(data, size, &m, list);

        /* The broker decodes without LIST storage: the same verdict, but for a LIST reply with entries. */
        int r_bare = sage_proto_decode(data, size, &bare, NULL);
        if (r_bare != r && !(r == 0 && r_bare == SAGE_ERR_INTERNAL && m.header.type == SAGE_MSG_LIST_REPLY &&
                             m.list_reply.n_entries > 0))
                abort();
        if (r == 0) {
                ssize_t n = sage_proto_encode(&m, again, sizeof(again));
                if (n != (ssize_t)size || memcmp(again, data, size) != 0)
                        abort();
                if (strcmp(sage_proto_type_name(m.header.type), "?") == 0)
                        abort();
                if (sage_proto_expected_fds(&m) > SAGE_PROTO_MAX_FDS)
                        abort();
                const SageNotes *notes = notes_of(&m);
                if (notes && notes->length > SAGE_PROTO_NOTES_MAX)
                        abort();
                /* Notes are last: they end where the input ends. */
                if (notes && notes->length > 0 && (notes->bytes < data || notes->bytes + notes->length != data + size))
                        abort();
        }
        return 0;
}
