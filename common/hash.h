/* Content hashing of uploads and extents: XXH3-128, streaming or one-shot. */
#pragma once

#include <stddef.h>
#include <stdint.h>

typedef struct SageHash {
        uint64_t low;
        uint64_t high;
} SageHash;

SageHash sage_hash(const void *data, size_t size);

/* Hex form, 32 characters plus NUL. */
void sage_hash_format(SageHash hash, char out[33]);
int sage_hash_parse(const char *text, SageHash *out);

static inline int sage_hash_equal(SageHash a, SageHash b) {
        return a.low == b.low && a.high == b.high;
}
