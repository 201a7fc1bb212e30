/* libFuzzer target for the broker protocol decoder (built only with clang:
 * CC=clang meson setup build && ninja -C build fuzz-proto &&
 * build/fuzz-proto -dict=tests/unit/fuzz_proto.dict).
 * Whatever decodes must re-encode to the same bytes, have a type name, and
 * say how many fds it carries (at most SAGE_PROTO_MAX_FDS). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static SageListEntry list[SAGE_PROTO_LIST_MAX];
        static uint8_t again[SAGE_PROTO_MAX_MESSAGE];
        SageMessage m;

        if (sage_proto_decode(data, size, &m, list) == 0) {
                ssize_t n = sage_proto_encode(&m, again, sizeof(again));
                if (n != (ssize_t)size || memcmp(again, data, size) != 0)
                        abort();
                if (strcmp(sage_proto_type_name(m.header.type), "?") == 0)
                        abort();
                if (sage_proto_expected_fds(&m) > SAGE_PROTO_MAX_FDS)
                        abort();
        }
        return 0;
}
