/*
 * The checks of the simulated driver's own test programs (test_fakecuda*.c):
 * a failed check names itself, with the pid (several of these tests fork
 * and check in the child), counts in `failures` and lets the test go on, so
 * one run reports every broken expectation; main returns nonzero if any
 * failed. Each program includes this once: it defines `failures`.
 */
#pragma once

#include <cuda.h>
#include <stddef.h>
#include <stdio.h>
#include <unistd.h>

static int failures;

#define CHECK(cond)                                                                                                  \
        do {                                                                                                         \
                if (!(cond)) {                                                                                       \
                        fprintf(stderr, "[%d] %s:%d: check failed: %s\n", (int)getpid(), __FILE__, __LINE__, #cond); \
                        failures++;                                                                                  \
                }                                                                                                    \
        } while (0)

#define CHECK_CU(expr, want)                                                                                  \
        do {                                                                                                  \
                CUresult r_ = (CUresult)(expr);                                                               \
                if (r_ != (want)) {                                                                           \
                        fprintf(stderr, "[%d] %s:%d: %s returned %d, expected %d\n", (int)getpid(), __FILE__, \
                                __LINE__, #expr, (int)r_, (int)(want));                                       \
                        failures++;                                                                           \
                }                                                                                             \
        } while (0)

#define OK(expr) CHECK_CU(expr, CUDA_SUCCESS)

#define MiB ((size_t)1 << 20)

/* cuInit, then device 0's primary context made current: where a test (or a
 * forked child of one) starts. */
static inline void fake_setup_context(void) {
        CUcontext ctx;
        OK(cuInit(0));
        OK(cuDevicePrimaryCtxRetain(&ctx, 0));
        OK(cuCtxSetCurrent(ctx));
}
