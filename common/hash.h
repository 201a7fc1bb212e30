/* Content hashing of uploads and extents: XXH3-128, streaming or one-shot. */
#pragma once

#include <stddef.h>
#include <stdint.h>

typedef struct SageHash {
        uint64_t low;
        uint64_t high;
} SageHash;

SageHash sage_hash(const void *data, size_t size);

/*
 * The content key of an extent, as libsage keys uploads (intercept/share_key.c)
 * and saged verifies published extents (daemon/gpu.c): XXH3-128 of each
 * SAGE_CONTENT_KEY_CHUNK bytes (the last chunk may be shorter), then XXH3-128
 * of those chunk hashes in order. Chunks let both sides hash in parallel or
 * incrementally; the two must agree bit for bit, hence one definition.
 */
#define SAGE_CONTENT_KEY_CHUNK (4u << 20)
SageHash sage_content_key_combine(const SageHash *chunks, size_t n_chunks);
/* The whole key of `size` bytes, in one thread (tests, small extents). */
SageHash sage_content_key(const void *data, size_t size);

/* Copy `size` bytes from src to dst and return sage_hash of what dst received. */
SageHash sage_hash_copy(void *dst, const void *src, size_t size);

/* Hex form, 32 characters plus NUL. */
void sage_hash_format(SageHash hash, char out[33]);
int sage_hash_parse(const char *text, SageHash *out);

static inline int sage_hash_equal(SageHash a, SageHash b) {
        return a.low == b.low && a.high == b.high;
}
