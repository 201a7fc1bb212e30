/*
 * One XXH3-128 kernel: this file is compiled once per instruction set
 * (common/meson.build: baseline, -mavx2, -mavx512f), each time under its own
 * names, and common/hash.c calls the one the CPU runs best. Only the
 * dispatcher may call a kernel built for more than the baseline: an AVX2
 * instruction anywhere else would make libsage crash on an older CPU.
 * XXH3's output does not depend on the vector width, so every kernel gives
 * the same hashes (tests/unit/test_hash.c compares them).
 */
#include "hash_kernel.h"

#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define KERNEL(name) CAT(CAT(sage_hash_, SAGE_HASH_KERNEL), CAT(_, name))

static SageHash to_sage(XXH128_hash_t h) {
        return (SageHash){ .low = h.low64, .high = h.high64 };
}

static SageHash KERNEL(hash)(const void *data, size_t size) {
        return to_sage(XXH3_128bits(data, size));
}

/*
 * Copy and hash in one pass: each step is copied, then hashed from the
 * destination while it is still in cache, so the hash is of the bytes that
 * arrived (a source another thread writes meanwhile cannot make the key
 * describe bytes that were not copied).
 */
#define COPY_HASH_STEP (256u << 10)

static SageHash KERNEL(hash_copy)(void *dst, const void *src, size_t size) {
        XXH3_state_t state;
        unsigned char *d = dst;
        const unsigned char *s = src;

        XXH3_128bits_reset(&state);
        for (size_t off = 0; off < size; off += COPY_HASH_STEP) {
                size_t n = size - off < COPY_HASH_STEP ? size - off : COPY_HASH_STEP;
                memcpy(d + off, s + off, n);
                XXH3_128bits_update(&state, d + off, n);
        }
        return to_sage(XXH3_128bits_digest(&state));
}

const SageHashKernel KERNEL(kernel) = {
        .name = SAGE_HASH_KERNEL_NAME,
        .vector = XXH_VECTOR,
        .hash = KERNEL(hash),
        .hash_copy = KERNEL(hash_copy),
};
