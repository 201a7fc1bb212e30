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

#include <stdint.h>
#include <string.h>
#if defined(__x86_64__)
#include <emmintrin.h>
#endif

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

/*
 * The same with streamed (non-temporal) stores where the CPU has them: each
 * step is read once into registers, kept in a small buffer in the cache and
 * streamed to dst, then hashed from the buffer, so the hash is still of
 * exactly the bytes dst receives, while dst's lines are neither read first
 * nor left in the cache. Host memory carries two passes per byte instead of
 * three, and a DMA engine reading dst next snoops no dirty lines. Ends with
 * a store fence: the bytes are in memory's order before the caller hands
 * dst to a DMA.
 */
#define STREAM_STEP (16u << 10)

static SageHash KERNEL(hash_copy_streamed)(void *dst, const void *src, size_t size) {
#if defined(__x86_64__)
        XXH3_state_t state;
        _Alignas(64) unsigned char bounce[STREAM_STEP];
        unsigned char *d = dst;
        const unsigned char *s = src;
        size_t head = (16 - (uintptr_t)d % 16) % 16;

        if (size < 2 * STREAM_STEP)
                return KERNEL(hash_copy)(dst, src, size);
        XXH3_128bits_reset(&state);
        /* dst's first bytes up to a 16-byte boundary by a plain copy, hashed where they landed. */
        memcpy(d, s, head);
        XXH3_128bits_update(&state, d, head);
        for (size_t off = head; off < size; off += STREAM_STEP) {
                size_t n = size - off < STREAM_STEP ? size - off : STREAM_STEP, whole = n & ~(size_t)15;

                for (size_t i = 0; i < whole; i += 16) { /* each 16 bytes read once: kept, and streamed out */
                        __m128i v = _mm_loadu_si128((const __m128i *)(s + off + i));
                        _mm_store_si128((__m128i *)(bounce + i), v);
                        _mm_stream_si128((__m128i *)(d + off + i), v);
                }
                memcpy(bounce + whole, s + off + whole, n - whole);
                memcpy(d + off + whole, bounce + whole, n - whole);
                XXH3_128bits_update(&state, bounce, n);
        }
        _mm_sfence();
        return to_sage(XXH3_128bits_digest(&state));
#else
        return KERNEL(hash_copy)(dst, src, size);
#endif
}

const SageHashKernel KERNEL(kernel) = {
        .name = SAGE_HASH_KERNEL_NAME,
        .vector = XXH_VECTOR,
        .hash = KERNEL(hash),
        .hash_copy = KERNEL(hash_copy),
        .hash_copy_streamed = KERNEL(hash_copy_streamed),
};
