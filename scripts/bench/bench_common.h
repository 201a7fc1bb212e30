/*
 * Helpers shared by the CUDA benchmark programs of scripts/bench:
 * CLOCK_MONOTONIC in ns, median/min of samples, and the check that tells
 * whether libsage is really loaded in this process (a benchmark of SAGE that
 * silently ran without it would be worse than none). The error checks
 * (RT_CHECK; CU_CHECK with SAGE_GPU_NEED_DRIVER) are the GPU suite's: a
 * driver-API-only program defines SAGE_GPU_DRIVER_ONLY too.
 */
#ifndef SAGE_BENCH_COMMON_H
#define SAGE_BENCH_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../tests/gpu/gpu_check.h"

static inline uint64_t now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Milliseconds from a to b (now_ns values). */
static inline double ms(uint64_t a, uint64_t b) {
        return (double)(b - a) / 1e6;
}

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *)a, y = *(const double *)b;
        return (x > y) - (x < y);
}

/* Median of n samples (sorts a copy). */
static inline double median_of(const double *v, int n) {
        double *s = (double *)malloc((size_t)n * sizeof(double));
        if (!s)
                exit(1);
        memcpy(s, v, (size_t)n * sizeof(double));
        qsort(s, (size_t)n, sizeof(double), cmp_double);
        double m = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
        free(s);
        return m;
}

static inline double min_of(const double *v, int n) {
        double m = v[0];
        for (int i = 1; i < n; i++)
                if (v[i] < m)
                        m = v[i];
        return m;
}

/* Is libsage mapped into this process? */
static inline int sage_loaded(void) {
        FILE *f = fopen("/proc/self/maps", "r");
        char line[4096];
        int found = 0;
        if (!f)
                return 0;
        while (!found && fgets(line, sizeof(line), f))
                found = strstr(line, "libsage") != NULL;
        fclose(f);
        return found;
}

static inline void print_samples(const char *key, const double *v, int n) {
        printf("\"%s\":{\"median\":%.2f,\"min\":%.2f,\"runs\":[", key, median_of(v, n), min_of(v, n));
        for (int i = 0; i < n; i++)
                printf("%s%.2f", i ? "," : "", v[i]);
        printf("]}");
}

#endif /* SAGE_BENCH_COMMON_H */
