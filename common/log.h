/* One logger for everything SAGE: levels, prefix "sage:", stderr, silent by default. */
#pragma once

#include <stdbool.h>

enum {
        SAGE_LOG_SILENT = 0,
        SAGE_LOG_WARNING = 1,
        SAGE_LOG_INFO = 2,
        SAGE_LOG_DEBUG = 3,
};

/* The level starts at SAGE_LOG_SILENT: the preload's stderr belongs to the app. */
void sage_log_set_level(int level);
int sage_log_get_level(void);
bool sage_log_enabled(int level);

/* Identify the program in every line ("sage: saged: …"). Keeps the pointer. */
void sage_log_set_program(const char *name);

/* One write(2) per line, so lines of several threads or processes never interleave. */
void sage_log(int level, const char *format, ...) __attribute__((format(printf, 2, 3)));

/*
 * Repeated lines are rate limited per call site: whatever a peer can make a
 * long-running process say (saged's accept errors, refused clients) must
 * not fill a disk. Each sage_warn/sage_info call site prints at most
 * SAGE_LOG_BURST lines per SAGE_LOG_WINDOW_NS; the next line it prints
 * after that says how many were dropped ("N similar messages suppressed").
 * Debug lines (-vv, SAGE_VERBOSE=3) are asked for in bulk and not limited.
 */
#define SAGE_LOG_BURST 10
#define SAGE_LOG_WINDOW_NS 1000000000ull

/* A call site's window; static and zero-initialised, one per site. */
typedef struct SageLogSite {
        _Atomic unsigned long long window_start_ns;
        _Atomic unsigned lines;
        _Atomic unsigned suppressed;
} SageLogSite;

void sage_log_limited(SageLogSite *site, int level, const char *format, ...) __attribute__((format(printf, 3, 4)));

#define sage_log_site_(level, ...)                                          \
        do {                                                                \
                static SageLogSite sage_log_site_here_;                     \
                sage_log_limited(&sage_log_site_here_, level, __VA_ARGS__); \
        } while (0)

#define sage_warn(...) sage_log_site_(SAGE_LOG_WARNING, __VA_ARGS__)
#define sage_info(...) sage_log_site_(SAGE_LOG_INFO, __VA_ARGS__)
#define sage_debug(...) sage_log(SAGE_LOG_DEBUG, __VA_ARGS__)
