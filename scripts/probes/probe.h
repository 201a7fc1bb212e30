/* What the driver-API probes under scripts/probes/ share: a clock and a result's name. */
#pragma once

#include <cuda.h>
#include <time.h>

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
