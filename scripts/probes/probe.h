/* What the driver-API probes under scripts/probes/ share: a clock, a result's name, libsage's staging shape. */
#pragma once

#include <cuda.h>
#include <sys/mman.h>
#include <time.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* kernels' headers before 5.14 */
#endif

/* libsage's miss-path staging (SAGE_SHARE_STAGING=128M): 8 buffers of 16 MiB. */
#define STAGE_SLOTS 8
#define STAGE_SLOT ((size_t)16 << 20)

static inline double now_ms(void) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static inline const char *name(CUresult r) {
        const char *n = "?";
        cuGetErrorName(r, &n);
        return n;
}
