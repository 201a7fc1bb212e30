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
#define SAGE_CONTENT_KEY_CHUNK (512u << 10)
SageHash sage_content_key_combine(const SageHash *chunks, size_t n_chunks);
static inline size_t sage_content_key_nchunks(size_t size) {
        return (size + SAGE_CONTENT_KEY_CHUNK - 1) / SAGE_CONTENT_KEY_CHUNK;
}
/* The hashes of the chunks of `size` bytes into chunks[sage_content_key_nchunks(size)], in this thread. */
void sage_content_key_chunks(const void *data, size_t size, SageHash *chunks);
/*
 * Device bytes are read back for a key in blocks of this many bytes (a
 * whole number of chunks): fewer, larger copies than one per chunk.
 */
#define SAGE_CONTENT_KEY_BLOCK (4u << 20)
_Static_assert(SAGE_CONTENT_KEY_BLOCK % SAGE_CONTENT_KEY_CHUNK == 0, "a block holds whole chunks");
/* The whole key of `size` bytes, in one thread (tests, small extents). */
SageHash sage_content_key(const void *data, size_t size);

/* Copy `size` bytes from src to dst and return sage_hash of what dst received. */
SageHash sage_hash_copy(void *dst, const void *src, size_t size);
/*
 * The same, dst written with streamed (non-temporal) stores on x86-64:
 * neither read first nor left in the cache (a buffer a DMA reads next).
 */
SageHash sage_hash_copy_streamed(void *dst, const void *src, size_t size);

/* Hex form, 32 characters plus NUL. */
void sage_hash_format(SageHash hash, char out[33]);
int sage_hash_parse(const char *text, SageHash *out);

static inline int sage_hash_equal(SageHash a, SageHash b) {
        return a.low == b.low && a.high == b.high;
}
