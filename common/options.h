/* SAGE options: one table (options.def), parsed once from the environment. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum SageOptionType {
        SAGE_OPTION_BOOL,
        SAGE_OPTION_SIZE,
        SAGE_OPTION_UINT,
        SAGE_OPTION_STRING,
        SAGE_OPTION_CHOICE,
        SAGE_OPTION_DURATION,
} SageOptionType;

#define SAGE_OPTION_TYPE_BOOL bool
#define SAGE_OPTION_TYPE_SIZE uint64_t
#define SAGE_OPTION_TYPE_UINT uint64_t
#define SAGE_OPTION_TYPE_STRING const char *
#define SAGE_OPTION_TYPE_CHOICE const char *
#define SAGE_OPTION_TYPE_DURATION uint64_t /* milliseconds */

typedef struct SageOptions {
#define SAGE_OPTION(field, NAME, type, def, help) SAGE_OPTION_TYPE_##type field;
#include "options.def"
#undef SAGE_OPTION
} SageOptions;

typedef struct SageOptionInfo {
        const char *name; /* without the SAGE_ prefix */
        SageOptionType type;
        const char *default_text;
        const char *help;
} SageOptionInfo;

extern const SageOptionInfo sage_option_info[];
extern const size_t sage_option_count;

/*
 * Parse the SAGE_* variables of `environ_get` (getenv when NULL) into *out.
 * Bad values keep the default and are reported through `warn` (may be NULL),
 * one line each. Returns the number of bad values.
 */
int sage_options_parse(SageOptions *out, const char *(*environ_get)(const char *name), void (*warn)(const char *line));

/* The process-wide options, parsed on first use (thread-safe, no allocation). */
const SageOptions *sage_options(void);

/* Write "SAGE_NAME=value" for every option, one a line. */
void sage_options_print(const SageOptions *options, FILE *f);

/* Low-level value parsers, exposed for tests and for the tools' own flags. */
int sage_parse_bool(const char *text, bool *out);
int sage_parse_size(const char *text, uint64_t *out);
int sage_parse_uint(const char *text, uint64_t *out);
/* The decimal number `text` starts with (a digit first: no sign, no space); *end: what follows it. */
int sage_parse_uint_prefix(const char *text, uint64_t *out, char **end);
/* "500ms", "2s", "1m", "1h"; a bare number is seconds. Milliseconds into *out. */
int sage_parse_duration_ms(const char *text, uint64_t *out);
