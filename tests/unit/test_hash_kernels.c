/*
 * Unit test of common/hash.c's kernels and the content key's format: every
 * kernel the CPU runs gives the baseline kernel's hashes, its copies (cached
 * and streamed stores) the same hashes and bytes (XXH3 does not
 * depend on the vector width), each is built for the instruction set its
 * name says, the dispatcher runs the best, and the key of a fixed buffer
 * is pinned (a change of the chunk size or the combination fails here:
 * libsage, the broker and spool files must all agree on it).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "hash.h"
#include "hash_kernel.h"

#define GOLDEN "6c8b2907eee8d2b229f64ae891061e73"

static unsigned char *pattern(size_t n, unsigned seed) {
        unsigned char *p = malloc(n);
        uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;

        CHECK(p);
        for (size_t i = 0; i < n; i++) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                p[i] = (unsigned char)x;
        }
        return p;
}

static void same_as_base(const SageHashKernel *k, const unsigned char *data, size_t n, unsigned char *dst) {
        const SageHashKernel *base = &sage_hash_base_kernel;
        SageHash want = base->hash(data, n);

        CHECK(sage_hash_equal(k->hash(data, n), want));
        if (dst) {
                CHECK(sage_hash_equal(k->hash_copy(dst, data, n), want));
                CHECK(memcmp(dst, data, n) == 0);
                memset(dst, 0xa5, n);
                CHECK(sage_hash_equal(k->hash_copy_streamed(dst, data, n), want));
                CHECK(memcmp(dst, data, n) == 0);
        }
}

/* Every size class of XXH3 (0-16, 17-128, 129-240, stripes, blocks, the copy's steps), every alignment. */
static void kernels_agree(void) {
        const size_t max = (3u << 20) + 777;
        unsigned char *data = pattern(max + 64, 1), *dst = malloc(max + 64);
        size_t n;
        const SageHashKernel *const *k = sage_hash_kernels(&n);

        CHECK(dst && n >= 1);
        for (size_t i = 0; i < n; i++) {
                for (size_t size = 0; size <= 1100; size++)
                        same_as_base(k[i], data + size % 64, size, size % 7 == 0 ? dst + size % 13 : NULL);
                for (size_t a = 0; a < 64; a++)
                        for (size_t size = 4000; size < 4200; size += 17)
                                same_as_base(k[i], data + a, size * (a + 1), dst + (a * 5) % 64);
                for (size_t size = (256u << 10) - 3; size <= (256u << 10) + 3; size++)
                        same_as_base(k[i], data + 1, size, dst);
                for (size_t size = (32u << 10) - 17; size <= (32u << 10) + 17; size++) /* the streamed copy's steps */
                        same_as_base(k[i], data + size % 64, size, dst + size % 16);
                same_as_base(k[i], data, max, dst + 3);
                same_as_base(k[i], data + 63, 512u << 10, dst);
        }
        free(data);
        free(dst);
}

/* Each kernel is what its name says, and the dispatcher runs the best the CPU has. */
static void kernels_wired(void) {
        size_t n;
        const SageHashKernel *const *k = sage_hash_kernels(&n);

#if defined(__x86_64__)
        __builtin_cpu_init();
        CHECK(strcmp(sage_hash_base_kernel.name, "sse2") == 0 && sage_hash_base_kernel.vector == 1);
        CHECK(strcmp(sage_hash_avx2_kernel.name, "avx2") == 0 && sage_hash_avx2_kernel.vector == 2);
        CHECK(strcmp(sage_hash_avx512_kernel.name, "avx512") == 0 && sage_hash_avx512_kernel.vector == 3);
        CHECK(n == 1u + !!__builtin_cpu_supports("avx2") + !!__builtin_cpu_supports("avx512f"));
        if (__builtin_cpu_supports("avx512f"))
                CHECK(sage_hash_kernel() == &sage_hash_avx512_kernel);
        else if (__builtin_cpu_supports("avx2"))
                CHECK(sage_hash_kernel() == &sage_hash_avx2_kernel);
        else
                CHECK(sage_hash_kernel() == &sage_hash_base_kernel);
#endif
        CHECK(k[0] == sage_hash_kernel() && k[n - 1] == &sage_hash_base_kernel);
        for (size_t i = 0; i < n; i++)
                fprintf(stderr, "kernel %s (XXH_VECTOR %d)%s\n", k[i]->name, k[i]->vector,
                        k[i] == sage_hash_kernel() ? ": in use" : "");
        CHECK(sage_hash_use_kernel("no-such") < 0);
        CHECK(sage_hash_use_kernel(sage_hash_base_kernel.name) == 0 && sage_hash_kernel() == &sage_hash_base_kernel);
        CHECK(sage_hash_use_kernel(k[0]->name) == 0 && sage_hash_kernel() == k[0]);
}

/* The key's format, pinned: 512 KiB chunks, a short last one, the chunk hashes hashed. */
static void golden_key(void) {
        const size_t size = 3 * SAGE_CONTENT_KEY_CHUNK + 12345;
        unsigned char *data = pattern(size, 7);
        SageHash chunks[4];
        char text[33];

        CHECK(SAGE_CONTENT_KEY_CHUNK == 512u << 10 && sage_content_key_nchunks(size) == 4);
        CHECK(sage_content_key_nchunks(0) == 0 && sage_content_key_nchunks(1) == 1);
        CHECK(sage_content_key_nchunks(SAGE_CONTENT_KEY_CHUNK) == 1 &&
              sage_content_key_nchunks(SAGE_CONTENT_KEY_CHUNK + 1) == 2);
        sage_content_key_chunks(data, size, chunks);
        for (size_t i = 0; i < 4; i++)
                CHECK(sage_hash_equal(chunks[i], sage_hash(data + i * SAGE_CONTENT_KEY_CHUNK,
                                                           i < 3 ? SAGE_CONTENT_KEY_CHUNK : 12345)));
        CHECK(sage_hash_equal(sage_content_key(data, size), sage_content_key_combine(chunks, 4)));
        sage_hash_format(sage_content_key(data, size), text);
        fprintf(stderr, "golden key %s\n", text);
        CHECK(strcmp(text, GOLDEN) == 0);
        free(data);
}

int main(void) {
        kernels_agree();
        kernels_wired();
        golden_key();
        puts("hash_kernels: ok");
        return 0;
}
