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

#define sage_warn(...)  sage_log(SAGE_LOG_WARNING, __VA_ARGS__)
#define sage_info(...)  sage_log(SAGE_LOG_INFO, __VA_ARGS__)
#define sage_debug(...) sage_log(SAGE_LOG_DEBUG, __VA_ARGS__)
