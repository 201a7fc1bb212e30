/*
 * Shared helpers of the GPU suite programs (the .cu files of tests/gpu).
 *
 * Every program of the suite must behave identically natively and under
 * libsage: it checks every CUDA return code, exits nonzero on the first
 * error, and prints only deterministic values on stdout (checksums of its
 * results), so that scripts/gpu-test.sh can compare the two runs byte for
 * byte. Diagnostics go to stderr, which is logged but never compared.
 */
#ifndef SAGE_GPU_CHECK_H
#define SAGE_GPU_CHECK_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * A call whose status must be `ok`: else the call, its status's name (by
 * `name_of`) and number go to stderr and the program exits 1. RT_CHECK,
 * CU_CHECK and the library checks of single programs (BLAS_CHECK) are this
 * with their library's type and namer.
 */
#define STATUS_CHECK(type, ok, name_of, call)                                                     \
        do {                                                                                      \
                type status_check_st_ = (call);                                                   \
                if (status_check_st_ != (ok)) {                                                   \
                        fprintf(stderr, "%s:%d: %s failed: %s (%d)\n", __FILE__, __LINE__, #call, \
                                name_of(status_check_st_), (int)status_check_st_);                \
                        exit(1);                                                                  \
                }                                                                                 \
        } while (0)

#ifndef SAGE_GPU_DRIVER_ONLY
#include <cuda_runtime.h>

#define RT_CHECK(call) STATUS_CHECK(cudaError_t, cudaSuccess, cudaGetErrorString, call)

/* A kernel launch returns nothing: check the launch, then the execution. */
#define LAUNCH_CHECK() RT_CHECK(cudaGetLastError())
#endif /* !SAGE_GPU_DRIVER_ONLY */

#ifdef SAGE_GPU_NEED_DRIVER
#include <cuda.h>

static inline const char *cu_error_name(CUresult r) {
        const char *name = NULL;
        return cuGetErrorName(r, &name) == CUDA_SUCCESS && name ? name : "?";
}

#define CU_CHECK(call) STATUS_CHECK(CUresult, CUDA_SUCCESS, cu_error_name, call)
#endif

/*
 * Releases each argument with `release` (cudaFree, cuMemFree, ...) as
 * `type`, every call checked with `check`: the cleanup at the end of the
 * programs. RT_FREE / RT_FREE_HOST / CU_FREE are it for their library.
 */
#define CHECK_EACH(check, type, release, ...)                                                                \
        do {                                                                                                 \
                type check_each_[] = { __VA_ARGS__ };                                                        \
                for (size_t check_i_ = 0; check_i_ < sizeof check_each_ / sizeof check_each_[0]; check_i_++) \
                        check(release(check_each_[check_i_]));                                               \
        } while (0)
#ifndef SAGE_GPU_DRIVER_ONLY
#define RT_FREE(...) CHECK_EACH(RT_CHECK, void *, cudaFree, __VA_ARGS__)
#define RT_FREE_HOST(...) CHECK_EACH(RT_CHECK, void *, cudaFreeHost, __VA_ARGS__)
#endif
#ifdef SAGE_GPU_NEED_DRIVER
#define CU_FREE(...) CHECK_EACH(CU_CHECK, CUdeviceptr, cuMemFree, __VA_ARGS__)
#endif

#define FAIL_IF(cond, ...)                                                            \
        do {                                                                          \
                if (cond) {                                                           \
                        fprintf(stderr, "%s:%d: check failed: ", __FILE__, __LINE__); \
                        fprintf(stderr, __VA_ARGS__);                                 \
                        fputc('\n', stderr);                                          \
                        exit(1);                                                      \
                }                                                                     \
        } while (0)

/* FNV-1a 64 over raw bytes: exact-bit checksums, no library needed. */
static inline uint64_t fnv1a64(const void *data, size_t len, uint64_t h) {
        const unsigned char *p = (const unsigned char *)data;
        for (size_t i = 0; i < len; i++) {
                h ^= p[i];
                h *= 0x100000001b3ULL;
        }
        return h;
}
#define FNV1A64_INIT 0xcbf29ce484222325ULL

static inline uint64_t checksum_bytes(const void *data, size_t len) {
        return fnv1a64(data, len, FNV1A64_INIT);
}

/* Deterministic input: small integers, so every sum the GPU forms is exact
 * in float whatever the summation order (the result bits cannot depend on
 * scheduling, only on correctness). */
static inline float det_value(uint64_t i, uint64_t salt) {
        uint64_t x = (i + 1) * 0x9e3779b97f4a7c15ULL ^ (salt * 0xbf58476d1ce4e5b9ULL);
        x ^= x >> 31;
        x *= 0x94d049bb133111ebULL;
        x ^= x >> 29;
        return (float)((int)(x % 17) - 8); /* -8 .. 8 */
}

#endif /* SAGE_GPU_CHECK_H */
