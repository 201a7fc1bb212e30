/* Internal interfaces of libsage shared by its modules. */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef enum SageStat {
#define SAGE_STAT(name, text) SAGE_STAT_##name,
#include "stats.def"
#undef SAGE_STAT
        SAGE_STAT_COUNT,
} SageStat;

extern atomic_ullong sage_stats[SAGE_STAT_COUNT];

static inline void sage_stats_add(SageStat stat, uint64_t n) {
        atomic_fetch_add_explicit(&sage_stats[stat], n, memory_order_relaxed);
}

static inline void sage_stats_count(SageStat stat) {
        sage_stats_add(stat, 1);
}

/* Print every counter (text; or a JSON object body when json is true). */
void sage_stats_print(FILE *f, bool json);

/*
 * Re-entrancy depth of driver hooks on this thread: a driver call made while
 * a hook is running (by our own logic, or by the driver calling an exported
 * entry point) goes straight to the driver.
 */
extern _Thread_local unsigned sage_hook_depth __attribute__((tls_model("initial-exec")));

/*
 * Why a hook must leave its fast path: bits set while tracing is on, while
 * a redirected context is alive and while sharing is on. One relaxed load per hook call.
 */
enum {
        SAGE_SLOW_TRACE = 1u << 0,
        SAGE_SLOW_REDIRECT = 1u << 1,
        SAGE_SLOW_SHARE = 1u << 2,
};
extern atomic_uint sage_hook_slow;

/* dlsym support (driver.c). */
void sage_real_dlsym_ensure(void);

/* Process-level set-up, idempotent; called from the constructor and lazily. */
void sage_init(void);
