/*
 * XXH3-128 is used header-only (XXH_INLINE_ALL, in hash_kernel.c): it
 * inlines the vectorised kernels into our code and leaves libsage without a
 * runtime dependency on libxxhash, which GPU nodes often lack. XXH3 is fast,
 * not collision resistant: callers that share across trust boundaries
 * verify bytes.
 */
#include "hash.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash_kernel.h"

/*
 * The kernels, best first: the first the CPU runs is chosen on first use.
 * AVX2 hashes DRAM-resident bytes half again as fast as SSE2 (9.6 vs 6.5
 * GB/s on one Xeon core) and twice as fast in cache.
 */
static const SageHashKernel *const all_kernels[] = {
#if defined(__x86_64__)
        &sage_hash_avx512_kernel,
        &sage_hash_avx2_kernel,
#endif
        &sage_hash_base_kernel,
};
#define N_KERNELS (sizeof(all_kernels) / sizeof(all_kernels[0]))

static const SageHashKernel *usable[N_KERNELS];
static size_t n_usable;
static pthread_once_t usable_once = PTHREAD_ONCE_INIT;
static const SageHashKernel *_Atomic current;

static bool cpu_runs(const SageHashKernel *k) {
#if defined(__x86_64__)
        if (k == &sage_hash_avx512_kernel)
                return __builtin_cpu_supports("avx512f");
        if (k == &sage_hash_avx2_kernel)
                return __builtin_cpu_supports("avx2");
#endif
        return k == &sage_hash_base_kernel;
}

static void find_usable(void) {
#if defined(__x86_64__)
        __builtin_cpu_init();
#endif
        for (size_t i = 0; i < N_KERNELS; i++)
                if (cpu_runs(all_kernels[i]))
                        usable[n_usable++] = all_kernels[i];
}

const SageHashKernel *const *sage_hash_kernels(size_t *n) {
        pthread_once(&usable_once, find_usable);
        *n = n_usable;
        return usable;
}

const SageHashKernel *sage_hash_kernel(void) {
        const SageHashKernel *k = atomic_load_explicit(&current, memory_order_acquire);
        size_t n;

        if (!k) { /* the first callers race benignly: they all choose the same */
                k = sage_hash_kernels(&n)[0];
                atomic_store_explicit(&current, k, memory_order_release);
        }
        return k;
}

int sage_hash_use_kernel(const char *name) {
        size_t n;
        const SageHashKernel *const *k = sage_hash_kernels(&n);

        for (size_t i = 0; i < n; i++)
                if (strcmp(k[i]->name, name) == 0) {
                        atomic_store_explicit(&current, k[i], memory_order_release);
                        return 0;
                }
        return -ENOENT;
}

SageHash sage_hash(const void *data, size_t size) {
        return sage_hash_kernel()->hash(data, size);
}

SageHash sage_content_key_combine(const SageHash *chunks, size_t n_chunks) {
        return sage_hash(chunks, n_chunks * sizeof(*chunks));
}

void sage_content_key_chunks(const void *data, size_t size, SageHash *chunks) {
        const unsigned char *p = data;
        const SageHashKernel *k = sage_hash_kernel();

        for (size_t off = 0; off < size; off += SAGE_CONTENT_KEY_CHUNK)
                *chunks++ = k->hash(p + off, size - off < SAGE_CONTENT_KEY_CHUNK ? size - off : SAGE_CONTENT_KEY_CHUNK);
}

SageHash sage_content_key(const void *data, size_t size) {
        size_t n_chunks = sage_content_key_nchunks(size);
        SageHash *chunks = calloc(n_chunks ? n_chunks : 1, sizeof(*chunks)), key;

        if (!chunks)
                return (SageHash){ 0, 0 };
        sage_content_key_chunks(data, size, chunks);
        key = sage_content_key_combine(chunks, n_chunks);
        free(chunks);
        return key;
}

SageHash sage_hash_copy(void *dst, const void *src, size_t size) {
        return sage_hash_kernel()->hash_copy(dst, src, size);
}

SageHash sage_hash_copy_streamed(void *dst, const void *src, size_t size) {
        return sage_hash_kernel()->hash_copy_streamed(dst, src, size);
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
