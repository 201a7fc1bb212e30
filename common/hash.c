/*
 * XXH3-128 is used header-only (XXH_INLINE_ALL): it inlines the vectorised
 * kernels into our code and leaves libsage without a runtime dependency on
 * libxxhash, which GPU nodes often lack. XXH3 is fast, not collision
 * resistant: callers that share across trust boundaries verify bytes.
 */
#include "hash.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

SageHash sage_hash(const void *data, size_t size) {
        XXH128_hash_t h = XXH3_128bits(data, size);
        return (SageHash){ .low = h.low64, .high = h.high64 };
}

SageHash sage_content_key_combine(const SageHash *chunks, size_t n_chunks) {
        return sage_hash(chunks, n_chunks * sizeof(*chunks));
}

SageHash sage_content_key(const void *data, size_t size) {
        const unsigned char *p = data;
        size_t n_chunks = (size + SAGE_CONTENT_KEY_CHUNK - 1) / SAGE_CONTENT_KEY_CHUNK;
        SageHash *chunks = calloc(n_chunks ? n_chunks : 1, sizeof(*chunks)), key;

        if (!chunks)
                return (SageHash){ 0, 0 };
        for (size_t i = 0; i < n_chunks; i++) {
                size_t off = i * (size_t)SAGE_CONTENT_KEY_CHUNK;
                size_t n = size - off < SAGE_CONTENT_KEY_CHUNK ? size - off : SAGE_CONTENT_KEY_CHUNK;
                chunks[i] = sage_hash(p + off, n);
        }
        key = sage_content_key_combine(chunks, n_chunks);
        free(chunks);
        return key;
}

/*
 * Copy and hash in one pass: each step is copied, then hashed from the
 * destination while it is still in cache, so the hash is of the bytes that
 * arrived (a source another thread writes meanwhile cannot make the key
 * describe bytes that were not copied).
 */
#define COPY_HASH_STEP (256u << 10)

SageHash sage_hash_copy(void *dst, const void *src, size_t size) {
        XXH3_state_t state;
        unsigned char *d = dst;
        const unsigned char *s = src;
        XXH128_hash_t h;

        XXH3_128bits_reset(&state);
        for (size_t off = 0; off < size; off += COPY_HASH_STEP) {
                size_t n = size - off < COPY_HASH_STEP ? size - off : COPY_HASH_STEP;
                memcpy(d + off, s + off, n);
                XXH3_128bits_update(&state, d + off, n);
        }
        h = XXH3_128bits_digest(&state);
        return (SageHash){ .low = h.low64, .high = h.high64 };
}

void sage_hash_format(SageHash hash, char out[33]) {
        snprintf(out, 33, "%016llx%016llx", (unsigned long long)hash.high, (unsigned long long)hash.low);
}

int sage_hash_parse(const char *text, SageHash *out) {
        unsigned long long high = 0, low = 0;

        for (int i = 0; i < 32; i++) {
                char c = text[i];
                unsigned v;

                if (c >= '0' && c <= '9')
                        v = (unsigned)(c - '0');
                else if (c >= 'a' && c <= 'f')
                        v = (unsigned)(c - 'a' + 10);
                else if (c >= 'A' && c <= 'F')
                        v = (unsigned)(c - 'A' + 10);
                else
                        return -EINVAL;
                if (i < 16)
                        high = high << 4 | v;
                else
                        low = low << 4 | v;
        }
        if (text[32])
                return -EINVAL;
        *out = (SageHash){ .low = low, .high = high };
        return 0;
}
