/* The XXH3-128 kernels of common/hash.c, one per instruction set (hash_kernel.c). */
#pragma once

#include "hash.h"

typedef struct SageHashKernel {
        const char *name; /* "sse2", "avx2", "avx512" (the portable one elsewhere: "scalar" or its vector set) */
        int vector;       /* the XXH_VECTOR it was built with: 0 scalar, 1 SSE2, 2 AVX2, 3 AVX-512 */
        SageHash (*hash)(const void *data, size_t size);
        SageHash (*hash_copy)(void *dst, const void *src, size_t size);
        SageHash (*hash_copy_streamed)(void *dst, const void *src, size_t size); /* dst not left in the cache */
} SageHashKernel;

extern const SageHashKernel sage_hash_base_kernel;
#if defined(__x86_64__)
extern const SageHashKernel sage_hash_avx2_kernel;
extern const SageHashKernel sage_hash_avx512_kernel;
#endif

/*
 * The kernels this CPU can run, best first (the first is the one in use
 * unless sage_hash_use_kernel chose another); `n` gets their count.
 */
const SageHashKernel *const *sage_hash_kernels(size_t *n);
/* The kernel sage_hash and its kin run now. */
const SageHashKernel *sage_hash_kernel(void);
/* Run `name` from now on (tests, benchmarks): -ENOENT if this CPU has no such kernel. */
int sage_hash_use_kernel(const char *name);
